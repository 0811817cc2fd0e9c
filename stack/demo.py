"""`make demo`: a bad release of rag-api on the local stack, undone by the rollback flow.

Starts the local stack with a Prefect server and its UI, deploys rag-api v1.2.3 (3 replicas)
to the `production` namespace, releases the bad v1.2.4 (20 % of requests fail, as Prometheus
shows), runs the `kubernetes-rollback` flow against the Prefect server, and shows the error
rate return to zero. The stack keeps running afterwards so that the runs, their artifacts and
the metrics can be explored; `make stack-down` stops it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import httpx
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from stack.config import DEMO_PORTS
from stack.local import LocalStack, StackState
from stack.prometheus import error_ratio_expr

NAMESPACE = "production"
IMAGE = "ghcr.io/acme/rag-api"
GOOD, BAD = "v1.2.3", "v1.2.4"


def main() -> int:
    stack = LocalStack(
        "rollback-flows",
        DEMO_PORTS,
        simulator_namespace=NAMESPACE,
        webhook_url=os.environ.get("ROLLBACK_FLOWS_ALERT_WEBHOOK_URL"),
        prefect=True,
        prefect_ui=True,
    )
    state = stack.up()
    os.environ.update(state.env())
    api = config.new_client_from_config(config_file=state.kubeconfig)
    apps = client.AppsV1Api(api)

    _say(f"deploying rag-api {GOOD} to {NAMESPACE}")
    _deploy(api, f"{IMAGE}:{GOOD}")
    _wait_rolled_out(apps)
    _say(f"releasing the bad {BAD}")
    apps.patch_namespaced_deployment(
        "rag-api", NAMESPACE, _template_patch(f"{IMAGE}:{BAD}", "release v1.2.4")
    )
    _wait_rolled_out(apps)
    ratio = _wait_error_ratio(state, lambda r: r > 0.15, "reach the bad release's level")
    _say(f"error ratio after the bad release: {ratio:.1%} (critical > 5 %)")

    _say("starting the kubernetes-rollback/default deployment, as an SRE would from the UI")
    # Prefect read its settings when imported, before the stack existed.
    with temporary_settings({PREFECT_API_URL: state.prefect_api_url}):
        run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call, not a coroutine
            "kubernetes-rollback/default",
            # production asks for an approval first; the demo goes ahead without asking
            parameters={"service": "rag-api", "namespace": NAMESPACE, "skip_confirmation": True},
            timeout=300,
        )
    ui = state.prefect_api_url.removesuffix("/api") if state.prefect_api_url else ""
    _say(f"flow run {run.name}: {run.state_name} ({ui}/runs/flow-run/{run.id})")
    if not run.state or not run.state.is_completed():
        raise SystemExit(
            f"the rollback run ended {run.state_name}: {run.state.message if run.state else ''}"
        )
    image = (
        apps.read_namespaced_deployment("rag-api", NAMESPACE).spec.template.spec.containers[0].image
    )
    _say(f"rag-api now runs {image}")
    ratio = _wait_error_ratio(state, lambda r: r < 0.01, "fall below 1 %")
    _say(f"error ratio after the rollback: {ratio:.1%}")

    print(
        "\nThe local stack is running:\n"
        f"  Prefect UI     {ui}  (flow runs and their artifacts)\n"
        f"  Prometheus     {state.prometheus_url}\n"
        f"  Alertmanager   {state.alertmanager_url}\n"
        f"  rag-api        {state.simulator_url}/version\n"
        f"  kubeconfig     {state.kubeconfig}\n"
        "Point a shell at it with: eval $(.venv/bin/python -m stack env)\n"
        "Stop it with: make stack-down"
    )
    return 0


def _deploy(api: client.ApiClient, image: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    labels = {"app": "rag-api"}
    body: dict[str, Any] = {
        "metadata": {
            "name": "rag-api",
            "labels": labels,
            "annotations": {"kubernetes.io/change-cause": "initial release"},
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "rag-api", "image": image}]},
            },
        },
    }
    try:
        apps.create_namespaced_deployment(NAMESPACE, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        apps.patch_namespaced_deployment("rag-api", NAMESPACE, _template_patch(image, "reset"))


def _template_patch(image: str, cause: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
        "spec": {"template": {"spec": {"containers": [{"name": "rag-api", "image": image}]}}},
    }


def _wait_rolled_out(apps: client.AppsV1Api, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = apps.read_namespaced_deployment("rag-api", NAMESPACE)
        s = dep.status
        if (
            (s.observed_generation or 0) >= dep.metadata.generation
            and s.updated_replicas == dep.spec.replicas
            and s.available_replicas == dep.spec.replicas
            and (s.replicas or 0) == dep.spec.replicas
        ):
            return
        time.sleep(0.2)
    raise SystemExit("rag-api did not roll out within 120s")


def _wait_error_ratio(state: StackState, done: Any, what: str, timeout: float = 90) -> float:
    _say(f"waiting for the error ratio in Prometheus to {what}")
    query = error_ratio_expr("15s")
    deadline = time.monotonic() + timeout
    ratio = float("nan")
    while time.monotonic() < deadline:
        body = httpx.get(f"{state.prometheus_url}/api/v1/query", params={"query": query}).json()
        result = body["data"]["result"]
        if result:
            ratio = float(result[0]["value"][1])
            if done(ratio):
                return ratio
        time.sleep(1)
    raise SystemExit(f"the error ratio did not {what} within {timeout:.0f}s (last {ratio})")


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
