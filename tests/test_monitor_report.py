"""The post-rollback monitor's report as a person reads it: the verdict table, the decay table
(every verdict change kept when the run is long), a chart per indicator, the log patterns and
the escalation text, compared whole with the reviewed text in tests/golden/."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playbook.charts import text_chart
from playbook.monitor_report import (
    MAX_TABLE_ROWS,
    Evaluation,
    IndicatorOutcome,
    LogFindings,
    MonitorReport,
    _table_rows,
    error_patterns,
)
from playbook.notices import Mention, render_notice
from playbook.recovery import RecoveryLevels, RecoveryPolicy, Verdict, recovery_levels
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

GOLDEN = Path(__file__).with_name("golden")
MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
ERRORS = MATRIX.indicator("error_rate")
P99 = MATRIX.indicator("p99_latency")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def run(minutes: int, recovered: bool) -> MonitorReport:
    """Error rate from 20 % down to baseline (or stuck at 8 %), P99 flat, one gap of no data."""
    levels_e = recovery_levels(ERRORS, RecoveryPolicy(), 0.002, 0.2)
    levels_p = recovery_levels(P99, RecoveryPolicy(), None, 0.3)
    evaluations = []
    for m in range(minutes):
        error = max(0.2 - 0.02 * m, 0.002) if recovered else 0.08
        p99 = None if m == 3 else 0.3
        verdict_e = (
            Verdict.RECOVERED
            if recovered and m >= 15
            else Verdict.RECOVERING
            if recovered and m >= 1
            else Verdict.NOT_RECOVERING
        )
        verdict_p = Verdict.NO_DATA if m == 3 else Verdict.RECOVERED
        overall = Verdict.NO_DATA if m == 3 else verdict_e
        evaluations.append(
            Evaluation(
                T0 + timedelta(minutes=m),
                (("error_rate", error), ("p99_latency", p99)),
                (("error_rate", verdict_e), ("p99_latency", verdict_p)),
                overall,
            )
        )
    final_e = evaluations[-1].verdicts[0][1]
    outcomes = (
        IndicatorOutcome(ERRORS, levels_e, final_e, evaluations[-1].values[0][1], 600.0, None),
        IndicatorOutcome(P99, levels_p, Verdict.RECOVERED, 0.3, 1500.0, None),
    )
    logs = LogFindings(
        True,
        error_patterns(
            [
                "rag-api-7c-x: 2026-03-01T12:01:02.123Z ERROR request 3f2b8c1e-1a2b-4c3d-8e9f-001122334455 failed after 503 ms",
                "rag-api-7c-y: 2026-03-01T12:02:09.004Z ERROR request 9a2b8c1e-1a2b-4c3d-8e9f-001122334455 failed after 17 ms",
                "rag-api-7c-x: 2026-03-01 12:03:00,5 ERROR qdrant unreachable at 0xdeadbeef",
            ]
        ),
    )
    return MonitorReport(
        service="rag-api",
        namespace="production",
        since=T0,
        until=T0 + timedelta(minutes=30),
        evaluations=tuple(evaluations),
        outcomes=outcomes,
        verdict=Verdict.RECOVERED if recovered else Verdict.NOT_RECOVERING,
        stopped_early=False,
        queries=2 * minutes,
        logs=logs,
    )


def test_log_lines_group_by_shape_with_times_ids_and_numbers_blanked() -> None:
    assert error_patterns(
        [
            "rag-api-7c-x: 2026-03-01T12:01:02.123Z ERROR request 3f2b8c1e-1a2b-4c3d-8e9f-001122334455 failed after 503 ms",
            "rag-api-7c-y: 2026-03-01T12:02:09Z ERROR request 9A2B8C1E-1A2B-4C3D-8E9F-001122334455 failed after 17.5 ms",
            "  ERROR at 0xdeadbeef in deadbeefdeadbeef  ",
        ]
    ) == (
        ("<time> ERROR request <id> failed after <n> ms", 2),
        ("ERROR at <hex> in <hex>", 1),
    )
    assert error_patterns(["x" * 300])[0][0] == "x" * 200


def escalation(report: MonitorReport) -> str:
    """The shipped escalation notice with this run's facts."""
    return render_notice(
        "escalation",
        {
            "environment": "production",
            "service": report.service,
            "namespace": report.namespace,
            "problem": "has not recovered after the rollback",
            **report.escalation_facts(),
            "lead": "@oncall",
            "mentions": [Mention("@oncall", "On-call Engineer", "every rollback")],
            "run_url": "http://127.0.0.1:4200/runs/flow-run/1",
        },
    )


