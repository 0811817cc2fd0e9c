"""Rollout facts from Deployment, ReplicaSet and Pod objects: pure functions, no I/O.

The objects are the JSON the Kubernetes API serves (camelCase dicts). The semantics are
kubectl's: `rollout status` (DeploymentStatusViewer), `rollout history` (revisions are the
ReplicaSets' `deployment.kubernetes.io/revision` annotations) and `rollout undo` (client-side:
the template of the chosen revision's ReplicaSet, without `pod-template-hash`, is patched
back into the Deployment together with that ReplicaSet's annotations).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from playbook.errors import InvalidInputError, RevisionNotFoundError

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"

# Deployment annotations kubectl keeps from the Deployment (not the ReplicaSet) on undo.
_ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)

Json = dict[str, Any]


@dataclass(frozen=True)
class Condition:
    """One entry of `status.conditions`."""

    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class RolloutStatus:
    """What `kubectl get deployment -o wide` and its conditions show, plus rollout progress."""

    namespace: str
    name: str
    generation: int
    observed_generation: int
    resource_version: str
    revision: int | None
    desired_replicas: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    images: tuple[tuple[str, str], ...]
    selector: tuple[tuple[str, str], ...]
    paused: bool
    conditions: tuple[Condition, ...]
    complete: bool
    failed: bool
    message: str

    def image_of(self, container: str) -> str:
        """The image of `container`; an unknown container name raises InvalidInputError."""
        for name, image in self.images:
            if name == container:
                return image
        known = ", ".join(name for name, _ in self.images)
        raise InvalidInputError(
            f"Deployment {self.namespace}/{self.name} has no container {container!r} "
            f"(its containers: {known})"
        )

    @property
    def label_selector(self) -> str:
        """`spec.selector.matchLabels` as a label selector string."""
        return ",".join(f"{key}={value}" for key, value in self.selector)

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if the Deployment has one."""
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True)
class Revision:
    """One entry of `kubectl rollout history`: a ReplicaSet and what its template runs."""

    number: int
    replicaset: str
    images: tuple[tuple[str, str], ...]
    change_cause: str | None
    replicas: int


@dataclass(frozen=True)
class UndoPlan:
    """Where `rollout undo` goes and the exact JSON patch that takes the Deployment there."""

    namespace: str
    name: str
    current_revision: int | None
    target: Revision
    already_current: bool
    patch: tuple[Json, ...]

    @property
    def summary(self) -> str:
        """One line a person can read: what undo does, or why it does nothing."""
        if self.already_current:
            return (
                f"Deployment {self.namespace}/{self.name} is already at revision "
                f"{self.target.number} (its template equals that revision's); nothing to do"
            )
        return (
            f"roll Deployment {self.namespace}/{self.name} back from revision "
            f"{self.current_revision} to revision {self.target.number} "
            f"({_images_text(self.target.images)})"
        )


@dataclass(frozen=True)
class PodState:
    """A pod as `kubectl get pods` shows it: phase, readiness, restarts, waiting reasons."""

    name: str
    phase: str
    ready: bool
    restarts: int
    waiting_reasons: tuple[str, ...]
    template_hash: str | None
    images: tuple[str, ...]
    deleting: bool


