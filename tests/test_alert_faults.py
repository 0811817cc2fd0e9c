"""An alert on a bad day, on a local stack of its own with the alert receiver: the real
Prometheus fires, the real Alertmanager delivers to the real receiver, which starts
`guarded-rollback` on the Prefect server, whose worker rolls the Deployment back.

Faults: the Prefect server stopped while the alert is delivered, then started again; the
receiver killed (SIGKILL) while it handles a delivery, then started again. Each test asserts
what Alertmanager delivered (its alerts and delivery counters), the flow runs the Prefect server
holds (exactly one per alert) and the Deployment (exactly one undo: revisions, template,
ReplicaSets).

The two tests share one stack (its simulator follows `production`): each releases its own
Deployment there, the first a version with 20 % errors (the error-rate alert), the second a
slow one (the latency alert), so that the second's "before the release" window holds no
critical stretch of its own indicator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alerting import alert_events, count_flow_runs, runs_tagged, wait_final
from cluster import (
    REPOSITORY,
    delete_deployment,
    deployment_body,
    error_ratio,
    eventually,
    snapshot,
    wait_rolled_out,
)
from conftest import write_post_rollback_settings
from faults import (
    Toxiproxy,
    alertmanager_metric,
    kill_receiver,
    start_prefect_server_again,
    start_receiver,
    stop_prefect_server,
)
from flow_runs import read_flow_run_id
from kubernetes import client, config
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.objects import FlowRun

from playbook.names import target_tag
from playbook.post_rollback import POST_ROLLBACK_ENV
from receiver.app import UNAVAILABLE
from stack.config import Ports
from stack.local import KNOWN_GOOD_SECONDS, LocalStack, StackState
from stack.prefect_worker import WORK_POOL
from stack.processes import free_port
from stack.prometheus import p99_latency_expr
from stack.sink import WebhookSink

pytestmark = [pytest.mark.stack, pytest.mark.faults, pytest.mark.timeout(180)]

GOOD = "v1.2.3"
ERRORS = "v1.2.4"  # 20 % of requests fail: RollbackHighErrorRate, critical
SLOW = "v1.2.5-very-slow"  # P99 about 1.75 s: RollbackHighLatency, critical
ALERT = "alertmanager_notification_requests"  # Alertmanager's delivery attempts (and failures)
DEPLOYMENT = "guarded-rollback/alert"


@dataclass
class AlertStack:
    state: StackState
    api: client.ApiClient
    work: Path

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def namespace(self) -> str:
        return self.state.simulator_namespace

    def deliveries(self) -> tuple[float, float]:
        """Alertmanager's webhook delivery attempts so far: (all, failed)."""
        return (
            alertmanager_metric(self.state, f"{ALERT}_total", integration="webhook"),
            alertmanager_metric(self.state, f"{ALERT}_failed_total", integration="webhook"),
        )

    def receiver_health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.state.ports.receiver}/health"
        return dict(httpx.get(url, timeout=10).json())

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        """The critical alerts `alertname` Alertmanager holds as active."""
        response = httpx.get(
            f"{self.state.alertmanager_url}/api/v2/alerts",
            params={"filter": [f'alertname="{alertname}"', 'severity="critical"']},
            timeout=5,
        )
        response.raise_for_status()
        return [a for a in response.json() if a["status"]["state"] == "active"]