def test_a_recovered_run_reads_as_the_reviewed_report() -> None:
    report = run(16, recovered=True)
    assert not report.escalate
    assert report.summary() == "rag-api: RECOVERED (Error Rate recovered, P99 Latency recovered)"
    assert report.to_markdown() == (GOLDEN / "monitor-recovered.md").read_text()


def test_a_run_that_did_not_recover_escalates_with_the_reviewed_text() -> None:
    report = run(30, recovered=False)
    assert report.escalate
    assert escalation(report) == (GOLDEN / "monitor-not-recovering.txt").read_text()
    assert report.to_markdown() == (GOLDEN / "monitor-not-recovering.md").read_text()


def test_a_long_run_keeps_every_verdict_change_in_its_decay_table() -> None:
    report = run(MAX_TABLE_ROWS + 40, recovered=True)
    rows = _table_rows(report.evaluations)
    assert len(rows) <= MAX_TABLE_ROWS
    kept = {ev.at for ev in rows}
    changes = [
        ev.at
        for before, ev in zip(report.evaluations, report.evaluations[1:], strict=False)
        if ev.verdicts != before.verdicts
    ]
    assert set(changes) <= kept
    assert report.evaluations[0].at in kept and report.evaluations[-1].at in kept
    assert rows == sorted(rows, key=lambda ev: ev.at)
    text = report.to_markdown()
    # the note counts the rows the table shows (it said 60 where 57 were shown)
    assert f"({len(rows)} of {MAX_TABLE_ROWS + 40} rows: every verdict change" in text
    assert len(re.findall(r"^\| \d\d:\d\d:\d\d \|", text, re.M)) == len(rows)
    assert _table_rows(report.evaluations[:MAX_TABLE_ROWS]) == list(
        report.evaluations[:MAX_TABLE_ROWS]
    )


def test_a_chart_marks_its_levels_and_shows_no_data_at_the_bottom() -> None:
    times = [T0 + timedelta(minutes=m) for m in range(4)]
    chart = text_chart(
        "errors",
        times,
        [0.2, None, 0.1, 0.0],
        [("back", 0.05)],
        lambda v: f"{v:.2f}",
        width=4,
        height=5,
    )
    assert chart == (GOLDEN / "chart-small.txt").read_text()
    wide = text_chart("wide", [], [float(i % 7) for i in range(100)], [], str, width=10, height=3)
    assert wide.splitlines()[1] == "      6.0 |##########|"


AVAILABILITY = MATRIX.indicator("availability")


def edge_run() -> MonitorReport:
    """Stopped early, logs unreadable; charts whose worse level sits exactly at the edge of
    the range shown, beyond it, or where the series is flat."""
    outcomes = (
        # flat at 300 ms: the range is the value itself; 1 s is too far to mark
        (P99, RecoveryLevels(None, 0.3, 0.3, 0.3, 1.0, True), [0.3, 0.3, 0.3]),
        # 100-300 ms, back at 200 ms: worse at exactly 300 + 200 ms is marked
        (P99, RecoveryLevels(0.1, 0.3, 0.2, 0.2, 0.5, True), [0.1, 0.3, 0.2]),
        # all zero: a range of 1, so worse at 1.5 is too far
        (ERRORS, RecoveryLevels(0.0, 0.0, 0.0, 0.0, 1.5, True), [0.0, 0.0, 0.0]),
        # availability 50-100 %, back at 75 %: worse at exactly 50 - 50 % is marked
        (AVAILABILITY, RecoveryLevels(1.0, 0.5, 0.75, 0.75, 0.0, False), [0.5, 1.0, 0.75]),
        # availability 99-100 %: worse at 99 % is marked below the data
        (AVAILABILITY, RecoveryLevels(1.0, 0.99, 0.995, 0.995, 0.99, False), [0.99, 1.0, 1.0]),
    )
    names = [f"i{n}" for n in range(len(outcomes))]
    indicators = [
        ind.model_copy(update={"name": name})
        for name, (ind, _, _) in zip(names, outcomes, strict=True)
    ]
    evaluations = tuple(
        Evaluation(
            T0 + timedelta(minutes=m),
            tuple((name, series[m]) for name, (_, _, series) in zip(names, outcomes, strict=True)),
            tuple((name, Verdict.WORSE if m == 2 else Verdict.NOT_RECOVERING) for name in names),
            Verdict.WORSE if m == 2 else Verdict.NOT_RECOVERING,
        )
        for m in range(3)
    )
    return MonitorReport(
        service="rag-api",
        namespace="production",
        since=T0,
        until=T0 + timedelta(minutes=30),
        evaluations=evaluations,
        outcomes=tuple(
            IndicatorOutcome(ind, levels, Verdict.WORSE, series[-1], 0.0, T0 + timedelta(minutes=2))
            for ind, (_, levels, series) in zip(indicators, outcomes, strict=True)
        ),
        verdict=Verdict.WORSE,
        stopped_early=True,
        queries=15,
        logs=LogFindings(False, unavailable_reason="logs are not served by simulated nodes"),
    )


