"""Guards on automatic rollbacks: the playbook's canary triggers and the hourly cap. Pure.

Automatic rollback triggers (playbook, "When to Rollback"), during a canary phase:

1. the canary health check still fails after the canary window (10 minutes): its pods are
   not all ready, or `/health` does not answer 200, when the window ends;
2. error rate above 5 %;
3. P99 latency above 500 ms;
4. the health endpoint says the service is unhealthy (an explicit 503 / `unhealthy`), at
   any time: unlike (1) this is the service's own verdict, not a warm-up that may still pass.

The limits (the window, 5 %, 500 ms) are data: the decision matrix's `canary` section
(`CanaryTriggers`, playbook/thresholds.py).

The cap: at most `cap` automatic rollbacks of one service within a sliding hour (the decision
matrix's `automatic_rollbacks`); past it, a person is notified instead. The ledger of recent
automatic rollbacks is a JSON list kept by `tasks.concurrency` and validated here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from playbook.errors import InvalidInputError
from playbook.thresholds import CanaryTriggers, Indicator

CAP_WINDOW = timedelta(hours=1)


class Health(StrEnum):
    """What the canary's health check says."""

    HEALTHY = "healthy"
    """Every canary pod ready and `/health` answered 200."""
    FAILING = "failing"
    """Not healthy yet: pods not ready, no answer, a timeout, an unexpected status."""
    UNHEALTHY = "unhealthy"
    """`/health` answered that the service is unhealthy (503)."""


class Trigger(StrEnum):
    """The automatic rollback triggers of the playbook."""

    HEALTH_CHECK_FAILING = "health check still failing after the canary window"
    ERROR_RATE = "error rate above the limit"
    P99_LATENCY = "P99 latency above the limit"
    UNHEALTHY = "health endpoint unhealthy"


@dataclass(frozen=True)
class CanaryObservation:
    """One look at the canary: how long it has run, its health, error ratio and P99."""

    elapsed_seconds: float
    health: Health
    health_detail: str
    error_ratio: float | None
    p99_seconds: float | None


@dataclass(frozen=True)
class FiredTrigger:
    """A trigger that holds, with the observed value and the limit it crossed."""

    trigger: Trigger
    observed: str
    limit: str

    def __str__(self) -> str:
        return f"{self.trigger.value}: {self.observed} (limit {self.limit})"


@dataclass(frozen=True)
class CanaryVerdict:
    """Whether to roll the canary back now, and why."""

    rollback: bool
    fired: tuple[FiredTrigger, ...]
    observation: CanaryObservation
    window_over: bool

    @property
    def summary(self) -> str:
        """One line: the fired triggers, or that the canary is within its limits."""
        if self.fired:
            return "; ".join(str(f) for f in self.fired)
        return (
            f"within limits after {self.observation.elapsed_seconds:.0f}s "
            f"(health {self.observation.health.value}, error ratio "
            f"{_percent(self.observation.error_ratio)}, P99 "
            f"{_millis(self.observation.p99_seconds)})"
        )


def evaluate_canary(observation: CanaryObservation, triggers: CanaryTriggers) -> CanaryVerdict:
    """Which of the playbook's automatic triggers hold for this observation."""
    fired: list[FiredTrigger] = []
    window_over = observation.elapsed_seconds >= triggers.window_seconds
    if observation.health is Health.UNHEALTHY:
        fired.append(FiredTrigger(Trigger.UNHEALTHY, observation.health_detail, "healthy"))
    elif observation.health is Health.FAILING and window_over:
        fired.append(
            FiredTrigger(
                Trigger.HEALTH_CHECK_FAILING,
                f"{observation.health_detail} after {observation.elapsed_seconds:.0f}s",
                f"healthy within {triggers.window_seconds:.0f}s",
            )
        )
    ratio = _finite(observation.error_ratio)
    if ratio is not None and ratio > triggers.max_error_ratio:
        fired.append(
            FiredTrigger(Trigger.ERROR_RATE, _percent(ratio), _percent(triggers.max_error_ratio))
        )
    p99 = _finite(observation.p99_seconds)
    if p99 is not None and p99 > triggers.max_p99_seconds:
        fired.append(
            FiredTrigger(Trigger.P99_LATENCY, _millis(p99), _millis(triggers.max_p99_seconds))
        )
    return CanaryVerdict(bool(fired), tuple(fired), observation, window_over)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _percent(ratio: float | None) -> str:
    return "n/a" if _finite(ratio) is None else f"{ratio * 100:.2f} %"  # type: ignore[operator]


def _millis(seconds: float | None) -> str:
    return "n/a" if _finite(seconds) is None else f"{seconds * 1000:.0f} ms"  # type: ignore[operator]


# --- the hourly cap -----------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    """One automatic rollback that was started."""

    at: datetime
    flow_run_id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in the ledger."""
        return {"at": self.at.isoformat(), "flow_run_id": self.flow_run_id, "reason": self.reason}


@dataclass(frozen=True)
class CapDecision:
    """Whether one more automatic rollback is allowed within the hour."""

    allowed: bool
    cap: int
    recent: tuple[LedgerEntry, ...]
    next_allowed_at: datetime | None

    @property
    def message(self) -> str:
        """What a person reads: how many ran, the cap, and when the next one is allowed."""
        if self.allowed:
            return f"{len(self.recent)} of at most {self.cap} automatic rollbacks in the last hour"
        when = self.next_allowed_at.isoformat(timespec="seconds") if self.next_allowed_at else "?"
        return (
            f"{len(self.recent)} automatic rollbacks in the last hour reached the cap of "
            f"{self.cap}; not rolling back automatically again before {when}"
        )


def parse_ledger(value: object, source: str = "rollback ledger") -> tuple[LedgerEntry, ...]:
    """Validate the stored ledger (a JSON list of entries); None is an empty ledger.

    Raises:
        InvalidInputError: the stored value is not a ledger (edited by hand, say).
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInputError(f"{source} must be a list of entries, not {type(value).__name__}")
    entries = []
    for index, item in enumerate(value):
        try:
            at = datetime.fromisoformat(item["at"])
            run = item.get("flow_run_id")
            reason = str(item.get("reason", ""))
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise InvalidInputError(f"{source}[{index}] is not an entry: {item!r}") from exc
        if at.tzinfo is None:
            raise InvalidInputError(f"{source}[{index}]: `at` must carry a time zone")
        entries.append(LedgerEntry(at, str(run) if run is not None else None, reason))
    return tuple(sorted(entries, key=lambda e: e.at))


