"""The recovery verdict after a rollback: recovered, recovering, not recovering, worse, no data.

An indicator's series after the rollback is compared with three levels derived from the
baseline (the median before the incident) and the incident level (the value at the rollback):

* recover: back at baseline, within a tolerance, and never worse than the warning threshold;
* relapse: once back, the series counts as back until it crosses this level (hysteresis), so
  a series oscillating around the recover level does not flip the verdict;
* worse: beyond both the incident level (by a margin) and the critical threshold.

"Recovered" needs the series back for `hold_seconds` without a gap; "worse" needs it beyond
the worse level for `worse_hold_seconds`, and then sticks. "Recovering" means still improving:
a series that has closed part of its gap but made no new progress (a new low closing at least
`stall_progress_ratio` of what remained) for `stall_seconds` is "not recovering (stalled)",
whether it lies flat or swings. A missing latest value is NO_DATA, never a pass. Everything here is pure; `track` folds one point at a time into a frozen state.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from playbook.thresholds import Indicator


class Verdict(StrEnum):
    """Where an indicator stands after the rollback."""

    RECOVERED = "recovered"
    RECOVERING = "recovering"
    NOT_RECOVERING = "not recovering"
    STALLED = "not recovering (stalled)"
    WORSE = "worse"
    NO_DATA = "no data"

    @property
    def passed(self) -> bool:
        """Only RECOVERED passes at the end of monitoring."""
        return self is Verdict.RECOVERED


class RecoveryPolicy(BaseModel):
    """How close to baseline counts as recovered, for how long, and what counts as worse."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tolerance_ratio: float = Field(default=0.5, ge=0, description="of the baseline")
    tolerance_absolute: float = Field(default=0.0, ge=0, description="in the indicator's unit")
    hysteresis_ratio: float = Field(default=0.0, ge=0, description="of the recover level")
    hysteresis_absolute: float = Field(default=0.0, ge=0, description="in the indicator's unit")
    hold_seconds: float = Field(default=300.0, ge=0)
    worse_margin_ratio: float = Field(default=0.25, ge=0, description="beyond the incident level")
    worse_hold_seconds: float = Field(default=60.0, ge=0)
    progress_ratio: float = Field(
        default=0.25, gt=0, le=1, description="share of the gap closed to count as recovering"
    )
    stall_seconds: float = Field(
        default=1200.0, gt=0, description="no new progress this long: stalled, not recovering"
    )
    stall_progress_ratio: float = Field(
        default=0.1, gt=0, le=1, description="share of the remaining gap a new low must close"
    )
    cap_at_warning: bool = True


