"""The last known-good revision on the real stack: revisions whose versions really served (the
simulator follows production/rag-api, Prometheus scrapes each version's own series), an
alert rolls back past a bad previous revision to the good one before it; with no revision
known good it changes nothing and tells a person why, with the evidence."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alerting import payload, running_receiver, runs_tagged, save_token, wait_final
from cluster import (
    REPOSITORY,
    deployment_body,
    eventually,
    replicasets_by_revision,
    snapshot,
    use_services,
    wait_rolled_out,
    wait_settled,
)
from flow_runs import child_run_ids, logs_of, read_flow_run_id
from kubernetes import client
from prefect import flow

from flows.guarded_rollback import guarded_rollback
from flows.image_rollback import image_rollback
from flows.known_good import _judged_key
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.names import ledger_name, target_tag
from playbook.rollout import RolloutSnapshot
from playbook.services import load_service
from receiver.config import load_config
from stack.local import StackState
from stack.sink import WebhookSink
from tasks.concurrency import forget_rollbacks, read_rollback_ledger

pytestmark = pytest.mark.stack

GOOD, BAD, SLOW = "v1.2.3", "v1.2.4", "v1.2.5-very-slow"  # stack/simulator.yaml
KNOWN_GOOD_SECONDS = 6.0
HOLD_SECONDS = 7.0  # how long each earlier revision stays current (more than the above)


def release(apps: client.AppsV1Api, namespace: str, tag: str) -> float:
    """Set the image as CI would; return when (monotonic) it was written."""
    written = time.monotonic()
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{tag}"}
        ]}}}},
    )  # fmt: skip
    wait_rolled_out(apps, namespace, "rag-api")
    return written


def serving(local_stack: StackState, tag: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if httpx.get(f"{local_stack.simulator_url}/version", timeout=2).json()["version"] == tag:
            return
        time.sleep(0.2)
    raise AssertionError(f"the simulator never served {tag}")


def hold_until(since: float, seconds: float) -> None:
    """Let the revision written at `since` stay current for `seconds` (it has to really serve)."""
    time.sleep(max(0.0, since + seconds - time.monotonic()))


@pytest.fixture
def good_bad_bad(
    local_stack: StackState,
    apps: client.AppsV1Api,
    simulator_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """production/rag-api: revision 1 v1.2.3 (good), 2 v1.2.4 (20 % errors), 3 v1.2.5-very-slow
    (P99 about 1.75 s), each earlier one current for 7 s while the simulator served it."""
    ns = simulator_namespace
    use_services(monkeypatch, tmp_path, ns, known_good_minutes=KNOWN_GOOD_SECONDS / 60)
    forget_rollbacks(ledger_name(ns, "rag-api"))
    written = time.monotonic()
    apps.create_namespaced_deployment(ns, deployment_body(f"{REPOSITORY}:{GOOD}"))
    wait_rolled_out(apps, ns, "rag-api")
    serving(local_stack, GOOD)
    hold_until(written, HOLD_SECONDS)
    written = release(apps, ns, BAD)
    serving(local_stack, BAD)
    hold_until(written, HOLD_SECONDS)
    written = release(apps, ns, SLOW)
    serving(local_stack, SLOW)
    hold_until(written, 5.0)  # the alert's P99 over this revision's own lifetime
    wait_settled(apps, ns, "rag-api", quiet=0.5)
    yield ns
    forget_rollbacks(ledger_name(ns, "rag-api"))


@pytest.mark.timeout(300)
def test_an_alert_rolls_back_to_the_last_known_good_revision_not_the_previous(
    apps: client.AppsV1Api, good_bad_bad: str
) -> None:
    ns = good_bad_bad
    # kubectl's "previous" would be revision 2, and the report says it is not known good
    plan = kubernetes_rollback("rag-api", dry_run=True)
    assert plan.to_revision == 2
    assert plan.details[0].startswith(
        "Target revision 2 is NOT known good: revision 2 (v1.2.4): bad: Error Rate reached "
    )
    verdicts = {row["revision"]: row["verdict"] for row in plan.revisions}
    assert verdicts["3"] == "current"
    assert verdicts["2"].startswith("bad: Error Rate reached ")  # about 20 %
    assert verdicts["2"].endswith(" % (critical > 5 %)")
    assert verdicts["1"].startswith("known good: current for ")
    assert [row["version"] for row in plan.revisions] == [SLOW, BAD, GOOD]
    assert all(" UTC - " in row["current from-to"] for row in plan.revisions)
    # Procedure 3's report says it too, for the newest earlier revision of the version
    image = image_rollback("rag-api", BAD, dry_run=True)
    assert image.details[0].startswith(
        "Target version v1.2.4 is NOT known good: revision 2 (v1.2.4): bad: "
    )
    assert [row["revision"] for row in image.revisions] == ["3", "2", "1"]
    # a person may ask for the last known-good revision too
    chosen = kubernetes_rollback("rag-api", target="last-good", dry_run=True)
    assert chosen.to_revision == 1 and chosen.changed is False

    # the alert, as Alertmanager posts it, to the receiver with the shipped routes: its run
    # of guarded-rollback/alert (target last-good) executes on the stack's worker
    tag = target_tag(ns, "rag-api")
    before = {run.id for run in runs_tagged(tag)}
    block = "alert-receiver-token-last-good"
    token = save_token(block)
    body = payload(
        starts_at=datetime.now(UTC).isoformat(),
        alertname="RollbackHighLatency",
        service="rag-api",
        namespace=ns,
    )
    body["alerts"][0]["annotations"] = {"summary": "rag-api P99 1750ms > 1000ms"}
    with running_receiver(load_config().model_copy(update={"token_secret": block})) as url:
        answer = httpx.post(
            f"{url}/alerts", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    assert answer.status_code == 200, answer.text
    [run] = eventually(lambda: [r for r in runs_tagged(tag) if r.id not in before], 30, "a run")
    run = wait_final(run.id, timeout=90)
    outcome = read_flow_run_id(run.id).keyed(f"guarded-rollback-{ns}-rag-api").data
    assert run.state is not None and run.state.is_completed(), outcome
    assert outcome.startswith(f"# Guarded rollback of {ns}/rag-api: rolled_back"), outcome
    assert "rolled back from revision 3 to revision 1" in outcome
    assert "- Target revision 1 (v1.2.3): known good: current for " in outcome
    assert "## Revisions: which is known good" in outcome
    # the cluster: the template is v1.2.3 again, its ReplicaSet now revision 4
    deployment = apps.read_namespaced_deployment("rag-api", ns)
    assert deployment.spec.template.spec.containers[0].image == f"{REPOSITORY}:{GOOD}"
    assert replicasets_by_revision(apps, ns) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{SLOW}",
        4: f"{REPOSITORY}:{GOOD}",
    }
    # the revisions were judged once: the procedure's run reused the guarded run's judgement
    # of the same, unchanged ReplicaSets instead of asking Prometheus again
    guarded_logs, procedure_logs = logs_of(run.id), logs_of(*child_run_ids(run.id))
    assert "the last known-good revision is revision 1 (v1.2.3)" in guarded_logs, guarded_logs
    assert procedure_logs.count("(as judged seconds ago in this run)") == 1, procedure_logs


@pytest.mark.timeout(300)
def test_a_rollback_to_the_previous_revision_reports_it_is_not_known_good_read_after_the_patch(
    apps: client.AppsV1Api, good_bad_bad: str
) -> None:
    ns = good_bad_bad
    report = kubernetes_rollback("rag-api", skip_confirmation=True, comment="previous")

    # kubectl's meaning: revision 2 (the bad one) is what runs now, and the report says so
    assert report.changed and report.to_version == BAD
    assert (
        apps.read_namespaced_deployment("rag-api", ns).spec.template.spec.containers[0].image
        == f"{REPOSITORY}:{BAD}"
    )
    [line] = [d for d in report.details if d.startswith("Target revision 2")]
    assert line.startswith("Target revision 2 is NOT known good: revision 2 (v1.2.4): bad: ")
    assert [row["version"] for row in report.revisions] == [SLOW, BAD, GOOD]
    # Prometheus was read for that table while the rollout went on, not before the patch
    steps = [name for name, _ in report.durations]
    assert steps.index("undo") < steps.index("wait for rollout")
    assert steps.index("wait for rollout") < steps.index("find the last known-good revision")


@pytest.mark.timeout(90)
def test_without_a_known_good_revision_the_alert_changes_nothing_and_tells_a_person(
    apps: client.AppsV1Api,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    notifications: WebhookSink,
) -> None:
    # versions no service ever served: Prometheus has no series of theirs
    first, second = (f"v9.0.{n}-{uuid.uuid4().hex[:6]}" for n in (1, 2))
    use_services(monkeypatch, tmp_path, namespace, known_good_minutes=1 / 60)
    apps.create_namespaced_deployment(namespace, deployment_body(f"{REPOSITORY}:{first}"))
    wait_rolled_out(apps, namespace, "rag-api")
    time.sleep(2.0)  # current for longer than the 1 s asked: only the data can disqualify it
    release(apps, namespace, second)
    wait_settled(apps, namespace, "rag-api", quiet=0.5)
    before = snapshot(apps, namespace)
    # the API's times are whole seconds: an alert within the release's second could be older
    # than the release, and is refused as stale; this one starts in a later second
    time.sleep(1.0)

    result = guarded_rollback(
        "rag-api",
        reason="rag-api error rate 20% > 5%",
        alert_started_at=datetime.now(UTC),
        target="last-good",
    )
    assert result.action == "no_known_good" and result.report is None
    assert result.message.startswith(
        f"not rolled back: no earlier revision is known to be good: revision 1 ({first}): "
        "unknown: too little data for Error Rate (0 of 1 times); too little data for P99 "
        "Latency (0 of 1 times)"
    )
    assert snapshot(apps, namespace) == before
    assert read_rollback_ledger.fn(ledger_name(namespace, "rag-api")) == ()  # not counted
    sent = notifications.wait_for(lambda d: "NOT performed" in d.body["text"], timeout=10)
    text = sent.body["text"]
    assert f"Automatic rollback of {namespace}/rag-api NOT performed" in text
    assert "no earlier revision is known to be good" in text
    assert f"- 1 {first}, " in text and "error rate no data, P99 no data → unknown" in text
    assert f"- 2 {second}, " in text and "→ current" in text


def test_a_judgement_serves_only_its_own_run_and_an_unchanged_cluster(
    local_stack: StackState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_services(monkeypatch, tmp_path, "judged")
    cfg = load_service("rag-api")

    def read_at(deployment_version: str) -> RolloutSnapshot:
        return RolloutSnapshot(
            {"metadata": {"resourceVersion": deployment_version}},
            ({"metadata": {"resourceVersion": "7"}},),
        )

    @flow
    def keys() -> list[object]:
        return [
            _judged_key(cfg, 30, read_at("5")),
            _judged_key(cfg, 30, read_at("5")),
            _judged_key(cfg, 30, read_at("6")),  # the Deployment changed since
            _judged_key(cfg, 10, read_at("5")),  # another rule
            _judged_key(cfg, 30, None),  # no snapshot: nothing to compare
        ]

    first, again = keys(), keys()
    assert first[0] is not None and first[0] == first[1]
    assert first[2] != first[0] and first[3] != first[0] and first[4] is None
    assert again[0] != first[0]  # another run judges afresh
    assert _judged_key(cfg, 30, read_at("5")) is None  # outside a run
