"""Blast radius, decided from typed data: when a cluster's automatic rollbacks stop, which
runs are refused, and which one run tells the platform team; then on the real stack, from an
Alertmanager group and from separate deliveries, through the receiver and the worker."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from alerting import payload, running_receiver, runs_tagged, save_token, wait_final
from cluster import REPOSITORY, Snapshot, build_history, eventually, snapshot
from conftest import NOTICES_PATH
from flow_runs import read_flow_run_id
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from flows.guarded_rollback import guarded_rollback
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.blast_radius import (
    BlastRadiusPolicy,
    Breach,
    find_trips,
    judge_blast_radius,
)
from playbook.names import lock_name, target_tag
from playbook.services import SERVICES_ENV
from receiver.config import load_config
from stack.local import StackState
from stack.sink import WebhookSink

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
POLICY = BlastRadiusPolicy(max_services=3, max_share=1.0, window_minutes=5, cooling_minutes=30)


def breach(seconds: float, service: str, cluster: str = "eu-1", run: str | None = None) -> Breach:
    return Breach(run or f"run-{service}-{seconds:g}", T0 + timedelta(seconds=seconds), service, cluster)  # fmt: skip


def test_more_services_than_the_count_within_the_window_is_one_trip() -> None:
    runs = [breach(0, "a"), breach(10, "b"), breach(20, "c"), breach(30, "d"), breach(40, "e")]
    [trip] = find_trips(runs, "eu-1", 20, POLICY)
    assert trip.run_id == "run-d-30" and trip.services == ("a", "b", "c", "d")
    assert trip.until == T0 + timedelta(seconds=30, minutes=30)
    decisions = {b.service: judge_blast_radius(runs, b, 20, POLICY) for b in runs}
    # every run of the outage is refused, those before the trip too; one run tells
    assert not any(d.allowed for d in decisions.values())
    assert [s for s, d in decisions.items() if d.notify] == ["d"]
    assert decisions["d"].services == ("a", "b", "c", "d", "e")
    assert decisions["a"].message.startswith(
        "not rolled back: 4 services of cluster eu-1 breached within 5 min (a, b, c, d), more "
        "than 3 services, or more than 100 % of its 20 services, within 5 min: when many "
        "services fail together the cause is almost never a release"
    )
    assert "stop until 2026-12-02 03:30:30 UTC" in decisions["a"].message


def test_as_many_as_the_count_repeats_of_one_service_and_other_clusters_do_not_trip() -> None:
    runs = [
        breach(0, "a"),
        breach(5, "a", run="again"),  # a second alert of the same service
        breach(10, "b"),
        breach(20, "c"),
        breach(25, "x", cluster="us-2"),
        breach(26, "y", cluster="us-2"),
    ]
    assert find_trips(runs, "eu-1", 20, POLICY) == ()
    decision = judge_blast_radius(runs, runs[3], 20, POLICY)
    assert decision.allowed and not decision.notify
    assert decision.message == (
        "3 service(s) of cluster eu-1 breached within 5 min (a, b, c): not more than 3 "
        "services, or more than 100 % of its 20 services, within 5 min"
    )


def test_services_spread_wider_than_the_window_do_not_trip() -> None:
    # one every 2 minutes: never more than 3 within any 5 minutes
    wide = [breach(index * 120, name) for index, name in enumerate("abcdef")]
    assert find_trips(wide, "eu-1", 20, POLICY) == ()
    # one a minute: the fourth within 5 minutes trips
    [trip] = find_trips([breach(i * 60, n) for i, n in enumerate("abcdef")], "eu-1", 20, POLICY)
    assert trip.run_id == "run-d-180"


def test_the_cooling_period_refuses_later_alerts_without_a_second_notice_then_ends() -> None:
    outage = [breach(s, n) for s, n in ((0, "a"), (1, "b"), (2, "c"), (3, "d"))]
    during = breach(20 * 60, "e")
    after = breach(31 * 60, "f")
    runs = [*outage, during, after]
    cooled = judge_blast_radius(runs, during, 20, POLICY)
    assert not cooled.allowed and not cooled.notify
    assert judge_blast_radius(runs, after, 20, POLICY).allowed
    # a new outage after the cooling is a new trip, told again
    later = [breach(40 * 60 + s, n) for s, n in ((0, "g"), (1, "h"), (2, "i"), (3, "j"))]
    trips = find_trips([*runs, *later], "eu-1", 20, POLICY)
    assert [t.run_id for t in trips] == ["run-d-3", "run-j-2403"]


def test_a_share_of_a_small_cluster_trips_from_two_services_on() -> None:
    policy = BlastRadiusPolicy(max_services=3, max_share=0.5)
    assert find_trips([breach(0, "a")], "eu-1", 1, policy) == ()  # one service never trips
    assert not policy.can_trip(1) and policy.can_trip(2) and policy.can_trip(4)
    [trip] = find_trips([breach(0, "a"), breach(1, "b")], "eu-1", 3, policy)  # 2 of 3 > 50 %
    assert trip.services == ("a", "b")
    assert find_trips([breach(0, "a"), breach(1, "b")], "eu-1", 4, policy) == ()  # 50 %: not more
    assert not BlastRadiusPolicy(max_services=3, max_share=1.0).can_trip(3)


def test_every_run_finds_the_same_trip_whatever_it_has_seen_of_later_runs() -> None:
    runs = [breach(s, n) for s, n in ((0, "a"), (1, "b"), (2, "c"), (3, "d"))]
    # the tripping run sees only what was created before it, and still knows it trips
    assert judge_blast_radius(runs[:4], runs[3], 20, POLICY).notify
    # a run that decided before the trip's run existed saw no trip (its settle wait is what
    # lets the outage's other deliveries in first)
    assert judge_blast_radius(runs[:1], runs[0], 20, POLICY).allowed


@pytest.mark.parametrize(
    "bad",
    [{"max_services": 0}, {"max_share": 0}, {"max_share": 1.5}, {"window_minutes": 0}, {"x": 1}],
)
def test_the_policy_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BlastRadiusPolicy.model_validate(bad)


# --- on the real stack: Alertmanager deliveries → the receiver → runs on the worker ----------

OUTAGE_SERVICES = ("svc-a", "svc-b", "svc-c")
# more than 2 services of the cluster within 2 minutes; the runs wait 6 s for the others
TEST_POLICY = {
    "max_services": 2,
    "max_share": 1.0,
    "window_minutes": 2,
    "cooling_minutes": 2,
    "settle_seconds": 6,
}
GOOD, BAD = "v1.2.3", "v1.2.4"


@dataclass(frozen=True)
class Outage:
    namespace: str
    cluster: str
    receiver_url: str
    token: str


@pytest.fixture
def outage(local_stack: StackState, kube_api: client.ApiClient, namespace: str) -> Iterator[Outage]:
    """Three services of one cluster, each at revision 2 (bad) over 1 (good), known to the
    stack's services file (which the worker reads) for the test, and a receiver whose routes
    undo to the previous revision, with the test's blast-radius policy."""
    apps = client.AppsV1Api(kube_api)
    cluster = f"blast-{uuid.uuid4().hex[:6]}"
    path = Path(os.environ[SERVICES_ENV])
    original = path.read_text()
    services = yaml.safe_load(original)
    for name in OUTAGE_SERVICES:
        services["services"][name] = {
            "environments": {"prod": {"namespace": namespace, "cluster": cluster}},
            "deployment": name,
            "container": "rag-api",
            "image_repository": REPOSITORY,
            "rollout_timeout_seconds": 60,
        }
        build_history(apps, namespace, [GOOD, BAD], name=name)
    block = "alert-receiver-token-blast-radius"
    token = save_token(block)
    shipped = load_config()
    routes = tuple(
        route.model_copy(
            update={
                "parameters": {
                    **route.parameters,
                    "target": "previous",  # without the blast radius, each would roll back
                    "indicator": None,
                    "blast_radius": TEST_POLICY,
                }
            }
        )
        for route in shipped.routes
    )
    path.write_text(yaml.safe_dump(services))
    try:
        config = shipped.model_copy(update={"token_secret": block, "routes": routes})
        with running_receiver(config) as url:
            yield Outage(namespace, cluster, url, token)
    finally:
        path.write_text(original)
        with get_client(sync_client=True) as c:
            for name in OUTAGE_SERVICES:
                with contextlib.suppress(ObjectNotFound):
                    c.delete_global_concurrency_limit_by_name(lock_name(namespace, name))


