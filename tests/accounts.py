"""Apply the shipped manifests of deployments/kubernetes/ and act as their ServiceAccounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils

from stack.config import REPO_DIR
from stack.local import StackState

MANIFESTS = REPO_DIR / "deployments" / "kubernetes"
RBAC = MANIFESTS / "rbac.yaml"
RBAC_GITOPS = MANIFESTS / "rbac-gitops.yaml"
WORKER = MANIFESTS / "worker.yaml"
RECEIVER = MANIFESTS / "receiver.yaml"


def apply_manifest(
    kube_api: client.ApiClient, path: Path, namespace: str = "", skip: tuple[str, ...] = ()
) -> None:
    """`sed 's/SERVICE_NAMESPACE/<ns>/' FILE | kubectl apply -f -`, as the files say (objects
    that exist are kept; kinds in `skip` are left out)."""
    text = path.read_text()
    if namespace:
        text = text.replace("SERVICE_NAMESPACE", namespace)
    for doc in yaml.safe_load_all(text):
        if doc["kind"] in skip:
            continue
        try:
            utils.create_from_dict(kube_api, doc)
        except utils.FailToCreateError as exc:
            if any(e.status != 409 for e in exc.api_exceptions):
                raise


def service_account_kubeconfig(
    state: StackState,
    kube_api: client.ApiClient,
    tmp_path: Path,
    name: str = "rollback-flows",
    namespace: str = "rollback-flows",
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount `namespace`/`name`."""
    token = client.CoreV1Api(kube_api).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    admin: dict[str, Any] = yaml.safe_load(Path(state.kubeconfig).read_text())
    cluster = admin["clusters"][0]
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": name, "user": {"token": token.status.token}}],
                "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": name}}],
                "current-context": name,
            }
        )
    )
    return path
