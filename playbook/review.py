"""The post-incident review, pre-filled from the runs themselves (the playbook's template).

Facts only: the timeline from the runs' own times and the alert's `startsAt`, the impact in
figures from Prometheus, what changed between the bad and the good pod template. Root cause,
what went well, what could be improved, action items and attendees are left for people.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from playbook.diagnosis import ObjectRef, pod_template
from playbook.notices import duration_text
from playbook.thresholds import Indicator

Point = tuple[datetime, float]


@dataclass(frozen=True)
class TimelineEvent:
    """One row of the review's timeline; `at` None when it did not happen or is unknown."""

    event: str
    at: datetime | None
    source: str
    """Where the time comes from (the alert's startsAt, a flow run's state, an artifact)."""


@dataclass(frozen=True)
class Impact:
    """An indicator over the incident, from Prometheus: its peak and its mean."""

    indicator: Indicator
    peak: float
    mean: float
    start: datetime
    end: datetime
    points: int

    def line(self) -> str:
        """One line a person reads, e.g. `Error Rate: peak 20 %, mean 14 % over 3 min 5 s`."""
        seconds = (self.end - self.start).total_seconds()
        return (
            f"{self.indicator.title}: peak {self.indicator.format(self.peak)}, mean "
            f"{self.indicator.format(self.mean)} over {duration_text(seconds)} "
            f"({self.start:%H:%M:%S} to {self.end:%H:%M:%S} UTC, {self.points} points)"
        )


def impact_of(
    indicator: Indicator, points: Sequence[Point], start: datetime, end: datetime
) -> Impact | None:
    """The indicator's peak and mean over [start, end]; None without data there."""
    inside = [v for at, v in points if start <= at <= end]
    if not inside:
        return None
    worst = min(inside) if indicator.breach in ("below", "at_most") else max(inside)
    return Impact(indicator, worst, sum(inside) / len(inside), start, end, len(inside))


def template_changes(
    bad: Mapping[str, Any], good: Mapping[str, Any], container: str
) -> tuple[str, ...]:
    """What the bad pod template changed against the good one: image, environment variable
    names, ConfigMap/Secret references, resources, probes. Names only, never values."""
    bad_t, good_t = pod_template(bad), pod_template(good)
    bad_c, good_c = bad_t.container(container), good_t.container(container)
    if bad_c is None or good_c is None:
        return (f"container {container!r} is not in both templates",)
    lines: list[str] = []
    if bad_c.image != good_c.image:
        lines.append(f"image: `{good_c.image}` → `{bad_c.image}`")
    added = sorted(set(bad_c.env_names) - set(good_c.env_names))
    removed = sorted(set(good_c.env_names) - set(bad_c.env_names))
    if added:
        lines.append(f"environment variables added: {', '.join(added)}")
    if removed:
        lines.append(f"environment variables removed: {', '.join(removed)}")
    bad_refs = {(r.kind, r.name) for r in (*bad_t.references(), *_pull(bad_t.pull_secrets))}
    good_refs = {(r.kind, r.name) for r in (*good_t.references(), *_pull(good_t.pull_secrets))}
    for kind, name in sorted(bad_refs - good_refs):
        lines.append(f"{kind} {name} referenced (not by the good revision)")
    for kind, name in sorted(good_refs - bad_refs):
        lines.append(f"{kind} {name} no longer referenced")
    bad_res, good_res = _resources(bad, container), _resources(good, container)
    if bad_res != good_res:
        lines.append(f"resources: {_json(good_res)} → {_json(bad_res)}")
    bad_probes = sorted(f"{p.kind} {p}" for p in bad_c.probes)
    good_probes = sorted(f"{p.kind} {p}" for p in good_c.probes)
    if bad_probes != good_probes:
        lines.append(
            f"probes: {'; '.join(good_probes) or 'none'} → {'; '.join(bad_probes) or 'none'}"
        )
    return tuple(lines) or ("no difference in image, env names, references, resources or probes",)


def _pull(names: Sequence[str]) -> tuple[ObjectRef, ...]:
    return tuple(ObjectRef("Secret", n, "imagePullSecrets", False) for n in names)


def _resources(template: Mapping[str, Any], container: str) -> Any:
    for c in (template.get("spec") or {}).get("containers") or []:
        if c.get("name") == container:
            return c.get("resources") or {}
    return {}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if value else "none"


@dataclass(frozen=True)
class Review:
    """The facts of one incident, for the review artifact."""

    service: str
    environment: str
    namespace: str
    reason: str
    from_version: str
    to_version: str
    timeline: tuple[TimelineEvent, ...]
    impact: tuple[str, ...]
    verdict: str
    changes: tuple[str, ...]
    runs: tuple[tuple[str, str], ...]
    """(what, link) of the runs of this incident."""

    @property
    def duration_seconds(self) -> float | None:
        """From the first to the last known event."""
        known = [e.at for e in self.timeline if e.at is not None]
        return (max(known) - min(known)).total_seconds() if len(known) > 1 else None

    def to_markdown(self) -> str:
        """The playbook's Post-Incident Review template, filled with what the runs know."""
        known = [e.at for e in self.timeline if e.at is not None]
        first = min(known) if known else None
        duration = self.duration_seconds
        lines = [
            f"## Post-Incident Review: {first:%Y-%m-%d} Rollback" if first else
            "## Post-Incident Review: Rollback",
            "",
            "### Summary",
            f"- **Date/Time**: {first:%Y-%m-%d %H:%M:%S} UTC" if first else "- **Date/Time**: ",
            f"- **Duration**: {duration_text(duration)}" if duration is not None
            else "- **Duration**: ",
            f"- **Service**: {self.service} in {self.environment} ({self.namespace})",
            f"- **Action**: rolled back from {self.from_version} to {self.to_version}",
            f"- **Reason**: {self.reason}",
            f"- **Impact**: {'; '.join(self.impact) or 'no figures in Prometheus'}",
            f"- **Monitor verdict**: {self.verdict}",
            "- **Root Cause**: ",
            "",
            "### Timeline",
            "| Time | Event | From |",
            "|------|-------|------|",
        ]  # fmt: skip
        for e in self.timeline:
            at = f"{e.at:%H:%M:%S}" if e.at else "—"
            lines.append(f"| {at} | {e.event} | {e.source} |")
        lines += ["", "### What changed between the good and the bad revision", ""]
        lines += [f"- {c}" for c in self.changes]
        lines += ["", "### Runs", ""]
        lines += [f"- {what}: {link}" for what, link in self.runs]
        lines += [
            "",
            "### What Went Well",
            "- ",
            "",
            "### What Could Be Improved",
            "- ",
            "",
            "### Action Items",
            "- [ ] ",
            "- [ ] ",
            "",
            "### Attendees",
            "- ",
        ]
        return "\n".join(lines) + "\n"
