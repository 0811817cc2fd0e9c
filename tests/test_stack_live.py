"""The session's stack end to end: a Deployment's image drives the simulator, Prometheus and
Alertmanager see it."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from cluster import eventually
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.context import FlowRunContext
from prefect.events.filters import EventAnyResourceFilter, EventFilter

from stack.local import StackState
from stack.manifests import deployment_manifest
from stack.prometheus import error_ratio_expr
from stack.sink import Delivery, WebhookSink

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def error_ratio(state: StackState) -> float | None:
    response = httpx.get(
        f"{state.prometheus_url}/api/v1/query",
        params={"query": error_ratio_expr("5s", "rag-api")},
        timeout=5,
    )
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for_ratio(state: StackState, low: float, high: float, timeout: float = 40) -> float:
    deadline = time.monotonic() + timeout
    ratio = None
    while time.monotonic() < deadline:
        ratio = error_ratio(state)
        if ratio is not None and low <= ratio <= high:
            return ratio
        time.sleep(0.5)
    raise AssertionError(f"error ratio {ratio} not within [{low}, {high}] after {timeout}s")


def wait_for_version(state: StackState, version: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = httpx.get(f"{state.simulator_url}/version", timeout=2).json()["version"]
        if seen == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the simulator reports {seen}, not {version}, after {timeout}s")


def deploy(apps: client.AppsV1Api, namespace: str, image: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment_manifest(image))


def test_simulator_follows_the_deployed_tag_into_prometheus_and_alertmanager(
    local_stack: StackState,
    kube_api: client.ApiClient,
    simulator_namespace: str,
    alert_sink: WebhookSink,
) -> None:
    apps = client.AppsV1Api(kube_api)
    deploy(apps, simulator_namespace, "ghcr.io/acme/rag-api:v1.2.3")
    wait_for_version(local_stack, "v1.2.3")
    wait_for_ratio(local_stack, 0.0, 0.0)

    switched = time.time()
    apps.patch_namespaced_deployment(
        "rag-api",
        simulator_namespace,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": "ghcr.io/acme/rag-api:v1.2.4"}
        ]}}}},
    )  # fmt: skip
    wait_for_version(local_stack, "v1.2.4")
    # Once the 5 s window holds only v1.2.4's requests, the ratio is its configured 20 %.
    wait_for_ratio(local_stack, 0.19, 0.21)

    def critical_error_rate(delivery: Delivery) -> bool:
        return delivery.received_at > switched and any(
            alert["status"] == "firing"
            and alert["labels"].get("alertname") == "RollbackHighErrorRate"
            and alert["labels"].get("severity") == "critical"
            for alert in delivery.body.get("alerts", [])
        )

    delivery = alert_sink.wait_for(critical_error_rate, timeout=40)
    assert delivery.path == "/alerts"
    assert delivery.body["version"] == "4"
    firing = [a for a in delivery.body["alerts"] if a["status"] == "firing"]
    assert {a["labels"]["service"] for a in firing} == {"rag-api"}


def test_rag_api_pods_show_the_services_own_log(
    local_stack: StackState, kube_api: client.ApiClient, simulator_namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    deploy(apps, simulator_namespace, "ghcr.io/acme/rag-api:v1.2.4")
    wait_for_version(local_stack, "v1.2.4")

    def first_pod_log() -> str:
        pods = core.list_namespaced_pod(simulator_namespace, label_selector="app=rag-api").items
        # a pod of the previous test's Deployment may still be listed while it is deleted
        running = [
            p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        ]
        if not running:
            return ""
        try:
            return str(
                core.read_namespaced_pod_log(
                    running[0].metadata.name,
                    simulator_namespace,
                    container="rag-api",
                    tail_lines=20,
                )
            )
        except ApiException as exc:
            if exc.status != 404:  # gone between the list and the read: look again
                raise
            return ""

    deadline = time.monotonic() + 20
    log = ""
    while time.monotonic() < deadline and "ERROR" not in log:
        log = first_pod_log()
        time.sleep(0.5)
    assert "ERROR POST /v1/query 500" in log
    assert "(version v1.2.4)" in log


def test_the_prefect_servers_services_run_beside_its_api_and_record_a_flows_task_runs(
    local_stack: StackState,
) -> None:
    """The API process runs no background services; the services process, on Redis, records
    what a flow reports only through events: its task runs and the run's events."""

    def argv(part: str) -> list[str]:
        raw = Path(f"/proc/{local_stack.pids[part]}/cmdline").read_bytes()
        return raw.decode().split("\0")

    assert "--no-services" in argv("prefect")
    assert argv("prefect_services")[-3:] == ["services", "start", ""]

    @task
    def step(n: int) -> int:
        return n + 1

    @flow
    def two_steps() -> UUID:
        step(1)
        step(2)
        run = FlowRunContext.get()
        assert run is not None and run.flow_run is not None
        return run.flow_run.id

    run_id = two_steps()
    with get_client(sync_client=True) as prefect:

        def recorded() -> list[str]:
            runs = prefect.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            return sorted(r.name for r in runs if r.state is not None and r.state.is_completed())

        eventually(lambda: len(recorded()) == 2, 30, "the two task runs, recorded")
        assert [name.split("-")[0] for name in recorded()] == ["step", "step"]

        def events() -> list[str]:
            page = prefect.request(
                "POST",
                "/events/filter",
                json={
                    "filter": EventFilter(
                        any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run_id}"])
                    ).model_dump(mode="json")
                },
            ).json()
            return [e["event"] for e in page["events"]]

        eventually(
            lambda: "prefect.task-run.Completed" in events(), 30, "the run's events, persisted"
        )
