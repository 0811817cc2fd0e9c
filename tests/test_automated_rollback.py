"""Procedure 1: `automated_rollback` through a loopback GitHub Actions API shaped as GitHub
documents it, whose workflow job does what `.github/workflows/rollback.yml` does: it starts
the `image-rollback/default` deployment on the session's Prefect server and follows it."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from approvals import Background, answer, approval_artifact, paused_run
from cluster import REPOSITORY, build_history, ready_pod_images, snapshot, use_services
from fake_github_actions import FakeGitHubActions, run_steps
from flow_runs import flow_run_id, read_flow_run
from kubernetes import client
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun

from flows.automated_rollback import automated_rollback
from playbook.actions import (
    WorkflowRun,
    created_filter,
    dispatch_inputs,
    find_marked_run,
    rate_limit_wait,
)
from playbook.errors import (
    AccessDeniedError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
    RolloutFailedError,
)
from playbook.services import SERVICES_ENV, ActionsConfig
from stack.local import StackState
from tasks.github_actions import ActionsApi

TOKEN_BLOCK = "it-actions-token"
VENV_BIN = str(Path(sys.executable).parent)


def actions_config(fake: FakeGitHubActions, **overrides: Any) -> ActionsConfig:
    settings: dict[str, Any] = {
        "api_url": fake.url,
        "repository": fake.repository,
        "token_secret": TOKEN_BLOCK,
        "timeout_seconds": 5,
        "appear_timeout_seconds": 20,
        "run_timeout_seconds": 120,
        "poll_seconds": 0.2,
    }
    return ActionsConfig.model_validate({**settings, **overrides})


@pytest.fixture
def fake() -> Iterator[FakeGitHubActions]:
    stand_in = FakeGitHubActions().start()
    yield stand_in
    stand_in.stop()


# --- GitHub's rules, pure ------------------------------------------------------------------


def test_rate_limit_wait_follows_githubs_headers() -> None:
    now = 1_700_000_000.0
    assert rate_limit_wait(403, {"Retry-After": "7"}, "", now) == 7
    assert rate_limit_wait(429, {"retry-after": "0"}, "", now) == 0
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 42)}
    assert rate_limit_wait(403, reset, "API rate limit exceeded", now) == 42
    assert rate_limit_wait(403, {}, "You have exceeded a secondary rate limit", now) == 60
    assert rate_limit_wait(429, {}, "", now) == 60
    # A 403 that is no rate limit is a permission error; other statuses are not waited on.
    assert (
        rate_limit_wait(403, {"x-ratelimit-remaining": "4999"}, "Resource not accessible", now)
        is None
    )
    assert rate_limit_wait(500, {"retry-after": "5"}, "", now) is None


def test_the_run_is_the_one_whose_title_carries_the_marker() -> None:
    def run(id_: int, title: str) -> WorkflowRun:
        return WorkflowRun(
            id_, title, "queued", None, f"https://github.com/a/b/actions/runs/{id_}", ""
        )

    runs = [run(1, "Rollback production to v1.2.3 [prefect-a]"), run(2, "Rollback x [prefect-b]")]
    assert find_marked_run(runs, "prefect-b") == runs[1]
    assert find_marked_run(runs, "prefect-c") is None
    assert (
        created_filter(datetime(2026, 12, 1, 23, 5, 9, 500, tzinfo=UTC)) == ">=2026-12-01T23:05:09Z"
    )
    assert (
        dispatch_inputs("production", "v1.2.3", False, "prefect-a")["skip_confirmation"] == "false"
    )
    with pytest.raises(InvalidInputError):
        dispatch_inputs("production", "v1.2.3", False, "two words")


# --- the REST calls against the stand-in -----------------------------------------------------


def test_dispatch_sends_githubs_request_and_gets_204(fake: FakeGitHubActions) -> None:
    api = ActionsApi(actions_config(fake), fake.token)
    api.dispatch(dispatch_inputs("staging", "v1.2.3", True, "prefect-1"))

    [sent] = fake.dispatches()
    assert sent.path == "/repos/acme/rag-api/actions/workflows/rollback.yml/dispatches"
    assert sent.body == {
        "ref": "main",
        "inputs": {
            "environment": "staging",
            "target_version": "v1.2.3",
            "skip_confirmation": "true",
            "run_id": "prefect-1",
        },
    }
    assert sent.headers["Authorization"] == f"Bearer {fake.token}"
    assert sent.headers["X-GitHub-Api-Version"] == "2022-11-28"
    # The run-name of the real workflow file, filled with the inputs.
    assert fake.runs[0].display_title == "Rollback staging to v1.2.3 [prefect-1]"


def test_401_404_and_422_are_clear_errors(fake: FakeGitHubActions) -> None:
    inputs = dispatch_inputs("production", "v1.2.3", False, "prefect-1")
    with pytest.raises(
        AccessDeniedError, match=r"rejected the token \(401 Bad credentials\).*it-actions-token"
    ):
        ActionsApi(actions_config(fake), "wrong").dispatch(inputs)
    with pytest.raises(NotFoundError, match=r"no workflow deploy\.yml of acme/rag-api at ref main"):
        ActionsApi(actions_config(fake, workflow="deploy.yml"), fake.token).dispatch(inputs)
    with pytest.raises(NotFoundError, match="404"):
        ActionsApi(actions_config(fake, repository="acme/other"), fake.token).dispatch(inputs)
    with pytest.raises(InvalidInputError, match="No ref found for: release"):
        ActionsApi(actions_config(fake, ref="release"), fake.token).dispatch(inputs)
    with pytest.raises(InvalidInputError, match="'qa' for input 'environment' not in the list"):
        ActionsApi(actions_config(fake), fake.token).dispatch({**inputs, "environment": "qa"})
    with pytest.raises(InvalidInputError, match=r"Unexpected inputs provided: \[\"force\"\]"):
        ActionsApi(actions_config(fake), fake.token).dispatch({**inputs, "force": "true"})
    assert fake.runs == []


def test_rate_limits_are_waited_out_as_github_asks(fake: FakeGitHubActions) -> None:
    slept: list[float] = []
    api = ActionsApi(actions_config(fake), fake.token, sleep=slept.append)
    reset = int(datetime.now(UTC).timestamp()) + 3
    fake.throttle(1, 403, retry_after="2")
    fake.throttle(1, 429, retry_after="1")
    fake.throttle(1, 403, x_ratelimit_remaining="0", x_ratelimit_reset=str(reset))
    api.dispatch(dispatch_inputs("production", "v1.2.3", False, "prefect-1"))

    assert slept[:2] == [2, 1]
    assert 1 <= slept[2] <= 3
    assert len(fake.dispatches()) == 4  # three answered with a rate limit, the fourth 204
    assert len(fake.runs) == 1

    fake.throttle(1, 403, retry_after="3600")
    with pytest.raises(RateLimitedError, match="wait 3600 s more"):
        api.dispatch(dispatch_inputs("production", "v1.2.3", False, "prefect-2"))
    assert len(fake.runs) == 1


def test_runs_are_listed_with_githubs_filters_and_pages(fake: FakeGitHubActions) -> None:
    fake.appear_after = 0
    api = ActionsApi(actions_config(fake), fake.token)
    since = datetime.now(UTC) - timedelta(seconds=1)
    for n in range(101):
        api.dispatch(dispatch_inputs("staging", "v1.2.3", True, f"prefect-{n}"))

    runs = api.list_runs(since)
    assert len(runs) == 101
    assert [r.id for r in runs] == sorted((r.id for r in runs), reverse=True)
    lists = [r for r in fake.requests if r.path.endswith("/runs")]
    assert len(lists) == 2  # per_page=100, then the Link header's next page
    assert lists[0].query == {
        "event": ["workflow_dispatch"],
        "branch": ["main"],
        "created": [created_filter(since)],
        "per_page": ["100"],
    }
    assert api.list_runs(datetime.now(UTC) + timedelta(minutes=5)) == []
    assert find_marked_run(runs, "prefect-77") is not None


# --- the flow on the real local stack --------------------------------------------------------


def with_actions(
    fake: FakeGitHubActions, environment: str | None = "staging", **overrides: Any
) -> None:
    """Add the stand-in's repository to the test's services file, whose one namespace
    becomes `environment` (one of the workflow's choices)."""
    path = Path(os.environ[SERVICES_ENV])
    cfg = actions_config(fake, **overrides)
    text = path.read_text()
    if environment:
        text = re.sub(
            r"\n    namespace: (\S+)\n",
            rf"\n    environments:\n      {environment}:\n        namespace: \1\n",
            text,
            count=1,
        )
    path.write_text(
        text
        + "    actions:\n"
        + "".join(f"      {k}: {v}\n" for k, v in cfg.model_dump(mode="json").items())
    )


@pytest.fixture
def token(fake: FakeGitHubActions, local_stack: object) -> str:
    Secret(value=fake.token).save(TOKEN_BLOCK, overwrite=True)
    return fake.token


def deployment_runs(name: str, since: datetime) -> list[FlowRun]:
    """The runs of deployment `name` (flow/deployment) created since `since`."""
    flow_name, deployment = name.split("/")
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
        )
    return [r for r in runs if r.created is not None and r.created >= since]


