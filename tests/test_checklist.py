"""The verification checklist stated exactly: each check's row (name, expected, observed,
result, critical), NO DATA never passing, and the one-line summary of a checklist."""

from __future__ import annotations

import pytest

from playbook.checks import (
    Checklist,
    CheckResult,
    ProbeResult,
    Status,
    check_health,
    check_indicator,
    check_pods,
    check_version,
    version_from_body,
)
from playbook.rollout import PodState
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
CRITICAL = {"pod_count", "pods_ready", "health", "version", "error_rate"}


def pod(name: str, ready: bool = True) -> PodState:
    return PodState(name, "Running", ready, 0, (), "abc", (), False)


def test_each_check_fills_its_whole_row() -> None:
    count, ready = check_pods([pod("a"), pod("b", False)], 3, CRITICAL)
    assert count == CheckResult(
        "pod_count", "Pod Count", ">= 3", "2 running of 2", Status.FAIL, True
    )
    assert ready == CheckResult(
        "pods_ready",
        "Ready Status",
        "All Ready",
        "1/2 ready; not ready: b (Running)",
        Status.FAIL,
        True,
    )
    unread = check_pods("forbidden", 3, set())
    assert unread == (
        CheckResult("pod_count", "Pod Count", ">= 3", "forbidden", Status.NO_DATA, False),
        CheckResult("pods_ready", "Ready Status", "All Ready", "forbidden", Status.NO_DATA, False),
    )
    health = check_health(ProbeResult("u", 200, 0.0124, "ok"), CRITICAL)
    assert health == CheckResult(
        "health", "Health Check", "200 OK", "200 in 12 ms", Status.PASS, True
    )
    assert check_health("refused", set()) == CheckResult(
        "health", "Health Check", "200 OK", "refused", Status.NO_DATA, False
    )
    # a failing answer shows the start of its body, at most 80 characters of it
    sick = check_health(ProbeResult("u", 503, 0.5, "x" * 100), CRITICAL)
    assert sick.observed == "503 in 500 ms: " + "x" * 80 and sick.status is Status.FAIL
    assert check_health(ProbeResult("u", 500, 0.001, ""), CRITICAL).observed == "500 in 1 ms"


def test_version_rows_say_what_was_observed_or_why_nothing_was() -> None:
    ok = check_version(ProbeResult("u", 200, 0.01, "", "v1.2.3"), "v1.2.3", CRITICAL)
    assert ok == CheckResult("version", "Version", "v1.2.3", "v1.2.3", Status.PASS, True)
    no_version = check_version(ProbeResult("u", 200, 0.01, "y" * 90), "v1.2.3", set())
    assert no_version == CheckResult(
        "version", "Version", "v1.2.3", "HTTP 200, no version: " + "y" * 80, Status.NO_DATA, False
    )
    assert check_version("timeout", "v1", CRITICAL) == CheckResult(
        "version", "Version", "v1", "timeout", Status.NO_DATA, True
    )


def test_an_indicator_row_is_no_data_for_none_nan_or_an_error_text() -> None:
    errors = MATRIX.indicator("error_rate")
    assert check_indicator(errors, 0.01, 0.002, CRITICAL) == CheckResult(
        "error_rate", "Error Rate", "<= 1 %", "0.2 %", Status.PASS, True
    )
    assert check_indicator(errors, 0.01, 0.01, CRITICAL).status is Status.PASS  # at the limit
    assert check_indicator(errors, 0.01, 0.0101, CRITICAL).status is Status.FAIL
    for missing, observed in ((None, "no data"), (float("nan"), "no data"), ("503", "503")):
        assert check_indicator(errors, 0.01, missing, set()) == CheckResult(
            "error_rate", "Error Rate", "<= 1 %", observed, Status.NO_DATA, False
        )


def test_a_checklist_fails_on_a_critical_no_data_and_counts_non_critical_failures() -> None:
    p99 = MATRIX.indicator("p99_latency")
    results = (
        CheckResult("pod_count", "Pod Count", ">= 3", "3 running of 3", Status.PASS, True),
        CheckResult("p99", "P99", "<= 300 ms", "450 ms", Status.FAIL, False),
        check_indicator(p99, 0.3, None, {"p99_latency"}),
    )
    checklist = Checklist(results)
    assert not checklist.passed
    assert checklist.critical_failures == (results[2],)
    assert checklist.warnings == (results[1],)
    assert checklist.summary() == "failed: P99 Latency no data (expected <= 300 ms)"
    assert checklist.rows()[1] == {
        "check": "P99",
        "expected": "<= 300 ms",
        "observed": "450 ms",
        "result": "FAIL",
        "critical": "no",
    }
    assert checklist.rows()[2]["result"] == "NO DATA" and checklist.rows()[2]["critical"] == "yes"
    passing = Checklist(results[:2])
    assert (
        passing.passed and passing.summary() == "all critical checks passed (1 non-critical failed)"
    )
    assert Checklist(results[:1]).summary() == "all critical checks passed"
    both = Checklist((results[2], CheckResult("v", "Version", "v1", "v2", Status.FAIL, True)))
    assert both.summary() == (
        "failed: P99 Latency no data (expected <= 300 ms); Version v2 (expected v1)"
    )


@pytest.mark.parametrize(
    ("body", "version"),
    [
        ('{"version": "v1.2.3"}', "v1.2.3"),
        ('"v1.2.3"', "v1.2.3"),
        ('{"version": 3}', None),
        ("[1]", None),
        ("v1.2.3 build 7", None),  # a sentence is no version
        ("v" * 129, None),  # longer than a tag can be
        ("v" * 128, "v" * 128),
        ("  v1.2.3\nsecond line", "v1.2.3"),
    ],
)
def test_the_version_is_read_from_json_or_the_first_plain_line(
    body: str, version: str | None
) -> None:
    assert version_from_body(body) == version


def test_the_version_field_can_be_named() -> None:
    assert version_from_body('{"tag": "v9"}', field="tag") == "v9"
