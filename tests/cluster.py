"""Helpers for the integration tests: build a Deployment's history, snapshot the cluster state."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from playbook.rollout import REVISION_ANNOTATION
from playbook.services import SERVICES_ENV
from stack.manifests import deployment_manifest
from stack.prometheus import error_ratio_expr

REPOSITORY = "ghcr.io/acme/rag-api"


def deployment_body(
    image: str, replicas: int = 3, name: str = "rag-api", **spec: Any
) -> dict[str, Any]:
    """The rag-api Deployment manifest (stack.manifests), its container always `rag-api`."""
    return deployment_manifest(image, name=name, replicas=replicas, **spec)


def wait_rolled_out(apps: client.AppsV1Api, namespace: str, name: str, timeout: float = 60) -> None:
    """Wait until the Deployment is fully rolled out (observed, updated, available) and the
    controller has written its last status of the rollout (Progressing: NewReplicaSetAvailable),
    so that a snapshot taken now stays equal while nobody changes the Deployment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = apps.read_namespaced_deployment(name, namespace)
        s = d.status
        progressing = next((c for c in s.conditions or [] if c.type == "Progressing"), None)
        if (
            (s.observed_generation or 0) >= d.metadata.generation
            and (s.updated_replicas or 0) == d.spec.replicas
            and (s.replicas or 0) == d.spec.replicas
            and (s.available_replicas or 0) == d.spec.replicas
            and progressing is not None
            and progressing.reason == "NewReplicaSetAvailable"
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{namespace}/{name} did not roll out in {timeout}s: {d.status}")


def wait_revision(apps: client.AppsV1Api, namespace: str, name: str, revision: int) -> None:
    """Wait until the controller has created the ReplicaSet of `revision`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if revision in replicasets_by_revision(apps, namespace):
            return
        time.sleep(0.2)
    raise AssertionError(f"revision {revision} of {namespace}/{name} never appeared")


def wait_settled(
    apps: client.AppsV1Api, namespace: str, name: str, quiet: float = 2.0, timeout: float = 30
) -> None:
    """Wait until the controllers stop updating the Deployment (its resourceVersion is stable)."""
    deadline = time.monotonic() + timeout
    last, since = "", time.monotonic()
    while time.monotonic() < deadline:
        rv = apps.read_namespaced_deployment(name, namespace).metadata.resource_version
        if rv != last:
            last, since = rv, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)
    raise AssertionError(f"{namespace}/{name} kept changing for {timeout}s")


def build_history(
    apps: client.AppsV1Api,
    namespace: str,
    versions: list[str],
    name: str = "rag-api",
    serve_seconds: float = 0.0,
    **spec: Any,
) -> None:
    """Create the Deployment at versions[0], then set each next version (revision 1, 2, ...).

    Each version but the last serves `serve_seconds` before the next is set (an alert's
    release-cause check reads the previous revision's own stretch from Prometheus, which
    scrapes every second here). Versions that contain a failure token are not waited for
    beyond their ReplicaSet.
    """
    apps.create_namespaced_deployment(
        namespace, deployment_body(f"{REPOSITORY}:{versions[0]}", name=name, **spec)
    )
    wait_rolled_out(apps, namespace, name)
    for number, version in enumerate(versions[1:], start=2):
        time.sleep(serve_seconds)
        apps.patch_namespaced_deployment(
            name,
            namespace,
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [{"name": "rag-api", "image": f"{REPOSITORY}:{version}"}]
                        }
                    }
                }
            },
        )
        if any(token in version for token in ("pullfail", "crashloop", "neverready")):
            wait_revision(apps, namespace, name, number)
            wait_settled(apps, namespace, name)
        else:
            wait_rolled_out(apps, namespace, name)


def delete_deployment(
    apps: client.AppsV1Api, namespace: str, name: str = "rag-api", timeout: float = 60
) -> None:
    """Delete the Deployment and wait until it and its ReplicaSets are gone.

    With foreground deletion the Deployment stays (marked for deletion) until the garbage
    collector has removed its ReplicaSets and then its finalizer: a create in between is a
    409 "object is being deleted", so the wait is for the Deployment itself, not only for them.
    """

    def present() -> bool:
        selector = f"metadata.name={name}"
        return bool(apps.list_namespaced_deployment(namespace, field_selector=selector).items)

    def gone() -> bool:
        return not present() and not apps.list_namespaced_replica_set(namespace).items

    if present():
        apps.delete_namespaced_deployment(name, namespace, propagation_policy="Foreground")
    eventually(gone, timeout, f"deployment {namespace}/{name} and its ReplicaSets gone", 0.2)


def replicasets_by_revision(apps: client.AppsV1Api, namespace: str) -> dict[int, str]:
    """Revision → image of every ReplicaSet in the namespace."""
    return {
        int(rs.metadata.annotations[REVISION_ANNOTATION]): rs.spec.template.spec.containers[0].image
        for rs in apps.list_namespaced_replica_set(namespace).items
        if REVISION_ANNOTATION in (rs.metadata.annotations or {})
    }


@dataclass(frozen=True)
class Snapshot:
    """What must not change when a flow changes nothing."""

    generation: int
    spec_and_metadata: str
    """The Deployment's spec, labels and annotations as JSON: everything a flow could write.
    Not the resourceVersion: the controllers keep writing status after a rollout completes
    (e.g. terminatingReplicas once the old pods are gone)."""
    image: str
    replicasets: dict[int, str]


def snapshot(apps: client.AppsV1Api, namespace: str, name: str = "rag-api") -> Snapshot:
    d = apps.read_namespaced_deployment(name, namespace)
    written = apps.api_client.sanitize_for_serialization(
        {"spec": d.spec, "labels": d.metadata.labels, "annotations": d.metadata.annotations}
    )
    return Snapshot(
        d.metadata.generation,
        json.dumps(written, sort_keys=True),
        d.spec.template.spec.containers[0].image,
        replicasets_by_revision(apps, namespace),
    )


def ready_pod_images(core: client.CoreV1Api, namespace: str, app: str = "rag-api") -> list[str]:
    """Images of the live pods of `app`; fails if any of them is not ready."""
    images = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items:
        if pod.metadata.deletion_timestamp:
            continue
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        assert ready, f"pod {pod.metadata.name} is not ready: {pod.status}"
        images.append(pod.spec.containers[0].image)
    return sorted(images)


def use_services(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    namespace: str,
    timeout: float = 60,
    registry_url: str | None = None,
    token_secret: str = "it-github-token",
    known_good_minutes: float = 30.0,
    canary_url: str | None = None,
) -> None:
    """Point the flows at a services file describing `rag-api` in the test's namespace (its
    canary's /health at `canary_url`, where given)."""
    registry = (
        f"""
    registry:
      api_url: {registry_url}
      owner: acme
      package: rag-api
      token_secret: {token_secret}
      timeout_seconds: 5"""
        if registry_url
        else ""
    )
    canary_health = f"\n      health_url: {canary_url}/health" if canary_url else ""
    path = tmp_path / "services.yaml"
    path.write_text(
        f"""
default_service: rag-api
services:
  rag-api:
    namespace: {namespace}
    deployment: rag-api
    container: rag-api
    image_repository: {REPOSITORY}
    rollout_timeout_seconds: {timeout}
    known_good_minutes: {known_good_minutes}
    canary:
      deployment: rag-api-canary
      virtual_service: rag-api
      canary_destination: {{host: rag-api, subset: canary}}
      stable_destination: {{host: rag-api, subset: stable}}{canary_health}{registry}
"""
    )
    monkeypatch.setenv(SERVICES_ENV, str(path))


def eventually(check, timeout: float, what: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """The first truthy value of `check()` within `timeout` seconds; fails naming `what`."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout:.0f}s (last: {value!r})")


def error_ratio(prometheus_url: str) -> float | None:
    """rag-api's live error ratio (5 s window) as Prometheus answers it; None without data."""
    response = httpx.get(
        f"{prometheus_url}/api/v1/query",
        params={"query": error_ratio_expr("5s", "rag-api")},
        timeout=5,
    )
    result = response.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None
