"""What the post-rollback monitor saw: per-evaluation values and verdicts, the final verdict per
indicator, error patterns in the logs, and the markdown and escalation text built from them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from playbook.charts import text_chart
from playbook.recovery import RecoveryLevels, Verdict
from playbook.thresholds import Indicator

MAX_TABLE_ROWS = 60


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: its time, each indicator's value and verdict, and the overall verdict."""

    at: datetime
    values: tuple[tuple[str, float | None], ...]
    verdicts: tuple[tuple[str, Verdict], ...]
    verdict: Verdict


@dataclass(frozen=True)
class IndicatorOutcome:
    """One indicator at the end of monitoring."""

    indicator: Indicator
    levels: RecoveryLevels
    verdict: Verdict
    latest: float | None
    back_for_seconds: float
    worse_at: datetime | None

    def row(self) -> dict[str, str]:
        """A table-artifact row."""
        fmt = self.indicator.format
        return {
            "indicator": self.indicator.title,
            "baseline": fmt(self.levels.baseline),
            "at rollback": fmt(self.levels.incident),
            "back when": self.indicator.passing_condition(self.levels.recover),
            "latest": fmt(self.latest),
            "verdict": self.verdict.value,
        }


@dataclass(frozen=True)
class LogFindings:
    """Error lines since the rollback, grouped into patterns; or why logs were unavailable."""

    available: bool
    patterns: tuple[tuple[str, int], ...] = ()
    unavailable_reason: str | None = None
    baseline: str | None = None
    """What `patterns` were compared with: how many patterns were already in the logs before
    the bad release (left out: they are not new), or why nothing from then was readable."""


