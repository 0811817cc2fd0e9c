"""`post_rollback_monitor` over backfilled history in a real Prometheus, run on the session's
Prefect server: each scenario's past 30-minute window is evaluated in seconds."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from flow_runs import FlowRunRecord, read_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.states import State

from flows.post_rollback_monitor import post_rollback_monitor
from playbook.errors import InvalidInputError
from playbook.monitor_report import MonitorReport
from playbook.recovery import Verdict
from playbook.services import SERVICES_ENV
from stack.local import StackState
from stack.processes import free_port, stop
from stack.prometheus import (
    TrafficStep,
    backfill,
    render_history,
    render_prometheus_config,
    render_rules,
    start_prometheus,
)
from stack.sink import WebhookSink
from tasks.followup import FollowUp, schedule_post_rollback_monitor
from tasks.notify import WEBHOOK_URL_ENV

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

RPS = 20.0
BASELINE = (0.005, 0.1)  # error ratio, P99 seconds
# after the rollback, per minute: (error ratio, P99) until the next entry; the last one holds
SCENARIOS: dict[str, tuple[tuple[float, float], list[tuple[float, float]]]] = {
    "svc-clean": ((0.10, 0.8), [(0.04, 0.3), (0.015, 0.15), (0.006, 0.1), (0.005, 0.1)]),
    "svc-slow": ((0.10, 1.2), [(0.04, 1.2), (0.015, 1.2), (0.005, 1.2)]),
    "svc-flappy": ((0.08, 0.1), [(0.007, 0.1), (0.007, 0.1), (0.013, 0.1), (0.013, 0.1)] * 8),
    "svc-worse": ((0.08, 0.1), [(0.25, 0.1)]),
}
SERVICES = [*SCENARIOS, "svc-absent"]


@dataclass(frozen=True)
class History:
    prometheus_url: str
    since: datetime  # when the rollback completed, in every scenario


def steps_of(
    since: float, incident: tuple[float, float], after: list[tuple[float, float]]
) -> list[TrafficStep]:
    steps = [
        TrafficStep(since - 100 * 60, RPS, *BASELINE),
        TrafficStep(since - 10 * 60, RPS, *incident),
    ]
    steps += [TrafficStep(since + i * 60, RPS, *values) for i, values in enumerate(after)]
    return steps


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """A Prometheus over 2 h of backfilled history of each scenario; the rollback ~50 min ago."""
    root = tmp_path_factory.mktemp("monitor-prometheus")
    since = float(int(time.time() // 60 * 60) - 50 * 60)
    for service, (incident, after) in SCENARIOS.items():
        text = render_history(
            steps_of(since, incident, after), end=since + 32 * 60, service=service
        )
        backfill(text, root / "data")
    port = free_port()
    config = render_prometheus_config(
        root,
        simulator_port=free_port(),  # nothing listens: only the backfilled series matter
        alertmanager_port=free_port(),
        rules_path=render_rules(root, for_duration="1m"),
        interval="15s",
    )
    pid = start_prometheus(config, root / "data", port, root / "prometheus.log")
    try:
        yield History(f"http://127.0.0.1:{port}", datetime.fromtimestamp(since, UTC))
    finally:
        stop(pid)


@pytest.fixture
def monitored(
    local_stack: StackState,
    alert_sink: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Services file with the scenarios; escalations go to a path of the sink (returned)."""
    body = "".join(
        f"""
  {name}:
    namespace: monitor-test
    deployment: {name}
    container: app
    image_repository: ghcr.io/acme/{name}"""
        for name in SERVICES
    )
    path = tmp_path / "services.yaml"
    path.write_text(f"default_service: svc-clean\nservices:{body}\n")
    monkeypatch.setenv(SERVICES_ENV, str(path))
    notify_path = f"/notify/{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(WEBHOOK_URL_ENV, f"{alert_sink.url}{notify_path}")
    return notify_path


def monitor(service: str, history: History) -> tuple[State[MonitorReport], float]:
    started = time.monotonic()
    state = post_rollback_monitor(
        service, history.since, prometheus_url=history.prometheus_url, return_state=True
    )
    return state, time.monotonic() - started


def monitor_markdown(run: FlowRunRecord) -> Any:
    return next(a for a in run.of_type("markdown") if a.key.startswith("post-rollback-monitor-"))


def verdicts_of(report: MonitorReport, indicator: str) -> list[Verdict]:
    return [dict(ev.verdicts)[indicator] for ev in report.evaluations]


