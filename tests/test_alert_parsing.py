"""The receiver's pure parts stated exactly: why a body is refused (its type, depth,
surrogates, NaN, each offending field), the idempotency key in UTC, and how a route's
placeholders resolve from the alert."""

from __future__ import annotations

import math
from typing import Any

import pytest

from receiver.alerts import InvalidPayload, idempotency_key, parse_payload
from receiver.config import parse_config


def alert(**changes: Any) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "RagApiErrorRate", "service": "rag-api", "namespace": "production"},
        "annotations": {"summary": "errors"},
        "startsAt": "2026-03-01T13:00:00.5+01:00",
        "fingerprint": "abc123",
        **changes,
    }


def payload(*alerts: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "rollback",
        "groupKey": "{}:{}",
        "alerts": list(alerts or [alert()]),
        **changes,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "the body must be a JSON object, not list"),
        ("x", "the body must be a JSON object, not str"),
        ({"a": float("nan")}, "the body contains NaN or Infinity, which JSON does not allow"),
        ({"a": math.inf}, "the body contains NaN or Infinity, which JSON does not allow"),
        ({"a": "\ud800"}, "the body contains unpaired UTF-16 surrogates"),
    ],
)
def test_a_body_that_is_no_json_object_is_refused_with_the_reason(
    body: object, reason: str
) -> None:
    with pytest.raises(InvalidPayload) as refused:
        parse_payload(body)
    assert str(refused.value) == reason


def test_a_body_nested_too_deeply_is_refused_before_validation() -> None:
    deep: dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"a": deep}
    with pytest.raises(InvalidPayload) as refused:
        parse_payload(deep)
    assert str(refused.value) == "the body is nested too deeply"


def test_non_ascii_labels_are_accepted() -> None:
    parsed = parse_payload(payload(alert(annotations={"summary": "Fehlerrate über 5 %"})))
    assert parsed.alerts[0].annotations["summary"] == "Fehlerrate über 5 %"


def test_each_offending_field_is_named_and_past_five_the_rest_counted() -> None:
    with pytest.raises(InvalidPayload) as refused:
        parse_payload({"version": "3"})
    assert str(refused.value) == (
        "version: Input should be '4'; status: Field required; receiver: Field required; "
        "groupKey: Field required; alerts: Field required"
    )
    bad = alert(status="x", fingerprint="XYZ", startsAt="2026-03-01T12:00:00")
    with pytest.raises(InvalidPayload) as refused:
        parse_payload(payload(bad, bad, status="x"))
    assert str(refused.value).startswith(
        "status: Input should be 'firing' or 'resolved'; alerts.0.status:"
    )
    assert str(refused.value).endswith("; and 3 more")
    with pytest.raises(InvalidPayload) as refused:
        parse_payload(payload(alert(status="x", fingerprint="XYZ")))
    assert "and" not in str(refused.value).split(";")[-1]


def test_the_idempotency_key_is_the_fingerprint_and_the_start_in_utc() -> None:
    parsed = parse_payload(payload())
    assert (
        idempotency_key(parsed.alerts[0]) == "alertmanager:abc123:2026-03-01T12:00:00.500000+00:00"
    )
    same = parse_payload(payload(alert(startsAt="2026-03-01T12:00:00.500Z")))
    assert idempotency_key(same.alerts[0]) == idempotency_key(parsed.alerts[0])


ROUTES = """
routes:
  - name: critical
    match: {severity: critical}
    deployment: guarded-rollback/alert
    parameters:
      service: "{{ labels.service }}"
      namespace: "{{labels.namespace}}"
      reason: "{{ annotations.summary }}"
      started: "{{ alert.starts_at }}"
      fingerprint: "{{ alert.fingerprint }}"
      status: "{{ alert.status }}"
      team: "{{ labels.team | optional }}"
      limit: 3
      literal: "labels.service"
"""


def test_route_placeholders_resolve_from_labels_annotations_and_the_alert() -> None:
    route = parse_config(ROUTES).routes[0]
    fired = parse_payload(
        payload(alert(labels={**alert()["labels"], "severity": "critical"}))
    ).alerts[0]
    assert route.matches(fired)
    assert route.parameters_for(fired) == {
        "service": "rag-api",
        "namespace": "production",
        "reason": "errors",
        "started": "2026-03-01T13:00:00.500000+01:00",
        "fingerprint": "abc123",
        "status": "firing",
        "limit": 3,
        "literal": "labels.service",
    }
    with_team = fired.model_copy(update={"labels": {**fired.labels, "team": "ml"}})
    assert route.parameters_for(with_team)["team"] == "ml"


def test_a_route_with_an_unknown_alert_fact_or_missing_label_does_not_match() -> None:
    text = ROUTES.replace("{{ alert.status }}", "{{ alert.severity }}")
    route = parse_config(text).routes[0]
    fired = parse_payload(
        payload(alert(labels={**alert()["labels"], "severity": "critical"}))
    ).alerts[0]
    assert not route.matches(fired)
    plain = parse_config(ROUTES).routes[0]
    without_namespace = fired.model_copy(
        update={"labels": {"service": "rag-api", "severity": "critical"}}
    )
    assert not plain.matches(without_namespace)
