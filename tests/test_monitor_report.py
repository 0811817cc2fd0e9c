"""The post-rollback monitor's report as a person reads it: the verdict table, the decay table
(every verdict change kept when the run is long), a chart per indicator, the log patterns and
the escalation text, compared whole with the reviewed text in tests/golden/."""

from __future__ import annotations

import re
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
from playbook.recovery import RecoveryPolicy, Verdict, recovery_levels
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


def test_a_recovered_run_reads_as_the_reviewed_report() -> None:
    report = run(16, recovered=True)
    assert not report.escalate
    assert report.summary() == "rag-api: RECOVERED (Error Rate recovered, P99 Latency recovered)"
    assert report.to_markdown() == (GOLDEN / "monitor-recovered.md").read_text()


def test_a_run_that_did_not_recover_escalates_with_the_reviewed_text() -> None:
    report = run(30, recovered=False)
    assert report.escalate
    assert report.escalation_text() == (GOLDEN / "monitor-not-recovering.txt").read_text()
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
