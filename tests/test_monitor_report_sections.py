"""The parts of the monitor's report a person meets only sometimes, compared whole with the
reviewed text in tests/golden/: points Prometheus could not be queried for, the log patterns
said against what was there before the release; the decay table exactly full of verdict
changes; which indicators decide the service's verdict; the clock is UTC."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from pathlib import Path

from test_monitor_report import run

from playbook.guard import now_utc
from playbook.monitor_report import MAX_TABLE_ROWS, LogFindings, _table_rows
from playbook.recovery import Verdict, counts
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

GOLDEN = Path(__file__).with_name("golden")
MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)


def test_unqueried_points_and_known_patterns_read_as_the_reviewed_report() -> None:
    report = replace(
        run(3, recovered=False),
        unqueried=(
            "Error Rate at 12:01:00 UTC: Connection refused (after 3 attempts)",
            "P99 Latency at 12:01:00 UTC: Connection refused (after 3 attempts)",
        ),
        logs=LogFindings(
            True,
            (("<time> ERROR connection to vector-db refused", 4),),
            baseline="2 pattern(s) were in the logs before the release at 11:55:00 UTC; 1 of "
            "them seen again since the rollback, not new",
        ),
    )
    assert report.to_markdown() == (GOLDEN / "monitor-unqueried.md").read_text()


def test_the_note_under_a_long_decay_table_stands_apart_from_it() -> None:
    text = run(MAX_TABLE_ROWS + 40, recovered=True).to_markdown()
    assert (
        "|\n\n(" in text and "rows: every verdict change and evenly spaced rows between.)" in text
    )


def test_a_decay_table_exactly_full_of_verdict_changes_needs_no_spacing_rows() -> None:
    evaluations = run(MAX_TABLE_ROWS + 40, recovered=False).evaluations
    # changes at rows 1 to 58: with the first and the last row, exactly the 60 the table holds
    flips = tuple(
        replace(
            ev,
            verdicts=(
                ("error_rate", Verdict.RECOVERING if min(i, 58) % 2 else Verdict.RECOVERED),
                ev.verdicts[1],
            ),
        )
        for i, ev in enumerate(evaluations)
    )
    rows = _table_rows(flips)
    assert rows == [*flips[:59], flips[-1]]


def test_an_optional_indicator_without_data_does_not_decide_the_services_verdict() -> None:
    complaints, errors = MATRIX.indicator("user_complaints"), MATRIX.indicator("error_rate")
    assert not complaints.required and errors.required
    assert not counts(complaints, Verdict.NO_DATA)
    assert counts(complaints, Verdict.NOT_RECOVERING) and counts(complaints, Verdict.RECOVERED)
    assert counts(errors, Verdict.NO_DATA) and counts(errors, Verdict.RECOVERED)


def test_the_guards_clock_is_utc() -> None:
    assert now_utc().tzinfo is UTC
