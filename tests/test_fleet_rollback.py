"""Many services rolled back in one incident (fleet-rollback): side by side, each under its own
lock, one failure not stopping the others, one summary table; bad input changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from approvals import Background, answer, paused_run
from cluster import REPOSITORY, build_history, replicasets_by_revision, snapshot
from flow_runs import read_flow_run
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from flows.fleet_rollback import choose_services, fleet_rollback
from playbook.errors import InvalidInputError
from playbook.fleet import FleetReport, FleetRow
from playbook.services import SERVICES_ENV

GOOD, BAD = "v1.2.3", "v1.2.4"


def fleet_approval(run_id: object) -> str:
    """The plan the paused fleet run asks a person to approve, as the server stores it."""
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)  # type: ignore[arg-type]
    assert run.state is not None
    [plan] = [
        a
        for a in read_flow_run(run.state).of_type("markdown")
        if a.key == "approval-fleet-rollback"
    ]
    return str(plan.data)


SERVICES = ("svc-a", "svc-b", "svc-c")
READY_DELAY = "rollback-flows.dev/ready-delay"


def test_the_table_names_every_service_and_the_failures() -> None:
    report = FleetReport(
        (
            FleetRow("svc-a", "production", "shop", "undo from revision 2 to 1", True, 1.25,
                     BAD, GOOD),
            FleetRow("svc-b", "production", "shop", "no revision | before 1", False, 0.5),
        ),
        dry_run=False,
        total_seconds=1.3,
    )  # fmt: skip
    text = report.to_markdown()
    assert text.splitlines()[0] == (
        "# Fleet rollback: 1 of 2 services rolled back in 1.3 s; failed: svc-b (production)"
    )
    row = f"| svc-a | production (`shop`) | `{BAD}` | `{GOOD}` | undo from revision 2 to 1 | 1.2 |"
    assert row in text
    assert (
        "| svc-b | production (`shop`) | `?` | `?` | FAILED: no revision \\| before 1 | 0.5 |"
        in text
    )
    assert FleetReport(report.rows[:1], True, 0.2).summary() == "1 of 1 services planned in 0.2 s"


@pytest.fixture
def fleet(
    kube_api: client.ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Three services, each in its own fresh namespace: svc-a and svc-b released a bad v1.2.4
    over v1.2.3, svc-c has only ever had one revision (nothing to roll back to). Their pods
    are ready 1.5 s after they start (a KWOK stage), so a rollout lasts as long: longer than
    a single rollback waits before it shows its rollout's progress."""
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    namespaces = {name: f"f-{uuid.uuid4().hex[:6]}-{name}" for name in SERVICES}
    body = "".join(
        f"""
  {name}:
    namespace: {ns}
    deployment: {name}
    container: rag-api
    image_repository: {REPOSITORY}
    rollout_timeout_seconds: 60
"""
        for name, ns in namespaces.items()
    )
    path = tmp_path / "services.yaml"
    path.write_text(f"default_service: svc-a\nservices:{body}")
    # the approval test makes each namespace a production that asks
    path.with_name("asking.yaml").write_text(
        f"default_service: svc-a\nservices:{body}".replace(
            "    namespace: ",
            "    environments:\n      production:\n"
            "        skip_confirmation: false\n        approval_timeout_minutes: 2\n"
            "        namespace: ",
        )
    )
    monkeypatch.setenv(SERVICES_ENV, str(path))
    for name, ns in namespaces.items():
        core.create_namespace({"metadata": {"name": ns}})
        template = {
            "metadata": {"labels": {"app": name}, "annotations": {READY_DELAY: "1.5s"}},
            "spec": {"containers": [{"name": "rag-api", "image": f"{REPOSITORY}:{GOOD}"}]},
        }
        versions = [GOOD, BAD] if name != "svc-c" else [BAD]
        build_history(apps, ns, versions, name=name, template=template)
    yield namespaces
    for ns in namespaces.values():
        core.delete_namespace(ns)


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_a_fleet_rolls_back_side_by_side_and_one_failure_stops_no_other(
    kube_api: client.ApiClient, fleet: dict[str, str]
) -> None:
    apps = client.AppsV1Api(kube_api)
    untouched = snapshot(apps, fleet["svc-c"], "svc-c")

    state = fleet_rollback(services=list(SERVICES), max_parallel=3, return_state=True)

    assert state.is_failed()
    assert "2 of 3 services rolled back" in str(state.message)
    assert "failed: svc-c" in str(state.message)
    # the cluster: a and b back on v1.2.3 by one undo each; c untouched
    for name in ("svc-a", "svc-b"):
        ns = fleet[name]
        assert (
            apps.read_namespaced_deployment(name, ns).spec.template.spec.containers[0].image
            == f"{REPOSITORY}:{GOOD}"
        )
        assert replicasets_by_revision(apps, ns) == {
            2: f"{REPOSITORY}:{BAD}",
            3: f"{REPOSITORY}:{GOOD}",
        }
    assert snapshot(apps, fleet["svc-c"], "svc-c") == untouched
    # the server: one summary table, and three kubernetes-rollback runs that overlapped
    table = str(read_flow_run(state).keyed("fleet-rollback").data)
    for name in ("svc-a", "svc-b"):
        assert f"| {name} | {fleet[name]} (`{fleet[name]}`) | `{BAD}` | `{GOOD}` | " in table
    assert "| svc-c |" in table and "FAILED: " in table
    # the fleet's progress, one artifact of its own run, and none per service
    progress = read_flow_run(state).one("progress")
    assert progress.data == 100.0
    assert progress.description == "rollback: 3 of 3 services done"
    with get_client(sync_client=True) as prefect:
        children = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(
                    any_=[state.state_details.flow_run_id]
                )
            )
        )
    assert sorted(run.parameters["service"] for run in children) == list(SERVICES)
    starts = [run.start_time for run in children]
    ends = [run.end_time for run in children]
    assert None not in starts and None not in ends
    assert max(starts) < min(ends)  # type: ignore[type-var]  # side by side, not in turn
    for run in children:
        assert run.state is not None
        assert read_flow_run(run.state).of_type("progress") == []
    # each service's steps are in its run's logs, without Prefect's note on every task run in
    # a thread (each call has its own request timeout; fifty of those notes would bury the rest)
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id for run in children]))
        )
    messages = [log.message for log in logs]
    assert any("roll Deployment" in m and "back from revision 2" in m for m in messages)
    assert not [m for m in messages if "running in a worker thread" in m]


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_bad_input_changes_nothing_and_a_selector_reads_the_cluster(
    kube_api: client.ApiClient, fleet: dict[str, str]
) -> None:
    apps = client.AppsV1Api(kube_api)
    before = {name: snapshot(apps, ns, name) for name, ns in fleet.items()}
    for call, message in (
        (lambda: fleet_rollback(services=["svc-a", "nope"]), "unknown service 'nope'"),
        (lambda: fleet_rollback(), "either services"),
        (lambda: fleet_rollback(services=["svc-a"], selector="app=svc-a"), "either services"),
        (lambda: fleet_rollback(selector="app=absent"), "no service's Deployment matches"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            call()
    assert {name: snapshot(apps, ns, name) for name, ns in fleet.items()} == before
    chosen = choose_services(None, "app in (svc-b, svc-c)", None)
    assert [cfg.name for cfg in chosen] == ["svc-b", "svc-c"]


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_in_production_the_whole_fleet_is_approved_once(
    kube_api: client.ApiClient,
    fleet: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SERVICES_ENV, str(tmp_path / "asking.yaml"))
    apps = client.AppsV1Api(kube_api)
    before = {name: snapshot(apps, fleet[name], name) for name in ("svc-a", "svc-b")}
    since = datetime.now(UTC)
    run = Background(
        lambda: fleet_rollback(
            services=["svc-a", "svc-b"],
            reason="Monitoring shows elevated errors",
            return_state=True,
        )
    )
    run_id = paused_run("fleet-rollback", since)
    plan = fleet_approval(run_id)
    assert plan.startswith("# Fleet rollback plan: 2 of 2 services planned")
    for name in ("svc-a", "svc-b"):
        assert f"| {name} | production (`{fleet[name]}`) | `{BAD}` | `{GOOD}` | dry run" in plan
        assert snapshot(apps, fleet[name], name) == before[name]  # nothing changed yet
    answer(run_id, True, "both, now")
    state = run.result()
    assert state.is_completed(), state
    for name in ("svc-a", "svc-b"):
        assert replicasets_by_revision(apps, fleet[name]) == {
            2: f"{REPOSITORY}:{BAD}",
            3: f"{REPOSITORY}:{GOOD}",
        }
