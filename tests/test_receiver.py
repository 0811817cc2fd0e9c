"""The alert receiver: payloads and routes (pure), then the real app on loopback in front of the
session's Prefect server, whose worker executes the flow runs it creates."""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alerting import (
    FIRING_SAMPLE,
    alert_events,
    count_flow_runs,
    payload,
    running_receiver,
    runs_with_key,
    save_token,
    wait_final,
)
from cluster import (
    REPOSITORY,
    build_history,
    delete_deployment,
    replicasets_by_revision,
    snapshot,
    wait_settled,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from playbook.errors import InvalidInputError
from playbook.names import ledger_name
from receiver.alerts import InvalidPayload, idempotency_key, parse_payload
from receiver.app import authorized
from receiver.config import ReceiverConfig, load_config, parse_config
from stack.local import StackState
from tasks.concurrency import forget_rollbacks

GOOD, BAD = "v1.2.3", "v1.2.4"

# The shipped routes' first two, with a small body limit, going to the previous revision: these
# tests are about delivery, dedupe and the lock, not about which revision is known good (a
# version's own history in Prometheus, which tests/test_last_good.py builds on purpose).
TEST_ROUTES = """
token_secret: {block}
max_body_bytes: 4096
routes:
  - name: error-rate-critical
    match: {{alertname: RollbackHighErrorRate, severity: critical}}
    deployment: guarded-rollback/alert
    parameters:
      service: "{{{{ labels.service }}}}"
      namespace: "{{{{ labels.namespace | optional }}}}"
      procedure: kubernetes_rollback
      target: previous
      reason: "{{{{ annotations.summary }}}}"
      alert_started_at: "{{{{ alert.starts_at }}}}"
  - name: latency-critical
    match: {{alertname: RollbackHighLatency, severity: critical}}
    deployment: guarded-rollback/alert
    parameters:
      service: "{{{{ labels.service }}}}"
      namespace: "{{{{ labels.namespace | optional }}}}"
      procedure: kubernetes_rollback
      target: previous
"""


# --- payloads and routes, pure ----------------------------------------------------------------


def test_alertmanager_samples_parse_and_share_one_key() -> None:
    firing = parse_payload(FIRING_SAMPLE)
    resolved = parse_payload(payload("926f50232b87fee0", status="resolved"))
    assert firing.alerts[0].alertname == "RollbackHighErrorRate"
    key = idempotency_key(firing.alerts[0])
    assert key == "alertmanager:926f50232b87fee0:2026-11-26T23:21:31.906000+00:00"
    assert idempotency_key(resolved.alerts[0]) == key
    # the same instant written with another offset is the same firing
    shifted = parse_payload(payload("926f50232b87fee0", starts_at="2026-11-27T00:21:31.906+01:00"))
    assert idempotency_key(shifted.alerts[0]) == key
    # a new firing of the same alert is a new key
    again = parse_payload(payload("926f50232b87fee0", starts_at="2026-11-26T23:40:00Z"))
    assert idempotency_key(again.alerts[0]) != key


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.pop("alerts"), "alerts: Field required"),
        (lambda b: b.update(version="3"), "version: Input should be '4'"),
        (lambda b: b.update(alerts=[]), "alerts: Tuple should have at least 1 item"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda b: b["alerts"][0].update(startsAt="2026-11-26T23:21:31"), "time zone"),
        (lambda b: b["alerts"][0].update(fingerprint="../etc"), "alerts.0.fingerprint"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda b: b["alerts"][0]["labels"].update({"bad label": "x"}), "alerts.0.labels"),
    ],
)
def test_malformed_payloads_are_refused_with_the_field(mutate: Any, reason: str) -> None:
    body = copy.deepcopy(FIRING_SAMPLE)
    mutate(body)
    with pytest.raises(InvalidPayload, match=reason.replace("(", r"\(")):
        parse_payload(body)


