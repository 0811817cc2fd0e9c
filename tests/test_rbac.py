"""The least-privilege Role of deployments/kubernetes/rbac.yaml is enough to roll back and to
diagnose, and no more."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from accounts import RBAC, apply_manifest, service_account_kubeconfig
from cluster import (
    REPOSITORY,
    build_history,
    deployment_body,
    snapshot,
    use_services,
    wait_rolled_out,
)
from flow_runs import read_flow_run
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flows.canary_rollback import canary_rollback
from flows.diagnose_rollback import diagnose_rollback
from flows.image_rollback import image_rollback
from flows.kubernetes_rollback import kubernetes_rollback
from stack.local import StackState

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def apply_rbac(kube_api: client.ApiClient, namespace: str) -> None:
    """The shipped Role for `namespace`, as rbac.yaml says to apply it."""
    apply_manifest(kube_api, RBAC, namespace)


def test_the_service_account_rolls_back_but_can_do_nothing_else(
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = client.AppsV1Api(kube_api)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    apply_rbac(kube_api, namespace)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    as_sa = config.new_client_from_config(config_file=str(kubeconfig))

    # Least privilege: no Secrets, no deleting, nothing in other namespaces.
    for forbidden in (
        lambda: client.CoreV1Api(as_sa).list_namespaced_secret(namespace),
        lambda: client.AppsV1Api(as_sa).delete_namespaced_deployment("rag-api", namespace),
        lambda: client.AppsV1Api(as_sa).list_namespaced_deployment("default"),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403
    assert snapshot(apps, namespace).image == f"{REPOSITORY}:v1.2.4"

    # ... and enough for Procedure 2 from start to end.
    use_services(monkeypatch, tmp_path, namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    report = kubernetes_rollback("rag-api")
    assert report.changed
    assert snapshot(apps, namespace).image == f"{REPOSITORY}:v1.2.3"


def test_the_service_account_diagnoses_but_cannot_list_secrets(
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stuck rollout (ImagePullBackOff) whose template names a pull secret that exists, one
    that does not, and a ConfigMap: every read of the diagnosis is granted, nothing is
    "cannot tell", and listing Secrets stays forbidden."""
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "regcred"}, "stringData": {"token": "t0k3n"}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "rag-config"}})
    body = {
        "metadata": {"name": "rag-api", "labels": {"app": "rag-api"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "rag-api"}},
            "template": {
                "metadata": {"labels": {"app": "rag-api"}},
                "spec": {
                    "imagePullSecrets": [{"name": "regcred"}, {"name": "ghcr-pull"}],
                    "containers": [
                        {
                            "name": "rag-api",
                            "image": f"{REPOSITORY}:v1.2.5-pullfail",
                            "ports": [{"name": "http", "containerPort": 8000}],
                            "envFrom": [{"configMapRef": {"name": "rag-config"}}],
                        }
                    ],
                },
            },
        },
    }
    apps.create_namespaced_deployment(namespace, body)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the three pods are created and stuck pulling
        pods = core.list_namespaced_pod(namespace).items
        waiting = [
            p
            for p in pods
            for cs in p.status.container_statuses or []
            if cs.state.waiting and cs.state.waiting.reason == "ImagePullBackOff"
        ]
        if len(waiting) == 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the pods never reached ImagePullBackOff")
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "rag-api"},
            "spec": {"selector": {"app": "rag-api"}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    apply_rbac(kube_api, namespace)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    as_sa = config.new_client_from_config(config_file=str(kubeconfig))
    with pytest.raises(ApiException) as denied:
        client.CoreV1Api(as_sa).list_namespaced_secret(namespace)
    assert denied.value.status == 403

    use_services(monkeypatch, tmp_path, namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    state = diagnose_rollback("rag-api", return_state=True)

    record = read_flow_run(state)
    assert record.state == "COMPLETED", state
    markdown = str(record.one("markdown").data)
    for refused in ("cannot tell", "access denied", "not read:", "HTTP 403", "forbidden"):
        assert refused not in markdown
    assert '## Rollout stuck in "Progressing": FOUND' in markdown
    assert "| imagePullSecrets regcred | exists (only its existence was checked) | ok |" in markdown
    assert f"| imagePullSecrets ghcr-pull | does not exist in {namespace} | problem |" in markdown
    assert "| ConfigMap rag-config | exists (used by envFrom of rag-api) | ok |" in markdown
    assert "| EndpointSlice rag-api-" in markdown
    assert f"VirtualService {namespace}/rag-api does not exist" in markdown
    assert "t0k3n" not in markdown


def test_the_service_account_runs_procedure_3_the_image_rollback(
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = client.AppsV1Api(kube_api)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    apply_rbac(kube_api, namespace)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    use_services(monkeypatch, tmp_path, namespace)  # no registry: the tag check is skipped
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    report = image_rollback("rag-api", "v1.2.3")

    assert report.changed, report.outcome
    assert snapshot(apps, namespace).image == f"{REPOSITORY}:v1.2.3"


def test_the_service_account_runs_procedure_4_the_canary_rollback(
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps, custom = client.AppsV1Api(kube_api), client.CustomObjectsApi(kube_api)
    apps.create_namespaced_deployment(namespace, deployment_body(f"{REPOSITORY}:v1.2.3"))
    apps.create_namespaced_deployment(
        namespace, deployment_body(f"{REPOSITORY}:v1.3.0", replicas=1, name="rag-api-canary")
    )
    split = [
        {"destination": {"host": "rag-api", "subset": "stable"}, "weight": 90},
        {"destination": {"host": "rag-api", "subset": "canary"}, "weight": 10},
    ]
    custom.create_namespaced_custom_object(
        "networking.istio.io",
        "v1",
        namespace,
        "virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "rag-api"},
            "spec": {"hosts": ["rag-api"], "http": [{"name": "split", "route": split}]},
        },
    )
    wait_rolled_out(apps, namespace, "rag-api")
    wait_rolled_out(apps, namespace, "rag-api-canary")
    apply_rbac(kube_api, namespace)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    use_services(monkeypatch, tmp_path, namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    report = canary_rollback("rag-api")

    assert report.changed, report.outcome
    vs = custom.get_namespaced_custom_object(
        "networking.istio.io", "v1", namespace, "virtualservices", "rag-api"
    )
    assert vs["spec"]["http"] == [
        {
            "name": "split",
            "route": [{"destination": {"host": "rag-api", "subset": "stable"}, "weight": 100}],
        }
    ]
    assert apps.read_namespaced_deployment("rag-api-canary", namespace).spec.replicas == 0
