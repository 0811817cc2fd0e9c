"""The STALLED verdict at its boundaries, on levels chosen so the arithmetic is exact: a new low
that closes exactly `stall_progress_ratio` of the remaining gap is progress, a little less is
not; `stall_seconds` without progress is stalled; being back at baseline is complete progress,
so a relapse that follows starts no new clock of its own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from playbook.recovery import RecoveryLevels, RecoveryPolicy, Verdict, verdicts

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
# Higher is worse; back at 1.0, worse beyond 100; 11.0 at the rollback, so a gap of 10 to close.
LEVELS = RecoveryLevels(
    baseline=0.5, incident=11.0, recover=1.0, relapse=1.0, worse=100.0, higher_is_worse=True
)
# A new low must close half of what remains; ten minutes without one is stalled.
POLICY = RecoveryPolicy(stall_progress_ratio=0.5, stall_seconds=600, progress_ratio=0.25)


def seen(values: Sequence[float], levels: RecoveryLevels = LEVELS) -> list[Verdict]:
    """The verdict after each value, one a minute from T0 + 1 min (index i is minute i + 1)."""
    series = [(T0 + timedelta(minutes=i + 1), v) for i, v in enumerate(values)]
    return [v for _, v in verdicts(levels, POLICY, series)]


def test_a_new_low_closing_exactly_the_ratio_of_the_remaining_gap_is_progress() -> None:
    # minute 1 at the incident level (gap 10), minute 2 at 6.0: gap 5, exactly half closed
    verdict = seen([11.0, 6.0] + [6.0] * 12)
    assert verdict[10] is Verdict.RECOVERING  # minute 11: 9 min since the progress at minute 2
    assert verdict[11] is Verdict.STALLED  # minute 12: exactly stall_seconds since it


def test_a_new_low_closing_less_than_the_ratio_is_no_progress() -> None:
    # 6.5 closes 4.5 of the gap of 10: less than half, so the clock runs from minute 1
    verdict = seen([11.0, 6.5] + [6.5] * 12)
    assert verdict[9] is Verdict.RECOVERING
    assert verdict[10] is Verdict.STALLED  # minute 11: 10 min since minute 1


def test_back_at_baseline_then_a_small_relapse_is_stalled_from_when_it_was_back() -> None:
    # back at minute 2 (gap 0: progress complete), then 0.2 above the recover level for good:
    # nothing can close half of a gap of 0, so the ten minutes count from minute 2
    verdict = seen([11.0, 1.0] + [1.2] * 12)
    assert verdict[1] is Verdict.RECOVERING  # back, not yet for hold_seconds
    assert verdict[10] is Verdict.RECOVERING
    assert verdict[11] is Verdict.STALLED  # minute 12: 10 min since minute 2