def test_the_shipped_routes_send_critical_alerts_to_a_guarded_rollback() -> None:
    config = load_config()
    critical = parse_payload(FIRING_SAMPLE).alerts[0]
    route = config.route_for(critical)
    assert route is not None and route.deployment == "guarded-rollback/alert"
    assert route.parameters_for(critical) == {
        "service": "rag-api",
        "procedure": "kubernetes_rollback",
        "reason": "rag-api error rate 6.25% > 5%",
        "alert_started_at": "2026-11-26T23:21:31.906000+00:00",
        "indicator": "error_rate",
        "alert_fingerprint": "926f50232b87fee0",
    }
    # the alert's namespace and cluster labels, where it has them, say where to act
    labelled = parse_payload(payload(namespace="staging", cluster="eu-2")).alerts[0]
    assert route.parameters_for(labelled)["namespace"] == "staging"
    assert route.parameters_for(labelled)["cluster"] == "eu-2"
    assert config.route_for(parse_payload(payload(severity="warning")).alerts[0]) is None
    unlabelled = copy.deepcopy(FIRING_SAMPLE)
    del unlabelled["alerts"][0]["labels"]["service"]
    assert config.route_for(parse_payload(unlabelled).alerts[0]) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: []", "at least 1 item"),
        ("routes: [{name: a, match: {x: y}, deployment: f/d, parameters: {}}]", "service"),
        (
            "routes: [{name: a, match: {x: y}, deployment: nodash, parameters: {service: s}}]",
            "deployment",
        ),
        (
            "routes: [{name: a, match: {x: y}, deployment: f/d, parameters: {service: s}},"
            " {name: a, match: {x: z}, deployment: f/d, parameters: {service: s}}]",
            "unique",
        ),
        (
            "routes: [{name: a, match: {x: y}, deployment: f/d, parameters: {service: s}, extra: 1}]",
            "extra",
        ),
        ("{", "not valid YAML"),
    ],
)
def test_a_bad_routes_file_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_config(text)


def test_bearer_token_comparison() -> None:
    token = SecretStr("s3cret")
    assert authorized("Bearer s3cret", token)
    assert authorized("bearer s3cret", token)
    for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cretX", "Basic s3cret", "s3cret"):
        assert not authorized(header, token)


# --- the real receiver in front of the session's Prefect server ------------------------------


