"""Kubernetes reads for the diagnosis, and `kubectl rollout restart`.

A Deployment with its pod template and revisions, pods in detail, a Service and its
EndpointSlices, whether named ConfigMaps and Secrets exist, previous-container logs. Objects
are read as the JSON the API serves and interpreted by `playbook.diagnosis`; library errors
are translated into `playbook.errors` at this boundary (as in `tasks.kubernetes`).

Whether a Secret exists is asked with a `get` of that one name, accepting only its metadata
(`PartialObjectMetadata`), and even that answer is discarded unread: only the HTTP status
counts. Secrets are never listed and their content never reaches this process's objects.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from playbook.diagnosis import (
    RESTARTED_AT_ANNOTATION,
    EndpointSliceFacts,
    PodFacts,
    Presence,
    PreviousLog,
    RestartResult,
    ServiceFacts,
    Workload,
    endpoint_slice_facts,
    pod_facts,
    restart_patch,
    service_facts,
    workload,
)
from playbook.errors import AccessDeniedError, InvalidInputError, NotFoundError
from playbook.known_good import RevisionSpan, revision_spans
from playbook.provenance import FIELD_MANAGER
from playbook.rollout import owned_replicasets, revision_of
from tasks.boundary import translate_error, translating
from tasks.kubernetes import (
    OBJECT_PATHS,
    REQUEST_TIMEOUT,
    STRATEGIC_MERGE_PATCH,
    _raw,
    get_deployment,
    get_pods,
    get_replicasets,
    kube_client,
    kubernetes_api_task,
    read_metadata,
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service."""


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


@kubernetes_api_task
def read_workload(namespace: str, name: str) -> Workload:
    """Read a Deployment's rollout status, pod template (ports, probes, references) and revisions."""
    deployment = get_deployment(namespace, name)
    return workload(deployment, get_replicasets(namespace, deployment))


@kubernetes_api_task
def read_pod_details(namespace: str, selector: str) -> tuple[PodFacts, ...]:
    """`kubectl describe pods -l selector`: phase, labels, IP, owner, each container's state."""
    pods = get_pods(namespace, selector)
    return tuple(sorted((pod_facts(p) for p in pods), key=lambda p: p.name))


