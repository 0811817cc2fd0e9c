"""The local control plane behaves as a real cluster: rollouts, undo, stuck rollouts, CRDs."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest
from kubernetes import client

from stack.config import bin_dir
from stack.local import StackState
from stack.manifests import deployment_manifest

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def kubectl(state: StackState, *args: str, timeout: float = 60) -> str:
    """Run the stack's own kubectl against the session's cluster; fail loudly on error."""
    result = subprocess.run(
        [str(bin_dir() / "kubectl"), "--kubeconfig", state.kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


def deployment(name: str, image: str, replicas: int = 3, **spec: Any) -> dict[str, Any]:
    return deployment_manifest(image, name=name, replicas=replicas, container=name, **spec)


def replica_sets_by_revision(apps: client.AppsV1Api, namespace: str) -> dict[int, str]:
    """Revision number → image of each ReplicaSet of the namespace."""
    return {
        int(
            rs.metadata.annotations["deployment.kubernetes.io/revision"]
        ): rs.spec.template.spec.containers[0].image
        for rs in apps.list_namespaced_replica_set(namespace).items
    }


def test_rollout_and_undo_with_kubectl(
    local_stack: StackState, kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace, deployment("rag-api", "ghcr.io/acme/rag-api:v1.2.3")
    )
    kubectl(
        local_stack, "-n", namespace, "rollout", "status", "deployment/rag-api", "--timeout=60s"
    )
    kubectl(
        local_stack, "-n", namespace, "set", "image", "deployment/rag-api",
        "rag-api=ghcr.io/acme/rag-api:v1.2.4",
    )  # fmt: skip
    kubectl(
        local_stack, "-n", namespace, "rollout", "status", "deployment/rag-api", "--timeout=60s"
    )
    assert replica_sets_by_revision(apps, namespace) == {
        1: "ghcr.io/acme/rag-api:v1.2.3",
        2: "ghcr.io/acme/rag-api:v1.2.4",
    }

    kubectl(local_stack, "-n", namespace, "rollout", "undo", "deployment/rag-api")
    out = kubectl(
        local_stack, "-n", namespace, "rollout", "status", "deployment/rag-api", "--timeout=60s"
    )
    assert "successfully rolled out" in out

    dep = apps.read_namespaced_deployment("rag-api", namespace)
    assert dep.spec.template.spec.containers[0].image == "ghcr.io/acme/rag-api:v1.2.3"
    assert dep.status.ready_replicas == 3 and dep.status.updated_replicas == 3
    # kubectl's undo re-uses revision 1's template, which the controller renumbers as 3.
    assert replica_sets_by_revision(apps, namespace) == {
        2: "ghcr.io/acme/rag-api:v1.2.4",
        3: "ghcr.io/acme/rag-api:v1.2.3",
    }
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector="app=rag-api")
    ready = [
        p
        for p in pods.items
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    assert len(ready) == 3
    assert {p.spec.containers[0].image for p in ready} == {"ghcr.io/acme/rag-api:v1.2.3"}
    assert {p.status.host_ip for p in ready} == {"127.0.0.1"}


def test_image_pull_failure_exceeds_progress_deadline(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace,
        deployment("rag-api", "ghcr.io/acme/rag-api:v1.2.3", progressDeadlineSeconds=3),
    )
    wait_for(
        lambda: apps.read_namespaced_deployment("rag-api", namespace).status.ready_replicas == 3
    )
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": "ghcr.io/acme/rag-api:v9.9.9-pullfail"}
        ]}}}},
    )  # fmt: skip

    def progressing() -> client.V1DeploymentCondition | None:
        status = apps.read_namespaced_deployment("rag-api", namespace).status
        return next((c for c in status.conditions or [] if c.type == "Progressing"), None)

    wait_for(
        lambda: (c := progressing()) is not None and c.reason == "ProgressDeadlineExceeded", 30
    )
    condition = progressing()
    assert condition is not None and condition.status == "False"

    status = apps.read_namespaced_deployment("rag-api", namespace).status
    assert status.ready_replicas == 3  # the old pods keep serving
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items
    waiting = {
        s.state.waiting.reason
        for p in pods
        for s in p.status.container_statuses or []
        if s.state.waiting is not None
    }
    assert waiting == {"ImagePullBackOff"}


@pytest.mark.parametrize(
    ("image", "annotations", "reason", "phase"),
    [
        ("x/rag-api:v2-crashloop", {}, "CrashLoopBackOff", "Running"),
        ("x/rag-api:v2", {"rollback-flows.dev/failure": "CrashLoopBackOff"}, "CrashLoopBackOff", "Running"),
        ("x/rag-api:v2-neverready", {}, None, "Running"),
        ("x/rag-api:v2", {"rollback-flows.dev/failure": "ImagePullBackOff"}, "ImagePullBackOff", "Pending"),
    ],
)  # fmt: skip
def test_failure_modes_selected_by_tag_or_annotation(
    kube_api: client.ApiClient,
    namespace: str,
    image: str,
    annotations: dict[str, str],
    reason: str | None,
    phase: str,
) -> None:
    core = client.CoreV1Api(kube_api)
    body = deployment("rag-api", image, replicas=1)
    body["spec"]["template"]["metadata"]["annotations"] = annotations
    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, body)

    def settled() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(namespace).items
        if pods and pods[0].status.container_statuses and pods[0].status.phase == phase:
            return pods[0]
        return None

    wait_for(lambda: settled() is not None)
    pod = settled()
    assert pod is not None
    status = pod.status.container_statuses[0]
    assert status.ready is False
    assert (status.state.waiting.reason if status.state.waiting else None) == reason
    if reason is None:
        assert status.state.running is not None
    # The failure is stable: it is still not ready a moment later.
    time.sleep(1.5)
    pod = core.read_namespaced_pod(pod.metadata.name, namespace)
    assert pod.status.container_statuses[0].ready is False


def test_slow_readiness_follows_the_annotation(kube_api: client.ApiClient, namespace: str) -> None:
    body = deployment("rag-api", "x/rag-api:v2", replicas=1)
    body["spec"]["template"]["metadata"]["annotations"] = {"rollback-flows.dev/ready-delay": "3s"}
    apps = client.AppsV1Api(kube_api)
    created = time.monotonic()
    apps.create_namespaced_deployment(namespace, body)
    wait_for(lambda: client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items)
    time.sleep(1.0)
    assert not apps.read_namespaced_deployment("rag-api", namespace).status.ready_replicas
    wait_for(
        lambda: apps.read_namespaced_deployment("rag-api", namespace).status.ready_replicas == 1
    )
    assert time.monotonic() - created >= 3.0


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_virtualservice_json_patch_removes_one_route(
    kube_api: client.ApiClient, namespace: str, version: str
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    routes = [
        {
            "name": "canary",
            "match": [{"headers": {"x-canary": {"exact": "true"}}}],
            "route": [{"destination": {"host": "rag-api", "subset": "canary"}}],
        },
        {
            "name": "split",
            "route": [
                {"destination": {"host": "rag-api", "subset": "stable"}, "weight": 90},
                {"destination": {"host": "rag-api", "subset": "canary"}, "weight": 10},
            ],
        },
    ]
    vs = {
        "apiVersion": f"networking.istio.io/{version}",
        "kind": "VirtualService",
        "metadata": {"name": "rag-api"},
        "spec": {"hosts": ["rag-api"], "http": routes},
    }
    args = ("networking.istio.io", version, namespace, "virtualservices")
    custom.create_namespaced_custom_object(*args, vs)
    patch = [
        {"op": "test", "path": "/spec/http/0/name", "value": "canary"},
        {"op": "remove", "path": "/spec/http/0"},
    ]
    custom.patch_namespaced_custom_object(
        *args, "rag-api", patch, _content_type="application/json-patch+json"
    )
    read = custom.get_namespaced_custom_object(*args, "rag-api")
    assert read["spec"]["http"] == routes[1:]

    # A guarded patch whose test op no longer holds changes nothing.
    with pytest.raises(client.ApiException) as failed:
        custom.patch_namespaced_custom_object(
            *args, "rag-api", patch, _content_type="application/json-patch+json"
        )
    assert failed.value.status == 422
    assert custom.get_namespaced_custom_object(*args, "rag-api")["spec"]["http"] == routes[1:]


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")
