"""Which earlier revision of a Deployment is known to be good, from its own metrics. Pure.

"The previous revision" is only kubectl's guess at where to go back to: it may be a bad
release itself. A revision is *known good* when it was current for at least `min_current`
and, over that whole time, each critical indicator of the decision matrix (error rate and
P99 by default), read from Prometheus for that revision's own version (the service's series
labelled `version=<its image tag>`), stayed on the good side of its critical threshold at
every time assessed. A warning is still good; a single critical value makes it bad. A
revision without enough data is *unknown*, never good.

When each revision was current, from the cluster (`revision_spans`): a revision number is
given when a template becomes current, so revision N was current from the moment N was given
until N + 1 was. That moment is known for the number a ReplicaSet got when it was created
(its `creationTimestamp`), for the current revision (`playbook.provenance.rollout_origin`) and
for a ReplicaSet this tool rolled back to last (its rollback mark); for a ReplicaSet reused by
someone else it is not recorded, and that revision (and the one before it) is unknown.

How an indicator is assessed over a span (`assessment_plan`): at evenly spaced times ending
when the revision stopped being current, each over a window as long as the spacing (at least
the indicator's own window, never longer than the span), so the windows cover the span.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from playbook.errors import InvalidInputError
from playbook.guard import duration_seconds
from playbook.images import version_of
from playbook.provenance import (
    ROLLBACK_MARK_ANNOTATION,
    current_replicaset,
    parse_mark,
    rollout_origin,
    time_floor,
)
from playbook.rollout import REVISION_HISTORY_ANNOTATION, owned_replicasets, revision_of
from playbook.thresholds import Indicator, Level

KNOWN_GOOD_INDICATORS = ("error_rate", "p99_latency")
"""The decision matrix's indicators a known-good revision must have kept under critical."""
MIN_COVERAGE = 0.8
"""The share of assessed times that must have data; fewer is "unknown"."""
MAX_POINTS = 120
"""The most times one indicator is assessed at over one span."""


class Verdict(StrEnum):
    """What is known about an earlier revision."""

    GOOD = "known good"
    BAD = "bad"
    UNKNOWN = "unknown"
    TOO_SHORT = "too short"
    CURRENT = "current"


@dataclass(frozen=True)
class RevisionSpan:
    """One revision of the Deployment and when it was current (None: not recorded)."""

    number: int
    replicaset: str
    version: str | None
    current_from: datetime | None
    current_to: datetime | None
    """When the next revision became current; None for the current one or when unknown."""
    current: bool

    @property
    def seconds(self) -> float | None:
        """How long it was current (None when either end is unknown)."""
        if self.current_from is None or self.current_to is None:
            return None
        return (self.current_to - self.current_from).total_seconds()

    def period(self) -> str:
        """`2026-12-02 02:40:01 - 02:50:03 UTC`; `?` for an unknown end, `now` if current."""
        start = _clock(self.current_from) if self.current_from else "?"
        if self.current:
            return f"{start} - now"
        return f"{start} - {_clock(self.current_to) if self.current_to else '?'}"


def _clock(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def revision_spans(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    container: str,
) -> tuple[RevisionSpan, ...]:
    """Every revision the Deployment still has a ReplicaSet for, newest first, with when it
    was current (see the module's docstring)."""
    owned = [rs for rs in owned_replicasets(deployment, replicasets) if revision_of(rs)]
    origin = rollout_origin(deployment, replicasets)
    current_rs = current_replicaset(deployment, replicasets)
    current_name = (current_rs or {}).get("metadata", {}).get("name")
    mark = parse_mark(
        ((deployment.get("metadata") or {}).get("annotations") or {}).get(ROLLBACK_MARK_ANNOTATION)
    )
    became: dict[int, datetime | None] = {}
    for rs in owned:
        meta = rs.get("metadata") or {}
        number = int(revision_of(rs) or 0)
        former = _former(rs)
        first = min([number, *former])
        became.setdefault(first, time_floor(meta.get("creationTimestamp")))
        for n in former:
            became.setdefault(n, None)
        if meta.get("name") == current_name:
            # the earliest upper bound of the write that made it current (`written`), so the
            # revision before it is not taken for current longer than it was
            became[number] = origin.written or origin.since
        elif number != first:
            # this tool's mark dates the undo that gave the ReplicaSet its number: it names
            # the ReplicaSet and the revision that was current just before
            ours = (
                mark is not None
                and mark.replicaset == meta.get("name")
                and mark.from_revision == number - 1
            )
            became[number] = mark.at if ours and mark is not None else None
    spans = []
    for rs in owned:
        meta = rs.get("metadata") or {}
        number = int(revision_of(rs) or 0)
        is_current = meta.get("name") == current_name
        spans.append(
            RevisionSpan(
                number=number,
                replicaset=str(meta.get("name", "")),
                version=_version(rs, container),
                current_from=origin.since if is_current else became.get(number),
                current_to=None if is_current else became.get(number + 1),
                current=is_current,
            )
        )
    return tuple(sorted(spans, key=lambda s: s.number, reverse=True))


def _former(rs: Mapping[str, Any]) -> set[int]:
    history = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_HISTORY_ANNOTATION)
    return {int(n) for n in str(history or "").split(",") if n.strip().isdigit()}


