"""Who made a Deployment's current revision, and when, as the cluster records it. Pure.

An alert describes the version that was running when it started. Before an alert-started
rollback acts, it asks the cluster when the Deployment's current pod template was written
(the current revision became current) and by whom. A rollback makes an old ReplicaSet current
again without creating one, so the ReplicaSet's `creationTimestamp` is only a lower bound. The
cluster keeps better evidence:

- the Deployment's `metadata.managedFields`: every field manager that owns a field of
  `spec.template` (kubectl-set, kubectl-rollout, kubectl-client-side-apply, a CI's client, this
  tool as `rollback-flows`) with the time of its last write. The latest such write is when the
  template became what it is (a manager's time also moves when it changes other fields of the
  object, which only makes the answer later, never earlier);
- this tool's own rollback mark (`rollback-flows.dev/rollback`, written in the same patch as
  the undo): the flow run, the revisions from and to, the time;
- `kubernetes.io/change-cause`, where the writer set one.

The mark also makes a rollback safe to repeat: a second attempt of the same flow run finds its
own change already made, and a new undo soon after finds the rollback it would flip back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from playbook.errors import InvalidInputError, RollbackRefusedError
from playbook.rollout import (
    CHANGE_CAUSE_ANNOTATION,
    owned_replicasets,
    revision_of,
    templates_equal,
)

FIELD_MANAGER = "rollback-flows"
"""The field manager of every write this tool makes (it shows in `managedFields`)."""
ROLLBACK_MARK_ANNOTATION = "rollback-flows.dev/rollback"
"""The Deployment annotation recording this tool's last undo, written with the undo itself."""
DEFAULT_REPEAT_WINDOW = timedelta(minutes=60)


@dataclass(frozen=True)
class RollbackMark:
    """This tool's record of an undo, kept on the Deployment it changed."""

    flow_run_id: str
    from_revision: int | None
    to_revision: int
    replicaset: str
    at: datetime

    def to_annotation(self) -> str:
        """The mark as the annotation's value (compact JSON)."""
        return json.dumps(
            {
                "flow_run_id": self.flow_run_id,
                "from_revision": self.from_revision,
                "to_revision": self.to_revision,
                "replicaset": self.replicaset,
                "at": self.at.astimezone(UTC).isoformat(),
            },
            separators=(",", ":"),
        )

    def describe(self) -> str:
        """One line a person reads: which run rolled back from where to where, and when."""
        return (
            f"flow run {self.flow_run_id} rolled back from revision {self.from_revision} to "
            f"revision {self.to_revision} (ReplicaSet {self.replicaset}) at "
            f"{_when(self.at)}"
        )


