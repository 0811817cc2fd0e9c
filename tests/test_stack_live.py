"""The session's stack end to end: a Deployment's image drives the simulator, Prometheus and
Alertmanager see it."""

from __future__ import annotations

import time

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

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
