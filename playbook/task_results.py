"""Typed, frozen results of the cluster-changing tasks, so flows and reports never see raw dicts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from playbook.rollout import UndoPlan
from playbook.traffic import CanaryRemovalPlan


def patch_text(patch: Any) -> str:
    """A patch as the indented JSON a person can read or paste into `kubectl patch`."""
    return json.dumps(patch, indent=2, sort_keys=True)


@dataclass(frozen=True)
class UndoResult:
    """What `undo_deployment` planned and whether it wrote it."""

    plan: UndoPlan
    applied: bool
    dry_run: bool
    generation_before: int
    generation_after: int
    resource_version_after: str
    resumed: bool = False
    """An earlier attempt of this flow run made the change; this one wrote nothing."""
    config_warnings: tuple[str, ...] = ()
    """ConfigMaps and Secrets of the target revision changed since it stopped being current."""


@dataclass(frozen=True)
class ImageChange:
    """What `set_deployment_image` planned and whether it wrote it."""

    namespace: str
    name: str
    container: str
    image_before: str
    image_after: str
    patch: dict[str, Any]
    applied: bool
    dry_run: bool

    @property
    def already_current(self) -> bool:
        """True when the container already runs the wanted image."""
        return self.image_before == self.image_after


@dataclass(frozen=True)
class ScaleChange:
    """What `scale_deployment` planned and whether it wrote it."""

    namespace: str
    name: str
    replicas_before: int
    replicas_after: int
    applied: bool
    dry_run: bool
    exists: bool = True


@dataclass(frozen=True)
class RouteRemoval:
    """What `remove_canary_routes` planned and whether it wrote it."""

    plan: CanaryRemovalPlan
    applied: bool
    dry_run: bool
    resource_version_after: str


@dataclass(frozen=True)
class EventRecord:
    """One Kubernetes event about the Deployment, its ReplicaSets or its pods."""

    type: str
    reason: str
    object: str
    message: str
    count: int
    last_seen: str


@dataclass(frozen=True)
class LogScan:
    """Recent log lines matching the error pattern, or why logs could not be read."""

    available: bool
    lines: tuple[str, ...]
    unavailable_reason: str | None = None
