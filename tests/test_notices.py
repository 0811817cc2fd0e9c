"""Notices: who is told (the playbook's Key Contacts, from the facts) and what (the
Communication Templates, Jinja2 with StrictUndefined); then live, what the webhook received
when real rollbacks ran against the session's stack."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args
from uuid import UUID

import pytest
from cluster import REPOSITORY, build_history, eventually, snapshot, use_services
from flow_runs import read_flow_run_id
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.exceptions import ParameterTypeError

from flows.guarded_rollback import guarded_rollback
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import InvalidInputError, RolloutFailedError
from playbook.incident import ManualReason
from playbook.notices import (
    Cause,
    infrastructure_evidence,
    load_contacts,
    mentions,
    parse_contacts,
    render_notice,
)
from playbook.rollout import PodState
from stack.sink import WebhookSink
from tasks.notify import WEBHOOK_URL_ENV

CONTACTS = load_contacts()


def handles(cause: Cause) -> dict[str, str]:
    return {m.handle: m.why for m in mentions(CONTACTS, cause)}


# --- who is told, pure -------------------------------------------------------------------


def test_a_plain_error_rate_rollback_mentions_only_the_on_call_engineer() -> None:
    assert handles(Cause(frozenset({"error_rate", "p99_latency"}))) == {"@oncall": "every rollback"}


def test_a_rag_quality_breach_mentions_the_ml_team_with_the_reason() -> None:
    told = handles(Cause(frozenset({"rag_quality_ndcg"})))
    assert told == {
        "@oncall": "every rollback",
        "@ml-team": "model-related: rag_quality_ndcg breached",
    }


def test_an_image_pull_failure_mentions_the_platform_team_with_the_pod() -> None:
    pods = [
        PodState("rag-api-1", "Pending", False, 0, ("ImagePullBackOff",), "h", (), False),
        PodState("rag-api-2", "Running", False, 3, ("CrashLoopBackOff",), "h", (), False),
    ]
    evidence = infrastructure_evidence(pods)
    assert evidence == ("pod rag-api-1: ImagePullBackOff",)  # a crash loop is the code's
    assert handles(Cause(infrastructure=evidence))["@platform"] == (
        "infrastructure: pod rag-api-1: ImagePullBackOff"
    )


def test_users_affected_mention_the_product_owner() -> None:
    told = handles(Cause(frozenset({"availability"})))
    assert told["@product"] == "users affected: availability breached"
    assert "@product" in handles(Cause(frozenset({"user_complaints"})))
    assert "@product" not in handles(Cause(frozenset({"error_rate"})))


def test_contacts_need_a_lead_that_is_one_of_their_roles_and_someone_always_told() -> None:
    with pytest.raises(InvalidInputError, match="lead 'SRE' is not a role"):
        parse_contacts("lead: SRE\ncontacts: [{role: Ops, handle: '@ops', notify: always}]")
    with pytest.raises(InvalidInputError, match="nobody would hear of a rollback"):
        parse_contacts("lead: Ops\ncontacts: [{role: Ops, handle: '@ops', notify: model}]")
    with pytest.raises(InvalidInputError, match="notify"):
        parse_contacts("lead: Ops\ncontacts: [{role: Ops, handle: '@ops', notify: sometimes}]")


# --- what is said, pure ------------------------------------------------------------------


def test_a_template_value_the_flow_did_not_give_is_an_error_not_a_blank(tmp_path: Path) -> None:
    (tmp_path / "start.txt.j2").write_text("Action: rolling back to {{ to_version }}\n")
    assert render_notice("start", {"to_version": "v1.2.3"}, tmp_path) == (
        "Action: rolling back to v1.2.3\n"
    )
    with pytest.raises(InvalidInputError, match="'to_version' is undefined"):
        render_notice("start", {}, tmp_path)
    with pytest.raises(InvalidInputError, match=r"no notice template missing\.txt\.j2"):
        render_notice("missing", {}, tmp_path)
    (tmp_path / "broken.txt.j2").write_text("{% if %}\n")
    with pytest.raises(InvalidInputError, match="line 1"):
        render_notice("broken", {}, tmp_path)


def test_the_shipped_start_notice_follows_the_playbook_with_real_markers() -> None:
    contacts = CONTACTS
    text = render_notice(
        "incident-start",
        {
            "environment": "production",
            "service": "rag-api",
            "namespace": "production",
            "time": "2026-12-01 03:00:00 UTC",
            "reason": "error rate 20 % (critical > 5 %)",
            "from_version": "v1.2.4",
            "to_version": "v1.2.3",
            "impact": "rolling update",
            "status": "In Progress",
            "lead": contacts.lead_handle,
            "mentions": mentions(contacts, Cause()),
            "run_url": "http://ui/runs/flow-run/1",
        },
    )
    assert text.startswith("🚨 INCIDENT: Production Rollback Initiated\n")
    assert text[0] == "\N{POLICE CARS REVOLVING LIGHT}"  # not the playbook's mis-encoded bytes
    assert "Action: Rolling back from v1.2.4 to v1.2.3\n" in text
    assert "Lead: @oncall\n" in text and "Status: In Progress\n" in text


# --- live --------------------------------------------------------------------------------


def fields(text: str) -> dict[str, str]:
    """`Key: value` lines of a notice."""
    return dict(re.findall(r"(?m)^([A-Z][A-Za-z ]+): (.+)$", text))


def cc(text: str) -> dict[str, str]:
    """The contacts a notice mentions, and why."""
    return dict(re.findall(r"(?m)^cc (@\S+) \((.+)\)$", text))


@pytest.fixture
def bad_release(
    kube_api: client.ApiClient, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    use_services(monkeypatch, tmp_path, namespace)
    build_history(client.AppsV1Api(kube_api), namespace, ["v1.2.3", "v1.2.4"], serve_seconds=4)
    return namespace


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_an_alert_rollback_tells_its_start_with_the_real_versions_time_and_run(
    kube_api: client.ApiClient, bad_release: str, notifications: WebhookSink
) -> None:
    ns = bad_release
    time.sleep(1.1)  # the API server records whole seconds: the alert starts after the release
    before = datetime.now(UTC).replace(microsecond=0)
    result = guarded_rollback(
        "rag-api",
        reason="rag-api error rate 20 % (critical > 5 %)",
        alert_started_at=datetime.now(UTC),
        alert_fingerprint="4f2a9c1d",
        indicator="error_rate",
        recheck=False,
    )
    after = datetime.now(UTC)
    assert result.action == "rolled_back"
    assert snapshot(client.AppsV1Api(kube_api), ns).image == f"{REPOSITORY}:v1.2.3"

    [start] = [d.body["text"] for d in notifications.received("/slack")]
    assert start.startswith(f"🚨 INCIDENT: {ns.capitalize()} Rollback Initiated\n")
    got = fields(start)
    assert got["Action"] == "Rolling back from v1.2.4 to v1.2.3"
    assert got["Reason"] == "rag-api error rate 20 % (critical > 5 %)"
    assert got["Status"] == "In Progress" and got["Lead"] == "@oncall"
    sent_at = datetime.strptime(got["Time"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert before <= sent_at <= after
    assert cc(start) == {"@oncall": "On-call Engineer: every rollback"}
    # the run it names is the rollback run, a child of this guarded run, on the server
    run_id = got["Run"].rsplit("/", 1)[-1]
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)  # type: ignore[arg-type]
        assert prefect.read_flow(run.flow_id).name == "kubernetes-rollback"
    assert result.report is not None
    assert "incident-start notice sent to 127.0.0.1" in result.report.details


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_rag_quality_alert_rollback_mentions_the_ml_team(
    bad_release: str, notifications: WebhookSink
) -> None:
    time.sleep(1.1)  # the API server records whole seconds: the alert starts after the release
    result = guarded_rollback(
        "rag-api",
        reason="NDCG 0.41",
        alert_started_at=datetime.now(UTC),
        indicator="rag_quality_ndcg",
        recheck=False,
    )
    assert result.action == "rolled_back"
    [start] = [d.body["text"] for d in notifications.received("/slack")]
    assert cc(start) == {
        "@oncall": "On-call Engineer: every rollback",
        "@ml-team": "ML Team: model-related: rag_quality_ndcg breached",
    }


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_rollback_into_an_image_that_cannot_be_pulled_tells_the_platform_team(
    kube_api: client.ApiClient,
    namespace: str,
    notifications: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace, timeout=6)
    apps = client.AppsV1Api(kube_api)
    build_history(apps, namespace, ["v1.2.3", "v1.2.3-pullfail", "v1.2.4"])

    state = kubernetes_rollback("rag-api", to_revision=2, return_state=True)

    assert state.is_failed()
    with pytest.raises(RolloutFailedError):
        state.result()
    texts = [d.body["text"] for d in notifications.received("/slack")]
    assert [t.splitlines()[0] for t in texts] == [
        f"🚨 INCIDENT: {namespace.capitalize()} Rollback Initiated",
        f"🚨 ROLLBACK FAILED: {namespace.capitalize()} rag-api",
    ]
    failed = texts[1]
    assert fields(failed)["Attempted"] == "from v1.2.4 to v1.2.3-pullfail"
    assert fields(failed)["Cluster changed"] == "yes, the change is in place"
    mentioned = cc(failed)
    assert set(mentioned) == {"@oncall", "@platform"}
    assert re.fullmatch(
        r"Platform Team: infrastructure: pod rag-api-\S+: (ErrImagePull|ImagePullBackOff).*",
        mentioned["@platform"],
    )
    assert "@platform" not in cc(texts[0])  # at the start nothing pointed at the platform
    # the playbook's troubleshooting ran by itself, as its own run with its report
    diagnosis = fields(failed)["Diagnosis"]
    assert re.match(r"\d of the playbook's 4 known problems found: .*Image pull errors", diagnosis)
    run_id = diagnosis.rsplit("/", 1)[-1]
    record = read_flow_run_id(UUID(run_id))
    assert record.state == "COMPLETED"
    assert "ErrImagePull" in str(record.keyed("diagnose-rollback-rag-api").data) or (
        "ImagePullBackOff" in str(record.keyed("diagnose-rollback-rag-api").data)
    )


@pytest.fixture
def webhook_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A webhook URL where nothing listens (a port just freed), with a secret in its path."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/s3cr3t-w3bh00k-t0k3n"
    monkeypatch.setenv(WEBHOOK_URL_ENV, url)
    yield "s3cr3t-w3bh00k-t0k3n"


@pytest.mark.stack
@pytest.mark.timeout(150)
def test_a_notice_endpoint_that_is_down_does_not_stop_the_rollback_and_leaks_no_secret(
    kube_api: client.ApiClient, bad_release: str, webhook_down: str
) -> None:
    state = kubernetes_rollback("rag-api", return_state=True)

    assert state.is_completed(), state.message
    report = state.result()
    assert snapshot(client.AppsV1Api(kube_api), bad_release).image == f"{REPOSITORY}:v1.2.3"
    [line] = [d for d in report.details if d.startswith("incident-start notice")]
    assert line.startswith("incident-start notice NOT sent:"), line
    assert "127.0.0.1" in line
    # the webhook's secret path is in no log, artifact or report of the run
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as prefect:
        children = prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
            )
        )
        ids = [run_id, *(c.id for c in children)]
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        artifacts = prefect.read_artifacts()
    assert logs, "the run's logs were read"
    assert not [entry.message for entry in logs if webhook_down in entry.message]
    assert not [a.key for a in artifacts if webhook_down in str(a.data)]
    assert webhook_down not in report.to_markdown()
    with get_client(sync_client=True) as prefect:
        events = prefect.read_events(
            filter=EventFilter(event=EventNameFilter(prefix=["rollback-flows."])), limit=50
        ).events
    assert events and not [e.event for e in events if webhook_down in e.model_dump_json()]


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_an_alert_rollback_leaves_its_audit_trail_as_prefect_events(
    kube_api: client.ApiClient, bad_release: str
) -> None:
    ns = bad_release
    time.sleep(1.1)  # the API server records whole seconds: the alert starts after the release
    alert_started = datetime.now(UTC)
    result = guarded_rollback(
        "rag-api",
        reason="error rate 20 %",
        alert_started_at=alert_started,
        alert_fingerprint="0c7f3e2a",
        indicator="error_rate",
        recheck=False,
    )
    assert result.action == "rolled_back" and result.report is not None
    assert snapshot(client.AppsV1Api(kube_api), ns).image == f"{REPOSITORY}:v1.2.3"

    resource = f"kubernetes.deployment.{ns}.rag-api"
    wanted = EventFilter(
        event=EventNameFilter(prefix=["rollback-flows.rollback."]),
        resource=EventResourceFilter(id=[resource]),
    )

    def events() -> list[Any]:
        with get_client(sync_client=True) as prefect:
            found = prefect.read_events(filter=wanted, limit=50).events
        return sorted(found, key=lambda e: e.occurred) if len(found) >= 2 else []

    started, completed = eventually(events, 15, "the audit events")
    assert [started.event, completed.event] == [
        "rollback-flows.rollback.started",
        "rollback-flows.rollback.completed",
    ]
    for event in (started, completed):
        who = event.payload["started_by"]
        assert who["kind"] == "alert" and who["who"] == "alert 0c7f3e2a"
        assert who["reason"] == "error rate 20 %"
        assert who["alert_started_at"] == alert_started.isoformat()
        assert event.payload["before"] == {"version": "v1.2.4", "revision": 2}
        related = {r.id for r in event.related}
        assert any(r.startswith("prefect.flow-run.") for r in related), related
    after = completed.payload["after"]
    assert (after["version"], after["revision"]) == ("v1.2.3", 3)
    times = completed.payload["times"]
    assert datetime.fromisoformat(times["started"]) <= datetime.fromisoformat(times["ended"])
    assert completed.payload["outcome"] == result.report.outcome
    assert any(
        d.startswith("audit: rollback-flows.rollback.started") for d in result.report.details
    )


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_persons_reason_is_a_choice_in_the_run_form_and_goes_into_the_notice(
    kube_api: client.ApiClient, bad_release: str, notifications: WebhookSink
) -> None:
    apps = client.AppsV1Api(kube_api)
    # the UI's run form offers exactly the playbook's Manual Rollback Indicators
    with get_client(sync_client=True) as prefect:
        schema = prefect.read_deployment_by_name(
            "kubernetes-rollback/default"
        ).parameter_openapi_schema
    reason = schema["properties"]["reason"]
    choices = next(c["enum"] for c in reason.get("anyOf", [reason]) if "enum" in c)
    assert choices == list(get_args(ManualReason))
    assert "Security vulnerability discovered" in choices

    # a value that is not a choice is refused before anything runs
    before = snapshot(apps, bad_release)
    with pytest.raises(ParameterTypeError, match="reason"):
        kubernetes_rollback("rag-api", reason="because")  # type: ignore[arg-type]
    assert snapshot(apps, bad_release) == before
    assert notifications.received() == []

    report = kubernetes_rollback(
        "rag-api", reason="Users report degraded experience", comment="12 tickets since 03:00"
    )
    assert report.changed
    [start] = [d.body["text"] for d in notifications.received("/slack")]
    assert fields(start)["Reason"] == "Users report degraded experience (12 tickets since 03:00)"
    assert "started by a person: Users report degraded experience" in report.details[0]