def _images_text(images: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{name}={image}" for name, image in images)


def _int(value: Any, default: int = 0) -> int:
    return (
        int(value) if isinstance(value, int | str) and str(value).lstrip("-").isdigit() else default
    )


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """The `deployment.kubernetes.io/revision` of a Deployment or ReplicaSet, if it parses."""
    value = (obj.get("metadata", {}).get("annotations") or {}).get(REVISION_ANNOTATION)
    if value is None or not str(value).isdigit():
        return None
    return int(value)


def _containers(template: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    containers = (template.get("spec") or {}).get("containers") or []
    return tuple((str(c.get("name")), str(c.get("image"))) for c in containers)


def _condition_list(status: Mapping[str, Any]) -> tuple[Condition, ...]:
    return tuple(
        Condition(
            type=str(c.get("type", "")),
            status=str(c.get("status", "")),
            reason=str(c.get("reason", "")),
            message=str(c.get("message", "")),
        )
        for c in status.get("conditions") or []
    )


def rollout_progress(deployment: Mapping[str, Any]) -> tuple[bool, bool, str]:
    """`kubectl rollout status` for one Deployment object: (complete, failed, message).

    Follows kubectl's DeploymentStatusViewer: nothing counts until the controller has observed
    the latest generation; ProgressDeadlineExceeded is a failure; otherwise the rollout is
    complete when every desired replica is updated, no old replica remains and every updated
    replica is available.
    """
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    if _int(meta.get("generation")) > _int(status.get("observedGeneration")):
        return False, False, "Waiting for deployment spec update to be observed..."
    for cond in _condition_list(status):
        if cond.type == "Progressing" and cond.reason == PROGRESS_DEADLINE_EXCEEDED:
            return (
                False,
                True,
                f'deployment "{name}" exceeded its progress deadline '
                f"(condition Progressing=False, reason {PROGRESS_DEADLINE_EXCEEDED}: "
                f"{cond.message})",
            )
    desired = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"))
    replicas = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < desired:
        return (
            False,
            False,
            f"{waiting}{updated} out of {desired} new replicas have been updated...",
        )
    if replicas > updated:
        return (
            False,
            False,
            f"{waiting}{replicas - updated} old replicas are pending termination...",
        )
    if available < updated:
        return False, False, f"{waiting}{available} of {updated} updated replicas are available..."
    return True, False, f'deployment "{name}" successfully rolled out'


def rollout_status(deployment: Mapping[str, Any]) -> RolloutStatus:
    """The typed status of a Deployment object, with kubectl's rollout interpretation."""
    meta = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    complete, failed, message = rollout_progress(deployment)
    match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    return RolloutStatus(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        resource_version=str(meta.get("resourceVersion", "")),
        revision=revision_of(deployment),
        desired_replicas=_int(spec.get("replicas"), 1),
        replicas=_int(status.get("replicas")),
        updated_replicas=_int(status.get("updatedReplicas")),
        ready_replicas=_int(status.get("readyReplicas")),
        available_replicas=_int(status.get("availableReplicas")),
        images=_containers(spec.get("template") or {}),
        selector=tuple(sorted((str(k), str(v)) for k, v in match_labels.items())),
        paused=bool(spec.get("paused", False)),
        conditions=_condition_list(status),
        complete=complete,
        failed=failed,
        message=message,
    )


def _normalized(value: Any) -> Any:
    """Drop nulls and empty maps/lists, as apimachinery's semantic equality treats them alike."""
    if isinstance(value, Mapping):
        out = {k: _normalized(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def template_without_hash(template: Mapping[str, Any]) -> Json:
    """A deep copy of a pod template without the `pod-template-hash` label."""
    result: Json = copy.deepcopy(dict(template))
    labels = (result.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return result


def templates_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """kubectl's EqualIgnoreHash: pod templates equal apart from `pod-template-hash`."""
    return _normalized(template_without_hash(a)) == _normalized(template_without_hash(b))


def owned_replicasets(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The ReplicaSets whose controller owner is this Deployment (by uid)."""
    uid = deployment.get("metadata", {}).get("uid")
    owned = []
    for rs in replicasets:
        for ref in rs.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("uid") == uid:
                owned.append(rs)
    return owned


def revision_history(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]]
) -> tuple[Revision, ...]:
    """`kubectl rollout history`: one Revision per owned ReplicaSet, oldest first."""
    revisions = []
    for rs in owned_replicasets(deployment, replicasets):
        number = revision_of(rs)
        if number is None:
            continue
        annotations = rs.get("metadata", {}).get("annotations") or {}
        revisions.append(
            Revision(
                number=number,
                replicaset=str(rs["metadata"]["name"]),
                images=_containers(rs.get("spec", {}).get("template") or {}),
                change_cause=annotations.get(CHANGE_CAUSE_ANNOTATION),
                replicas=_int((rs.get("status") or {}).get("replicas")),
            )
        )
    return tuple(sorted(revisions, key=lambda r: r.number))


def _former_revisions(rs: Mapping[str, Any]) -> set[int]:
    """The numbers a ReplicaSet had before it was reused (`revision-history` annotation)."""
    history = (rs.get("metadata", {}).get("annotations") or {}).get(REVISION_HISTORY_ANNOTATION)
    return {int(n) for n in str(history or "").split(",") if n.strip().isdigit()}


def _replicaset_for(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    to_revision: int | None,
) -> Mapping[str, Any]:
    """kubectl's deploymentRevision: the ReplicaSet to undo to."""
    name = deployment.get("metadata", {}).get("name")
    owned = [(revision_of(rs), rs) for rs in owned_replicasets(deployment, replicasets)]
    numbered = sorted(((n, rs) for n, rs in owned if n is not None), key=lambda p: p[0])
    if to_revision:
        for number, rs in numbered:
            if number == to_revision:
                return rs
        for _, rs in numbered:
            if to_revision in _former_revisions(rs):
                return rs
        known = ", ".join(str(n) for n, _ in numbered) or "none"
        raise RevisionNotFoundError(
            f"unable to find revision {to_revision} in the history of Deployment {name} "
            f"(its revisions: {known})"
        )
    if len(numbered) < 2:
        raise RevisionNotFoundError(
            f"no previous revision to roll back to: Deployment {name} has "
            f"{len(numbered)} revision(s) in its history"
        )
    return numbered[-2][1]


def plan_undo(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    to_revision: int | None = None,
    annotations: Mapping[str, str] | None = None,
) -> UndoPlan:
    """Plan `kubectl rollout undo [--to-revision=N]` without touching anything.

    The previous revision is the second-highest revision in the history, which is the highest
    below the current one once the controller has seen the Deployment. Unlike kubectl, a
    `to_revision` that the controller has since renumbered (an undo reuses the old ReplicaSet
    under a new number and records the old one in `revision-history`) still finds that
    ReplicaSet, so re-running the same undo reports "already at revision" instead of failing. The patch replaces the
    template and the annotations as kubectl does, guarded by a `test` of the resourceVersion
    so a concurrent change makes it fail (and be re-planned) instead of overwriting that change.
    `annotations` are written in the same patch (this tool's record of the undo).

    Raises:
        InvalidInputError: `to_revision` is negative or the Deployment is paused.
        RevisionNotFoundError: that revision, or any previous one, does not exist.
    """
    meta = deployment.get("metadata", {})
    name = str(meta.get("name", ""))
    if to_revision is not None and to_revision < 0:
        raise InvalidInputError(
            f"to_revision must be a positive revision number, not {to_revision}"
        )
    rs = _replicaset_for(deployment, replicasets, to_revision)
    target = revision_history(deployment, [rs])[0]
    current = revision_of(deployment)
    template = template_without_hash(rs.get("spec", {}).get("template") or {})
    already = templates_equal(template, deployment.get("spec", {}).get("template") or {})
    if not already and deployment.get("spec", {}).get("paused"):
        raise InvalidInputError(
            f"Deployment {name} is paused; resume it (kubectl rollout resume) before undoing"
        )
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k in _ANNOTATIONS_TO_SKIP}
    kept.update(
        {
            k: v
            for k, v in (rs.get("metadata", {}).get("annotations") or {}).items()
            if k not in _ANNOTATIONS_TO_SKIP
        }
    )
    kept.update(annotations or {})
    patch: tuple[Json, ...] = ()
    if not already:
        patch = (
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": meta.get("resourceVersion"),
            },
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": kept},
        )
    return UndoPlan(
        namespace=str(meta.get("namespace", "")),
        name=name,
        current_revision=current,
        target=target,
        already_current=already,
        patch=patch,
    )


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """A pod's phase, readiness (the Ready condition), restarts and container waiting reasons."""
    meta = pod.get("metadata", {})
    status = pod.get("status") or {}
    statuses = list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )
    reasons = []
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            reasons.append(str(waiting["reason"]))
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return PodState(
        name=str(meta.get("name", "")),
        phase=str(status.get("phase", "Unknown")),
        ready=ready,
        restarts=sum(_int(cs.get("restartCount")) for cs in statuses),
        waiting_reasons=tuple(reasons),
        template_hash=(meta.get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL),
        images=tuple(str(c.get("image")) for c in (pod.get("spec") or {}).get("containers") or []),
        deleting=meta.get("deletionTimestamp") is not None,
    )


def describe_waiting(pods: Iterable[PodState]) -> str:
    """A short text naming the waiting reasons and not-ready pods, e.g. for a failure message."""
    by_reason: dict[str, list[str]] = {}
    not_ready = []
    for pod in pods:
        for reason in pod.waiting_reasons:
            by_reason.setdefault(reason, []).append(pod.name)
        if not pod.ready and not pod.waiting_reasons and not pod.deleting:
            not_ready.append(pod.name)
    parts = [f"{reason}: {', '.join(sorted(names))}" for reason, names in sorted(by_reason.items())]
    if not_ready:
        parts.append(f"running but not ready: {', '.join(sorted(not_ready))}")
    return "; ".join(parts) if parts else "no pod is waiting"


@dataclass(frozen=True)
class RolloutSnapshot:
    """One read of a Deployment and its ReplicaSets, as the API served them (JSON).

    A rollback's status line, revision history, known-good table, GitOps owner and undo plan
    all come from the same moment; its patch carries that read's resourceVersion, so a change
    made since fails the patch and the undo decides again from a new read.
    """

    deployment: Json
    replicasets: tuple[Json, ...]

    def status(self) -> RolloutStatus:
        return rollout_status(self.deployment)

    def history(self) -> tuple[Revision, ...]:
        return revision_history(self.deployment, self.replicasets)