@pytest.fixture(scope="module")
def receiver(
    local_stack: StackState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, token) of a receiver on loopback; routes as shipped plus a namespace label."""
    block = "alert-receiver-token-tests"
    token = save_token(block)
    config = parse_config(TEST_ROUTES.format(block=block))
    with running_receiver(config) as url:
        yield url, token


def post(url: str, token: str | None, body: Any, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        f"{url}/alerts",
        content=content,
        headers={**headers, "Content-Type": "application/json", **kwargs.pop("headers", {})},
        timeout=30,
        **kwargs,
    )


@pytest.mark.stack
def test_health(receiver: tuple[str, str]) -> None:
    url, _ = receiver
    response = httpx.get(f"{url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["prefect"] == "ok"


@pytest.mark.stack
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Basic dXNlcjpwYXNz", "Bearer", "Token {token}", "Bearer {token}x"],
)
def test_a_bad_token_is_401_and_starts_nothing(
    receiver: tuple[str, str], authorization: str | None
) -> None:
    url, token = receiver
    before = count_flow_runs()
    headers = {"Authorization": authorization.format(token=token)} if authorization else {}
    response = post(url, None, payload(namespace="nowhere"), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["reason"] == "missing or invalid bearer token"
    assert count_flow_runs() == before


@pytest.mark.stack
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe\x00", "body is not valid JSON"),
        (json.dumps({**FIRING_SAMPLE, "version": "3"}).encode(), "version: Input should be '4'"),
        (json.dumps({**FIRING_SAMPLE, "alerts": "x"}).encode(), "alerts"),
        (b"[" * 2000 + b"]" * 2000, "body is not valid JSON"),
    ],
)
def test_a_malformed_body_is_400_with_the_reason_and_starts_nothing(
    receiver: tuple[str, str], body: bytes, reason: str
) -> None:
    url, token = receiver
    before = count_flow_runs()
    response = post(url, token, body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["reason"]
    assert count_flow_runs() == before


@pytest.mark.stack
def test_an_oversized_body_is_413_declared_or_streamed(receiver: tuple[str, str]) -> None:
    url, token = receiver
    before = count_flow_runs()
    big = payload(namespace="nowhere")
    big["alerts"][0]["annotations"]["summary"] = "x" * 5000
    declared = post(url, token, big)
    assert declared.status_code == 413
    assert "larger than 4096 bytes" in declared.json()["reason"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        data = json.dumps(big).encode()
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    streamed = httpx.post(
        f"{url}/alerts",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert streamed.status_code == 413
    assert count_flow_runs() == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
ALERT_KEYS = [
    "status",
    "labels",
    "annotations",
    "startsAt",
    "endsAt",
    "generatorURL",
    "fingerprint",
]
TOP_KEYS = ["version", "status", "receiver", "groupKey", "alerts", "groupLabels", "commonLabels"]


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """The sample (with a label no route matches) with one key replaced or removed."""
    body = payload(alertname="FuzzOnly")
    target = draw(st.sampled_from(["top", "alert"]))
    where = body if target == "top" else body["alerts"][0]
    key = draw(st.sampled_from(TOP_KEYS if target == "top" else ALERT_KEYS))
    if draw(st.booleans()):
        where.pop(key, None)
    else:
        where[key] = draw(json_values)
    return body


@pytest.mark.stack
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.one_of(json_values, mutated_payloads()))
def test_fuzzed_bodies_never_get_a_5xx_and_never_start_a_run(
    receiver: tuple[str, str], body: Any
) -> None:
    url, token = receiver
    before = count_flow_runs()
    response = post(url, token, body)
    assert response.status_code < 500, response.text
    try:
        parse_payload(body)
        valid = True
    except InvalidPayload:
        valid = False
    assert response.status_code == (200 if valid else 400), response.text
    if valid:  # only unrouted or resolved alerts can be valid here
        assert {a["action"] for a in response.json()["alerts"]} <= {"unrouted", "resolved"}
    assert count_flow_runs() == before


@pytest.mark.stack
def test_a_resolved_alert_is_recorded_and_starts_nothing(receiver: tuple[str, str]) -> None:
    url, token = receiver
    body = payload(status="resolved", namespace="nowhere")
    fingerprint = body["alerts"][0]["fingerprint"]
    response = post(url, token, body)
    assert response.status_code == 200
    [outcome] = response.json()["alerts"]
    assert outcome["action"] == "resolved" and outcome["flow_run_id"] is None
    key = idempotency_key(parse_payload(body).alerts[0])
    assert runs_with_key(key) == []
    [event] = alert_events("rollback-flows.alert.resolved", fingerprint)
    assert event.payload["idempotency_key"] == key
    assert event.resource["alert.label.alertname"] == "RollbackHighErrorRate"


@pytest.mark.stack
def test_an_unknown_service_is_rejected_and_starts_nothing(receiver: tuple[str, str]) -> None:
    url, token = receiver
    before = count_flow_runs()
    response = post(url, token, payload(service="no-such-service", namespace="nowhere"))
    assert response.status_code == 200
    [outcome] = response.json()["alerts"]
    assert outcome["action"] == "rejected"
    assert "unknown service 'no-such-service'" in outcome["message"]
    assert count_flow_runs() == before


def now() -> str:
    """An alert's startsAt of now: after the bad release it is about."""
    return datetime.now(UTC).isoformat()


STAGING = "staging"  # an environment of rag-api in the stack's services file


@pytest.fixture
def bad_release(kube_api: client.ApiClient) -> Iterator[str]:
    """rag-api in the staging environment at revision 2 (bad) over revision 1 (good)."""
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    with contextlib.suppress(ApiException):
        core.create_namespace({"metadata": {"name": STAGING}})
    build_history(apps, STAGING, [GOOD, BAD])
    # An alert about the release starts after it: the API server records whole seconds, and an
    # alert in the same second as the release is taken for older than it (stale).
    time.sleep(1.1)
    yield STAGING
    forget_rollbacks(ledger_name(STAGING, "rag-api"))
    delete_deployment(apps, STAGING)  # no history left behind for the next test


