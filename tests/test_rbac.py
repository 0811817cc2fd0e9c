"""The least-privilege Role of deployments/kubernetes/rbac.yaml is enough for every flow's work
(Procedures 2-4, diagnosis, verification, monitoring), each run as its ServiceAccount, and
no more: everything else is 403."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from accounts import RBAC, apply_manifest, service_account_kubeconfig
from cluster import (
    REPOSITORY,
    build_history,
    deployment_body,
    eventually,
    snapshot,
    use_services,
    wait_rolled_out,
)
from flow_runs import read_flow_run
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_verify_rollback import WINDOW, serving

from flows.canary_rollback import canary_rollback
from flows.diagnose_rollback import diagnose_rollback
from flows.image_rollback import image_rollback
from flows.kubernetes_rollback import kubernetes_rollback
from flows.post_rollback_monitor import post_rollback_monitor
from flows.verify_rollback import verify_rollback
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


def test_the_service_account_diagnoses_but_reads_no_secret(
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stuck rollout (ImagePullBackOff) whose template names a pull secret that exists, one
    that does not, and a ConfigMap: every read of the diagnosis is granted but Secrets, which
    the Role does not grant at all (their `get` would return their data): the report says it
    cannot tell for each, with the API server's 403, and never shows a Secret's content."""
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "regcred"}, "stringData": {"token": "t0k3n"}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "rag-config"}})
    body = deployment_body(f"{REPOSITORY}:v1.2.5-pullfail")
    pod = body["spec"]["template"]["spec"]
    pod["imagePullSecrets"] = [{"name": "regcred"}, {"name": "ghcr-pull"}]
    pod["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
    pod["containers"][0]["envFrom"] = [{"configMapRef": {"name": "rag-config"}}]
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
    for forbidden in (
        lambda: client.CoreV1Api(as_sa).list_namespaced_secret(namespace),
        lambda: client.CoreV1Api(as_sa).read_namespaced_secret("regcred", namespace),
    ):
        with pytest.raises(ApiException) as denied:
            forbidden()
        assert denied.value.status == 403

    use_services(monkeypatch, tmp_path, namespace)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    state = diagnose_rollback("rag-api", return_state=True)

    record = read_flow_run(state)
    assert record.state == "COMPLETED", state
    markdown = str(record.one("markdown").data)
    assert '## Rollout stuck in "Progressing": FOUND' in markdown
    for name in ("regcred", "ghcr-pull"):
        assert (
            f"| imagePullSecrets {name} | cannot tell: access denied (read Secret "
            f"{namespace}/{name} (metadata only) failed with HTTP 403"
        ) in markdown
    assert "| ConfigMap rag-config | exists (used by envFrom of rag-api) | ok |" in markdown
    assert "| EndpointSlice rag-api-" in markdown
    assert f"VirtualService {namespace}/rag-api does not exist" in markdown
    # Nothing else was refused: the only 403s are the two Secrets.
    assert markdown.count("HTTP 403") == 2, markdown
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


@pytest.fixture
def simulator_rbac(kube_api: client.ApiClient, simulator_namespace: str) -> Iterator[str]:
    """The shipped Role in the simulator's namespace (the one with /health and metrics),
    removed afterwards."""
    apply_rbac(kube_api, simulator_namespace)
    yield simulator_namespace
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.delete_namespaced_role_binding("rollback-flows", simulator_namespace)
    rbac.delete_namespaced_role("rollback-flows", simulator_namespace)


def test_the_service_account_verifies_and_monitors_a_rollback(
    local_stack: StackState,
    kube_api: client.ApiClient,
    simulator_rbac: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """verify-rollback and post-rollback-monitor, as the ServiceAccount, against the live
    service: the checklist passes (pods, /health, /version, Prometheus), and the monitor reads
    the Deployment, its ReplicaSets and its pods' logs with nothing refused."""
    apps = client.AppsV1Api(kube_api)
    serving(local_stack, apps, simulator_rbac, "v1.2.3", 0.0)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    verified = verify_rollback("rag-api", "v1.2.3", window=WINDOW, return_state=True)
    record = read_flow_run(verified)
    assert record.state == "COMPLETED", verified
    rows = {row["check"]: row for row in json.loads(record.one("table").data)}
    assert {row["result"] for row in rows.values()} == {"PASS"}, rows
    assert rows["Pod Count"]["observed"] == "3 running of 3"
    assert rows["Version"]["observed"] == "v1.2.3"

    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=75)
    monitored = post_rollback_monitor(
        "rag-api",
        since,
        duration=timedelta(minutes=1),
        interval=timedelta(seconds=10),
        return_state=True,
    )
    [report] = [
        a
        for a in read_flow_run(monitored).of_type("markdown")
        if a.key == "post-rollback-monitor-rag-api"
    ]
    markdown = str(report.data)
    assert f"# Post-rollback monitoring: rag-api in {simulator_rbac}" in markdown
    assert "## Error patterns in the logs since the rollback" in markdown
    assert "Logs unavailable" not in markdown
    for refused in ("access denied", "HTTP 403", "forbidden"):
        assert refused not in markdown


def test_anything_beyond_the_flows_work_is_forbidden(
    local_stack: StackState,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The ServiceAccount's every other request is answered 403 by the API server: deleting
    or creating anything, any Secret's content, exec into pods, changing its own Role, other
    namespaces, and anything cluster-wide."""
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment_body(f"{REPOSITORY}:v1.2.3"))
    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace, {"metadata": {"name": "db-password"}, "stringData": {"password": "hunter2"}}
    )
    [a_pod, *_] = eventually(
        lambda: client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items, 30, "a pod"
    )
    apply_rbac(kube_api, namespace)
    as_sa = config.new_client_from_config(
        config_file=str(service_account_kubeconfig(local_stack, kube_api, tmp_path))
    )
    sa_apps, sa_core = client.AppsV1Api(as_sa), client.CoreV1Api(as_sa)
    sa_rbac, sa_batch = client.RbacAuthorizationV1Api(as_sa), client.BatchV1Api(as_sa)
    pod = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
    forbidden: dict[str, Callable[[], object]] = {
        # delete or create anything
        "delete the Deployment": lambda: sa_apps.delete_namespaced_deployment("rag-api", namespace),
        "delete its pods": lambda: sa_core.delete_collection_namespaced_pod(namespace),
        "delete a ReplicaSet": lambda: sa_apps.delete_collection_namespaced_replica_set(namespace),
        "create a Deployment": lambda: sa_apps.create_namespaced_deployment(
            namespace, deployment_body("evil:latest", name="evil")
        ),
        "create a pod": lambda: sa_core.create_namespaced_pod(namespace, pod),
        "create a Job": lambda: sa_batch.create_namespaced_job(
            namespace, {"metadata": {"name": "x"}, "spec": {"template": pod}}
        ),
        # Secrets: no content, no names
        "read a Secret": lambda: sa_core.read_namespaced_secret("db-password", namespace),
        "list Secrets": lambda: sa_core.list_namespaced_secret(namespace),
        "create a Secret": lambda: sa_core.create_namespaced_secret(
            namespace, {"metadata": {"name": "x"}}
        ),
        "list ConfigMaps": lambda: sa_core.list_namespaced_config_map(namespace),
        # exec, and its own permissions (the API server authorizes before any upgrade)
        "exec into a pod": lambda: sa_core.connect_post_namespaced_pod_exec(
            a_pod.metadata.name, namespace, command="true", stdout=True
        ),
        "create a ServiceAccount token": lambda: sa_core.create_namespaced_service_account_token(
            "rollback-flows", "rollback-flows", {"spec": {}}
        ),
        "widen its Role": lambda: sa_rbac.patch_namespaced_role(
            "rollback-flows",
            namespace,
            {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
        ),
        # other namespaces
        "list Deployments elsewhere": lambda: sa_apps.list_namespaced_deployment("default"),
        "patch a Deployment elsewhere": lambda: sa_apps.patch_namespaced_deployment(
            "rag-api", "default", {"metadata": {"labels": {"x": "y"}}}
        ),
        "read pods in kube-system": lambda: sa_core.list_namespaced_pod("kube-system"),
        # cluster scope
        "list namespaces": lambda: sa_core.list_namespace(),
        "list nodes": lambda: sa_core.list_node(),
        "list Deployments of every namespace": lambda: sa_apps.list_deployment_for_all_namespaces(),
        "list Secrets of every namespace": lambda: sa_core.list_secret_for_all_namespaces(),
        "list ClusterRoles": lambda: sa_rbac.list_cluster_role(),
        "bind itself cluster-admin": lambda: sa_rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "x"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": "rollback-flows",
                        "namespace": "rollback-flows",
                    }
                ],
            }
        ),
    }
    answers = {}
    for what, request in forbidden.items():
        try:
            request()
            answers[what] = 200
        except ApiException as exc:
            answers[what] = exc.status
    assert answers == dict.fromkeys(forbidden, 403)
    assert apps.read_namespaced_deployment("rag-api", namespace).metadata.generation == 1