def test_clean_decay_is_recovered_without_escalation(
    history: History, monitored: str, alert_sink: WebhookSink
) -> None:
    state, seconds = monitor("svc-clean", history)
    run = read_flow_run(state)
    assert run.state == "COMPLETED"
    report: MonitorReport = state.result()
    assert report.verdict is Verdict.RECOVERED
    assert len(report.evaluations) == 30
    assert report.queries == 9  # baseline, level at rollback and one range query per indicator
    assert seconds < 30
    values = [dict(ev.values) for ev in report.evaluations]
    assert values[0]["error_rate"] == pytest.approx(0.04, abs=1e-3)
    assert values[0]["p99_latency"] == pytest.approx(0.3, rel=0.02)
    assert values[-1]["error_rate"] == pytest.approx(0.005, abs=1e-3)
    outcome = {o.indicator.name: o for o in report.outcomes}
    assert outcome["error_rate"].levels.baseline == pytest.approx(0.005, abs=1e-3)
    assert outcome["error_rate"].levels.incident == pytest.approx(0.10, abs=1e-3)
    assert outcome["p99_latency"].levels.incident == pytest.approx(0.8, rel=0.02)

    markdown = monitor_markdown(run).data
    assert "**Verdict: RECOVERED**" in markdown
    assert "| Error Rate | 0.5 % | 10 % |" in markdown
    assert "Error Rate: # value" in markdown and "P99 Latency: # value" in markdown  # the charts
    assert "Logs unavailable" in markdown  # no such Deployment: said, not hidden
    table = json.loads(run.one("table").data)
    assert [(row["indicator"], row["verdict"]) for row in table] == [
        ("Error Rate", "recovered"),
        ("P99 Latency", "recovered"),
        # the service exports no complaints metric: said, and not counted against it
        ("User Complaints", "no data"),
    ]
    assert run.one("progress").data == 100.0
    [sent] = alert_sink.received(monitored)  # the resolution, no escalation
    assert sent.body["text"].startswith("✅ RESOLVED: Monitor-test Rollback Complete\n")
    assert "Monitor verdict: svc-clean: RECOVERED" in sent.body["text"]


def test_errors_recover_but_p99_above_one_second_escalates(
    history: History, monitored: str, alert_sink: WebhookSink
) -> None:
    state, _ = monitor("svc-slow", history)
    run = read_flow_run(state)
    assert run.state == "FAILED"
    assert "escalated" in str(state.message)
    assert "**Verdict: NOT RECOVERING**" in monitor_markdown(run).data
    table = json.loads(run.one("table").data)
    assert [(row["indicator"], row["verdict"]) for row in table] == [
        ("Error Rate", "recovered"),
        ("P99 Latency", "not recovering"),
        ("User Complaints", "no data"),
    ]
    [sent] = alert_sink.received(monitored)
    text = sent.body["text"]
    assert set(sent.body) == {"text"}
    assert text.startswith("🚨 ESCALATION: svc-slow has not recovered")
    assert "- P99 Latency: not recovering; now 1200 ms, baseline 100 ms" in text
    assert "- Error Rate: recovered" in text


def test_errors_oscillating_around_one_percent_do_not_flap(
    history: History, monitored: str, alert_sink: WebhookSink
) -> None:
    state, _ = monitor("svc-flappy", history)
    assert read_flow_run(state).state == "COMPLETED"
    report: MonitorReport = state.result()
    observed = [v for ev in report.evaluations if (v := dict(ev.values)["error_rate"]) is not None]
    assert len(observed) == 30
    assert min(observed) == pytest.approx(0.007, abs=5e-4)
    assert max(observed) == pytest.approx(0.013, abs=5e-4)
    assert sum(1 for v in observed if v > 0.01) >= 10  # above 1 % a third of the time
    seq = verdicts_of(report, "error_rate")
    assert seq[0] is Verdict.RECOVERING and seq[-1] is Verdict.RECOVERED
    assert sum(1 for a, b in pairwise(seq) if a != b) == 1
    [sent] = alert_sink.received(monitored)
    assert sent.body["text"].startswith("✅ RESOLVED")


def test_worse_after_the_rollback_escalates_early(
    history: History, monitored: str, alert_sink: WebhookSink
) -> None:
    state, _ = monitor("svc-worse", history)
    run = read_flow_run(state)
    assert run.state == "FAILED"
    markdown = monitor_markdown(run).data
    assert "**Verdict: WORSE** (stopped early: worse after the rollback)" in markdown
    assert "2 evaluations" in markdown  # beyond the worse level for a minute, then stop
    [sent] = alert_sink.received(monitored)
    assert "Verdict: WORSE (stopped early)" in sent.body["text"]
    assert "- Error Rate: worse; now 25 %" in sent.body["text"]


def test_missing_metrics_are_no_data_and_escalate(
    history: History, monitored: str, alert_sink: WebhookSink
) -> None:
    state, _ = monitor("svc-absent", history)
    run = read_flow_run(state)
    assert run.state == "FAILED"
    table = json.loads(run.one("table").data)
    assert {row["verdict"] for row in table} == {"no data"}  # required ones too: escalates
    assert {row["latest"] for row in table} == {"no data"}
    [sent] = alert_sink.received(monitored)
    assert "Verdict: NO DATA" in sent.body["text"]