def _version(rs: Mapping[str, Any], container: str) -> str | None:
    template = (rs.get("spec") or {}).get("template") or {}
    for c in (template.get("spec") or {}).get("containers") or []:
        if c.get("name") == container and c.get("image"):
            try:
                return version_of(str(c["image"]))
            except InvalidInputError:
                return None
    return None


@dataclass(frozen=True)
class AssessmentPlan:
    """Where to read one indicator over one span: a window and the times to evaluate it at."""

    window: str
    times: tuple[datetime, ...]

    @property
    def step(self) -> timedelta:
        """The spacing of the times (the window's length when there is one time)."""
        if len(self.times) < 2:
            return timedelta(seconds=duration_seconds(self.window))
        return self.times[1] - self.times[0]


def assessment_plan(
    start: datetime, end: datetime, indicator_window: str, max_points: int = MAX_POINTS
) -> AssessmentPlan | None:
    """Times from `start` to `end` (whole seconds) at which windows of one length cover the
    span; None for a span shorter than a second."""
    first = math.ceil(start.timestamp())
    last = math.floor(end.timestamp())
    length = last - first
    if length < 1:
        return None
    step = max(math.ceil(duration_seconds(indicator_window)), math.ceil(length / max_points))
    if step >= length:
        return AssessmentPlan(f"{length}s", (_at(last),))
    count = length // step
    times = tuple(_at(last - k * step) for k in reversed(range(count)))
    return AssessmentPlan(f"{step}s", times)


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class Reading:
    """One indicator of one revision's version at each assessed time (None: no data)."""

    indicator: Indicator
    values: tuple[float | None, ...]

    @property
    def found(self) -> tuple[float, ...]:
        """The values that are data."""
        return tuple(v for v in self.values if v is not None and not math.isnan(v))

    @property
    def worst(self) -> float | None:
        """The worst value found (None: no data at all)."""
        if not self.found:
            return None
        return max(self.found) if self.indicator.higher_is_worse else min(self.found)

    @property
    def level(self) -> Level:
        """CRITICAL when any value is; NO_DATA when too few times have data; else the worst."""
        levels = [self.indicator.classify(v) for v in self.found]
        if Level.CRITICAL in levels:
            return Level.CRITICAL
        if not self.values or len(self.found) < MIN_COVERAGE * len(self.values):
            return Level.NO_DATA
        return Level.worst(levels)

    def observed(self) -> str:
        """The worst value as text, with how much data there was when it was too little."""
        if self.worst is None:
            return "no data"
        text = f"max {self.indicator.format(self.worst)}"
        if not self.indicator.higher_is_worse:
            text = f"min {self.indicator.format(self.worst)}"
        if self.level is Level.NO_DATA:
            text += f" (data at {len(self.found)} of {len(self.values)} times)"
        return text


@dataclass(frozen=True)
class RevisionEvidence:
    """What is known about one revision: when it was current, its readings, the verdict."""

    span: RevisionSpan
    readings: tuple[Reading, ...]
    verdict: Verdict
    why: str

    def reading(self, name: str) -> Reading | None:
        """The reading of indicator `name`, if it was read."""
        return next((r for r in self.readings if r.indicator.name == name), None)

    def row(self) -> dict[str, str]:
        """A table row: revision, version, current from-to, error rate, P99, verdict."""
        errors, p99 = self.reading("error_rate"), self.reading("p99_latency")
        return {
            "revision": str(self.span.number),
            "version": self.span.version or "?",
            "current from-to": self.span.period(),
            "error rate": errors.observed() if errors else "not read",
            "P99": p99.observed() if p99 else "not read",
            "verdict": f"{self.verdict.value}: {self.why}" if self.why else self.verdict.value,
        }

    def describe(self) -> str:
        """`revision 2 (v1.2.4): bad: error rate reached 20 % (critical > 5 %)`."""
        return f"revision {self.span.number} ({self.span.version or '?'}): {self.row()['verdict']}"


