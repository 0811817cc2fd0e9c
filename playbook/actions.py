"""Procedure 1 as data: GitHub Actions workflow runs and GitHub's rate-limit rules, no I/O.

A dispatched run is found by a marker the flow puts into the workflow's `run-name`
(`display_title` in the API), so it never follows someone else's run. How long to wait on a
rate limit follows GitHub's REST docs: `retry-after` seconds when given; else, with
`x-ratelimit-remaining: 0`, until `x-ratelimit-reset` (epoch seconds); else, for a secondary
rate limit without either header, one minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from playbook.errors import InvalidInputError

PENDING_STATUSES = ("requested", "waiting", "pending", "queued")
"""A run that has not started: GitHub's statuses before `in_progress`."""

SECONDARY_LIMIT_DEFAULT_SECONDS = 60.0


@dataclass(frozen=True)
class WorkflowRun:
    """One run of a workflow as GitHub's REST API reports it."""

    id: int
    display_title: str
    status: str
    conclusion: str | None
    html_url: str
    created_at: str
    run_attempt: int = 1

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def succeeded(self) -> bool:
        return self.completed and self.conclusion == "success"

    def describe(self) -> str:
        """`run 42 (in_progress) https://github.com/...`, or with its conclusion once done."""
        state = f"{self.status}: {self.conclusion}" if self.completed else self.status
        return f"workflow run {self.id} ({state}) {self.html_url}"


def parse_run(body: Mapping[str, Any]) -> WorkflowRun:
    """A workflow run object of the REST API as a `WorkflowRun`."""
    return WorkflowRun(
        id=int(body["id"]),
        display_title=str(body.get("display_title") or body.get("name") or ""),
        status=str(body["status"]),
        conclusion=body.get("conclusion"),
        html_url=str(body["html_url"]),
        created_at=str(body.get("created_at", "")),
        run_attempt=int(body.get("run_attempt") or 1),
    )


def find_marked_run(runs: Iterable[WorkflowRun], marker: str) -> WorkflowRun | None:
    """The run whose title carries `marker` (the newest, should a dispatch have repeated)."""
    marked = [run for run in runs if marker in run.display_title]
    return max(marked, key=lambda run: run.id) if marked else None


def progress_of(run: WorkflowRun) -> float:
    """A progress value (percent) for a run's status: waiting 10, running 50, completed 100."""
    if run.completed:
        return 100.0
    return 50.0 if run.status == "in_progress" else 10.0


def created_filter(since: datetime) -> str:
    """The `created` query of the runs list for runs created at or after `since` (UTC)."""
    return ">=" + since.strftime("%Y-%m-%dT%H:%M:%SZ")


def dispatch_inputs(
    environment: str, target_version: str, skip_confirmation: bool, marker: str
) -> dict[str, str]:
    """The `inputs` of the rollback workflow's dispatch (booleans as GitHub's "true"/"false")."""
    if not marker or any(c.isspace() for c in marker):
        raise InvalidInputError(f"malformed run marker {marker!r}")
    return {
        "environment": environment,
        "target_version": target_version,
        "skip_confirmation": "true" if skip_confirmation else "false",
        "run_id": marker,
    }


def rate_limit_wait(
    status: int, headers: Mapping[str, str], body_message: str, now_epoch: float
) -> float | None:
    """Seconds to wait before retrying a GitHub answer, or None when it is no rate limit.

    403 and 429 are rate limits when GitHub says so by `retry-after`, by
    `x-ratelimit-remaining: 0` (wait until `x-ratelimit-reset`), or, for a secondary rate
    limit without either header, by its message (wait one minute). Any other 403 is a
    permission error.
    """
    if status not in (403, 429):
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = lowered.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    if lowered.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in lowered:
        try:
            return max(0.0, float(lowered["x-ratelimit-reset"]) - now_epoch)
        except ValueError:
            pass
    if status == 429 or "rate limit" in body_message.lower():
        return SECONDARY_LIMIT_DEFAULT_SECONDS
    return None
