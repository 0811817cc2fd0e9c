"""The recovery verdict at its boundaries: exactly at the recover, relapse and worse levels,
a gap of no data restarting the holds, no incident level, hysteresis as a share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playbook.recovery import (
    RecoveryLevels,
    RecoveryPolicy,
    RecoveryState,
    Verdict,
    recovery_levels,
    start,
    track,
)
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
ERRORS = MATRIX.indicator("error_rate")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEVELS = RecoveryLevels(
    baseline=0.002, incident=0.2, recover=0.004, relapse=0.006, worse=0.25, higher_is_worse=True
)
POLICY = RecoveryPolicy(hold_seconds=120, worse_hold_seconds=60)


def feed(
    values: list[float | None], levels: RecoveryLevels = LEVELS, policy: RecoveryPolicy = POLICY
) -> RecoveryState:
    state = start(levels, policy)
    for minute, value in enumerate(values):
        state = track(state, T0 + timedelta(minutes=minute), value)
    return state


def test_a_value_exactly_at_the_recover_level_is_back_and_exactly_at_relapse_stays_back() -> None:
    state = feed([0.004, 0.006, 0.006])
    assert state.back_since == T0 and state.verdict is Verdict.RECOVERED
    assert state.back_for_seconds == 120.0
    assert feed([0.004, 0.0061]).back_since is None


def test_a_value_exactly_at_the_worse_level_is_not_worse() -> None:
    assert feed([0.25, 0.25, 0.25]).verdict is not Verdict.WORSE
    assert feed([0.26, 0.26]).verdict is Verdict.WORSE  # beyond it for the 60 s hold


def test_a_gap_restarts_the_worse_hold_and_says_no_data() -> None:
    gapped = feed([0.26, None, 0.26])
    assert gapped.worse_at is None and gapped.beyond_since == T0 + timedelta(minutes=2)
    assert feed([0.26, None]).verdict is Verdict.NO_DATA
    assert feed([0.26, None]).latest_at == T0 + timedelta(minutes=1)
    assert feed([0.1, None, 0.1]).points == 2  # a gap is no point
    assert feed([0.26, 0.1]).beyond_since is None  # back inside: no longer beyond


def test_without_an_incident_level_the_first_value_is_the_reference() -> None:
    levels = RecoveryLevels(0.002, None, 0.004, 0.004, 0.05, True)
    state = feed([0.04, 0.02], levels)
    assert state.reference == 0.04 and state.verdict is Verdict.RECOVERING
    assert feed([0.04, 0.035], levels).verdict is Verdict.NOT_RECOVERING


def test_hysteresis_as_a_share_of_the_recover_level_and_missing_levels_as_none() -> None:
    policy = RecoveryPolicy(tolerance_ratio=1.0, hysteresis_ratio=0.5, cap_at_warning=False)
    levels = recovery_levels(ERRORS, policy, 0.002, float("nan"))
    assert levels == RecoveryLevels(
        baseline=0.002,
        incident=None,
        recover=0.004,
        relapse=0.006,
        worse=0.05,
        higher_is_worse=True,
    )
    unknown = recovery_levels(ERRORS, policy, float("nan"), 0.2)
    assert (unknown.baseline, unknown.recover) == (None, ERRORS.warning)
    assert unknown.worse == 0.25  # the incident level plus its 25 % margin, beyond critical