@pytest.mark.stack
@pytest.mark.timeout(240)
def test_the_workflow_rolls_back_and_the_flow_verifies_it(
    apps: client.AppsV1Api,
    kube_api: client.ApiClient,
    simulator_namespace: str,
    local_stack: StackState,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, simulator_namespace, timeout=60)
    with_actions(fake, environment=None)
    # The runner: the workflow's own steps, pointed at the session's Prefect server, whose
    # worker reads the stack's services file (production is the simulator's namespace).
    fake.job = run_steps(
        "rollback.yml", {"PREFECT_API_URL": local_stack.prefect_api_url or ""}, {}, VENV_BIN
    )
    build_history(apps, simulator_namespace, ["v1.2.3", "v1.2.4"])
    t0 = datetime.now(UTC)

    state = automated_rollback(
        simulator_namespace, "v1.2.3", skip_confirmation=True, return_state=True
    )

    assert state.is_completed(), (state.message, fake.job_errors)
    report = state.result()
    # The cluster: the workflow's image rollback made revision 3 at v1.2.3.
    after = snapshot(apps, simulator_namespace)
    assert after.image == f"{REPOSITORY}:v1.2.3"
    # set image to v1.2.3 takes revision 1's ReplicaSet back, as revision 3
    assert after.replicasets == {2: f"{REPOSITORY}:v1.2.4", 3: f"{REPOSITORY}:v1.2.3"}
    assert (
        ready_pod_images(client.CoreV1Api(kube_api), simulator_namespace)
        == [f"{REPOSITORY}:v1.2.3"] * 3
    )
    # What GitHub received: one dispatch with the inputs and this flow run's marker.
    [dispatch] = fake.dispatches()
    marker = f"prefect-{state.state_details.flow_run_id}"
    assert dispatch.body["inputs"] == {
        "environment": simulator_namespace,
        "target_version": "v1.2.3",
        "skip_confirmation": "true",
        "run_id": marker,
    }
    [run] = fake.runs
    assert (run.status, run.conclusion) == ("completed", "success")
    # The Prefect server: the image-rollback run the workflow started completed; this run
    # has its progress artifact at 100 % and the report with the run's URL.
    [started] = deployment_runs("image-rollback/default", t0)
    assert started.state is not None and started.state.is_completed()
    record = read_flow_run(state)
    assert record.state == "COMPLETED"
    assert record.one("progress").data == 100.0
    url = f"https://github.com/acme/rag-api/actions/runs/{run.id}"
    assert url in str(record.one("progress").description)
    markdown = str(record.one("markdown").data)
    assert url in markdown and "/version answers v1.2.3" in markdown
    assert (report.from_version, report.to_version, report.changed) == ("v1.2.4", "v1.2.3", True)
    # The run's log lines name the workflow run's URL, never the token.
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id(state)]))
        )
    assert any(url in log.message for log in logs)
    assert not any(token in log.message for log in logs)