@dataclass(frozen=True)
class RecoveryLevels:
    """The levels a series is judged against, in the indicator's unit."""

    baseline: float | None
    incident: float | None
    recover: float
    relapse: float
    worse: float
    higher_is_worse: bool

    def badness(self, value: float) -> float:
        """`value` oriented so that larger is always worse."""
        return value if self.higher_is_worse else -value


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def baseline_of(values: Iterable[float | None]) -> float | None:
    """The baseline: the median of the finite values before the incident (None when none)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(finite) if finite else None


def recovery_levels(
    indicator: Indicator,
    policy: RecoveryPolicy,
    baseline: float | None,
    incident: float | None,
) -> RecoveryLevels:
    """Levels for one indicator; without a baseline the warning threshold is the target."""
    sign = 1.0 if indicator.higher_is_worse else -1.0
    if _finite(baseline):
        assert baseline is not None
        slack = max(policy.tolerance_ratio * abs(baseline), policy.tolerance_absolute)
        recover = baseline + sign * slack
        if policy.cap_at_warning:
            recover = (
                min(recover, indicator.warning) if sign > 0 else max(recover, indicator.warning)
            )
    else:
        recover = indicator.warning
    relapse = recover + sign * max(
        policy.hysteresis_ratio * abs(recover), policy.hysteresis_absolute
    )
    worse = indicator.critical
    if _finite(incident):
        assert incident is not None
        beyond = incident + sign * policy.worse_margin_ratio * abs(incident)
        worse = max(worse, beyond) if sign > 0 else min(worse, beyond)
    return RecoveryLevels(
        baseline=baseline if _finite(baseline) else None,
        incident=incident if _finite(incident) else None,
        recover=recover,
        relapse=relapse,
        worse=worse,
        higher_is_worse=sign > 0,
    )


@dataclass(frozen=True)
class RecoveryState:
    """Everything the verdict needs, after the points seen so far."""

    levels: RecoveryLevels
    policy: RecoveryPolicy
    points: int = 0
    reference: float | None = None  # the incident level, else the first value seen
    latest: float | None = None
    latest_at: datetime | None = None
    back_since: datetime | None = None  # inside the recover/relapse band since
    beyond_since: datetime | None = None  # beyond the worse level since
    worse_at: datetime | None = None  # when it was confirmed worse (sticks)
    progress_gap: float | None = None  # the gap to the recover level at the last progress
    progress_at: datetime | None = None  # when it last made progress (or was first seen)

    @property
    def verdict(self) -> Verdict:
        """The verdict after the points seen so far."""
        if self.worse_at is not None:
            return Verdict.WORSE
        if self.latest is None or self.latest_at is None:
            return Verdict.NO_DATA
        if self.back_since is not None:
            held = (self.latest_at - self.back_since).total_seconds()
            return Verdict.RECOVERED if held >= self.policy.hold_seconds else Verdict.RECOVERING
        if self.reference is not None:
            bad = self.levels.badness
            gap_then = bad(self.reference) - bad(self.levels.recover)
            gap_now = bad(self.latest) - bad(self.levels.recover)
            if gap_then > 0 and gap_now <= (1.0 - self.policy.progress_ratio) * gap_then:
                return Verdict.STALLED if self.stalled else Verdict.RECOVERING
        return Verdict.NOT_RECOVERING

    @property
    def stalled(self) -> bool:
        """No new progress toward the recover level for `stall_seconds`."""
        if self.progress_at is None or self.latest_at is None:
            return False
        return (self.latest_at - self.progress_at).total_seconds() >= self.policy.stall_seconds

    @property
    def back_for_seconds(self) -> float:
        """How long the series has been back at baseline (0 when it is not)."""
        if self.back_since is None or self.latest_at is None:
            return 0.0
        return (self.latest_at - self.back_since).total_seconds()


def start(levels: RecoveryLevels, policy: RecoveryPolicy) -> RecoveryState:
    """The state before any point after the rollback."""
    return RecoveryState(levels=levels, policy=policy, reference=levels.incident)


def track(state: RecoveryState, at: datetime, value: float | None) -> RecoveryState:
    """Fold one point (None or NaN: no data at `at`) into the state."""
    if not _finite(value):
        # A gap: nothing can be said to have held through it.
        return replace(state, latest=None, latest_at=at, back_since=None, beyond_since=None)
    assert value is not None
    levels, policy, bad = state.levels, state.policy, state.levels.badness
    reference = state.reference if state.reference is not None else value

    beyond_since = state.beyond_since
    worse_at = state.worse_at
    if bad(value) > bad(levels.worse):
        beyond_since = beyond_since or at
        if worse_at is None and (at - beyond_since).total_seconds() >= policy.worse_hold_seconds:
            worse_at = at
    else:
        beyond_since = None

    back_since = state.back_since
    if back_since is not None and bad(value) > bad(levels.relapse):
        back_since = None
    elif back_since is None and bad(value) <= bad(levels.recover):
        back_since = at

    gap = bad(value) - bad(levels.recover)
    progress_gap, progress_at = state.progress_gap, state.progress_at
    if progress_at is None:
        progress_gap, progress_at = bad(reference) - bad(levels.recover), at
    if progress_gap is not None and gap <= (1.0 - policy.stall_progress_ratio) * progress_gap:
        progress_gap, progress_at = gap, at
    if back_since is not None:  # back at baseline: progress complete
        progress_gap, progress_at = max(gap, 0.0), at

    return replace(
        state,
        points=state.points + 1,
        reference=reference,
        latest=value,
        latest_at=at,
        back_since=back_since,
        beyond_since=beyond_since,
        worse_at=worse_at,
        progress_gap=progress_gap,
        progress_at=progress_at,
    )


def verdicts(
    levels: RecoveryLevels,
    policy: RecoveryPolicy,
    series: Sequence[tuple[datetime, float | None]],
) -> list[tuple[datetime, Verdict]]:
    """The verdict after each point of `series` (oldest first)."""
    state = start(levels, policy)
    out = []
    for at, value in series:
        state = track(state, at, value)
        out.append((at, state.verdict))
    return out


def counts(indicator: Indicator, verdict: Verdict) -> bool:
    """Whether an indicator's verdict decides the service's: an optional indicator without
    data (user complaints where the service exports none) is shown, never counted."""
    return indicator.required or verdict is not Verdict.NO_DATA


def overall_verdict(verdicts_by_indicator: Iterable[Verdict]) -> Verdict:
    """The service's verdict: worse, else no data, else not recovering (stalled or not),
    else recovering."""
    order = [
        Verdict.WORSE,
        Verdict.NO_DATA,
        Verdict.NOT_RECOVERING,
        Verdict.STALLED,
        Verdict.RECOVERING,
        Verdict.RECOVERED,
    ]
    seen = set(verdicts_by_indicator)
    if not seen:
        return Verdict.NO_DATA
    return next(v for v in order if v in seen)