@pytest.fixture(scope="module")
def alert_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStack]:
    """A stack with the Prefect server, its worker and the alert receiver, for this module."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    work = tmp_path_factory.mktemp("alert-faults")
    sink = WebhookSink()
    sink.start()
    ports = Ports(*(free_port() for _ in range(6)))
    ns = "production"
    stack = LocalStack(
        f"faults-{os.getpid()}", ports, simulator_namespace=ns, prefect=True, receiver=True
    )
    with pytest.MonkeyPatch.context() as mp:
        # What the session's stack does too: no checklist after each rollback, no 30-minute
        # monitor run; the notices to a sink of this module.
        settings = write_post_rollback_settings(
            work, after_rollback={"enabled": False}, enabled=False
        )
        mp.setenv(POST_ROLLBACK_ENV, str(settings))
        mp.setenv("ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL", f"{sink.url}/notices")
        mp.setenv("PREFECT_API_URL", f"http://127.0.0.1:{ports.prefect}/api")
        try:
            state = stack.up()
            for name, value in state.env().items():
                mp.setenv(name, value)
            api = config.new_client_from_config(config_file=state.kubeconfig)
            client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
            with temporary_settings(
                {PREFECT_API_URL: state.prefect_api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
            ):
                yield AlertStack(state, api, work)
            api.close()
        finally:
            stack.down()
            sink.stop()


@pytest.fixture(scope="module")
def toxiproxy(alert_stack: AlertStack) -> Iterator[Toxiproxy]:
    server = Toxiproxy(alert_stack.work / "toxiproxy.log")
    server.start()
    yield server
    server.stop()


def release_fresh(stack: AlertStack, good: str) -> None:
    """`rag-api` created afresh at `good` (revision 1), its earlier ReplicaSets gone."""
    apps, ns = stack.apps, stack.namespace
    delete_deployment(apps, ns)
    deployed = time.monotonic()
    apps.create_namespaced_deployment(ns, deployment_body(f"{REPOSITORY}:{good}"))
    wait_rolled_out(apps, ns, "rag-api")
    # the alert's rollback goes to the last known-good revision: let this one become it
    time.sleep(max(0.0, deployed + KNOWN_GOOD_SECONDS + 1 - time.monotonic()))


def release(stack: AlertStack, version: str) -> None:
    """The bad release: the template set to `version` (revision 2)."""
    stack.apps.patch_namespaced_deployment(
        "rag-api",
        stack.namespace,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{version}"}
        ]}}}},
    )  # fmt: skip
    wait_rolled_out(stack.apps, stack.namespace, "rag-api")


def p99(prometheus_url: str) -> float | None:
    """rag-api's live P99 latency (5 s window); None without data."""
    response = httpx.get(
        f"{prometheus_url}/api/v1/query",
        params={"query": p99_latency_expr("5s", "rag-api")},
        timeout=5,
    )
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def serving(stack: AlertStack, version: str) -> None:
    eventually(
        lambda: (
            httpx.get(f"{stack.state.simulator_url}/version", timeout=2).json()["version"]
            == version
        ),
        20,
        f"the simulator serving {version}",
        interval=0.2,
    )


def pause_work_pool(paused: bool) -> None:
    """Pause (or resume) the stack's work pool: its worker submits no run while paused."""
    with get_client(sync_client=True) as prefect:
        prefect.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=paused))


@pytest.fixture(autouse=True)
def resume_work_pool(alert_stack: AlertStack) -> Iterator[None]:
    yield
    pause_work_pool(False)


def new_runs(tag: str, before: set[Any]) -> list[FlowRun]:
    return [run for run in runs_tagged(tag) if run.id not in before]


def assert_rolled_back_once(stack: AlertStack, bad: str, generation_before: int) -> None:
    """One undo: revision 3 runs the good template, the bad one's ReplicaSet kept as 2."""
    after = snapshot(stack.apps, stack.namespace)
    assert after.image == f"{REPOSITORY}:{GOOD}"
    assert after.replicasets == {2: f"{REPOSITORY}:{bad}", 3: f"{REPOSITORY}:{GOOD}"}
    assert after.generation == generation_before + 1


def assert_guarded_rolled_back(run: FlowRun) -> FlowRun:
    """The guarded-rollback run, once it completed having rolled back."""
    final = wait_final(run.id, timeout=120)
    assert final.state is not None and final.state.is_completed(), final.state
    outcome = read_flow_run_id(final.id).keyed("guarded-rollback-production-rag-api").data
    assert "# Guarded rollback of production/rag-api: rolled_back" in str(outcome)
    return final


def test_prefect_down_then_up_alertmanager_redelivers_one_run(alert_stack: AlertStack) -> None:
    """The Prefect server is stopped before the bad release; while it is down, Alertmanager
    delivers the alert and the receiver answers 503, again and again, and nothing changes.
    The server starts again: Alertmanager's next delivery starts one guarded-rollback run,
    which undoes the release once."""
    stack, ns = alert_stack, alert_stack.namespace
    tag = target_tag(ns, "rag-api")
    release_fresh(stack, GOOD)
    serving(stack, GOOD)
    eventually(lambda: error_ratio(stack.state.prometheus_url) == 0.0, 30, "a calm error ratio")
    runs_before = {run.id for run in runs_tagged(tag)}
    assert count_flow_runs(DEPLOYMENT) == 0

    stop_prefect_server(stack.state)
    _, failed_before = stack.deliveries()
    unavailable_before = stack.receiver_health()["alerts"].get(UNAVAILABLE, 0)
    released = datetime.now(UTC)
    release(stack, ERRORS)
    at_release = snapshot(stack.apps, ns)
    # Alertmanager delivers, the receiver answers 503 (it cannot reach Prefect) within 8 s,
    # Alertmanager delivers again (a retry it gives up on at its 10 s deadline fails too).
    eventually(
        lambda: stack.receiver_health()["alerts"].get(UNAVAILABLE, 0) > unavailable_before,
        60,
        "the receiver answering the alert 503",
    )
    eventually(
        lambda: stack.deliveries()[1] >= failed_before + 2,
        30,
        "Alertmanager delivering again after the 503",
    )
    health = stack.receiver_health()
    assert health["prefect"].startswith("unreachable"), health
    assert "started" not in health["alerts"]
    [alert] = stack.firing("RollbackHighErrorRate")
    assert snapshot(stack.apps, ns) == at_release  # nothing changed while Prefect was down

    start_prefect_server_again(stack.state)
    [run] = eventually(lambda: new_runs(tag, runs_before), 60, "the run of the redelivery")
    run = assert_guarded_rolled_back(run)

    assert run.idempotency_key is not None
    assert run.idempotency_key.startswith(f"alertmanager:{alert['fingerprint']}:")
    assert run.start_time is not None and run.start_time > released
    assert_rolled_back_once(stack, ERRORS, at_release.generation)
    serving(stack, GOOD)
    # Alertmanager goes on delivering (the alert resolves): still the one run.
    eventually(
        lambda: alert_events("rollback-flows.alert.resolved", alert["fingerprint"], timeout=1),
        60,
        "the resolved alert recorded",
        interval=1,
    )
    assert [r.id for r in new_runs(tag, runs_before)] == [run.id]
    assert count_flow_runs(DEPLOYMENT) == 1
    assert stack.receiver_health()["alerts"].get("started") == 1


