"""The decision matrix as data: the shipped thresholds, classification, queries, bad files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from playbook.errors import InvalidInputError
from playbook.post_rollback import load_post_rollback, parse_post_rollback
from playbook.thresholds import (
    DEFAULT_MATRIX_FILE,
    MATRIX_ENV,
    CanaryTriggers,
    Indicator,
    Level,
    load_decision_matrix,
    parse_decision_matrix,
)

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)


@pytest.mark.parametrize(
    ("name", "value", "level"),
    [
        ("error_rate", 0.0, Level.OK),
        ("error_rate", 0.01, Level.OK),  # "> 1 %": exactly 1 % is not a warning
        ("error_rate", 0.0101, Level.WARNING),
        ("error_rate", 0.05, Level.WARNING),
        ("error_rate", 0.0501, Level.CRITICAL),
        ("p99_latency", 0.5, Level.OK),
        ("p99_latency", 0.75, Level.WARNING),
        ("p99_latency", 1.0, Level.WARNING),
        ("p99_latency", 1.75, Level.CRITICAL),
        ("availability", 1.0, Level.OK),
        ("availability", 0.995, Level.OK),
        ("availability", 0.994, Level.WARNING),
        ("availability", 0.99, Level.WARNING),
        ("availability", 0.989, Level.CRITICAL),
        ("rag_quality_ndcg", 0.82, Level.OK),
        ("rag_quality_ndcg", 0.65, Level.WARNING),
        ("rag_quality_ndcg", 0.55, Level.CRITICAL),
        ("user_complaints", 2, Level.OK),
        ("user_complaints", 3, Level.WARNING),  # "3+ in 10 min"
        ("user_complaints", 9, Level.WARNING),
        ("user_complaints", 10, Level.CRITICAL),
    ],
)
def test_shipped_matrix_has_the_playbook_thresholds(name: str, value: float, level: Level) -> None:
    assert MATRIX.indicator(name).classify(value) is level


@pytest.mark.parametrize("missing", [None, math.nan])
def test_missing_value_is_no_data_never_ok(missing: float | None) -> None:
    for indicator in MATRIX.indicators.values():
        assert indicator.classify(missing) is Level.NO_DATA


def test_overall_level_is_the_worst_and_optional_no_data_does_not_count() -> None:
    result = MATRIX.classify({"error_rate": 0.02, "p99_latency": 0.1, "user_complaints": None})
    assert [c.level for c in result.classifications] == [Level.WARNING, Level.OK, Level.NO_DATA]
    assert result.level is Level.WARNING
    assert MATRIX.classify({"error_rate": None, "p99_latency": 0.1}).level is Level.NO_DATA
    assert MATRIX.classify({"error_rate": None, "p99_latency": 2.0}).level is Level.CRITICAL
    assert result.rows()[0] == {
        "metric": "Error Rate",
        "value": "2 %",
        "level": "WARNING",
        "warning": "> 1 %",
        "critical": "> 5 %",
    }


def test_availability_is_time_healthy_not_one_minus_error_rate() -> None:
    """Availability is the share of time up and healthy: 2 % errors on a healthy service stay
    a WARNING of the error rate, never an availability CRITICAL."""
    availability = MATRIX.indicator("availability")
    query = availability.render("rag-api")
    assert "http_requests_total" not in query
    assert 'avg_over_time(rag_healthy{service="rag-api"}[1h])' in query
    assert 'avg_over_time(up{service="rag-api"}[1h])' in query

    # healthy all hour while 2 % of requests fail: what 1 - error rate would call critical
    result = MATRIX.classify({"error_rate": 0.02, "availability": 1.0})
    assert result.of("availability").level is Level.OK
    assert result.of("error_rate").level is Level.WARNING
    assert result.level is Level.WARNING
    assert availability.classify(1 - 0.02) is Level.CRITICAL  # why it must not be 1 - errors

    # down or unhealthy for more than 36 s of the hour is critical, up to 36 s a warning
    hour = 3600.0
    assert availability.classify(1 - 37 / hour) is Level.CRITICAL
    assert availability.classify(1 - 35 / hour) is Level.WARNING
    assert availability.classify(0.995) is Level.OK


def test_queries_render_for_a_service_and_window() -> None:
    query = MATRIX.indicator("error_rate").render("rag-api", "30s")
    assert 'service="rag-api"' in query and "[30s]" in query
    assert "$" not in query and "\n" not in query
    assert "[5m]" in MATRIX.indicator("error_rate").render("rag-api")
    with pytest.raises(InvalidInputError, match="malformed Prometheus duration"):
        MATRIX.indicator("error_rate").render("rag-api", "5 minutes")


def test_format_is_in_the_indicators_unit() -> None:
    assert MATRIX.indicator("error_rate").format(0.2) == "20 %"
    assert MATRIX.indicator("p99_latency").format(0.83) == "830 ms"
    assert MATRIX.indicator("p99_latency").format(None) == "no data"
    assert MATRIX.indicator("availability").passing_condition(0.99) == ">= 99 %"


@given(
    name=st.sampled_from(sorted(MATRIX.indicators)),
    a=st.floats(-1e3, 1e3, allow_nan=False),
    b=st.floats(-1e3, 1e3, allow_nan=False),
)
def test_classification_is_monotonic(name: str, a: float, b: float) -> None:
    """A worse value never gets a better level."""
    indicator = MATRIX.indicator(name)
    low, high = sorted((a, b))
    worse, better = (high, low) if indicator.higher_is_worse else (low, high)
    assert indicator.classify(worse).rank >= indicator.classify(better).rank


GOOD = """
indicators:
  error_rate:
    title: Error Rate
    unit: ratio
    breach: above
    warning: 0.01
    critical: 0.05
    window: 5m
    query: sum(rate(x{service="$service"}[$window]))
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("critical: 0.05", "critical: 0.001"), "must not be below warning"),
        (("$window", "$windw"), "unknown placeholder"),
        (('service="$service"', 'service="rag-api"'), "must select the service"),
        (("window: 5m", "window: 5 minutes"), "window"),
        (("breach: above", "breach: over"), "breach"),
        (("unit: ratio", "unit: ratio\n    colour: red"), "Extra inputs"),
        (("indicators:", "indicators: [oops]\nx:"), "not valid YAML|must be a mapping"),
    ],
)
def test_bad_matrix_is_refused_with_the_reason(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_decision_matrix(GOOD.replace(*change), source="m.yaml")
    assert parse_decision_matrix(GOOD).indicator("error_rate").warning == 0.01


def test_unknown_indicator_names_the_known_ones() -> None:
    with pytest.raises(InvalidInputError, match="unknown indicator 'errors'; known: availability"):
        MATRIX.indicator("errors")


def test_matrix_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv(MATRIX_ENV, str(path))
    assert set(load_decision_matrix().indicators) == {"error_rate"}
    monkeypatch.setenv(MATRIX_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(InvalidInputError, match="cannot read the decision matrix"):
        load_decision_matrix()


def test_shipped_post_rollback_settings_match_the_playbook() -> None:
    settings = load_post_rollback(MATRIX)
    assert settings.verification.min_pods == 3
    assert settings.verification.indicators == {"error_rate": 0.01, "p99_latency": 0.3}
    # the playbook's short-term list: error rate, latency, user reports decreasing
    assert set(settings.monitor.indicators) == {"error_rate", "p99_latency", "user_complaints"}


def test_post_rollback_settings_must_name_known_indicators() -> None:
    text = "monitor:\n  indicators:\n    error_rte: {}\n"
    with pytest.raises(InvalidInputError, match="unknown indicator 'error_rte'"):
        parse_post_rollback(text, MATRIX, source="p.yaml")
    text = "verification:\n  critical: [helth]\nmonitor:\n  indicators:\n    error_rate: {}\n"
    with pytest.raises(InvalidInputError, match=r"unknown checks \['helth'\]"):
        parse_post_rollback(text, MATRIX)


def test_no_data_beside_a_warning_makes_the_release_no_data_and_nothing_is_ok() -> None:
    assert Level.worst([Level.WARNING, Level.NO_DATA]) is Level.NO_DATA
    assert Level.worst([Level.NO_DATA, Level.CRITICAL, Level.WARNING]) is Level.CRITICAL
    assert Level.worst([Level.OK, Level.WARNING]) is Level.WARNING
    assert Level.worst([]) is Level.OK
    assert [level.rank for level in Level] == [0, 1, 2, 3]
    result = MATRIX.classify({"error_rate": 0.02, "p99_latency": None})
    assert result.level is Level.NO_DATA
    assert result.of("p99_latency").observed == "no data"
    with pytest.raises(KeyError, match="availability"):
        result.of("availability")
    assert MATRIX.classify({}).level is Level.OK


def test_a_service_name_with_a_quote_or_backslash_cannot_break_out_of_the_label() -> None:
    query = MATRIX.indicator("rag_quality_ndcg").render('rag"api\\x', "1m")
    assert query == r'min(avg_over_time(rag_quality_ndcg{service="rag\"api\\x"}[1m]))'
    multi = MATRIX.indicator("error_rate").render("rag-api", "30s")
    assert "  " not in multi and multi.startswith('(sum(rate(http_requests_total{service="rag-api"')


def test_each_breach_rule_has_its_opposite_as_the_passing_condition() -> None:
    base = dict(
        title="T", unit="count", warning=3, critical=10, window="5m", query='x{s="$service"}'
    )
    expected = {"above": ("> 3", "<= 3"), "at_least": (">= 3", "< 3")}
    for breach, (bad, good) in expected.items():
        indicator = Indicator(name="t", breach=breach, **base)  # type: ignore[arg-type]
        assert (indicator.condition(3), indicator.passing_condition(3)) == (bad, good)
    low = dict(base, warning=10, critical=3)
    for breach, (bad, good) in {"below": ("< 3", ">= 3"), "at_most": ("<= 3", "> 3")}.items():
        indicator = Indicator(name="t", breach=breach, **low)  # type: ignore[arg-type]
        assert (indicator.condition(3), indicator.passing_condition(3)) == (bad, good)


def test_each_breach_rule_decides_its_boundary() -> None:
    base = dict(title="T", unit="score", window="5m", query='x{s="$service"}')
    at_least = Indicator(name="a", breach="at_least", warning=3, critical=10, **base)  # type: ignore[arg-type]
    assert [at_least.classify(v) for v in (2.9, 3, 9.9, 10)] == [
        Level.OK,
        Level.WARNING,
        Level.WARNING,
        Level.CRITICAL,
    ]
    at_most = Indicator(name="b", breach="at_most", warning=0.7, critical=0.6, **base)  # type: ignore[arg-type]
    assert [at_most.classify(v) for v in (0.71, 0.7, 0.61, 0.6)] == [
        Level.OK,
        Level.WARNING,
        Level.WARNING,
        Level.CRITICAL,
    ]
    assert at_most.format(0.61234) == "0.612" and at_most.format(None) == "no data"


# --- the canary phase's triggers and the hourly cap: sections of the same file --------------

SECTIONS = """
canary:
  window_seconds: 600
  max_error_ratio: 0.05
  max_p99_seconds: 0.5
automatic_rollbacks:
  max_per_hour: 3
"""


def test_shipped_matrix_has_the_playbooks_canary_triggers_and_hourly_cap() -> None:
    triggers = MATRIX.canary_triggers()
    assert (triggers.window_seconds, triggers.max_error_ratio, triggers.max_p99_seconds) == (
        600,
        0.05,
        0.5,
    )
    assert MATRIX.max_automatic_per_hour() == 3
    assert parse_decision_matrix(GOOD + SECTIONS).canary == triggers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("  max_p99_seconds: 0.5\n", ""), "canary must state max_p99_seconds"),
        (("max_error_ratio: 0.05", "max_error_ratio: 5"), r"a ratio of 0..1 \(5 % is 0.05\)"),
        (("max_error_ratio: 0.05", "max_error_ratio: 0"), "max_error_ratio"),
        (("window_seconds: 600", "window_seconds: -1"), "window_seconds"),
        (("window_seconds: 600", "window_seconds: 10m"), "window_seconds"),
        (("max_p99_seconds: 0.5", "max_p99_seconds: 500"), "max_p99_seconds"),
        (("max_p99_seconds: 0.5", "max_p99_seconds: 0.5\n  p50: 1"), "Extra inputs"),
        (("max_per_hour: 3", "max_per_hour: -1"), "automatic_rollbacks.max_per_hour"),
        (("max_per_hour: 3", "max_per_hour: 11"), "automatic_rollbacks.max_per_hour"),
        (("max_per_hour: 3", "max_per_hour: three"), "automatic_rollbacks.max_per_hour"),
        (("max_per_hour: 3", "max_per_hour: 2.5"), "automatic_rollbacks.max_per_hour"),
        (("  max_per_hour: 3\n", ""), "`automatic_rollbacks` is empty"),
    ],
)
def test_bad_canary_triggers_or_cap_are_refused_with_the_reason(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as refused:
        parse_decision_matrix(GOOD + SECTIONS.replace(*change), source="m.yaml")
    assert str(refused.value).startswith("m.yaml is invalid")


def test_a_matrix_without_the_sections_fails_only_where_they_are_needed() -> None:
    matrix = parse_decision_matrix(GOOD)
    assert matrix.indicator("error_rate").critical == 0.05  # the indicators still serve
    with pytest.raises(InvalidInputError, match=r"no `canary` section .* the canary guard"):
        matrix.canary_triggers()
    with pytest.raises(InvalidInputError, match="no `automatic_rollbacks` section"):
        matrix.max_automatic_per_hour()


def test_triggers_given_in_part_take_the_rest_from_the_configured_matrix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert CanaryTriggers(window_seconds=60) == CanaryTriggers(
        window_seconds=60, max_error_ratio=0.05, max_p99_seconds=0.5
    )
    path = tmp_path / "matrix.yaml"
    path.write_text(GOOD + SECTIONS.replace("max_error_ratio: 0.05", "max_error_ratio: 0.1"))
    monkeypatch.setenv(MATRIX_ENV, str(path))
    assert CanaryTriggers(window_seconds=60).max_error_ratio == 0.1
    assert CanaryTriggers().window_seconds == 600
    path.write_text(GOOD)
    with pytest.raises(InvalidInputError, match="no `canary` section"):
        CanaryTriggers(window_seconds=60)
    # all three given: nothing is read
    assert CanaryTriggers(window_seconds=1, max_error_ratio=1, max_p99_seconds=1).window_seconds