def test_a_run_stopped_early_marks_only_the_levels_near_its_data() -> None:
    report = edge_run()
    assert report.to_markdown() == (GOLDEN / "monitor-stopped-early.md").read_text()
    assert escalation(report).splitlines()[4] == "Verdict: WORSE (stopped early)"


def test_the_escalation_shows_three_patterns_cut_at_120_characters() -> None:
    report = run(2, recovered=False)
    patterns = tuple((f"{c}" * 130, 5 - i) for i, c in enumerate("abcd"))
    text = escalation(replace(report, logs=LogFindings(True, patterns)))
    assert (
        "New error patterns in logs: 4\n  5 x " + "a" * 120 + "\n  4 x " + "b" * 120 + "\n  3 x "
        in text
    )
    assert "d" * 120 not in text
    many = replace(report, logs=LogFindings(True, tuple((f"p{i}", 1) for i in range(40))))
    markdown = many.to_markdown()
    assert "| 1 | `p29` |" in markdown and "`p30`" not in markdown
    clean = replace(report, logs=LogFindings(True, ()))
    assert clean.to_markdown().endswith(
        "## Error patterns in the logs since the rollback\n\nNone.\n"
    )


def test_the_decay_table_keeps_the_first_row_and_even_spacing_when_changes_are_many() -> None:
    report = run(MAX_TABLE_ROWS + 140, recovered=True)  # a change at row 1, spacing every 3-4 rows
    rows = _table_rows(report.evaluations)
    kept = sorted(report.evaluations.index(ev) for ev in rows)
    assert 1 in kept
    assert max(b - a for a, b in itertools.pairwise(kept)) <= 4
    # exactly as many rows as the table holds are changes and ends: no spacing needed
    alternating = [
        replace(
            ev,
            verdicts=(
                ("error_rate", Verdict.RECOVERING if i % 2 else Verdict.RECOVERED),
                ev.verdicts[1],
            ),
        )
        if i < MAX_TABLE_ROWS - 1
        else ev
        for i, ev in enumerate(run(MAX_TABLE_ROWS + 40, recovered=False).evaluations)
    ]
    rows = _table_rows(tuple(alternating))
    assert len(rows) == MAX_TABLE_ROWS and rows[0] is alternating[0]
    # more changes than rows: the first row still leads
    flipping = [
        replace(
            ev,
            verdicts=(
                ("error_rate", Verdict.RECOVERING if i % 2 else Verdict.RECOVERED),
                ev.verdicts[1],
            ),
        )
        for i, ev in enumerate(run(MAX_TABLE_ROWS + 40, recovered=False).evaluations)
    ]
    assert _table_rows(tuple(flipping))[0] is flipping[0]
    exact = run(MAX_TABLE_ROWS, recovered=True)
    assert "rows: every verdict change" not in exact.to_markdown()


def test_an_indicator_row_holds_its_levels_latest_value_and_verdict() -> None:
    outcome = run(16, recovered=True).outcomes[0]
    assert outcome.row() == {
        "indicator": "Error Rate",
        "baseline": "0.2 %",
        "at rollback": "20 %",
        "back when": "<= 0.3 %",
        "latest": "0.2 %",
        "verdict": "recovered",
    }


def test_a_run_without_evaluations_reports_its_window_and_no_data() -> None:
    empty = replace(run(1, recovered=True), evaluations=())
    text = empty.to_markdown()
    assert "Window 2026-03-01 12:00:00 → 12:30:00 UTC, 0 evaluations up to 12:00:00" in text