def test_window_past_the_end_of_the_data_is_no_data(history: History, monitored: str) -> None:
    """The history ends 32 min after the rollback: a window reaching past it is not a pass."""
    state = post_rollback_monitor(
        "svc-clean",
        history.since + timedelta(minutes=20),
        duration=timedelta(minutes=20),
        prometheus_url=history.prometheus_url,
        scan_logs=False,
        return_state=True,
    )
    run = read_flow_run(state)
    assert run.state == "FAILED"
    assert "**Verdict: NO DATA**" in monitor_markdown(run).data


def test_unreachable_prometheus_escalates_that_nobody_is_watching(
    history: History, monitored: str, alert_sink: WebhookSink
) -> None:
    state = post_rollback_monitor(
        "svc-clean",
        history.since,
        prometheus_url=f"http://127.0.0.1:{free_port()}",
        scan_logs=False,
        return_state=True,
    )
    assert read_flow_run(state).state == "FAILED"
    [sent] = alert_sink.received(monitored)
    text = sent.body["text"]
    assert text.startswith("🚨 ESCALATION: svc-clean is not watched: the monitoring after the")
    assert "- monitoring failed: Prometheus range query" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service": "nope"}, "unknown service 'nope'"),
        ({"since": datetime(2025, 1, 1, 12, 0)}, "has no timezone"),
        ({"interval": timedelta(seconds=0.5)}, "whole seconds"),
        ({"duration": timedelta(seconds=30)}, "shorter than the interval"),
        ({"prometheus_url": "localhost:9090"}, "malformed Prometheus URL"),
    ],
)
def test_bad_input_fails_before_any_query(
    history: History, monitored: str, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, Any] = {
        "service": "svc-clean",
        "since": history.since,
        "prometheus_url": history.prometheus_url,
    } | kwargs
    with pytest.raises(InvalidInputError, match=message):
        post_rollback_monitor(**args)


@pytest.fixture
def monitor_deployment(local_stack: StackState) -> Iterator[str]:
    """A deployment of the monitor without a work pool: its runs stay scheduled."""
    name = f"followup-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(post_rollback_monitor)
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=name,
            entrypoint="flows/post_rollback_monitor.py:post_rollback_monitor",
        )
    yield name
    with get_client(sync_client=True) as client:
        client.delete_deployment(deployment_id)


def test_follow_up_is_scheduled_once_per_rollback(monitor_deployment: str) -> None:
    since = datetime.now(UTC).replace(microsecond=0)
    start_at = since + timedelta(minutes=5)

    def schedule(rollback_id: str) -> FollowUp:
        return schedule_post_rollback_monitor(
            "rag-api",
            since,
            rollback_id,
            incident_start=since - timedelta(minutes=12),
            start_at=start_at,
            deployment=monitor_deployment,
        )

    first, again, other = schedule("rb-1"), schedule("rb-1"), schedule("rb-2")
    assert first.flow_run_id == again.flow_run_id != other.flow_run_id
    assert first.idempotency_key == "post-rollback-monitor:rb-1"
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(first.flow_run_id)
        for follow_up in (first, other):
            client.delete_flow_run(follow_up.flow_run_id)
    assert run.state is not None and run.state.type.value == "SCHEDULED"
    assert run.expected_start_time == start_at
    assert run.parameters == {
        "service": "rag-api",
        "since": since.isoformat(),
        "duration": "PT30M",
        "interval": "PT1M",
        "incident_start": (since - timedelta(minutes=12)).isoformat(),
    }
    assert "rollback:rb-1" in run.tags


def test_follow_up_refuses_a_naive_time(local_stack: StackState) -> None:
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        schedule_post_rollback_monitor("rag-api", datetime(2025, 1, 1, 12, 0), "rb-1")


def test_follow_up_runs_on_the_worker_through_the_real_deployment(local_stack: StackState) -> None:
    """prefect.yaml's `post-rollback-monitor/default`, executed by the session's worker over
    the live Prometheus: a 1-minute window just past. It cannot have held "recovered" for the
    5 minutes required, so it escalates: the run fails, with its report attached."""
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=75)
    follow_up = schedule_post_rollback_monitor(
        "rag-api",
        since,
        f"e2e-{uuid.uuid4().hex[:8]}",
        duration=timedelta(minutes=1),
        interval=timedelta(seconds=10),
    )
    deadline = time.monotonic() + 90
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(follow_up.flow_run_id)
            if run.state is not None and run.state.is_final():
                break
            time.sleep(1)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[follow_up.flow_run_id])
            )
        )
    assert run.state is not None and run.state.type.value == "FAILED", run.state
    assert "escalated after the rollback" in str(run.state.message)
    [markdown] = [a for a in artifacts if a.key == "post-rollback-monitor-rag-api"]
    assert "# Post-rollback monitoring: rag-api in production" in str(markdown.data)
    assert f"Window {since:%Y-%m-%d %H:%M:%S}" in str(markdown.data)
    [review] = [a for a in artifacts if a.key == "post-incident-review-rag-api"]
    assert "### Timeline" in str(review.data)
