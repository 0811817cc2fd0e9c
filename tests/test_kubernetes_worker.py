"""The production route: a real prefect-kubernetes worker, running as the `prefect-worker`
ServiceAccount of deployments/kubernetes/worker.yaml, starts a flow run of prefect.yaml as a
Job whose spec is exactly what deployments/kubernetes/base-job-template.json says.

KWOK runs no containers, so the run itself never executes: the test asserts the Job and the
pod the Job controller made from it, not the run's result.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from accounts import RBAC, RECEIVER, WORKER, apply_manifest, service_account_kubeconfig
from cluster import eventually
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pools import pool_with_deployment
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from stack.config import REPO_DIR
from stack.local import StackState
from stack.processes import start, stop, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

TEMPLATE = REPO_DIR / "deployments" / "kubernetes" / "base-job-template.json"
JOBS_NAMESPACE = "rollback-flows"
HOME_IN_IMAGE = "/opt/rollback-flows"  # the Dockerfile's WORKDIR


def defaults() -> dict[str, Any]:
    """The base job template's variables and their defaults."""
    template = json.loads(TEMPLATE.read_text())
    return {name: spec.get("default") for name, spec in template["variables"]["properties"].items()}


@pytest.fixture
def kubernetes_pool(local_stack: StackState, tmp_path: Path) -> Iterator[str]:
    """A `kubernetes` work pool made from the shipped base job template, with
    verify-rollback deployed to it from prefect.yaml (the code in the image's home)."""
    pool = f"kubernetes-{uuid.uuid4().hex[:8]}"
    with pool_with_deployment(
        local_stack, pool, "kubernetes", "verify-rollback", "default",
        Path(HOME_IN_IMAGE), tmp_path, "--base-job-template", str(TEMPLATE),
    ):  # fmt: skip
        yield pool


@pytest.fixture
def worker_kubeconfig(
    local_stack: StackState, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Path:
    """The shipped namespace, ServiceAccounts and Roles applied; a kubeconfig of the worker's
    ServiceAccount. The worker's own Deployment and the receiver's manifests are checked by
    the API server (dry run) only."""
    apply_manifest(kube_api, RBAC, namespace)  # the namespace and the flows' account
    apply_manifest(kube_api, WORKER, skip=("Deployment",))
    for doc in yaml.safe_load_all(WORKER.read_text()):
        if doc["kind"] == "Deployment":
            client.AppsV1Api(kube_api).create_namespaced_deployment(
                JOBS_NAMESPACE, doc, dry_run="All"
            )
    # The receiver's manifests, validated by the API server too.
    for doc in yaml.safe_load_all(RECEIVER.read_text()):
        create = {
            "ServiceAccount": client.CoreV1Api(kube_api).create_namespaced_service_account,
            "Deployment": client.AppsV1Api(kube_api).create_namespaced_deployment,
            "Service": client.CoreV1Api(kube_api).create_namespaced_service,
        }[doc["kind"]]
        create(JOBS_NAMESPACE, doc, dry_run="All")
    return service_account_kubeconfig(
        local_stack, kube_api, tmp_path, "prefect-worker", JOBS_NAMESPACE
    )


def start_kubernetes_worker(state: StackState, pool: str, kubeconfig: Path, log: Path) -> int:
    """`prefect worker start --type kubernetes`, as the worker's Deployment runs it."""
    assert state.prefect_api_url is not None
    argv = [str(Path(sys.executable).with_name("prefect")), "worker", "start"]
    argv += ["--pool", pool, "--type", "kubernetes", "--name", pool]
    env = {
        "KUBECONFIG": str(kubeconfig),
        "PREFECT_API_URL": state.prefect_api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES": JOBS_NAMESPACE,
    }
    pid = start("Prefect kubernetes worker", argv, log, env=env)
    wait_until("the kubernetes worker", lambda: "started!" in log.read_text(), 60, pid=pid)
    return pid


def test_a_kubernetes_worker_starts_the_flow_run_as_the_templates_job(
    local_stack: StackState,
    kube_api: client.ApiClient,
    kubernetes_pool: str,
    worker_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> None:
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    log = tmp_path / "worker.log"
    pid = start_kubernetes_worker(local_stack, kubernetes_pool, worker_kubeconfig, log)
    run_id = None
    try:
        run = run_deployment(
            f"verify-rollback/{kubernetes_pool}",
            parameters={
                "service": "rag-api",
                "namespace": namespace,
                "expected_version": "v1.2.3",
            },
            timeout=0,
        )
        run_id = run.id
        selector = f"prefect.io/flow-run-id={run.id}"
        [job] = eventually(
            lambda: batch.list_namespaced_job(JOBS_NAMESPACE, label_selector=selector).items,
            30,
            "the flow run's Job",
        )
        [pod] = eventually(
            lambda: core.list_namespaced_pod(JOBS_NAMESPACE, label_selector=selector).items,
            30,
            "the Job's pod",
        )
    finally:
        stop(pid)
    worker_log = log.read_text()
    assert "Forbidden" not in worker_log and " 403" not in worker_log, worker_log[-3000:]

    expected = defaults()
    for spec in (job.spec.template.spec, pod.spec):  # the Job, and the pod made from it
        assert spec.service_account_name == expected["service_account_name"] == "rollback-flows"
        assert spec.restart_policy == "Never"
        assert spec.security_context.run_as_non_root is True
        assert spec.security_context.run_as_user == 10001
        [container] = spec.containers
        assert container.image == expected["image"]
        assert container.image_pull_policy == expected["image_pull_policy"]
        assert container.args == ["prefect", "flow-run", "execute"]
        assert container.resources.requests == {
            "cpu": expected["cpu_request"],
            "memory": expected["memory_request"],
        }
        assert container.resources.limits == {
            "cpu": expected["cpu_limit"],
            "memory": expected["memory_limit"],
        }
        assert container.security_context.allow_privilege_escalation is False
        assert container.security_context.capabilities.drop == ["ALL"]
        env = {e.name: e.value for e in container.env}
        for name, value in expected["env"].items():
            assert env[name] == value
        assert env["PREFECT__FLOW_RUN_ID"] == str(run_id)
        assert env["PREFECT_API_URL"] == local_stack.prefect_api_url
        # Only the template's settings and Prefect's own: no credentials of any kind.
        assert set(env) - set(expected["env"]) <= {
            n for n in env if n.startswith("PREFECT_") or n.startswith("PREFECT__")
        }
        assert not any("TOKEN" in n or "KEY" in n or "PASSWORD" in n for n in env)
    assert job.metadata.namespace == JOBS_NAMESPACE
    assert job.spec.backoff_limit == expected["backoff_limit"]
    assert job.spec.ttl_seconds_after_finished == expected["finished_job_ttl"]
    assert pod.metadata.namespace == JOBS_NAMESPACE

    with get_client(sync_client=True) as prefect:
        stored = prefect.read_flow_run(run_id)
        assert stored.work_pool_name == kubernetes_pool
        assert stored.infrastructure_pid == f"{JOBS_NAMESPACE}:{job.metadata.name}"
        # The pull step changes into the code's home in the image.
        deployment = prefect.read_deployment(stored.deployment_id)
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": HOME_IN_IMAGE}}
        ]
        prefect.delete_flow_run(run_id)
    try:
        batch.delete_namespaced_job(
            job.metadata.name, JOBS_NAMESPACE, propagation_policy="Background"
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
