"""Istio tasks: read a VirtualService, take the canary out of it safely, verify traffic is stable.

VirtualServices are read and patched as custom objects of `networking.istio.io/v1`. Routes,
weights and mirrors to the canary are found by their destination (see `playbook.traffic`) and
taken out with one JSON patch whose `test` operations fail the whole patch if a route changed
since it was read; that failure is a ConflictError, so the task retries from a fresh read.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from playbook.errors import VerificationFailedError
from playbook.provenance import FIELD_MANAGER
from playbook.services import Destination
from playbook.task_results import RouteRemoval, patch_text
from playbook.traffic import (
    VirtualServiceState,
    plan_canary_removal,
    stable_violations,
    virtual_service_state,
)
from tasks.boundary import run_logger, translating
from tasks.kubernetes import JSON_PATCH, REQUEST_TIMEOUT, kube_client, kubernetes_api_task

GROUP = "networking.istio.io"
VERSION = "v1"
PLURAL = "virtualservices"


def get_virtual_service(namespace: str, name: str) -> dict[str, Any]:
    """The VirtualService as the API serves it (JSON)."""
    api = client.CustomObjectsApi(kube_client())
    with translating(f"read VirtualService {namespace}/{name}"):
        response = api.get_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    body: dict[str, Any] = json.loads(response.data)
    return body


@kubernetes_api_task
def read_virtual_service(namespace: str, name: str) -> VirtualServiceState:
    """Read a VirtualService's HTTP routes and where each sends its traffic."""
    return virtual_service_state(get_virtual_service(namespace, name))


@kubernetes_api_task
def remove_canary_routes(
    namespace: str,
    name: str,
    canary: Destination,
    stable: Destination,
    dry_run: bool = False,
) -> RouteRemoval:
    """Take every path of traffic to the canary out of the HTTP routes, in one guarded patch.

    A route to the canary is removed (or, without a catch-all after it, sent 100 % to stable);
    a stable/canary split is set to 100 % stable; a mirror to the canary is dropped. Nothing
    is written when nothing reaches the canary. With `dry_run` the patch is only validated by
    the API server.

    Raises:
        UnsafePatchError: the result would not send all traffic to stable; nothing is written.
        ConflictError: the VirtualService changed meanwhile (retried from a fresh read).
    """
    vs = get_virtual_service(namespace, name)
    plan = plan_canary_removal(vs, canary, stable)
    rv = plan.resource_version
    if plan.nothing_to_do:
        run_logger().info(
            "VirtualService %s/%s has no route or mirror to %s; nothing to do",
            namespace,
            name,
            canary,
        )
        return RouteRemoval(plan, False, dry_run, rv)
    run_logger().info(
        "JSON patch for VirtualService %s/%s:\n%s", namespace, name, patch_text(plan.patch)
    )
    api = client.CustomObjectsApi(kube_client())
    with translating(f"patch VirtualService {namespace}/{name}", guarded_patch=True):
        response = api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            list(plan.patch),
            dry_run="All" if dry_run else None,
            field_manager=FIELD_MANAGER,
            _content_type=JSON_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    if dry_run:
        return RouteRemoval(plan, False, True, rv)
    patched = json.loads(response.data)
    return RouteRemoval(plan, True, False, str(patched["metadata"]["resourceVersion"]))


@kubernetes_api_task
def verify_traffic_to_stable(
    namespace: str, name: str, stable: Destination, canary: Destination | None = None
) -> VirtualServiceState:
    """Check that every HTTP route sends 100 % of its traffic to stable and none mirrors to
    the canary (without `canary`: to anything but stable).

    Raises:
        VerificationFailedError: naming each route, weight or mirror that does not.
    """
    vs = get_virtual_service(namespace, name)
    problems = stable_violations((vs.get("spec") or {}).get("http") or [], stable, canary)
    if problems:
        raise VerificationFailedError(
            f"VirtualService {namespace}/{name} still routes traffic elsewhere: "
            + "; ".join(problems)
        )
    return virtual_service_state(vs)
