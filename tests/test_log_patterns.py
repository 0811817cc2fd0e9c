"""'No new error patterns in logs': the patterns since the rollback that were not there before
the bad release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playbook.monitor_report import line_time, new_error_patterns

RELEASE = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
ROLLBACK = RELEASE + timedelta(minutes=5)


def line(at: datetime, text: str, pod: str = "rag-api-7d9f-abcde") -> str:
    return f"{pod}: {at:%Y-%m-%dT%H:%M:%S.%fZ} {text}"


def test_a_pattern_present_before_the_release_is_not_new_and_one_seen_only_after_is() -> None:
    lines = [
        line(RELEASE - timedelta(minutes=3), "ERROR cache miss for key 17"),
        line(RELEASE + timedelta(minutes=1), "ERROR POST /v1/query 500: retriever timeout"),
        line(ROLLBACK + timedelta(seconds=30), "ERROR cache miss for key 912"),
        line(ROLLBACK + timedelta(seconds=40), "ERROR connection to vector-db refused"),
        line(ROLLBACK + timedelta(seconds=50), "ERROR connection to vector-db refused"),
    ]
    new, baseline = new_error_patterns(lines, RELEASE, ROLLBACK)
    assert new == (("<time> ERROR connection to vector-db refused", 2),)
    # the bad release's own errors, between the release and the rollback, are neither
    assert baseline == (
        "1 pattern(s) were in the logs before the release at 03:00:00 UTC; "
        "1 of them seen again since the rollback, not new"
    )


def test_without_lines_from_before_the_release_every_pattern_is_listed_and_that_is_said() -> None:
    lines = [line(ROLLBACK + timedelta(seconds=5), "ERROR cache miss for key 1")]
    new, baseline = new_error_patterns(lines, RELEASE, ROLLBACK)
    assert new == (("<time> ERROR cache miss for key <n>", 1),)
    assert baseline.startswith("no error lines from before the release at 03:00:00 UTC")


def test_a_line_without_a_time_counts_as_since_the_rollback() -> None:
    new, _ = new_error_patterns(["rag-api-1: panic: nil map"], RELEASE, ROLLBACK)
    assert new == (("panic: nil map", 1),)


def test_line_times_read_the_kubelet_and_service_formats() -> None:
    assert line_time("rag-api-1: 2026-12-01T03:00:01.123456789Z ERROR x") == datetime(
        2026, 12, 1, 3, 0, 1, 123456, tzinfo=UTC
    )
    assert line_time("2026-12-01T04:00:01+01:00 y") == datetime(2026, 12, 1, 3, 0, 1, tzinfo=UTC)
    assert line_time("ERROR 2026-12-01T03:00:01Z later in the line") is None
