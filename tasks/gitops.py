"""GitOps tasks: read a Deployment's Argo CD or Flux owner, and suspend it when a person asks.

The owner objects are custom resources read with the Kubernetes API (`playbook.gitops`
interprets them). Errors are translated like every Kubernetes call; an owner that does not
exist (or whose kind the cluster does not serve) reads as None.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from playbook.errors import NotFoundError
from playbook.gitops import OwnerRef, OwnerState, find_owner, owner_state, suspend_patch
from playbook.provenance import FIELD_MANAGER
from tasks.boundary import translating
from tasks.kubernetes import (
    MERGE_PATCH,
    REQUEST_TIMEOUT,
    get_deployment,
    kube_client,
    kubernetes_api_task,
)


def _get_owner(owner: OwnerRef) -> dict[str, Any] | None:
    api = client.CustomObjectsApi(kube_client())
    try:
        with translating(f"read {owner}"):
            response = api.get_namespaced_custom_object(
                owner.group,
                owner.version,
                owner.namespace,
                owner.plural,
                owner.name,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
    except NotFoundError:
        return None
    body: dict[str, Any] = json.loads(response.data)
    return body


@kubernetes_api_task
def read_gitops_owner(
    namespace: str,
    deployment: str,
    argocd_namespace: str = "argocd",
    read: dict[str, Any] | None = None,
) -> OwnerState | None:
    """The Deployment's Argo CD or Flux owner and whether it would revert a rollback.

    `read`: the Deployment as the flow just read it (its labels and annotations name the
    owner), else it is read now; the owner itself is always read now.
    """
    found = read if read is not None else get_deployment(namespace, deployment)
    owner = find_owner(found, argocd_namespace)
    return owner_state(owner, _get_owner(owner)) if owner is not None else None


@kubernetes_api_task
def suspend_gitops_owner(owner: OwnerRef) -> bool:
    """Stop the owner from reverting changes (Flux: suspend; Argo CD: automated sync off).

    Reads the owner afresh; one already not reverting, or gone, is left alone (False).
    """
    obj = _get_owner(owner)
    if obj is None:
        return False
    state = owner_state(owner, obj)
    if not state.reverts:
        return False
    api = client.CustomObjectsApi(kube_client())
    with translating(f"suspend {owner}"):
        api.patch_namespaced_custom_object(
            owner.group,
            owner.version,
            owner.namespace,
            owner.plural,
            owner.name,
            suspend_patch(state, obj),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    return True
