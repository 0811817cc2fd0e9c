"""End to end: the simulator goes bad → Prometheus alert → Alertmanager → receiver → a flow run
on the Prefect server, executed by its worker → the Deployment is back on the good version.

Prometheus and Alertmanager here are real processes started for this module: Prometheus
scrapes the session's simulator with the playbook's rules, and Alertmanager runs the shipped
example configuration (deployments/alertmanager-receiver.yml) pointed at the receiver, with
its bearer token from a file, as in production.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from alerting import alert_events, running_receiver, runs_tagged, save_token, wait_final
from cluster import (
    REPOSITORY,
    deployment_body,
    error_ratio,
    eventually,
    replicasets_by_revision,
    wait_rolled_out,
)
from conftest import NOTICES_PATH
from flow_runs import read_flow_run_id
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from playbook.names import ledger_name, target_tag
from playbook.notices import duration_text
from playbook.post_rollback import POST_ROLLBACK_ENV
from receiver.config import load_config
from stack.local import KNOWN_GOOD_SECONDS, StackState
from stack.processes import free_port, stop
from stack.prometheus import (
    render_prometheus_config,
    render_rules,
    start_alertmanager,
    start_prometheus,
)
from stack.sink import WebhookSink
from tasks.concurrency import forget_rollbacks

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

GOOD, BAD = "v1.2.3", "v1.2.4"  # v1.2.4 fails 20 % of requests in stack/simulator.yaml
EXAMPLE = Path(__file__).resolve().parent.parent / "deployments" / "alertmanager-receiver.yml"


@dataclass(frozen=True)
class Pipeline:
    receiver_url: str
    prometheus_url: str
    alertmanager_url: str


@pytest.fixture(scope="module")
def pipeline(
    local_stack: StackState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """Prometheus → Alertmanager (the shipped example) → the receiver (the shipped routes)."""
    root = tmp_path_factory.mktemp("alert-pipeline")
    block = "alert-receiver-token-e2e"
    token_file = root / "token"
    token_file.write_text(save_token(block))
    config = load_config().model_copy(update={"token_secret": block})
    pids: list[int] = []
    with running_receiver(config) as receiver_url:
        try:
            am_port, prom_port = free_port(), free_port()
            am_config = yaml.safe_load(EXAMPLE.read_text())
            am_config["route"].update(group_wait="1s", group_interval="1s")
            webhook = am_config["receivers"][0]["webhook_configs"][0]
            webhook["url"] = f"{receiver_url}/alerts"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
            (root / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
            pids.append(
                start_alertmanager(
                    root / "alertmanager.yml", root / "am-data", am_port, root / "am.log"
                )
            )
            rules = render_rules(root, for_duration="3s")
            prom_config = render_prometheus_config(
                root,
                simulator_port=local_stack.ports.simulator,
                alertmanager_port=am_port,
                rules_path=rules,
                namespace=local_stack.simulator_namespace,
            )
            pids.append(
                start_prometheus(prom_config, root / "prom-data", prom_port, root / "prom.log")
            )
            yield Pipeline(
                receiver_url, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
            )
        finally:
            for pid in reversed(pids):
                stop(pid)


def image(apps: client.AppsV1Api, namespace: str) -> str:
    d = apps.read_namespaced_deployment("rag-api", namespace)
    return str(d.spec.template.spec.containers[0].image)


def test_a_bad_release_is_rolled_back_from_its_alert(
    pipeline: Pipeline,
    local_stack: StackState,
    kube_api: client.ApiClient,
    simulator_namespace: str,
) -> None:
    ns = simulator_namespace
    apps = client.AppsV1Api(kube_api)
    tag = target_tag(ns, "rag-api")
    forget_rollbacks(ledger_name(ns, "rag-api"))
    runs_before = {run.id for run in runs_tagged(tag)}

    deployed = time.monotonic()
    apps.create_namespaced_deployment(ns, deployment_body(f"{REPOSITORY}:{GOOD}"))
    wait_rolled_out(apps, ns, "rag-api")
    eventually(lambda: error_ratio(pipeline.prometheus_url) == 0.0, 40, "a calm error ratio")
    # the alert's rollback goes to the last known-good revision: let this one become it
    time.sleep(max(0.0, deployed + KNOWN_GOOD_SECONDS + 1 - time.monotonic()))

    released = datetime.now(UTC)
    apps.patch_namespaced_deployment(
        "rag-api",
        ns,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{BAD}"}
        ]}}}},
    )  # fmt: skip

    # the alert's flow run appears on the Prefect server, and its worker executes it
    def new_runs() -> list:  # type: ignore[type-arg]
        return [run for run in runs_tagged(tag) if run.id not in runs_before]

    [run] = eventually(new_runs, 90, "a flow run started by the alert")
    final = wait_final(run.id, timeout=120)
    assert final.state is not None and final.state.is_completed(), final.state
    assert final.deployment_id is not None
    assert final.parameters["service"] == "rag-api"
    assert "error rate" in final.parameters["reason"]
    assert final.idempotency_key is not None and final.idempotency_key.startswith("alertmanager:")
    assert {"alert", "automatic", "route:error-rate-critical"} <= set(final.tags)
    assert final.start_time is not None and final.start_time > released

    # the cluster: back on the good version by one undo; the simulator follows it
    assert image(apps, ns) == f"{REPOSITORY}:{GOOD}"
    assert replicasets_by_revision(apps, ns) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{GOOD}",
    }
    wait_rolled_out(apps, ns, "rag-api")
    eventually(
        lambda: (
            httpx.get(f"{local_stack.simulator_url}/version", timeout=2).json()["version"] == GOOD
        ),
        10,
        "the simulator serving the good version",
    )

    # the alert resolves; the receiver records it and starts nothing more
    fingerprint = final.idempotency_key.split(":")[1]
    assert eventually(
        lambda: alert_events("rollback-flows.alert.resolved", fingerprint, timeout=1),
        90,
        "the resolved alert recorded as a Prefect event",
        interval=1,
    )
    assert [r.id for r in new_runs()] == [run.id]
    forget_rollbacks(ledger_name(ns, "rag-api"))


@pytest.fixture
def incident_settings() -> Iterator[None]:
    """The session's post-rollback settings, which the worker reads at every run, for a
    compressed incident: the checklist after the rollback, a 60 s monitor every 6 s that holds
    recovery for 10 s, over 5 s rate windows."""
    path = Path(os.environ[POST_ROLLBACK_ENV])
    saved = path.read_text()
    settings = yaml.safe_load(saved)
    settings["verification"]["after_rollback"] = {"enabled": True, "settle_seconds": 3}
    settings["follow_up"].update(enabled=True, duration_minutes=1.0, interval_minutes=0.1)
    monitor = settings["monitor"]
    monitor.update(window="5s", baseline_minutes=1, evaluation_delay_seconds=2)
    for policy in monitor["indicators"].values():
        policy.update(hold_seconds=10, worse_hold_seconds=10)
    path.write_text(yaml.safe_dump(settings))
    yield
    path.write_text(saved)


def fields(text: str) -> dict[str, str]:
    """`Key: value` lines of a notice."""
    return dict(re.findall(r"(?m)^([A-Z][A-Za-z ]+): (.+)$", text))


def utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)


def test_the_incident_is_told_and_reviewed_from_its_alert(
    pipeline: Pipeline,
    local_stack: StackState,
    kube_api: client.ApiClient,
    simulator_namespace: str,
    alert_sink: WebhookSink,
    incident_settings: None,
) -> None:
    ns = simulator_namespace
    apps = client.AppsV1Api(kube_api)
    tag = target_tag(ns, "rag-api")
    forget_rollbacks(ledger_name(ns, "rag-api"))
    runs_before = {run.id for run in runs_tagged(tag)}
    notices_before = len(alert_sink.received(NOTICES_PATH))
    # the previous test's Deployment is gone with its ReplicaSets (garbage collected)
    eventually(lambda: not apps.list_namespaced_replica_set(ns).items, 60, "no ReplicaSet left")
    deployed = time.monotonic()
    apps.create_namespaced_deployment(ns, deployment_body(f"{REPOSITORY}:{GOOD}"))
    wait_rolled_out(apps, ns, "rag-api")
    eventually(lambda: error_ratio(pipeline.prometheus_url) == 0.0, 40, "a calm error ratio")
    # the alert's rollback goes to the last known-good revision: let this one become it
    time.sleep(max(0.0, deployed + KNOWN_GOOD_SECONDS + 1 - time.monotonic()))
    apps.patch_namespaced_deployment(
        "rag-api",
        ns,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{BAD}"}
        ]}}}},
    )  # fmt: skip

    # the alert's guarded run, its rollback run and the follow-up monitor, all on the worker
    [guarded] = eventually(
        lambda: [r for r in runs_tagged(tag) if r.id not in runs_before], 90, "the alert's run"
    )
    guarded = wait_final(guarded.id, timeout=120)
    assert guarded.state is not None and guarded.state.is_completed(), guarded.state
    with get_client(sync_client=True) as prefect:
        children = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[guarded.id])
            )
        )
        assert len(children) == 1, (
            read_flow_run_id(guarded.id).keyed("guarded-rollback-" + ns + "-rag-api").data
        )
        [rollback] = children
        [monitor] = eventually(
            lambda: [
                r
                for r in prefect.read_flow_runs()
                if r.idempotency_key == f"post-rollback-monitor:{rollback.id}"
            ],
            10,
            "the follow-up monitor run",
        )
    monitor = wait_final(monitor.id, timeout=120)
    assert monitor.state is not None and monitor.state.is_completed(), monitor.state
    assert image(apps, ns) == f"{REPOSITORY}:{GOOD}"
    alert_started = datetime.fromisoformat(guarded.parameters["alert_started_at"])

    # the notices, as the sink received them
    notices = [d.body["text"] for d in alert_sink.received(NOTICES_PATH)[notices_before:]]
    titles = [n.splitlines()[0] for n in notices]
    if titles != [
        "🚨 INCIDENT: Production Rollback Initiated",
        "✅ RESOLVED: Production Rollback Complete",
    ]:
        report = read_flow_run_id(monitor.id).keyed("post-rollback-monitor-rag-api").data
        pytest.fail(f"notices {titles}, the monitor's report (whole, not cut):\n{report}")
    start, resolved = (fields(n) for n in notices)
    assert start["Action"] == f"Rolling back from {BAD} to {GOOD}"
    assert "error rate" in start["Reason"].lower()
    assert rollback.start_time is not None
    # the notice shows whole seconds; the rollback can start within the alert's second
    started = utc(start["Time"])
    assert (
        alert_started.replace(microsecond=0)
        <= started
        <= rollback.start_time + timedelta(seconds=60)
    )
    assert resolved["Action Taken"] == f"Rolled back from {BAD} to {GOOD}"
    assert resolved["Root Cause"] == "Under Investigation"
    assert utc(resolved["Time Started"]) == alert_started.replace(microsecond=0)
    assert monitor.start_time is not None and monitor.end_time is not None
    ended = utc(resolved["Time Resolved"])
    assert monitor.start_time - timedelta(seconds=1) <= ended <= monitor.end_time
    assert resolved["Duration"] == duration_text((ended - utc(resolved["Time Started"])).seconds)

    # the review, in the monitor run: its timeline is the runs' own times and the alert's
    record = read_flow_run_id(monitor.id)
    review = str(record.keyed("post-incident-review-rag-api").data)
    timeline = dict(re.findall(r"(?m)^\| (\d\d:\d\d:\d\d) \| ([^|]+?) \|", review))
    by_event = {event: at for at, event in timeline.items()}
    assert by_event["Issue detected (the alert started)"] == f"{alert_started:%H:%M:%S}"
    assert by_event["Rollback initiated"] == f"{rollback.start_time:%H:%M:%S}"
    since = datetime.fromisoformat(monitor.parameters["since"])
    assert by_event["Rollback complete"] == f"{since:%H:%M:%S}"
    rollback_record = read_flow_run_id(rollback.id)
    verified = rollback_record.keyed("verify-rollback-rag-api").created
    assert by_event["Verification complete"] == f"{verified:%H:%M:%S}"
    assert re.search(r"\*\*Impact\*\*: Error Rate: peak (1|2)\d(\.\d+)? %", review), review
    assert f"- image: `{REPOSITORY}:{GOOD}` → `{REPOSITORY}:{BAD}`" in review
    # the bad release's error lines stopped with the rollback: no new pattern since
    markdown = str(record.keyed("post-rollback-monitor-rag-api").data)
    patterns = markdown.split("## Error patterns in the logs since the rollback", 1)[1]
    assert "New ones only: " in patterns and patterns.rstrip().endswith("None.")
    assert "TimeoutError" not in patterns
    forget_rollbacks(ledger_name(ns, "rag-api"))