@pytest.mark.stack
@pytest.mark.timeout(120)
@pytest.mark.parametrize("conclusion", ["failure", "cancelled", "timed_out"])
def test_a_failed_or_cancelled_workflow_fails_the_run_with_its_url(
    conclusion: str,
    apps: client.AppsV1Api,
    namespace: str,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    with_actions(fake)
    fake.job = lambda inputs: conclusion
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    before = snapshot(apps, namespace)

    with pytest.raises(RolloutFailedError) as raised:
        automated_rollback("staging", "v1.2.3", skip_confirmation=True)

    [run] = fake.runs
    assert str(raised.value) == (
        f"the rollback workflow ended {conclusion}: "
        f"https://github.com/acme/rag-api/actions/runs/{run.id}; nothing verified"
    )
    assert snapshot(apps, namespace) == before


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_run_that_does_not_complete_in_time_is_a_clear_error(
    apps: client.AppsV1Api,
    namespace: str,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    with_actions(fake, run_timeout_seconds=2)
    release = threading.Event()
    fake.job = lambda inputs: "success" if release.wait(30) else "failure"
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    before = snapshot(apps, namespace)

    try:
        with pytest.raises(
            RolloutFailedError,
            match=r"\(in_progress\) https://github.com/.* did not complete within 2 s",
        ):
            automated_rollback("staging", "v1.2.3")
    finally:
        release.set()
    assert snapshot(apps, namespace) == before


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_run_that_never_appears_is_a_clear_error(
    apps: client.AppsV1Api,
    namespace: str,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    with_actions(fake, appear_timeout_seconds=2)
    fake.never_appear = True
    build_history(apps, namespace, ["v1.2.3"])

    with pytest.raises(
        NotFoundError, match=r"run-name containing 'prefect-.*did not appear within 2 s"
    ):
        automated_rollback("staging", "v1.2.3")
    assert len(fake.dispatches()) == 1


@pytest.mark.stack
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("environment", "version", "message"),
    [
        (None, "not-a-version", "malformed version 'not-a-version'"),
        ("qa", "v1.2.3", "has no environment 'qa'"),
    ],
)
def test_bad_input_is_refused_before_any_call(
    environment: str | None,
    version: str,
    message: str,
    apps: client.AppsV1Api,
    namespace: str,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    with_actions(fake)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    before = snapshot(apps, namespace)

    with pytest.raises(InvalidInputError, match=message):
        automated_rollback(environment or "staging", version)

    assert fake.requests == []
    assert snapshot(apps, namespace) == before


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_missing_token_block_dispatches_nothing(
    apps: client.AppsV1Api,
    namespace: str,
    fake: FakeGitHubActions,
    local_stack: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    with_actions(fake, token_secret="no-such-block")
    build_history(apps, namespace, ["v1.2.3"])

    with pytest.raises(AccessDeniedError, match="'no-such-block' does not exist"):
        automated_rollback("staging", "v1.2.3")
    assert fake.requests == []


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_a_second_attempt_follows_the_run_it_dispatched_instead_of_dispatching_again(
    apps: client.AppsV1Api,
    simulator_namespace: str,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, simulator_namespace)
    with_actions(fake, environment=None)
    build_history(apps, simulator_namespace, ["v1.2.3"])  # what the workflow would leave
    fake.queued_seconds = 1.0
    fake.refuse_run_reads = 1  # the first attempt fails while following its run

    retried = automated_rollback.with_options(retries=1, retry_delay_seconds=0)
    state = retried(simulator_namespace, "v1.2.3", skip_confirmation=True, return_state=True)

    assert state.is_completed(), state.message
    assert len(fake.dispatches()) == 1
    with get_client(sync_client=True) as prefect:
        assert prefect.read_flow_run(flow_run_id(state)).run_count == 2


@pytest.mark.stack
@pytest.mark.timeout(240)
def test_in_production_the_workflows_rollback_waits_for_the_approval(
    apps: client.AppsV1Api,
    simulator_namespace: str,
    local_stack: StackState,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """skip_confirmation=false (the playbook's command): the image-rollback run the workflow
    starts asks, as production does; approved through the Prefect API, it rolls back and the
    workflow and this run complete."""
    use_services(monkeypatch, tmp_path, simulator_namespace, timeout=60)
    with_actions(fake, environment=None)
    fake.job = run_steps(
        "rollback.yml", {"PREFECT_API_URL": local_stack.prefect_api_url or ""}, {}, VENV_BIN
    )
    build_history(apps, simulator_namespace, ["v1.2.3", "v1.2.4"])
    before = snapshot(apps, simulator_namespace)
    since = datetime.now(UTC)

    run = Background(lambda: automated_rollback(simulator_namespace, "v1.2.3", return_state=True))

    paused = paused_run("image-rollback", since, timeout=120)
    assert "| to | `v1.2.3` |" in approval_artifact(paused)
    assert snapshot(apps, simulator_namespace) == before
    assert fake.runs[0].status == "in_progress"  # the workflow waits with it
    answer(paused, True, "approved from the test")

    state = run.result(timeout=180)
    assert state.is_completed(), (state.message, fake.job_errors)
    assert snapshot(apps, simulator_namespace).image == f"{REPOSITORY}:v1.2.3"
    assert fake.dispatches()[0].body["inputs"]["skip_confirmation"] == "false"


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_workflow_that_succeeds_without_rolling_back_fails_the_verification(
    apps: client.AppsV1Api,
    namespace: str,
    fake: FakeGitHubActions,
    token: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    with_actions(fake)
    fake.job = lambda inputs: "success"  # and nothing done
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])

    state = automated_rollback("staging", "v1.2.3", return_state=True)

    assert state.is_failed()
    message = (
        f"the workflow succeeded but Deployment {namespace}/rag-api runs "
        f"{REPOSITORY}:v1.2.4, not v1.2.3"
    )
    assert message in str(state.message)
    markdown = str(read_flow_run(state).one("markdown").data)
    assert f"FAILED: {message}" in markdown