@kubernetes_api_task
def read_service(namespace: str, name: str) -> ServiceFacts | None:
    """`kubectl get svc name -o yaml`: its selector and ports; None when it does not exist."""
    core = client.CoreV1Api(kube_client())
    try:
        with translating(f"read Service {namespace}/{name}"):
            body = _raw(
                core.read_namespaced_service(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
    except NotFoundError:
        return None
    return service_facts(body)


@kubernetes_api_task
def read_endpoint_slices(namespace: str, service: str) -> tuple[EndpointSliceFacts, ...]:
    """`kubectl get endpointslices -l kubernetes.io/service-name=service`."""
    discovery = client.DiscoveryV1Api(kube_client())
    with translating(f"list EndpointSlices of Service {namespace}/{service}"):
        body = _raw(
            discovery.list_namespaced_endpoint_slice(
                namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={service}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
    return tuple(
        sorted((endpoint_slice_facts(s) for s in body.get("items") or []), key=lambda s: s.name)
    )


def _exists(namespace: str, kind: str, name: str) -> Presence:
    try:
        found = read_metadata(namespace, kind, name) is not None
    except AccessDeniedError as exc:
        return Presence(kind, name, None, f"access denied ({exc})")
    return Presence(kind, name, found)


@kubernetes_api_task
def check_objects_exist(namespace: str, objects: Sequence[tuple[str, str]]) -> tuple[Presence, ...]:
    """Whether each named (kind, name) ConfigMap or Secret exists; never reads its content.

    A `get` of that name that answers 403 (a Role that does not grant it) is reported as
    "cannot tell", not raised.

    Raises:
        InvalidInputError: a kind other than ConfigMap or Secret.
    """
    found = []
    for kind, name in dict.fromkeys(objects):
        if kind not in OBJECT_PATHS:
            raise InvalidInputError(f"cannot check objects of kind {kind!r}")
        found.append(_exists(namespace, kind, name))
    return tuple(found)


@task(timeout_seconds=120, cache_policy=NO_CACHE)
def read_previous_logs(
    namespace: str, pods: Sequence[str], container: str, tail_lines: int = 20
) -> tuple[PreviousLog, ...]:
    """`kubectl logs POD --previous --tail=N` for each pod; never fails the flow.

    A pod whose previous container left no log (or a node that serves none, such as a
    simulated KWOK node) is reported with the reason instead.
    """
    core = client.CoreV1Api(kube_client())
    logs = []
    for pod in pods:
        try:
            text = core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                previous=True,
                tail_lines=tail_lines,
                _request_timeout=(REQUEST_TIMEOUT[0], 10.0),
                _preload_content=False,  # raw bytes, as in read_error_logs
            ).data.decode("utf-8", errors="replace")
        except Exception as exc:  # any failure means: no previous log from this pod
            reason = str(translate_error(exc, f"read previous log of pod {namespace}/{pod}"))
            logs.append(PreviousLog(pod, container, False, (), reason))
            continue
        logs.append(PreviousLog(pod, container, True, tuple(str(text).splitlines())))
    return tuple(logs)


@kubernetes_api_task
def restart_deployment(
    namespace: str, name: str, restarted_at: str, dry_run: bool = False
) -> RestartResult:
    """`kubectl rollout restart deployment/name`: set the template's restartedAt annotation.

    The caller fixes `restarted_at` once per run, so a retried attempt that finds the same
    value already written writes nothing (`already_done`). With `dry_run` the patch is only
    validated by the API server.

    Raises:
        InvalidInputError: the Deployment is paused (as kubectl: resume it first).
    """
    deployment = get_deployment(namespace, name)
    spec: dict[str, Any] = deployment.get("spec") or {}
    generation = int(deployment["metadata"].get("generation", 0))
    patch = restart_patch(restarted_at)
    annotations = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    if annotations.get(RESTARTED_AT_ANNOTATION) == restarted_at:
        _log().info("Deployment %s/%s already restarted at %s", namespace, name, restarted_at)
        return RestartResult(
            namespace, name, restarted_at, patch, False, dry_run, generation, generation, True
        )
    if spec.get("paused"):
        raise InvalidInputError(
            f"can't restart paused Deployment {namespace}/{name} (run rollout resume first)"
        )
    apps = client.AppsV1Api(kube_client())
    with translating(f"restart Deployment {namespace}/{name}"):
        patched = _raw(
            apps.patch_namespaced_deployment(
                name,
                namespace,
                patch,
                dry_run="All" if dry_run else None,
                field_manager=FIELD_MANAGER,
                _content_type=STRATEGIC_MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
    after = int(patched["metadata"].get("generation", 0))
    return RestartResult(
        namespace, name, restarted_at, patch, not dry_run, dry_run, generation, after
    )


@kubernetes_api_task
def read_revision_templates(namespace: str, name: str) -> dict[int, Any]:
    """The pod template of each revision the Deployment still has a ReplicaSet for."""
    deployment = get_deployment(namespace, name)
    templates: dict[int, Any] = {}
    for rs in owned_replicasets(deployment, get_replicasets(namespace, deployment)):
        number = revision_of(rs)
        if number is not None:
            templates[number] = (rs.get("spec") or {}).get("template") or {}
    return templates


@kubernetes_api_task
def read_revision_created(namespace: str, name: str, revision: int) -> str | None:
    """When the Deployment's ReplicaSet of `revision` was created (its release), as the API
    server wrote it (RFC 3339); None when no ReplicaSet has that revision any more."""
    deployment = get_deployment(namespace, name)
    for rs in owned_replicasets(deployment, get_replicasets(namespace, deployment)):
        if revision_of(rs) == revision:
            created = (rs.get("metadata") or {}).get("creationTimestamp")
            return str(created) if created else None
    return None


@kubernetes_api_task
def read_revision_spans(namespace: str, name: str, container: str) -> tuple[RevisionSpan, ...]:
    """Each revision the Deployment still has, newest first: its version (the image tag of
    `container`) and when it was current, as the cluster records it."""
    deployment = get_deployment(namespace, name)
    return revision_spans(deployment, get_replicasets(namespace, deployment), container)
