"""Guards on automatic rollbacks: canary triggers and the hourly cap (pure), then the lock and
the cap of `guarded_rollback` on the real cluster and Prefect server."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cluster import (
    REPOSITORY,
    deployment_body,
    snapshot,
    wait_rolled_out,
    wait_settled,
)
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
from prefect.concurrency.sync import concurrency

from flows.evaluate_release import evaluate_release
from flows.guarded_rollback import guarded_rollback
from playbook.errors import InvalidInputError, RollbackRefusedError
from playbook.guard import (
    CanaryObservation,
    CanaryTriggers,
    Health,
    LedgerEntry,
    Trigger,
    check_cap,
    evaluate_canary,
    parse_ledger,
    record,
)
from playbook.names import ledger_name, lock_name
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix
from stack.local import StackState
from stack.sink import WebhookSink
from tasks.concurrency import create_service_lock, read_rollback_ledger

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
TRIGGERS = CanaryTriggers()
CAP = MATRIX.max_automatic_per_hour()


def observe(
    elapsed: float = 60,
    health: Health = Health.HEALTHY,
    ratio: float | None = 0.0,
    p99: float | None = 0.1,
) -> CanaryObservation:
    return CanaryObservation(elapsed, health, f"/health {health.value}", ratio, p99)


# --- canary triggers ------------------------------------------------------------------------


def test_playbook_defaults_are_the_triggers() -> None:
    assert (TRIGGERS.window_seconds, TRIGGERS.max_error_ratio, TRIGGERS.max_p99_seconds) == (
        600,
        0.05,
        0.5,
    )
    assert MATRIX.canary_triggers() == TRIGGERS  # the decision matrix's, not Python's
    assert CAP == 3


def test_a_healthy_canary_within_limits_fires_nothing() -> None:
    verdict = evaluate_canary(observe(ratio=0.05, p99=0.5), TRIGGERS)  # at the limit, not above
    assert not verdict.rollback and verdict.fired == ()
    assert "within limits" in verdict.summary


@pytest.mark.parametrize(
    ("observation", "trigger", "observed"),
    [
        (observe(ratio=0.2), Trigger.ERROR_RATE, "20.00 %"),
        (observe(p99=0.83), Trigger.P99_LATENCY, "830 ms"),
        (observe(health=Health.UNHEALTHY), Trigger.UNHEALTHY, "/health unhealthy"),
        (observe(elapsed=600, health=Health.FAILING), Trigger.HEALTH_CHECK_FAILING, "600s"),
    ],
)
def test_each_automatic_trigger_fires_with_its_observed_value(
    observation: CanaryObservation, trigger: Trigger, observed: str
) -> None:
    verdict = evaluate_canary(observation, TRIGGERS)
    assert verdict.rollback
    assert [f.trigger for f in verdict.fired] == [trigger]
    assert observed in verdict.fired[0].observed
    assert trigger.value in verdict.summary


def test_a_failing_health_check_is_tolerated_until_the_window_ends() -> None:
    assert not evaluate_canary(observe(elapsed=599, health=Health.FAILING), TRIGGERS).rollback
    # an explicit "unhealthy" is the service's own verdict: no grace period
    assert evaluate_canary(observe(elapsed=1, health=Health.UNHEALTHY), TRIGGERS).rollback


def test_no_data_never_fires_and_several_triggers_are_all_reported() -> None:
    assert not evaluate_canary(observe(ratio=None, p99=float("nan")), TRIGGERS).rollback
    verdict = evaluate_canary(observe(health=Health.UNHEALTHY, ratio=0.3, p99=2.0), TRIGGERS)
    assert {f.trigger for f in verdict.fired} == {
        Trigger.UNHEALTHY,
        Trigger.ERROR_RATE,
        Trigger.P99_LATENCY,
    }


def test_triggers_are_validated_data() -> None:
    with pytest.raises(ValueError, match="max_error_ratio"):
        CanaryTriggers(max_error_ratio=1.5)
    assert CanaryTriggers.model_validate({"max_p99_seconds": 0.3}).max_p99_seconds == 0.3


# --- the hourly cap ---------------------------------------------------------------------------


def entries(*minutes_ago: int) -> tuple[LedgerEntry, ...]:
    return tuple(LedgerEntry(T0 - timedelta(minutes=m), f"run-{m}", "test") for m in minutes_ago)


def test_three_rollbacks_within_the_hour_reach_the_default_cap() -> None:
    assert check_cap(entries(50, 10), T0, CAP).allowed
    decision = check_cap(entries(50, 30, 10), T0, CAP)
    assert not decision.allowed
    assert decision.next_allowed_at == T0 + timedelta(minutes=10)  # when the 50-min-old expires
    assert "reached the cap of 3" in decision.message


def test_rollbacks_older_than_an_hour_do_not_count() -> None:
    decision = check_cap(entries(61, 60, 30, 10), T0, CAP)
    assert decision.allowed and len(decision.recent) == 2


def test_the_cap_is_configurable_and_zero_means_never() -> None:
    assert check_cap(entries(30, 10), T0, cap=5).allowed
    assert not check_cap((), T0, cap=0).allowed
    with pytest.raises(InvalidInputError):
        check_cap((), T0, cap=-1)


def test_the_ledger_round_trips_and_drops_old_entries() -> None:
    stored = record(entries(90, 30), LedgerEntry(T0, "run-now", "alert"))
    assert [e.flow_run_id for e in parse_ledger(stored)] == ["run-30", "run-now"]
    assert parse_ledger(None) == ()


@pytest.mark.parametrize(
    "value", [{"at": "x"}, [{"at": "yesterday"}], [{"at": "2026-01-01T00:00:00"}]]
)
def test_a_corrupt_ledger_is_a_clear_error(value: object) -> None:
    with pytest.raises(InvalidInputError, match="ledger"):
        parse_ledger(value)


# --- the lock and the cap on the real stack ---------------------------------------------------

GOOD, BAD = "v1.2.3", "v1.2.4"


@pytest.mark.stack
@pytest.mark.timeout(240)
def test_the_fourth_automatic_rollback_within_the_hour_notifies_and_changes_nothing(
    apps: client.AppsV1Api, bad_release: str, notifications: WebhookSink
) -> None:
    ns = bad_release
    for attempt in range(3):
        if attempt:  # the next bad release of the hour
            release(apps, ns, f"v1.2.{4 + attempt}")
        result = guarded_rollback("rag-api", reason=f"test attempt {attempt + 1}")
        assert result.action == "rolled_back" and result.report is not None
        assert result.report.changed
        assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"
        assert result.recent_automatic == attempt + 1
    # each rollback told its start; none was "not performed"
    texts = [d.body["text"] for d in notifications.received("/slack")]
    assert len(texts) == 3 and all("Rollback Initiated" in t for t in texts), texts

    release(apps, ns, "v1.2.7")
    before = snapshot(apps, ns)
    capped = guarded_rollback("rag-api", reason="test attempt 4")
    assert capped.action == "capped" and capped.report is None
    assert snapshot(apps, ns) == before  # same generation, resourceVersion and ReplicaSets
    assert "rollback-not-performed notice sent to 127.0.0.1" in capped.message
    sent = notifications.wait_for(lambda d: "NOT performed" in d.body["text"], timeout=10)
    assert f"Automatic rollback of {ns}/rag-api NOT performed" in sent.body["text"]
    assert "reached the cap of 3" in sent.body["text"]
    assert "test attempt 4" in sent.body["text"]

    # the ledger holds the three rollbacks that acted, each a real flow run on the server
    ledger = read_rollback_ledger.fn(ledger_name(ns, "rag-api"))
    assert [e.reason for e in ledger] == [f"test attempt {n}" for n in (1, 2, 3)]
    with get_client(sync_client=True) as c:
        runs = [c.read_flow_run(uuid.UUID(str(e.flow_run_id))) for e in ledger]
    assert all(r.state is not None and r.state.is_completed() for r in runs)

    # a person may still roll back: manual runs are not capped
    manual = guarded_rollback("rag-api", automatic=False, reason="by hand")
    assert manual.action == "rolled_back"
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"


def release(apps: client.AppsV1Api, namespace: str, version: str) -> None:
    """A new release, as CI would make it: a new image on the Deployment."""
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{version}"}
        ]}}}},
    )  # fmt: skip
    wait_rolled_out(apps, namespace, "rag-api")
    wait_settled(apps, namespace, "rag-api", quiet=1.0)


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_second_rollback_while_one_holds_the_lock_is_refused_and_changes_nothing(
    apps: client.AppsV1Api, bad_release: str
) -> None:
    ns = bad_release
    name = lock_name(ns, "rag-api")
    create_service_lock(name)
    before = snapshot(apps, ns)
    with (
        concurrency(name, occupy=1, strict=True, max_retries=0),  # the first rollback's hold
        pytest.raises(
            RollbackRefusedError, match="another rollback of this service is in progress"
        ),
    ):
        guarded_rollback("rag-api", reason="second")
    assert snapshot(apps, ns) == before
    # the refusal did not count toward the cap, and the lock is free again afterwards
    assert read_rollback_ledger.fn(ledger_name(ns, "rag-api")) == ()
    assert guarded_rollback("rag-api", reason="after").action == "rolled_back"
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_an_alert_older_than_the_last_automatic_rollback_does_not_undo_it_again(
    apps: client.AppsV1Api, bad_release: str, notifications: WebhookSink
) -> None:
    ns = bad_release
    time.sleep(1.1)  # the API server records whole seconds
    alert_started = datetime.now(UTC)  # the bad release is older: the alert is about it
    first = guarded_rollback("rag-api", reason="error rate", alert_started_at=alert_started)
    assert first.action == "rolled_back"
    wait_settled(apps, ns, "rag-api", quiet=1.0)
    rolled_back = snapshot(apps, ns)
    assert rolled_back.image == f"{REPOSITORY}:{GOOD}"

    # a second alert of the same incident (it started before the rollback) arrives late
    late = guarded_rollback("rag-api", reason="latency", alert_started_at=alert_started)
    assert late.action == "stale" and "the alert is about the version before it" in late.message
    assert "rollback-flows" in late.message or "made by this tool" in late.message
    assert snapshot(apps, ns) == rolled_back

    # an alert that started after the rollback, with nothing re-measured: undoing to "the
    # previous revision" would restore the bad release; refused, and a person is told
    fresh = guarded_rollback("rag-api", reason="new", alert_started_at=datetime.now(UTC))
    assert fresh.action == "refused" and "the version that rollback removed" in fresh.message
    assert snapshot(apps, ns) == rolled_back
    sent = notifications.wait_for(lambda d: "NOT performed" in d.body["text"], timeout=10)
    assert f"Automatic rollback of {ns}/rag-api NOT performed" in sent.body["text"]


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_an_unknown_service_is_refused_before_any_change(
    apps: client.AppsV1Api, bad_release: str
) -> None:
    before = snapshot(apps, bad_release)
    with pytest.raises(InvalidInputError, match="unknown service 'rag-apii'"):
        guarded_rollback("rag-apii")
    assert snapshot(apps, bad_release) == before


# --- the decision matrix on the real stack (the canary guard: test_canary_guard.py) -----------


def set_production_image(apps: client.AppsV1Api, namespace: str, tag: str) -> None:
    """The simulator serves (and Prometheus scrapes) whatever production/rag-api runs."""
    body = deployment_body(f"{REPOSITORY}:{tag}")
    try:
        apps.create_namespaced_deployment(namespace, body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        apps.patch_namespaced_deployment("rag-api", namespace, body)
    wait_rolled_out(apps, namespace, "rag-api")


def wait_version(local_stack: StackState, tag: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if httpx.get(f"{local_stack.simulator_url}/version", timeout=2).json()["version"] == tag:
            return
        time.sleep(0.2)
    raise AssertionError(f"the simulator never served {tag}")


@pytest.mark.stack
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("tag", "level", "error_level"), [(BAD, "CRITICAL", "CRITICAL"), (GOOD, "OK", "OK")]
)
def test_evaluate_release_classifies_each_metric_and_the_release(
    local_stack: StackState,
    apps: client.AppsV1Api,
    simulator_namespace: str,
    tag: str,
    level: str,
    error_level: str,
) -> None:
    set_production_image(apps, simulator_namespace, tag)
    wait_version(local_stack, tag)
    time.sleep(6)  # the 5 s rate window holds only this version's requests
    result = evaluate_release("rag-api", window="5s")
    levels = {c.indicator.name: c.level.value for c in result.classifications}
    assert levels["error_rate"] == error_level
    assert levels["rag_quality_ndcg"] == "OK" and levels["p99_latency"] == "OK"
    assert levels["user_complaints"] == "NO DATA"  # optional: shown, not deciding
    assert result.level.value == level
    with get_client(sync_client=True) as c:
        artifact = c.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(
                key=ArtifactCollectionFilterKey(any_=["evaluate-release-rag-api"])
            )
        )[0]
    data: Any = artifact.data
    rows: list[dict[str, str]] = json.loads(data) if isinstance(data, str) else data
    assert rows[-1] == {
        "metric": "Overall",
        "value": "",
        "level": level,
        "warning": "",
        "critical": "",
    }
    assert {r["metric"] for r in rows} >= {"Error Rate", "P99 Latency", "Availability"}