def test_receiver_killed_mid_delivery_loses_no_alert(
    alert_stack: AlertStack, toxiproxy: Toxiproxy
) -> None:
    """The receiver reaches the Prefect server through a proxy that makes each answer 0.7 s
    late. The moment the alert's run exists on the server (the receiver still waits for the
    answer, and has not answered Alertmanager), the receiver is killed (SIGKILL). Alertmanager's
    delivery fails and it delivers again to the restarted receiver, which finds the run by its
    idempotency key: the alert is not lost, and starts one run and one undo.

    The work pool is paused until the redelivery is recorded, as when every worker is busy:
    the run waits, so the alert is still firing when Alertmanager delivers it again (a run
    that rolled back at once would resolve it first on a slow machine, and the redelivery
    would be the resolved alert)."""
    stack, ns = alert_stack, alert_stack.namespace
    tag = target_tag(ns, "rag-api")
    release_fresh(stack, GOOD)
    serving(stack, GOOD)
    eventually(
        lambda: (v := p99(stack.state.prometheus_url)) is not None and v < 0.3,
        30,
        "a calm P99",
    )
    runs_before = {run.id for run in runs_tagged(tag)}
    started_before = count_flow_runs(DEPLOYMENT)
    prefect = toxiproxy.proxy("prefect", f"127.0.0.1:{stack.state.ports.prefect}")
    prefect.add_toxic("latency", latency=700)
    kill_receiver(stack.state)
    start_receiver(stack.state, f"http://{prefect.listen}/api")
    pause_work_pool(True)

    release(stack, SLOW)
    at_release = snapshot(stack.apps, ns)
    [run] = eventually(
        lambda: new_runs(tag, runs_before), 60, "the alert's run created", interval=0.05
    )
    _, failed_before = stack.deliveries()
    kill_receiver(stack.state)
    [alert] = stack.firing("RollbackHighLatency")
    fingerprint = alert["fingerprint"]
    assert run.idempotency_key is not None
    assert run.idempotency_key.startswith(f"alertmanager:{fingerprint}:")
    # The delivery the receiver died in is a failure to Alertmanager, and so are its retries
    # while nothing listens.
    eventually(lambda: stack.deliveries()[1] > failed_before, 30, "Alertmanager's delivery failed")
    start_receiver(stack.state)
    # Alertmanager delivers again; the new receiver finds the run and starts nothing.
    [duplicate] = eventually(
        lambda: alert_events("rollback-flows.alert.duplicate", fingerprint, timeout=1),
        60,
        "the redelivery recorded as a duplicate",
        interval=1,
    )
    assert duplicate.payload["flow_run_id"] == str(run.id)
    assert not alert_events("rollback-flows.alert.started", fingerprint, timeout=0)
    assert snapshot(stack.apps, ns) == at_release  # the run waited in the paused pool
    pause_work_pool(False)
    assert_guarded_rolled_back(run)

    assert_rolled_back_once(stack, SLOW, at_release.generation)
    assert [r.id for r in new_runs(tag, runs_before)] == [run.id]
    assert count_flow_runs(DEPLOYMENT) == started_before + 1
    assert stack.receiver_health()["alerts"].get("duplicate", 0) >= 1
    time.sleep(2)  # Alertmanager's next group interval: still the one run
    assert count_flow_runs(DEPLOYMENT) == started_before + 1
