"""Config changed in place: what a rollback's target revision needs besides its image. Pure.

A rollback brings back a revision's pod template (its image, its env), not the ConfigMaps and
Secrets that template names: those are edited in place and keep their newest content
(argoproj/argo-rollouts#1297: the image went back, the ConfigMap stayed new, and the pods
could not start). So before undoing, each object the target template names (volumes,
`envFrom`, `valueFrom`, `imagePullSecrets`) is checked: a missing one that is not optional
refuses the rollback (its pods could not start), and one changed since the target revision
stopped being current (the latest `managedFields` time of its metadata) is a warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from playbook.diagnosis import ObjectRef, pod_template
from playbook.errors import RollbackRefusedError
from playbook.rollout import owned_replicasets, revision_of


@dataclass(frozen=True)
class ConfigObject:
    """A ConfigMap or Secret as its metadata says: whether it exists and when it last changed."""

    kind: str
    name: str
    exists: bool | None
    """None: could not tell (the Role does not allow the `get`)."""
    changed_at: datetime | None = None


def referenced_objects(template: Mapping[str, Any]) -> tuple[ObjectRef, ...]:
    """Every ConfigMap and Secret a pod template names, pull secrets included, once each."""
    parsed = pod_template(template)
    refs = list(parsed.references())
    refs += [ObjectRef("Secret", name, "imagePullSecrets", False) for name in parsed.pull_secrets]
    unique: dict[tuple[str, str], ObjectRef] = {}
    for ref in refs:
        known = unique.get((ref.kind, ref.name))
        # required anywhere means required
        if known is None or (known.optional and not ref.optional):
            unique[(ref.kind, ref.name)] = ref
    return tuple(unique.values())


def last_change(metadata: Mapping[str, Any]) -> datetime | None:
    """The latest write the object's metadata records (managed fields, else its creation)."""
    times = [e.get("time") for e in metadata.get("managedFields") or []]
    times.append(metadata.get("creationTimestamp"))
    parsed = [_time(t) for t in times if isinstance(t, str) and t]
    known = [t for t in parsed if t is not None]
    return max(known) if known else None


def _time(value: str) -> datetime | None:
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def target_stopped_at(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]], target: int
) -> datetime | None:
    """When revision `target` stopped being current: the creation of the next revision's
    ReplicaSet (never later than that; an earlier time only adds warnings)."""
    later = []
    for rs in owned_replicasets(deployment, replicasets):
        number = revision_of(rs)
        created = _time(str((rs.get("metadata") or {}).get("creationTimestamp", "")))
        if number is not None and number > target and created is not None:
            later.append((number, created))
    return min(later)[1] if later else None


@dataclass(frozen=True)
class ConfigCheck:
    """What the target revision's config means for the rollback."""

    warnings: tuple[str, ...]


def judge_config(
    revision: int,
    refs: Iterable[ObjectRef],
    objects: Iterable[ConfigObject],
    stopped_at: datetime | None,
) -> ConfigCheck:
    """Refuse when the target revision needs an object that does not exist; warn for each one
    that changed since it stopped being current, or that could not be checked.

    Raises:
        RollbackRefusedError: a required ConfigMap or Secret is missing; nothing was changed.
    """
    found = {(o.kind, o.name): o for o in objects}
    missing, warnings = [], []
    for ref in refs:
        obj = found.get((ref.kind, ref.name))
        where = f"{ref.kind} {ref.name} ({ref.used_by})"
        if obj is None or obj.exists is None:
            warnings.append(
                f"{where}: could not be checked; the rollback brings back the image, not its config"
            )
        elif not obj.exists:
            if not ref.optional:
                missing.append(where)
        elif stopped_at is not None and obj.changed_at is not None and obj.changed_at > stopped_at:
            warnings.append(
                f"{where} changed at {obj.changed_at.isoformat(timespec='seconds')}, after revision "
                f"{revision} stopped being current ({stopped_at.isoformat(timespec='seconds')}): the "
                "rollback brings back the image, not that config"
            )
    if missing:
        raise RollbackRefusedError(
            f"refused: revision {revision} needs {', '.join(missing)}, which does not exist: its "
            "pods could not start. Nothing was changed. Recreate it (or roll back to another "
            "revision) first"
        )
    return ConfigCheck(tuple(warnings))
