"""GitHub Actions tasks (Procedure 1): dispatch the rollback workflow, find its run, follow it.

REST endpoints, as GitHub documents them:
`POST /repos/{owner}/{repo}/actions/workflows/{workflow_id}/dispatches` (204, no body),
`GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs` (filters `event`, `branch`,
`created`; pages by the `Link` header) and `GET /repos/{owner}/{repo}/actions/runs/{run_id}`.
The token comes from a Prefect Secret block and is never logged. 401, 404 and 422 become
clear errors; rate limits (403/429 with `retry-after` or `x-ratelimit-reset`) are waited out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from uuid import UUID

import httpx
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from playbook.actions import (
    PENDING_STATUSES,
    WorkflowRun,
    created_filter,
    find_marked_run,
    parse_run,
    progress_of,
    rate_limit_wait,
)
from playbook.errors import (
    AccessDeniedError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
    RolloutFailedError,
)
from playbook.services import ActionsConfig
from tasks.boundary import error_for_status, retry_condition_fn, run_logger, translating
from tasks.secrets import load_secret

GITHUB_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "rollback-flows",
}
MAX_RATE_LIMIT_WAITS = 5
MAX_PAGES = 10


def load_actions_token(block_name: str) -> str:
    """The token stored in the Prefect Secret block `block_name`.

    Raises:
        AccessDeniedError: the block does not exist or is empty.
    """
    return load_secret(
        block_name,
        "no GitHub Actions token",
        " (create it with `prefect block create secret`; the token needs actions: write)",
    )


class ActionsApi:
    """The few GitHub Actions calls of Procedure 1, with GitHub's errors made clear."""

    def __init__(
        self,
        actions: ActionsConfig,
        token: str,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_seconds: float = 900.0,
    ) -> None:
        self.actions = actions
        self.base = str(actions.api_url).rstrip("/")
        self._token = token
        self._sleep = sleep
        self._max_wait = max_wait_seconds

    @property
    def workflow_path(self) -> str:
        return f"/repos/{self.actions.repository}/actions/workflows/{self.actions.workflow}"

    def request(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request; rate limits are waited out (at most `max_wait_seconds` in all).

        Raises:
            AccessDeniedError: 401 (bad token) or 403 that is no rate limit.
            NotFoundError: 404 (no such repository or workflow, or the token cannot see it).
            InvalidInputError: 422 (GitHub's message says what: unknown input, no such ref...).
            RateLimitedError: still rate limited after the waits.
        """
        waited = 0.0
        headers = {**GITHUB_HEADERS, "Authorization": f"Bearer {self._token}"}
        with httpx.Client(headers=headers, timeout=self.actions.timeout_seconds) as http:
            for _ in range(MAX_RATE_LIMIT_WAITS + 1):
                with translating(what):
                    response = http.request(method, url, **kwargs)
                if response.is_success:
                    return response
                message = _message(response)
                wait = rate_limit_wait(response.status_code, response.headers, message, time.time())
                if wait is None:
                    raise _error(response.status_code, what, message, self.actions)
                if waited + wait > self._max_wait:
                    raise RateLimitedError(
                        f"{what}: GitHub rate limit (HTTP {response.status_code}: {message}); "
                        f"it asks to wait {wait:.0f} s more, past the {self._max_wait:.0f} s "
                        "this run waits"
                    )
                run_logger().warning(
                    "%s: GitHub rate limit (HTTP %s); waiting %.0f s as it asks",
                    what,
                    response.status_code,
                    wait,
                )
                self._sleep(wait)
                waited += wait
        raise RateLimitedError(f"{what}: still rate limited after {MAX_RATE_LIMIT_WAITS} waits")

    def dispatch(self, inputs: dict[str, str]) -> None:
        """POST the workflow_dispatch event (204 No Content)."""
        self.request(
            "POST",
            f"{self.base}{self.workflow_path}/dispatches",
            f"dispatch workflow {self.actions.workflow} of {self.actions.repository}",
            json={"ref": self.actions.ref, "inputs": inputs},
        )

    def list_runs(self, since: datetime) -> list[WorkflowRun]:
        """The workflow's workflow_dispatch runs on the ref created at or after `since`."""
        url: str | None = f"{self.base}{self.workflow_path}/runs"
        params: dict[str, str | int] | None = {
            "event": "workflow_dispatch",
            "branch": self.actions.ref,
            "created": created_filter(since),
            "per_page": 100,
        }
        runs: list[WorkflowRun] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self.request(
                "GET", url, f"list runs of workflow {self.actions.workflow}", params=params
            )
            runs.extend(parse_run(r) for r in response.json().get("workflow_runs", []))
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
        return runs

    def read_run(self, run_id: int) -> WorkflowRun:
        """The workflow run `run_id`."""
        response = self.request(
            "GET",
            f"{self.base}/repos/{self.actions.repository}/actions/runs/{run_id}",
            f"read workflow run {run_id}",
        )
        return parse_run(response.json())


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", "")) if isinstance(body, dict) else str(body)[:200]


def _error(status: int, what: str, message: str, actions: ActionsConfig) -> Exception:
    where = f"workflow {actions.workflow} of {actions.repository} at ref {actions.ref}"
    if status == 401:
        return AccessDeniedError(
            f"{what}: GitHub rejected the token (401 {message}); renew the token in the "
            f"Secret block {actions.token_secret!r}"
        )
    if status == 403:
        return AccessDeniedError(
            f"{what}: forbidden (403 {message}); the token needs actions: write on "
            f"{actions.repository}"
        )
    if status == 404:
        return NotFoundError(
            f"{what}: not found (404 {message}): no {where}, or the token cannot see it"
        )
    if status == 422:
        return InvalidInputError(f"{what} at ref {actions.ref}: GitHub refused it (422 {message})")
    return error_for_status(status, what, message)


@task(timeout_seconds=960, cache_policy=NO_CACHE)
def dispatch_workflow(actions: ActionsConfig, token: str, inputs: dict[str, str]) -> None:
    """Dispatch the rollback workflow with `inputs`.

    Not retried on errors: GitHub may have accepted a dispatch whose answer was lost, and a
    second one would start a second rollback; the flow looks for its run before dispatching.
    """
    ActionsApi(actions, token).dispatch(inputs)
    run_logger().info(
        "dispatched %s of %s at %s with %s",
        actions.workflow,
        actions.repository,
        actions.ref,
        inputs,
    )


@task(
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=1800,
    cache_policy=NO_CACHE,
)
def find_workflow_run(
    actions: ActionsConfig, token: str, marker: str, since: datetime, wait: bool = True
) -> WorkflowRun | None:
    """The workflow run whose run-name carries `marker`, created at or after `since`.

    With `wait`, polls until it appears within `appear_timeout_seconds`; else looks once and
    returns None when there is none.

    Raises:
        NotFoundError: with `wait`, the run did not appear in time.
    """
    api = ActionsApi(actions, token)
    deadline = time.monotonic() + actions.appear_timeout_seconds
    while True:
        run = find_marked_run(api.list_runs(since), marker)
        if run is not None:
            run_logger().info("found %s", run.describe())
            return run
        if not wait:
            return None
        if time.monotonic() >= deadline:
            raise NotFoundError(
                f"the dispatched run of {actions.workflow} ({actions.repository}, ref "
                f"{actions.ref}, run-name containing {marker!r}) did not appear within "
                f"{actions.appear_timeout_seconds:.0f} s; look at "
                f"https://github.com/{actions.repository}/actions/workflows/{actions.workflow}"
            )
        time.sleep(actions.poll_seconds)


@task(
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=6 * 3600 + 60,
    cache_policy=NO_CACHE,
)
def follow_workflow_run(actions: ActionsConfig, token: str, run: WorkflowRun) -> WorkflowRun:
    """Follow a run through queued → in_progress → completed, as a progress artifact and log
    lines with its URL; return it completed.

    Raises:
        RolloutFailedError: the run did not complete within `run_timeout_seconds`.
    """
    api = ActionsApi(actions, token)
    logger = run_logger()
    deadline = time.monotonic() + actions.run_timeout_seconds
    artifact: UUID | None = None
    last = ""
    while True:
        description = run.describe()
        if artifact is None:
            artifact = cast(
                UUID, create_progress_artifact(progress_of(run), description=description)
            )
        else:
            update_progress_artifact(artifact, progress_of(run), description=description)
        if run.status != last:
            logger.info("%s", description)
            last = run.status
        if run.completed:
            return run
        if time.monotonic() >= deadline:
            waiting = " (still waiting to start)" if run.status in PENDING_STATUSES else ""
            raise RolloutFailedError(
                f"{run.describe()} did not complete within "
                f"{actions.run_timeout_seconds:.0f} s{waiting}"
            )
        time.sleep(actions.poll_seconds)
        run = api.read_run(run.id)
