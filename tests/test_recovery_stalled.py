"""An honest "recovering": still improving. An indicator that stopped making progress (flat
above its baseline, or swinging with no downward trend) is "not recovering (stalled)"."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from playbook.recovery import RecoveryPolicy, Verdict, overall_verdict, recovery_levels, verdicts
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
ERRORS = MATRIX.indicator("error_rate")
P99 = MATRIX.indicator("p99_latency")
POLICY = RecoveryPolicy(tolerance_ratio=0.5, tolerance_absolute=0.1, hold_seconds=300)
T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def minutes(values: Sequence[float]) -> list[tuple[datetime, float | None]]:
    """One value a minute after the rollback."""
    return [(T0 + timedelta(minutes=i + 1), v) for i, v in enumerate(values)]


def final(values: Sequence[float], indicator=P99, baseline=0.1, incident=1.2):  # type: ignore[no-untyped-def]
    levels = recovery_levels(indicator, POLICY, baseline, incident)
    return [v for _, v in verdicts(levels, POLICY, minutes(values))]


def test_p99_flat_at_four_times_its_baseline_for_twenty_minutes_is_stalled() -> None:
    # 1.2 s at the rollback, down to 0.4 s in three minutes, then flat there: a gap closed by
    # 70 %, so "recovering" by the old rule, for the rest of the half hour
    seen = final([0.9, 0.6, 0.4] + [0.4] * 27)
    assert seen[2] is Verdict.RECOVERING
    assert seen[21] is Verdict.RECOVERING  # 19 minutes without progress: not yet
    assert seen[22] is Verdict.STALLED  # 20 minutes without progress
    assert seen[-1] is Verdict.STALLED and seen[-1].value == "not recovering (stalled)"
    assert not seen[-1].passed


def test_a_slow_but_steady_decline_stays_recovering() -> None:
    # each few minutes a new low that closes more than a tenth of what remains
    values = [1.0 - 0.025 * i for i in range(30)]  # 1.0 → 0.275 s
    seen = final(values)
    assert Verdict.STALLED not in seen
    assert seen[-1] is Verdict.RECOVERING


def test_an_error_rate_that_swings_with_no_downward_trend_is_stalled() -> None:
    swings = [0.04, 0.012] * 15  # between 4 % and 1.2 %, never lower
    levels = recovery_levels(ERRORS, POLICY, 0.001, 0.2)
    seen = [v for _, v in verdicts(levels, POLICY, minutes(swings))]
    assert Verdict.RECOVERING in seen[:20]
    assert seen[-1] is Verdict.STALLED


def test_back_at_baseline_is_progress_and_a_relapse_starts_the_clock_again() -> None:
    values = [0.9, 0.15] + [0.15] * 5 + [0.4] * 25  # back for 6 min, then relapsed and flat
    seen = final(values)
    assert seen[6] is Verdict.RECOVERED
    assert seen[7] is Verdict.RECOVERING
    assert seen[-1] is Verdict.STALLED  # 25 minutes at 0.4 s since it left the band


def test_stalled_ranks_with_not_recovering_in_the_services_verdict() -> None:
    assert overall_verdict([Verdict.RECOVERED, Verdict.STALLED]) is Verdict.STALLED
    assert overall_verdict([Verdict.RECOVERING, Verdict.STALLED]) is Verdict.STALLED
    assert overall_verdict([Verdict.STALLED, Verdict.NOT_RECOVERING]) is Verdict.NOT_RECOVERING
    assert overall_verdict([Verdict.STALLED, Verdict.NO_DATA]) is Verdict.NO_DATA