@pytest.mark.stack
def test_an_alert_for_no_environment_of_its_service_is_rejected(receiver: tuple[str, str]) -> None:
    url, token = receiver
    before = count_flow_runs()
    response = post(url, token, payload(namespace="nowhere", starts_at=now()))
    [outcome] = response.json()["alerts"]
    assert outcome["action"] == "rejected"
    assert "no environment with namespace 'nowhere'" in outcome["message"]
    assert "production (namespace production), staging (namespace staging)" in outcome["message"]
    [outcome] = post(url, token, payload(starts_at=now())).json()["alerts"]
    assert outcome["action"] == "rejected" and "names no namespace" in outcome["message"]
    assert count_flow_runs() == before


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_a_staging_alert_never_touches_production(
    receiver: tuple[str, str],
    kube_api: client.ApiClient,
    bad_release: str,
    simulator_namespace: str,
) -> None:
    url, token = receiver
    apps = client.AppsV1Api(kube_api)
    build_history(apps, simulator_namespace, [GOOD, BAD])  # production runs the bad one too
    wait_settled(apps, simulator_namespace, "rag-api")
    production = snapshot(apps, simulator_namespace)

    body = payload(namespace=STAGING, starts_at=now())
    [outcome] = post(url, token, body).json()["alerts"]
    assert outcome["action"] == "started", outcome
    final = wait_final(outcome["flow_run_id"])
    assert final.state is not None and final.state.is_completed(), final.state

    assert snapshot(apps, STAGING).image == f"{REPOSITORY}:{GOOD}"
    assert replicasets_by_revision(apps, STAGING) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{GOOD}",
    }
    assert snapshot(apps, simulator_namespace) == production  # untouched: still bad, rev 2
    forget_rollbacks(ledger_name(simulator_namespace, "rag-api"))


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_twenty_duplicate_deliveries_make_one_run_and_one_undo(
    receiver: tuple[str, str], kube_api: client.ApiClient, bad_release: str
) -> None:
    url, token = receiver
    apps = client.AppsV1Api(kube_api)
    body = payload(namespace=bad_release, starts_at=now())
    key = idempotency_key(parse_payload(body).alerts[0])

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: post(url, token, body), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    outcomes = [r.json()["alerts"][0] for r in responses]
    assert sorted(o["action"] for o in outcomes) == ["duplicate"] * 19 + ["started"]
    assert len({o["flow_run_id"] for o in outcomes}) == 1

    [run] = runs_with_key(key)
    assert run.parameters["namespace"] == bad_release
    assert f"rollback-target:{bad_release}/rag-api" in run.tags
    final = wait_final(run.id)
    assert final.state is not None and final.state.is_completed(), final.state

    # one undo: revision 1's ReplicaSet now serves as revision 3, nothing else changed
    assert snapshot(apps, bad_release).image == f"{REPOSITORY}:{GOOD}"
    assert replicasets_by_revision(apps, bad_release) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{GOOD}",
    }

    # delivered again after the run finished: still the one run
    again = post(url, token, body).json()["alerts"][0]
    assert again["action"] == "duplicate" and again["flow_run_id"] == str(run.id)
    assert len(runs_with_key(key)) == 1
    assert replicasets_by_revision(apps, bad_release) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{GOOD}",
    }


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_a_second_rollback_alert_while_one_runs_is_refused(
    receiver: tuple[str, str], kube_api: client.ApiClient, bad_release: str
) -> None:
    url, token = receiver
    apps = client.AppsV1Api(kube_api)
    first = post(url, token, payload(namespace=bad_release, starts_at=now())).json()["alerts"][0]
    assert first["action"] == "started"
    latency = payload(alertname="RollbackHighLatency", namespace=bad_release, starts_at=now())
    second = post(url, token, latency).json()["alerts"][0]
    assert second["action"] == "refused"
    assert f"a rollback of {bad_release}/rag-api is already in progress" in second["message"]
    assert first["flow_run_name"] in second["message"]
    assert runs_with_key(idempotency_key(parse_payload(latency).alerts[0])) == []

    final = wait_final(first["flow_run_id"])
    assert final.state is not None and final.state.is_completed()
    assert replicasets_by_revision(apps, bad_release) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{GOOD}",
    }


def test_the_receiver_config_type_is_frozen() -> None:
    config = parse_config(TEST_ROUTES.format(block="b"))
    assert isinstance(config, ReceiverConfig)
    with pytest.raises(ValueError):
        config.max_body_bytes = 1  # type: ignore[misc]
