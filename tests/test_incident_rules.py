"""Who or what started a rollback, as the notices, the audit events and the review tell it: the
reason line, the starter, the Deployment as an event resource, the audit payload (no secrets)."""

from __future__ import annotations

from datetime import UTC, datetime

from playbook.incident import StartedBy, audit_payload, deployment_resource, manual

STARTED = datetime(2026, 12, 1, 3, 0, 5, tzinfo=UTC)


def test_the_reason_line_carries_the_comment_and_says_when_no_reason_was_given() -> None:
    assert StartedBy("alert", "  error rate 20 %  ").text() == "error rate 20 %"
    assert StartedBy("person", "Downstream service failures", "  search is down ").text() == (
        "Downstream service failures (search is down)"
    )
    assert StartedBy("person", "Downstream service failures", "   ").text() == (
        "Downstream service failures"
    )
    assert StartedBy("person", "  ", "paged by support").text() == "not given (paged by support)"


def test_an_alert_is_named_by_its_fingerprint_and_every_other_starter_in_words() -> None:
    assert StartedBy("alert", "x", alert_fingerprint="3f2a9c").who() == "alert 3f2a9c"
    assert StartedBy("alert", "x").who() == "alert"
    assert [StartedBy(kind, "x").who() for kind in ("person", "schedule", "automation")] == [
        "a person",
        "a schedule",
        "automation",
    ]


def test_a_manual_rollback_without_a_chosen_reason_says_so() -> None:
    assert manual(None) == StartedBy("person", "manual rollback (no reason chosen)", "")
    chosen = manual("Users report degraded experience", "tickets since 03:00")
    assert chosen == StartedBy("person", "Users report degraded experience", "tickets since 03:00")
    assert chosen.who() == "a person"


def test_the_deployment_resource_names_its_cluster_only_when_there_is_one() -> None:
    assert deployment_resource("prod-eu", "production", "rag-api") == {
        "prefect.resource.id": "kubernetes.deployment.prod-eu.production.rag-api",
        "prefect.resource.name": "production/rag-api",
        "kubernetes.namespace": "production",
        "kubernetes.cluster": "prod-eu",
    }
    assert deployment_resource(None, "staging", "rag-api") == {
        "prefect.resource.id": "kubernetes.deployment.staging.rag-api",
        "prefect.resource.name": "staging/rag-api",
        "kubernetes.namespace": "staging",
    }


def test_the_audit_payload_says_who_why_before_after_and_when_and_leaves_out_secrets() -> None:
    trigger = StartedBy(
        "alert",
        "RagApiErrorRateCritical: error rate 20 %",
        "from Alertmanager",
        alert_fingerprint="3f2a9c",
        alert_started_at=STARTED,
    )
    payload = audit_payload(
        trigger,
        {"service": "rag-api", "notify_secret_block": "slack", "API_SECRET": "s3cr3t", "force": 0},
        {"revision": 7, "image": "rag-api:v1.2.4"},
        {"revision": 8, "image": "rag-api:v1.2.3"},
        {"started": STARTED, "completed": None},
        "completed",
    )
    assert payload == {
        "started_by": {
            "kind": "alert",
            "who": "alert 3f2a9c",
            "reason": "RagApiErrorRateCritical: error rate 20 %",
            "comment": "from Alertmanager",
            "alert_fingerprint": "3f2a9c",
            "alert_started_at": "2026-12-01T03:00:05+00:00",
        },
        "parameters": {"service": "rag-api", "force": 0},
        "before": {"revision": 7, "image": "rag-api:v1.2.4"},
        "after": {"revision": 8, "image": "rag-api:v1.2.3"},
        "times": {"started": "2026-12-01T03:00:05+00:00", "completed": None},
        "outcome": "completed",
    }
    assert "s3cr3t" not in repr(payload)


def test_a_failed_change_has_no_after_state_and_a_person_no_alert_time() -> None:
    payload = audit_payload(manual(None), {}, {"revision": 7}, None, {}, "failed")
    assert payload["after"] is None
    assert payload["started_by"]["alert_started_at"] is None
    assert payload["started_by"]["who"] == "a person"
    assert payload["before"] == {"revision": 7} and payload["outcome"] == "failed"