_NOISE = [
    (re.compile(r"^[a-z0-9-]+: "), ""),  # the "pod: " prefix of read_error_logs
    (re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.,]+Z?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


_LINE_TIME = re.compile(
    r"^(?:[a-z0-9-]+: )?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)(Z|[+-]\d\d:\d\d)"
)


def line_time(line: str) -> datetime | None:
    """When a log line was written: its leading RFC 3339 time (the kubelet's `--timestamps`
    prefix or the service's own), after the `pod: ` prefix; None without one."""
    match = _LINE_TIME.match(line)
    if not match:
        return None
    stamp, zone = match.groups()
    whole, _, fraction = stamp.partition(".")
    micro = f".{(fraction + '000000')[:6]}" if fraction else ""  # nanoseconds cut to micro
    return datetime.fromisoformat(f"{whole}{micro}{'+00:00' if zone == 'Z' else zone}")


def new_error_patterns(
    lines: Iterable[str], released_at: datetime, since: datetime
) -> tuple[tuple[tuple[str, int], ...], str]:
    """The error patterns of the lines written since `since` (the rollback) that no line
    written before `released_at` (the bad release) had, and what they were compared with."""
    before, after = [], []
    for line in lines:
        at = line_time(line)
        if at is None or at >= since:
            after.append(line)
        elif at < released_at:
            before.append(line)
    known = {p for p, _ in error_patterns(before)}
    new = tuple((p, n) for p, n in error_patterns(after) if p not in known)
    if not before:
        return new, (
            f"no error lines from before the release at {released_at:%H:%M:%S} UTC were found "
            "(none were written, or the pods that wrote them are gone): every pattern since the "
            "rollback is listed"
        )
    left_out = len({p for p, _ in error_patterns(after)} & known)
    return new, (
        f"{len(known)} pattern(s) were in the logs before the release at "
        f"{released_at:%H:%M:%S} UTC; {left_out} of them seen again since the rollback, not new"
    )


def error_patterns(lines: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """Group error lines by their shape (times, ids and numbers blanked), most frequent first."""
    counts: Counter[str] = Counter()
    for line in lines:
        shape = line.strip()
        for pattern, replacement in _NOISE:
            shape = pattern.sub(replacement, shape)
        counts[shape[:200]] += 1
    return tuple(counts.most_common())


@dataclass(frozen=True)
class MonitorReport:
    """The whole monitoring run."""

    service: str
    namespace: str
    since: datetime
    until: datetime
    evaluations: tuple[Evaluation, ...]
    outcomes: tuple[IndicatorOutcome, ...]
    verdict: Verdict
    stopped_early: bool
    queries: int
    logs: LogFindings
    unqueried: tuple[str, ...] = ()
    """The points Prometheus could not be queried for (no data there): indicator, when, why."""

    @property
    def escalate(self) -> bool:
        """True unless every indicator recovered."""
        return not self.verdict.passed

    def summary(self) -> str:
        """One line: the verdict and each indicator's."""
        each = ", ".join(f"{o.indicator.title} {o.verdict.value}" for o in self.outcomes)
        return f"{self.service}: {self.verdict.value.upper()} ({each})"

    def to_markdown(self) -> str:
        """Verdicts, levels, the decay table, a chart per indicator, log patterns."""
        last = self.evaluations[-1].at if self.evaluations else self.since
        lines = [
            f"# Post-rollback monitoring: {self.service} in {self.namespace}",
            "",
            f"**Verdict: {self.verdict.value.upper()}**"
            + (" (stopped early: worse after the rollback)" if self.stopped_early else ""),
            "",
            f"Window {self.since:%Y-%m-%d %H:%M:%S} → {self.until:%H:%M:%S} UTC, "
            f"{len(self.evaluations)} evaluations up to {last:%H:%M:%S}, "
            f"{self.queries} Prometheus queries.",
            "",
        ]
        if self.unqueried:
            lines += ["Prometheus could not be queried for these points (no data there):", ""]
            lines += [f"- {line}" for line in self.unqueried] + [""]
        lines += [
            "| indicator | baseline | at rollback | back when | stays back while | worse when "
            "| latest | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for o in self.outcomes:
            ind, lv = o.indicator, o.levels
            lines.append(
                f"| {ind.title} | {ind.format(lv.baseline)} | {ind.format(lv.incident)} "
                f"| {ind.passing_condition(lv.recover)} | {ind.passing_condition(lv.relapse)} "
                f"| {ind.condition(lv.worse)} | {ind.format(o.latest)} | **{o.verdict.value}** |"
            )
        lines += ["", "## Decay", ""]
        names = [o.indicator.name for o in self.outcomes]
        by_name = {o.indicator.name: o.indicator for o in self.outcomes}
        header = " | ".join(f"{by_name[n].title} | verdict" for n in names)
        lines += [f"| time | {header} | overall |", "|---" * (2 * len(names) + 2) + "|"]
        rows = _table_rows(self.evaluations)
        for ev in rows:
            values, verdicts = dict(ev.values), dict(ev.verdicts)
            cells = " | ".join(
                f"{by_name[n].format(values.get(n))} | {verdicts[n].value}" for n in names
            )
            lines.append(f"| {ev.at:%H:%M:%S} | {cells} | {ev.verdict.value} |")
        if len(self.evaluations) > MAX_TABLE_ROWS:
            lines += ["", f"({len(rows)} of {len(self.evaluations)} rows: every verdict "
                      "change and evenly spaced rows between.)"]  # fmt: skip
        lines += ["", "## Charts", ""]
        times = [ev.at for ev in self.evaluations]
        for o in self.outcomes:
            ind, lv = o.indicator, o.levels
            series = [dict(ev.values).get(ind.name) for ev in self.evaluations]
            finite = [v for v in series if v is not None]
            marks = [("back", lv.recover)]
            if lv.baseline is not None:
                marks.insert(0, ("baseline", lv.baseline))
            low, high = min([*finite, lv.recover]), max([*finite, lv.recover])
            span = (high - low) or abs(high) or 1.0
            if low - span <= lv.worse <= high + span:  # far from the data it would flatten it
                marks.append(("worse", lv.worse))
            chart = text_chart(
                f"{ind.title}: # value, - level, ? no data",
                times,
                series,
                marks,
                lambda v, ind=ind: ind.format(v),  # type: ignore[misc]
            )
            lines += ["```text", chart, "```", ""]
        lines += ["## Error patterns in the logs since the rollback", ""]
        if self.logs.baseline:
            lines += [f"New ones only: {self.logs.baseline}.", ""]
        if not self.logs.available:
            lines.append(f"Logs unavailable: {self.logs.unavailable_reason}")
        elif not self.logs.patterns:
            lines.append("None.")
        else:
            lines += ["| count | pattern |", "|---|---|"]
            lines += [f"| {n} | `{p}` |" for p, n in self.logs.patterns[:30]]
        return "\n".join(lines) + "\n"

    def escalation_facts(self) -> dict[str, object]:
        """What the escalation notice says of this run (the values of its template): when the
        rollback completed, the verdict, one line per indicator, the top three new log
        patterns cut at 120 characters."""
        return {
            "since": f"{self.since:%Y-%m-%d %H:%M:%S} UTC",
            "verdict": self.verdict.value.upper()
            + (" (stopped early)" if self.stopped_early else ""),
            "indicators": [
                f"{o.indicator.title}: {o.verdict.value}; now {o.indicator.format(o.latest)}, "
                f"baseline {o.indicator.format(o.levels.baseline)}, "
                f"at rollback {o.indicator.format(o.levels.incident)}"
                for o in self.outcomes
            ]
            + [f"no data, the query failed: {line}" for line in self.unqueried[:3]],
            "log_patterns": [f"{n} x {p[:120]}" for p, n in self.logs.patterns[:3]],
            "log_pattern_count": len(self.logs.patterns),
        }


def _table_rows(evaluations: tuple[Evaluation, ...]) -> list[Evaluation]:
    """All rows when few; otherwise every verdict change plus evenly spaced rows."""
    if len(evaluations) <= MAX_TABLE_ROWS:
        return list(evaluations)
    keep = {0, len(evaluations) - 1}
    keep |= {
        i
        for i in range(1, len(evaluations))
        if evaluations[i].verdicts != evaluations[i - 1].verdicts
    }
    room = MAX_TABLE_ROWS - len(keep)
    if room > 0:
        step = len(evaluations) / room
        keep |= {int(i * step) for i in range(room)}
    return [evaluations[i] for i in sorted(keep)[:MAX_TABLE_ROWS]]