def alert(outage: Outage, service: str) -> dict[str, Any]:
    body = payload(
        starts_at=datetime.now(UTC).isoformat(),
        service=service,
        namespace=outage.namespace,
        cluster=outage.cluster,
    )
    body["alerts"][0]["annotations"] = {"summary": f"{service} error rate 100% > 5%"}
    return body


def deliver(outage: Outage, body: dict[str, Any]) -> None:
    answer = httpx.post(
        f"{outage.receiver_url}/alerts",
        json=body,
        headers={"Authorization": f"Bearer {outage.token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert all(a["action"] == "started" for a in answer.json()["alerts"]), answer.text


def none_rolled_back_and_one_notice(
    outage: Outage, apps: client.AppsV1Api, before: dict[str, Snapshot], sink: WebhookSink
) -> None:
    ns = outage.namespace
    for name in OUTAGE_SERVICES:
        [run] = eventually(lambda n=name: runs_tagged(target_tag(ns, n)), 30, f"{name}'s run")
        run = wait_final(run.id, timeout=90)
        outcome = read_flow_run_id(run.id).keyed(f"guarded-rollback-{ns}-{name}").data
        assert run.state is not None and run.state.is_completed(), outcome
        assert outcome.startswith(f"# Guarded rollback of {ns}/{name}: blast_radius"), outcome
        assert (
            f"3 services of cluster {outage.cluster} breached within 2 min "
            "(svc-a, svc-b, svc-c)" in outcome
        )
        assert snapshot(apps, ns, name) == before[name]  # nothing changed
    stopped = [
        d.body["text"]
        for d in sink.received(NOTICES_PATH)
        if f"Automatic rollbacks STOPPED for cluster {outage.cluster}" in d.body["text"]
    ]
    assert len(stopped) == 1, stopped
    [text] = stopped
    assert all(f"- {name}" in text for name in OUTAGE_SERVICES), text
    assert "cc @platform (Platform Team: infrastructure: 3 services of cluster" in text
    assert not [d for d in sink.received(NOTICES_PATH) if f"{ns}/svc-" in d.body["text"]]


@pytest.mark.stack
@pytest.mark.timeout(240)
def test_one_alertmanager_group_for_three_services_rolls_none_back_and_tells_once(
    outage: Outage, kube_api: client.ApiClient, alert_sink: WebhookSink
) -> None:
    apps = client.AppsV1Api(kube_api)
    before = {name: snapshot(apps, outage.namespace, name) for name in OUTAGE_SERVICES}
    group = alert(outage, "svc-a")
    group["alerts"] += [alert(outage, name)["alerts"][0] for name in OUTAGE_SERVICES[1:]]
    deliver(outage, group)
    none_rolled_back_and_one_notice(outage, apps, before, alert_sink)


@pytest.mark.stack
@pytest.mark.timeout(240)
def test_separate_deliveries_roll_none_back_and_a_person_still_can_in_the_cooling(
    outage: Outage, kube_api: client.ApiClient, alert_sink: WebhookSink
) -> None:
    apps = client.AppsV1Api(kube_api)
    before = {name: snapshot(apps, outage.namespace, name) for name in OUTAGE_SERVICES}
    for name in OUTAGE_SERVICES:
        deliver(outage, alert(outage, name))
    none_rolled_back_and_one_notice(outage, apps, before, alert_sink)

    # during the cooling period a person's rollback is never blocked, by either flow
    report = kubernetes_rollback("svc-a", skip_confirmation=True, reason=None)
    assert report.changed and snapshot(apps, outage.namespace, "svc-a").image.endswith(GOOD)
    manual = guarded_rollback("svc-b", automatic=False, reason="by hand")
    assert manual.action == "rolled_back", manual.message
    assert snapshot(apps, outage.namespace, "svc-b").image.endswith(GOOD)
