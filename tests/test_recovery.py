"""The recovery verdict over a series, without Prometheus: levels, hold time, hysteresis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from playbook.monitor_report import error_patterns
from playbook.recovery import (
    RecoveryPolicy,
    Verdict,
    baseline_of,
    overall_verdict,
    recovery_levels,
    verdicts,
)
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
ERRORS = MATRIX.indicator("error_rate")
P99 = MATRIX.indicator("p99_latency")
NDCG = MATRIX.indicator("rag_quality_ndcg")
POLICY = RecoveryPolicy(
    tolerance_ratio=0.5,
    tolerance_absolute=0.005,
    hysteresis_absolute=0.005,
    hold_seconds=300,
    worse_hold_seconds=60,
)
LATENCY_POLICY = POLICY.model_copy(update={"tolerance_absolute": 0.1, "hysteresis_absolute": 0.1})
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def series(values: Sequence[float | None]) -> list[tuple[datetime, float | None]]:
    return [(T0 + timedelta(minutes=i + 1), v) for i, v in enumerate(values)]


def run(values: Sequence[float | None], incident: float | None = 0.10) -> list[Verdict]:
    levels = recovery_levels(ERRORS, POLICY, baseline=0.005, incident=incident)
    return [v for _, v in verdicts(levels, POLICY, series(values))]


def changes(seq: list[Verdict]) -> int:
    return sum(1 for a, b in pairwise(seq) if a != b)


def test_levels_come_from_baseline_incident_and_thresholds() -> None:
    levels = recovery_levels(ERRORS, POLICY, baseline=0.005, incident=0.10)
    assert levels.recover == pytest.approx(0.01)  # baseline + max(50 %, 0.5 points)
    assert levels.relapse == pytest.approx(0.015)  # + hysteresis
    assert levels.worse == pytest.approx(0.125)  # 25 % beyond the incident level
    low = recovery_levels(ERRORS, POLICY, baseline=0.001, incident=0.02)
    assert low.recover == pytest.approx(0.006)
    assert low.worse == pytest.approx(0.05)  # never below critical
    polluted = recovery_levels(ERRORS, POLICY, baseline=0.04, incident=0.10)
    assert polluted.recover == pytest.approx(0.01)  # capped at the warning threshold
    unknown = recovery_levels(ERRORS, POLICY, baseline=None, incident=None)
    assert (unknown.recover, unknown.worse) == (0.01, 0.05)


def test_lower_is_worse_indicators_mirror_the_levels() -> None:
    policy = RecoveryPolicy(tolerance_absolute=0.05, hysteresis_absolute=0.02)
    levels = recovery_levels(NDCG, policy, baseline=0.82, incident=0.55)
    assert levels.recover == pytest.approx(0.7)  # 0.82 - 0.41 capped at warning 0.7
    assert levels.relapse == pytest.approx(0.68)
    assert levels.worse == pytest.approx(0.4125)
    got = [v for _, v in verdicts(levels, policy, series([0.6, 0.75, 0.8, 0.8, 0.8, 0.8, 0.8]))]
    assert got[-1] is Verdict.RECOVERED


def test_clean_decay_recovers_after_the_hold_time() -> None:
    got = run([0.06, 0.03, 0.012, 0.006, 0.005, 0.005, 0.004, 0.005, 0.005, 0.005])
    assert got[0] is Verdict.RECOVERING  # 40 % of the gap closed
    assert got[3:8] == [Verdict.RECOVERING] * 5  # back, but not for 5 minutes yet
    assert got[8:] == [Verdict.RECOVERED] * 2
    assert changes(got) == 1


def test_flat_series_is_not_recovering() -> None:
    levels = recovery_levels(P99, LATENCY_POLICY, baseline=0.1, incident=1.2)
    got = [v for _, v in verdicts(levels, LATENCY_POLICY, series([1.2] * 30))]
    assert set(got) == {Verdict.NOT_RECOVERING}


def test_oscillation_around_the_level_does_not_flip_the_verdict() -> None:
    wobble = [0.007, 0.013] * 15  # around 1 %: below recover (1 %), above it but below relapse
    got = run(wobble)
    assert changes(got) == 1 and got[-1] is Verdict.RECOVERED
    # without hysteresis the hold restarts every other minute: never recovered
    bare = POLICY.model_copy(update={"hysteresis_absolute": 0.0})
    levels = recovery_levels(ERRORS, bare, baseline=0.005, incident=0.10)
    assert Verdict.RECOVERED not in [v for _, v in verdicts(levels, bare, series(wobble))]
    # and without a hold time either, the verdict flips every minute
    instant = bare.model_copy(update={"hold_seconds": 0})
    flipping = [v for _, v in verdicts(levels, instant, series(wobble))]
    assert changes(flipping) == len(wobble) - 1


def test_relapse_beyond_the_band_leaves_recovered() -> None:
    got = run([0.005] * 6 + [0.09] * 2 + [0.03])
    assert got[5] is Verdict.RECOVERED
    assert got[6:8] == [Verdict.NOT_RECOVERING] * 2  # 9 % after 10 %: 89 % of the gap open
    assert got[8] is Verdict.RECOVERING  # 3 %: 22 % of the gap open


def test_worse_needs_the_hold_and_then_sticks() -> None:
    got = run([0.2, 0.25, 0.01, 0.005])
    assert got[:2] == [Verdict.NOT_RECOVERING, Verdict.WORSE]
    assert got[2:] == [Verdict.WORSE, Verdict.WORSE]
    assert run([0.2, 0.05, 0.2, 0.05]) == [
        Verdict.NOT_RECOVERING,
        Verdict.RECOVERING,
        Verdict.NOT_RECOVERING,
        Verdict.RECOVERING,
    ]  # single spikes are not "worse"


def test_missing_data_is_never_a_pass() -> None:
    assert run([]) == []
    assert run([None, None]) == [Verdict.NO_DATA] * 2
    assert run([math.nan]) == [Verdict.NO_DATA]
    got = run([0.005] * 6 + [None])
    assert got[5] is Verdict.RECOVERED and got[6] is Verdict.NO_DATA
    # a gap restarts the hold
    got = run([0.005] * 3 + [None] + [0.005] * 5)
    assert got[-1] is Verdict.RECOVERING
    assert overall_verdict([]) is Verdict.NO_DATA


def test_overall_verdict_is_the_worst() -> None:
    assert overall_verdict([Verdict.RECOVERED, Verdict.RECOVERED]) is Verdict.RECOVERED
    assert overall_verdict([Verdict.RECOVERED, Verdict.RECOVERING]) is Verdict.RECOVERING
    assert overall_verdict([Verdict.RECOVERED, Verdict.NOT_RECOVERING]) is Verdict.NOT_RECOVERING
    assert overall_verdict([Verdict.NO_DATA, Verdict.NOT_RECOVERING]) is Verdict.NO_DATA
    assert overall_verdict([Verdict.NO_DATA, Verdict.WORSE]) is Verdict.WORSE


def test_baseline_is_the_median_of_finite_values() -> None:
    assert baseline_of([0.01, math.nan, 0.02, None, 0.5]) == 0.02
    assert baseline_of([None, math.nan]) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0051, 0.0149), min_size=1, max_size=40),
)
def test_values_inside_the_band_never_flip_back(values: list[float]) -> None:
    """Once back (<= 1 %), anything below the relapse level (1.5 %) keeps it back."""
    got = run([0.005, *values])
    assert Verdict.NOT_RECOVERING not in got
    assert changes(got) <= 1


def test_error_patterns_group_lines_by_shape() -> None:
    lines = [
        "rag-api-abc12: 2025-01-01T12:00:01Z ERROR timeout after 3001 ms calling qdrant",
        "rag-api-def34: 2025-01-01T12:00:07Z ERROR timeout after 2990 ms calling qdrant",
        "rag-api-abc12: ERROR request 3f2a9c1e-1111-4222-8333-444455556666 failed",
    ]
    assert error_patterns(lines) == (
        ("<time> ERROR timeout after <n> ms calling qdrant", 2),
        ("ERROR request <id> failed", 1),
    )
