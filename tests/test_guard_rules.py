"""The guard's decisions stated exactly: canary triggers, the hourly cap and its ledger, the
re-measured alert and whether the release is the cause. Pure, no stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from playbook.errors import InvalidInputError
from playbook.guard import (
    CanaryObservation,
    CanaryTriggers,
    CapDecision,
    FiredTrigger,
    Health,
    LedgerEntry,
    Recheck,
    ReleaseCause,
    Trigger,
    check_cap,
    duration_seconds,
    evaluate_canary,
    judge_recheck,
    judge_release_cause,
    parse_ledger,
    record,
)
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRIGGERS = CanaryTriggers()
MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
ERROR_RATE = MATRIX.indicator("error_rate")


def observe(
    elapsed: float = 60,
    health: Health = Health.HEALTHY,
    ratio: float | None = 0.0,
    p99: float | None = 0.1,
) -> CanaryObservation:
    return CanaryObservation(elapsed, health, f"/health {health.value}", ratio, p99)


# --- canary triggers ------------------------------------------------------------------------


def test_each_fired_trigger_carries_the_observed_value_and_the_limit_it_crossed() -> None:
    verdict = evaluate_canary(observe(700, Health.FAILING, 0.2, 0.83), TRIGGERS)
    assert verdict.fired == (
        FiredTrigger(
            Trigger.HEALTH_CHECK_FAILING, "/health failing after 700s", "healthy within 600s"
        ),
        FiredTrigger(Trigger.ERROR_RATE, "20.00 %", "5.00 %"),
        FiredTrigger(Trigger.P99_LATENCY, "830 ms", "500 ms"),
    )
    assert verdict.rollback and verdict.window_over
    assert verdict.summary == (
        "health check still failing after the canary window: /health failing after 700s "
        "(limit healthy within 600s); error rate above the limit: 20.00 % (limit 5.00 %); "
        "P99 latency above the limit: 830 ms (limit 500 ms)"
    )
    unhealthy = evaluate_canary(observe(5, Health.UNHEALTHY), TRIGGERS)
    assert unhealthy.fired == (FiredTrigger(Trigger.UNHEALTHY, "/health unhealthy", "healthy"),)
    assert unhealthy.window_over is False


def test_the_canary_window_is_over_exactly_at_its_length() -> None:
    assert evaluate_canary(observe(600), TRIGGERS).window_over is True
    assert evaluate_canary(observe(599.9), TRIGGERS).window_over is False
    assert evaluate_canary(observe(600, Health.FAILING), TRIGGERS).rollback


def test_a_canary_without_figures_is_within_limits_and_says_n_a() -> None:
    verdict = evaluate_canary(observe(42, ratio=None, p99=float("inf")), TRIGGERS)
    assert not verdict.rollback
    assert verdict.summary == ("within limits after 42s (health healthy, error ratio n/a, P99 n/a)")
    measured = evaluate_canary(observe(42, ratio=0.0123, p99=0.2504), TRIGGERS)
    assert measured.summary == (
        "within limits after 42s (health healthy, error ratio 1.23 %, P99 250 ms)"
    )


# --- the hourly cap and its ledger ------------------------------------------------------------


def entries(*minutes_ago: float) -> tuple[LedgerEntry, ...]:
    return tuple(LedgerEntry(T0 - timedelta(minutes=m), f"run-{m:g}", "test") for m in minutes_ago)


def test_more_rollbacks_in_the_ledger_than_the_cap_free_a_slot_when_the_cap_th_newest_expires() -> (
    None
):
    # five within the hour against a cap of 3: one more is allowed only once the third newest
    # (40 min old) has left the window, not the oldest (55 min old)
    ledger = entries(55, 50, 40, 20, 5)
    decision = check_cap(ledger, T0, cap=3)
    assert decision == CapDecision(False, 3, ledger, T0 + timedelta(minutes=20))
    assert decision.message == (
        "5 automatic rollbacks in the last hour reached the cap of 3; not rolling back "
        "automatically again before 2026-03-01T12:20:00+00:00"
    )
    never = check_cap(entries(5), T0, cap=0)
    assert never == CapDecision(False, 0, entries(5), None)
    assert never.message.endswith("not rolling back automatically again before ?")


def test_a_rollback_recorded_exactly_now_counts_and_one_exactly_an_hour_ago_does_not() -> None:
    decision = check_cap(entries(60, 0), T0, cap=1)
    assert decision.recent == entries(0)
    assert not decision.allowed
    allowed = check_cap(entries(60, 30), T0, cap=2)
    assert allowed == CapDecision(True, 2, entries(30), None)
    assert allowed.message == "1 of at most 2 automatic rollbacks in the last hour"
    # an entry in the future (a clock ahead) is not "in the last hour"
    assert check_cap((LedgerEntry(T0 + timedelta(seconds=1), None, ""),), T0, cap=1).allowed


def test_a_negative_cap_is_refused_by_value() -> None:
    with pytest.raises(InvalidInputError, match=r"^the hourly cap must be >= 0, got -1$"):
        check_cap((), T0, cap=-1)


def test_the_ledger_keeps_reason_and_run_and_reads_entries_without_them() -> None:
    stored = record((), LedgerEntry(T0, "run-1", "ErrorRateHigh"))
    assert stored == [
        {"at": "2026-03-01T12:00:00+00:00", "flow_run_id": "run-1", "reason": "ErrorRateHigh"}
    ]
    assert parse_ledger(stored) == (LedgerEntry(T0, "run-1", "ErrorRateHigh"),)
    bare = parse_ledger([{"at": "2026-03-01T12:00:00+00:00", "flow_run_id": 7}])
    assert bare == (LedgerEntry(T0, "7", ""),)
    # entries come back oldest first whatever the stored order
    later = LedgerEntry(T0 + timedelta(minutes=1), None, "b")
    assert parse_ledger([later.to_json(), stored[0]]) == (parse_ledger(stored)[0], later)


def test_a_ledger_that_is_not_a_list_is_refused_naming_its_type() -> None:
    with pytest.raises(
        InvalidInputError, match=r"^rollback ledger must be a list of entries, not dict$"
    ):
        parse_ledger({"at": "x"})
    with pytest.raises(
        InvalidInputError, match=r"^rollback ledger\[0\]: `at` must carry a time zone$"
    ):
        parse_ledger([{"at": "2026-03-01T12:00:00"}])


def test_recording_drops_entries_exactly_an_hour_older_than_the_new_one() -> None:
    stored = record(entries(60, 59), LedgerEntry(T0, "now", "r"))
    assert [e["flow_run_id"] for e in stored] == ["run-59", "now"]


def test_a_malformed_duration_is_refused_by_value() -> None:
    for bad in ("5m ", "x5m", "5", ""):
        with pytest.raises(InvalidInputError, match="malformed Prometheus duration"):
            duration_seconds(bad)
    with pytest.raises(
        InvalidInputError, match=r"^malformed Prometheus duration '5mx' \(e\.g\. 30s, 5m\)$"
    ):
        duration_seconds("5mx")


# --- the alert re-measured, and whether the release is the cause -----------------------------


def test_the_recheck_says_still_critical_no_longer_or_no_data_with_the_figures() -> None:
    assert judge_recheck(ERROR_RATE, 0.2, "42s") == Recheck(
        True, "Error Rate over the current revision's last 42s is 20 %, still critical (> 5 %)"
    )
    assert judge_recheck(ERROR_RATE, 0.05, "42s") == Recheck(
        False,
        "not rolled back: Error Rate over the current revision's last 42s is 5 %, no longer "
        "critical (> 5 %); the alert still counts errors of the version before it",
    )
    assert judge_recheck(ERROR_RATE, float("nan"), "42s") == Recheck(
        None,
        "not rolled back: Error Rate over the current revision's last 42s has no data in "
        "Prometheus, so the alert cannot be confirmed against the version that runs now",
    )


def test_a_release_exactly_max_age_old_is_still_recent_and_a_second_older_is_not() -> None:
    max_age = timedelta(hours=6)
    assert judge_release_cause(T0 - max_age, T0, max_age) == ReleaseCause(
        True, "the current revision is 6 h old"
    )
    old = judge_release_cause(T0 - max_age - timedelta(seconds=1), T0, max_age)
    assert old == ReleaseCause(
        False,
        "not rolled back: the current revision has been current for 6 h, longer than 6 h; the "
        "alert is not about a recent release, the cause lies elsewhere",
    )


def test_the_release_is_the_cause_only_when_the_indicator_was_healthy_before_it() -> None:
    since = T0 - timedelta(minutes=12, seconds=5)
    day = timedelta(days=1)
    assert judge_release_cause(since, T0, day, ERROR_RATE, 0.01, "5m") == ReleaseCause(
        True,
        "the current revision is 12 min old and Error Rate over the 5m before the current "
        "revision became current was 1 %, not critical (> 5 %)",
    )
    assert judge_release_cause(since, T0, day, ERROR_RATE, 0.2, "5m") == ReleaseCause(
        False,
        "not rolled back: Error Rate over the 5m before the current revision became current was "
        "already 20 % (critical > 5 %): the release is not what broke it, the cause lies elsewhere",
    )
    for missing in (None, float("nan")):
        assert judge_release_cause(since, T0, day, ERROR_RATE, missing, "5m") == ReleaseCause(
            False,
            "not rolled back: Error Rate over the 5m before the current revision became current "
            "has no data, so the release cannot be shown to be what broke it",
        )


def test_ages_read_in_days_hours_minutes_or_seconds() -> None:
    def age(delta: timedelta) -> str:
        return judge_release_cause(T0 - delta, T0, timedelta(days=30)).message

    assert age(timedelta(seconds=0)) == "the current revision is 0 s old"
    assert age(timedelta(seconds=59)) == "the current revision is 59 s old"
    assert age(timedelta(hours=1, minutes=2, seconds=3)) == "the current revision is 1 h 2 min old"
    assert age(timedelta(days=2, hours=3, minutes=4)) == "the current revision is 2 d 3 h old"
    assert age(timedelta(days=1, minutes=4)) == "the current revision is 1 d old"