def check_cap(
    entries: tuple[LedgerEntry, ...],
    now: datetime,
    cap: int,
    window: timedelta = CAP_WINDOW,
) -> CapDecision:
    """Whether another automatic rollback is allowed at `now`, given the ledger."""
    if cap < 0:
        raise InvalidInputError(f"the hourly cap must be >= 0, got {cap}")
    recent = tuple(e for e in entries if now - window < e.at <= now)
    if len(recent) < cap:
        return CapDecision(True, cap, recent, None)
    # The next slot frees when the oldest counted rollback leaves the window.
    oldest_counted = recent[len(recent) - cap] if cap else None
    next_at = (oldest_counted.at + window) if oldest_counted else None
    return CapDecision(False, cap, recent, next_at)


_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(duration: str) -> float:
    """A Prometheus duration (`5m`, `1h30m`) in seconds."""
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise InvalidInputError(f"malformed Prometheus duration {duration!r} (e.g. 30s, 5m)")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def lifetime_window(since: datetime, now: datetime, longest: str) -> str:
    """The rate window that sees only the current revision: its age, at most `longest`."""
    age = max(int((now - since).total_seconds()), 1)
    return f"{min(age, int(duration_seconds(longest)))}s"


def before_release_window(previous_since: datetime | None, end: datetime, longest: str) -> str:
    """The rate window that sees only the revision before the current one: its last stretch
    up to `end` (when the current one was written), at most `longest`.

    An earlier bad version rolled back minutes ago must not count against the version that ran
    after it, so the window never reaches back before the previous revision became current.
    """
    longest_seconds = int(duration_seconds(longest))
    if previous_since is None:
        return f"{longest_seconds}s"
    stretch = max(int((end - previous_since).total_seconds()), 1)
    return f"{min(stretch, longest_seconds)}s"


@dataclass(frozen=True)
class Recheck:
    """The alert's indicator measured again over the current revision's lifetime only."""

    breaching: bool | None
    """True: still past its critical threshold; False: no longer; None: no data."""
    message: str


def judge_recheck(indicator: Indicator, value: float | None, window: str) -> Recheck:
    """Whether the indicator still breaches its critical threshold over `window`.

    No data is neither a breach nor a pass: nothing is done, and the message says why.
    """
    observed = indicator.format(value)
    limit = indicator.condition(indicator.critical)
    where = f"{indicator.title} over the current revision's last {window}"
    if value is None or math.isnan(value):
        return Recheck(
            None,
            f"not rolled back: {where} has no data in Prometheus, so the alert cannot be "
            "confirmed against the version that runs now",
        )
    if indicator.breaches(value, indicator.critical):
        return Recheck(True, f"{where} is {observed}, still critical ({limit})")
    return Recheck(
        False,
        f"not rolled back: {where} is {observed}, no longer critical ({limit}); the alert "
        "still counts errors of the version before it",
    )


def record(
    entries: tuple[LedgerEntry, ...], entry: LedgerEntry, window: timedelta = CAP_WINDOW
) -> list[dict[str, Any]]:
    """The ledger to store after `entry`: older entries than the window are dropped."""
    kept = [e for e in entries if entry.at - window < e.at]
    return [e.to_json() for e in (*kept, entry)]


def now_utc() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReleaseCause:
    """Whether the current revision's release is what broke the service."""

    is_release: bool
    message: str


def judge_release_cause(
    current_since: datetime,
    now: datetime,
    max_age: timedelta,
    indicator: Indicator | None = None,
    before: float | None = None,
    window: str = "",
) -> ReleaseCause:
    """Roll back only for a recent release after which the indicator went bad.

    The release is the cause when the current revision became current within `max_age` and,
    when an indicator is named, that indicator was not critical over `window` before it
    (`before`: its value then; None is no data, which cannot show it was healthy).
    """
    age = now - current_since
    if age > max_age:
        return ReleaseCause(
            False,
            f"not rolled back: the current revision has been current for {_span(age)}, longer "
            f"than {_span(max_age)}; the alert is not about a recent release, the cause lies "
            "elsewhere",
        )
    if indicator is None:
        return ReleaseCause(True, f"the current revision is {_span(age)} old")
    limit = indicator.condition(indicator.critical)
    where = f"{indicator.title} over the {window} before the current revision became current"
    if before is None or math.isnan(before):
        return ReleaseCause(
            False,
            f"not rolled back: {where} has no data, so the release cannot be shown to be what "
            "broke it",
        )
    if indicator.breaches(before, indicator.critical):
        return ReleaseCause(
            False,
            f"not rolled back: {where} was already {indicator.format(before)} (critical "
            f"{limit}): the release is not what broke it, the cause lies elsewhere",
        )
    return ReleaseCause(
        True,
        f"the current revision is {_span(age)} old and {where} was {indicator.format(before)}, "
        f"not critical ({limit})",
    )


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes and not days else []
    parts += [f"{seconds} s"] if not parts else []
    return " ".join(parts)
