"""The rollback report: the markdown artifact's content and the pod verification."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbook.checks import Checklist, CheckResult, Status
from playbook.rollback_report import RollbackReport, Stopwatch, unready_pods
from playbook.rollout import PodState
from playbook.task_results import EventRecord, LogScan

GOLDEN = Path(__file__).with_name("golden")


def pod(name: str, ready: bool, waiting: tuple[str, ...] = (), deleting: bool = False) -> PodState:
    return PodState(name, "Running", ready, 0, waiting, "abc", ("img:v1",), deleting)


def test_markdown_names_versions_revisions_durations_and_the_change() -> None:
    report = RollbackReport(
        flow="kubernetes_rollback",
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        outcome="rolled back from revision 3 to revision 1 (now revision 4)",
        changed=True,
        dry_run=False,
        from_version="v1.2.4",
        to_version="v1.2.2",
        from_revision=3,
        to_revision=1,
        new_revision=4,
        change='[{"op": "replace"}]',
        durations=(("check", 0.254), ("undo", 1.5), ("wait", 12.0)),
        total_seconds=13.76,
        pods=(pod("rag-api-1", True),),
        events=(EventRecord("Warning", "BackOff", "Pod/rag-api-x", "Back-off", 3, "t"),),
        logs=LogScan(False, (), "logs are not served by simulated nodes"),
    )
    text = report.to_markdown()
    assert text.startswith("# kubernetes_rollback: rag-api in production\n")
    assert "| changed | yes |" in text
    assert "| Deployment | `production/rag-api` |" in text
    assert "| from | `v1.2.4` (revision 3) |" in text
    assert "| to | `v1.2.2` (revision 1, now revision 4) |" in text
    assert "| total duration | 13.8 s |" in text
    assert (
        "| step | seconds |\n|---|---|\n| check | 0.25 |\n| undo | 1.50 |\n| wait | 12.00 |" in text
    )
    assert '## Change made\n\n```json\n[{"op": "replace"}]\n```' in text
    assert "| rag-api-1 | Running | yes | 0 | - |" in text
    assert "- t Pod/rag-api-x BackOff: Back-off" in text
    assert "Logs unavailable: logs are not served by simulated nodes" in text

    # the same revision undone to needs no "now revision"; unknown versions show as ?
    same = RollbackReport(
        flow="kubernetes_rollback",
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        outcome="already at revision 1",
        changed=False,
        dry_run=False,
        from_version=None,
        to_version="v1.2.2",
        to_revision=1,
        new_revision=1,
    ).to_markdown()
    assert "| from | `?` |" in same and "| to | `v1.2.2` (revision 1) |" in same
    assert "| changed | no |" in same and "## Change" not in same


def test_stopwatch_records_each_named_step_even_when_it_raises() -> None:
    watch = Stopwatch()
    with watch.step("check"):
        pass
    with pytest.raises(RuntimeError), watch.step("undo"):
        raise RuntimeError("refused")
    assert [name for name, _ in watch.steps] == ["check", "undo"]
    assert all(seconds >= 0 for _, seconds in watch.steps)
    assert sum(seconds for _, seconds in watch.steps) <= watch.total() < 60


def test_dry_run_report_says_nothing_changed() -> None:
    report = RollbackReport(
        flow="image_rollback",
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        outcome="dry run",
        changed=False,
        dry_run=True,
        from_version="v1.2.4",
        to_version="v1.2.3",
        change="{}",
    )
    text = report.to_markdown()
    assert "| changed | no (dry run) |" in text
    assert "## Change that would be made" in text


def test_unready_pods() -> None:
    assert unready_pods((pod("a", True), pod("b", True), pod("c", False, deleting=True)), 2) == []
    problems = unready_pods((pod("a", True), pod("b", False, ("CrashLoopBackOff",))), 2)
    assert problems == ["b not ready (CrashLoopBackOff)", "1 of 2 desired pods are ready"]


def test_the_report_carries_details_the_verification_table_pods_and_log_lines() -> None:
    checklist = Checklist(
        (
            CheckResult("pod_count", "Pod Count", ">= 3", "3 running of 3", Status.PASS, True),
            CheckResult("health", "Health Check", "200 OK", "503 in 5 ms: a|b", Status.FAIL, True),
            CheckResult(
                "p99", "P99 Latency", "<= 300 ms", "no data\n(query failed)", Status.NO_DATA, False
            ),
        )
    )
    report = RollbackReport(
        flow="image_rollback",
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        outcome="set image",
        changed=True,
        dry_run=True,
        from_version="v1.2.4",
        to_version="v1.2.3",
        change='{"spec": {}}',
        details=("resume Argo CD Application rag-api once Git holds the fix",),
        verification=checklist,
        pods=(pod("rag-api-1", False, ("ImagePullBackOff", "ErrImagePull")),),
        events=(
            EventRecord("Normal", "Pulled", "Pod/rag-api-1", "pulled", 1, "t1"),
            EventRecord("Warning", "Failed", "Pod/rag-api-1", "pull failed", 2, "t2"),
        ),
        logs=LogScan(True, tuple(f"line {i}" for i in range(40))),
    )
    text = report.to_markdown()
    assert text == (GOLDEN / "rollback-report.md").read_text()
    assert "| changed | no (dry run) |" in text
    assert "## Details\n\n- resume Argo CD Application rag-api once Git holds the fix\n" in text
    assert (
        "## Verification: failed: Health Check 503 in 5 ms: a|b (expected 200 OK)\n\n"
        "| check | expected | observed | result | critical |\n|---|---|---|---|---|\n"
        "| Pod Count | >= 3 | 3 running of 3 | PASS | yes |\n"
        "| Health Check | 200 OK | 503 in 5 ms: a\\|b | FAIL | yes |\n"
        "| P99 Latency | <= 300 ms | no data (query failed) | NO DATA | no |\n"
    ) in text
    assert '## Change that would be made\n\n```json\n{"spec": {}}\n```' in text
    assert (
        "| pod | phase | ready | restarts | waiting |\n|---|---|---|---|---|\n"
        "| rag-api-1 | Running | no | 0 | ImagePullBackOff, ErrImagePull |\n"
    ) in text
    assert "## Warning events\n\n- t2 Pod/rag-api-1 Failed: pull failed\n" in text
    assert "Pulled" not in text
    # the last 30 error lines, in a code block
    logs = text.split("## Error lines in recent logs\n\n", 1)[1]
    assert logs == "```\n" + "\n".join(f"line {i}" for i in range(10, 40)) + "\n```\n"
    clean = RollbackReport(
        flow="f",
        service="s",
        namespace="n",
        deployment="d",
        outcome="o",
        changed=False,
        dry_run=False,
        from_version="a",
        to_version="b",
        logs=LogScan(True, ()),
    ).to_markdown()
    assert clean.endswith("## Error lines in recent logs\n\nNone.\n")
    assert "## Pods" not in clean and "## Warning events" not in clean and "## Details" not in clean


def test_unready_pods_name_the_phase_when_no_reason_is_known() -> None:
    pending = PodState("p", "Pending", False, 0, (), None, (), False)
    assert unready_pods((pending,), 1) == ["p not ready (Pending)", "0 of 1 desired pods are ready"]
    assert unready_pods((), 0) == []