def judge_revision(
    span: RevisionSpan, readings: Sequence[Reading], min_current: timedelta
) -> RevisionEvidence:
    """The verdict on one revision from when it was current and its own readings."""
    found = tuple(readings)
    if span.current:
        return RevisionEvidence(span, found, Verdict.CURRENT, "")
    seconds = span.seconds
    if seconds is None:
        side = "became current" if span.current_from is None else "stopped being current"
        return RevisionEvidence(
            span, found, Verdict.UNKNOWN, f"when it {side} is not recorded in the cluster"
        )
    if seconds < min_current.total_seconds():
        return RevisionEvidence(
            span,
            found,
            Verdict.TOO_SHORT,
            f"current for {_span(seconds)}, less than {_span(min_current.total_seconds())}",
        )
    critical = [r for r in found if r.level is Level.CRITICAL]
    if critical:
        why = "; ".join(
            f"{r.indicator.title} reached {r.indicator.format(r.worst)} "
            f"(critical {r.indicator.condition(r.indicator.critical)})"
            for r in critical
        )
        return RevisionEvidence(span, found, Verdict.BAD, why)
    missing = [r for r in found if r.level is Level.NO_DATA]
    if missing or not found:
        why = "; ".join(
            f"too little data for {r.indicator.title} ({len(r.found)} of {len(r.values)} times)"
            for r in missing
        )
        return RevisionEvidence(span, found, Verdict.UNKNOWN, why or "nothing was read")
    return RevisionEvidence(
        span,
        found,
        Verdict.GOOD,
        f"current for {_span(seconds)}, "
        + ", ".join(f"{r.indicator.title} under critical" for r in found),
    )


def judge_so_far(
    span: RevisionSpan, readings: Sequence[Reading], min_current: timedelta, now: datetime
) -> RevisionEvidence:
    """The verdict on the current revision as if it ended `now`: whether what a canary
    rollback sends every request to (the stable Deployment's current revision) is known good."""
    if not span.current:
        return judge_revision(span, readings, min_current)
    so_far = RevisionSpan(
        span.number, span.replicaset, span.version, span.current_from, now, current=False
    )
    judged = judge_revision(so_far, readings, min_current)
    return RevisionEvidence(span, judged.readings, judged.verdict, judged.why)


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(frozen=True)
class KnownGoodChoice:
    """Every revision's evidence (newest first) and the newest earlier one known good."""

    evidence: tuple[RevisionEvidence, ...]
    target: RevisionEvidence | None
    min_current: timedelta

    @property
    def message(self) -> str:
        """The choice in one sentence."""
        if self.target is not None:
            return f"the last known-good revision is {self.target.describe()}"
        earlier = [e for e in self.evidence if not e.span.current]
        if not earlier:
            return "no earlier revision to roll back to"
        return "no earlier revision is known to be good: " + "; ".join(
            e.describe() for e in earlier
        )

    def of(self, number: int) -> RevisionEvidence | None:
        """The evidence on revision `number`, if the Deployment has it."""
        return next((e for e in self.evidence if e.span.number == number), None)

    def rows(self) -> list[dict[str, str]]:
        """One table row per revision, newest first."""
        return [e.row() for e in self.evidence]

    def to_markdown(self) -> str:
        """The revisions' table as markdown."""
        rows = self.rows()
        if not rows:
            return "No revisions."
        header = list(rows[0])
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r[h].replace("|", "\\|") for h in header) + " |" for r in rows]
        return "\n".join(lines)

    def to_text(self) -> str:
        """The revisions as plain lines (for notices)."""
        return "\n".join(
            f"- {r['revision']} {r['version']}, {r['current from-to']}: error rate "
            f"{r['error rate']}, P99 {r['P99']} → {r['verdict']}"
            for r in self.rows()
        )


def choose_last_good(
    evidence: Sequence[RevisionEvidence], min_current: timedelta
) -> KnownGoodChoice:
    """The newest revision older than the current one whose verdict is known good."""
    ordered = tuple(sorted(evidence, key=lambda e: e.span.number, reverse=True))
    current = next((e.span.number for e in ordered if e.span.current), None)
    target = next(
        (
            e
            for e in ordered
            if e.verdict is Verdict.GOOD and (current is None or e.span.number < current)
        ),
        None,
    )
    return KnownGoodChoice(ordered, target, min_current)
