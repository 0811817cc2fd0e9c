"""The boundaries of 'no new error patterns': a line written exactly at the rollback counts as
since it, one written exactly at the bad release is that release's own (not from before it);
short fractions of a second are read as written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playbook.monitor_report import line_time, new_error_patterns

RELEASE = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
ROLLBACK = RELEASE + timedelta(minutes=5)


def line(at: datetime, text: str) -> str:
    return f"rag-api-7d9f-abcde: {at:%Y-%m-%dT%H:%M:%S.%fZ} {text}"


def test_a_line_written_exactly_at_the_rollback_counts_as_since_the_rollback() -> None:
    lines = [
        line(RELEASE - timedelta(minutes=1), "ERROR cache miss"),
        line(ROLLBACK, "ERROR connection to vector-db refused"),
    ]
    new, _ = new_error_patterns(lines, RELEASE, ROLLBACK)
    assert new == (("<time> ERROR connection to vector-db refused", 1),)


def test_a_line_written_exactly_at_the_release_is_the_releases_not_a_known_pattern() -> None:
    lines = [
        line(RELEASE, "ERROR connection to vector-db refused"),
        line(ROLLBACK + timedelta(seconds=1), "ERROR connection to vector-db refused"),
    ]
    new, baseline = new_error_patterns(lines, RELEASE, ROLLBACK)
    assert new == (("<time> ERROR connection to vector-db refused", 1),)
    assert baseline == (
        "no error lines from before the release at 03:00:00 UTC were found (none were "
        "written, or the pods that wrote them are gone): every pattern since the rollback is "
        "listed"
    )


def test_a_time_with_a_short_fraction_of_a_second_is_read_as_written() -> None:
    assert line_time("rag-api-1: 2026-12-01T03:00:01.5Z ERROR x") == datetime(
        2026, 12, 1, 3, 0, 1, 500000, tzinfo=UTC
    )
    assert line_time("2026-12-01T03:00:01.25-02:00 y") == datetime(
        2026, 12, 1, 5, 0, 1, 250000, tzinfo=UTC
    )