def parse_mark(value: object) -> RollbackMark | None:
    """The mark stored in the annotation, or None when absent or not a mark (edited by hand)."""
    if not isinstance(value, str):
        return None
    try:
        raw = json.loads(value)
        at = datetime.fromisoformat(raw["at"])
        from_revision = raw.get("from_revision")
        mark = RollbackMark(
            flow_run_id=str(raw["flow_run_id"]),
            from_revision=int(from_revision) if from_revision is not None else None,
            to_revision=int(raw["to_revision"]),
            replicaset=str(raw["replicaset"]),
            at=at,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return mark if at.tzinfo is not None else None


@dataclass(frozen=True)
class TemplateWrite:
    """A field manager that owns part of the pod template, and when it last wrote."""

    manager: str
    operation: str
    at: datetime


@dataclass(frozen=True)
class RolloutOrigin:
    """Where the Deployment's current revision came from, as the cluster records it."""

    namespace: str
    name: str
    revision: int | None
    replicaset: str | None
    """The ReplicaSet whose template is the Deployment's (None before the controller made it)."""
    since: datetime | None
    """When the current template was written: the latest evidence the cluster keeps."""
    by: str | None
    """The field manager that wrote the template last (`rollback-flows` is this tool)."""
    change_cause: str | None
    mark: RollbackMark | None
    """This tool's rollback mark, only when that rollback is what runs now."""
    written: datetime | None = None
    """The earliest evidence of when the current template was written (`since` is the latest):
    the end of the stretch the revision before it ran, as far as the cluster can tell."""
    previous_since: datetime | None = None
    """The earliest the revision before it can have become current: the latest of the
    Deployment's creation, that ReplicaSet's creation and this tool's mark naming it. None
    when the cluster keeps nothing about an earlier revision or the Deployment's creation."""

    def describe(self) -> str:
        """Revision, ReplicaSet, when and by whom, as one line."""
        parts = [f"revision {self.revision} (ReplicaSet {self.replicaset or 'not created yet'})"]
        parts.append(
            f"current since {_when(self.since)}" if self.since else "since an unknown time"
        )
        if self.mark is not None:
            parts.append(f"made by this tool: {self.mark.describe()}")
        elif self.by:
            parts.append(f"written by {self.by}")
        if self.change_cause:
            parts.append(f"change-cause {self.change_cause!r}")
        return ", ".join(parts)


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds") if at else "unknown"


def _time(value: object) -> datetime | None:
    """A Kubernetes timestamp, as the latest instant it may stand for.

    The API server writes whole seconds (`2026-12-01T20:00:00Z`): a write at 20:00:00.9 shows
    as 20:00:00. Read as the end of that second, a rollout is never taken for older than it is.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.microsecond == 0 and "." not in value:
        parsed += timedelta(seconds=1) - timedelta(microseconds=1)
    return parsed


def time_floor(value: object) -> datetime | None:
    """A Kubernetes timestamp, as the earliest instant it may stand for (a lower bound)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def previous_replicaset(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The owned ReplicaSet that was current before the current one: the second-highest
    revision (the controller gives the next revision to whichever ReplicaSet becomes current,
    a new one or one a rollback brought back)."""
    numbered = [(revision_of(rs), rs) for rs in owned_replicasets(deployment, replicasets)]
    ranked = sorted(((n, rs) for n, rs in numbered if n is not None), key=lambda p: p[0])
    return ranked[-2][1] if len(ranked) >= 2 else None


def template_writes(deployment: Mapping[str, Any]) -> tuple[TemplateWrite, ...]:
    """The managed-fields entries that own part of `spec.template`, latest last."""
    writes = []
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        if entry.get("subresource"):  # status and scale never touch the template
            continue
        fields = entry.get("fieldsV1") or {}
        if "f:template" not in (fields.get("f:spec") or {}):
            continue
        at = _time(entry.get("time"))
        if at is not None:
            writes.append(
                TemplateWrite(str(entry.get("manager", "")), str(entry.get("operation", "")), at)
            )
    return tuple(sorted(writes, key=lambda w: w.at))


def current_replicaset(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The owned ReplicaSet whose template equals the Deployment's (kubectl's new ReplicaSet)."""
    template = deployment.get("spec", {}).get("template") or {}
    for rs in owned_replicasets(deployment, replicasets):
        if templates_equal(rs.get("spec", {}).get("template") or {}, template):
            return rs
    return None


def rollout_origin(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> RolloutOrigin:
    """When the Deployment's current revision became current, and who made it so."""
    meta = deployment.get("metadata", {})
    annotations = meta.get("annotations") or {}
    rs = current_replicaset(deployment, replicasets)
    rs_name = str(rs["metadata"]["name"]) if rs is not None else None
    writes = template_writes(deployment)
    latest = writes[-1] if writes else None
    mark = parse_mark(annotations.get(ROLLBACK_MARK_ANNOTATION))
    # The mark describes what runs only if it names the current ReplicaSet and nobody has
    # written the template since (a later `kubectl rollout undo` may copy an old mark back).
    if mark is not None and (
        mark.replicaset != rs_name or (latest is not None and latest.manager != FIELD_MANAGER)
    ):
        mark = None
    evidence = [w.at for w in writes[-1:]]
    if mark is not None:
        evidence.append(mark.at)
    created = _time((rs or {}).get("metadata", {}).get("creationTimestamp"))
    if created is not None:
        evidence.append(created)
    previous = previous_replicaset(deployment, replicasets)
    previous_since = _previous_since(deployment, previous)
    # Upper bounds of the write that made the template current, the earliest of them: the
    # latest template write (a manager's time also moves with its later writes) and, when the
    # ReplicaSet is newer than the previous revision's start, its creation (a slow controller
    # creates it seconds after the write).
    ends = [w.at for w in writes[-1:]]
    if mark is not None:
        ends.append(mark.at)
    if created is not None and (previous_since is None or created >= previous_since):
        ends.append(created)
    return RolloutOrigin(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        revision=revision_of(deployment),
        replicaset=rs_name,
        since=max(evidence) if evidence else None,
        by=latest.manager if latest else None,
        change_cause=annotations.get(CHANGE_CAUSE_ANNOTATION),
        mark=mark,
        written=min(ends) if ends else None,
        previous_since=previous_since,
    )


def _previous_since(
    deployment: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> datetime | None:
    """The earliest the revision before the current one can have become current."""
    meta = deployment.get("metadata", {})
    bounds = [time_floor(meta.get("creationTimestamp"))]
    if previous is not None:
        bounds.append(time_floor(previous.get("metadata", {}).get("creationTimestamp")))
        mark = parse_mark((meta.get("annotations") or {}).get(ROLLBACK_MARK_ANNOTATION))
        if mark is not None and mark.replicaset == previous["metadata"].get("name"):
            bounds.append(mark.at)
    known = [b for b in bounds if b is not None]
    return max(known) if known else None


# --- what the origin means for a rollback ------------------------------------------------


@dataclass(frozen=True)
class StaleAlert:
    """The answer to: does this alert describe the version that runs now?"""

    stale: bool
    message: str


def judge_alert_age(origin: RolloutOrigin, alert_started_at: datetime) -> StaleAlert:
    """An alert that started before the current revision became current is about an older one.

    Unknown is not "fresh": when the cluster tells nothing about the current revision's age,
    the alert cannot be shown to describe it, and it is treated as stale.
    """
    if alert_started_at.tzinfo is None:
        raise InvalidInputError("alert_started_at must carry a time zone")
    started = _when(alert_started_at)
    where = f"Deployment {origin.namespace}/{origin.name}"
    if origin.since is None:
        return StaleAlert(
            True,
            f"not rolled back: the cluster does not say when {where}'s current revision became "
            f"current ({origin.describe()}), so the alert (started {started}) cannot be shown "
            "to be about it",
        )
    if origin.since > alert_started_at:
        return StaleAlert(
            True,
            f"not rolled back: the alert started at {started}, before {where} changed to "
            f"{origin.describe()}; the alert is about the version before it, and undoing now "
            "would undo that newer change",
        )
    return StaleAlert(
        False,
        f"the alert started at {started}, after {where} became {origin.describe()}",
    )


@dataclass(frozen=True)
class Resume:
    """A second attempt of the flow run that already made this undo: wait and verify only."""

    mark: RollbackMark


def check_repeat(
    origin: RolloutOrigin,
    intent_id: str | None,
    now: datetime,
    *,
    to_revision: int | None,
    force: bool,
    window: timedelta = DEFAULT_REPEAT_WINDOW,
) -> Resume | None:
    """Whether an undo may go ahead, given the rollback this tool made last.

    Returns a `Resume` when the mark on the Deployment is this very run's (a retry or a
    resubmitted run: the change is made, do not make it again), else None (go ahead).

    Raises:
        RollbackRefusedError: an undo to "the previous revision" within `window` after this
            tool rolled the Deployment back would flip it back to the version that rollback
            removed; `to_revision` or `force` overrides.
    """
    mark = origin.mark
    if mark is None:
        return None
    if intent_id is not None and mark.flow_run_id == intent_id:
        return Resume(mark)
    if to_revision is not None or force or now - mark.at >= window:
        return None
    minutes = window.total_seconds() / 60
    raise RollbackRefusedError(
        f"refused: Deployment {origin.namespace}/{origin.name} was rolled back by this tool "
        f"{(now - mark.at).total_seconds() / 60:.0f} min ago ({mark.describe()}); undoing to "
        f"the previous revision now would return to revision {mark.from_revision}, the version "
        f"that rollback removed. Nothing was changed. Pass to_revision to choose a revision, or "
        f"force=True to undo anyway (this guard lasts {minutes:g} min after a rollback)"
    )
