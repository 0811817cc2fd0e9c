"""Blast radius at its edges, from typed data: a breach exactly a window before the trip or
exactly at the end of the cooling belongs to the trip; the refusal names only the cluster's
own services, carries the trip the platform team is told of, and gives its time in UTC
whatever the worker's local time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from playbook.blast_radius import BlastRadiusPolicy, Breach, find_trips, judge_blast_radius

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
CLUSTER = "eu-west-1"
SERVICES_IN_CLUSTER = 20
POLICY = BlastRadiusPolicy()  # more than 3 services within 5 min; 30 min of cooling


def breach(seconds: float, service: str, cluster: str = CLUSTER) -> Breach:
    """The automatic rollback run an alert of `service` started, `seconds` after T0."""
    return Breach(f"run-{service}-{seconds:g}", T0 + timedelta(seconds=seconds), service, cluster)


def judge(seen: list[Breach], me: Breach) -> tuple[bool, bool, tuple[str, ...]]:
    decision = judge_blast_radius(seen, me, SERVICES_IN_CLUSTER, POLICY)
    return decision.allowed, decision.notify, decision.services


# four services of one cluster within exactly 5 minutes: the first at the window's very start
OUTAGE = [breach(0, "checkout"), breach(60, "payments"), breach(120, "search"), breach(300, "cart")]


def test_a_breach_exactly_a_window_before_counts_toward_the_trip_and_is_listed() -> None:
    [trip] = find_trips(OUTAGE, CLUSTER, SERVICES_IN_CLUSTER, POLICY)
    assert trip.run_id == "run-cart-300"
    assert trip.services == ("cart", "checkout", "payments", "search")
    assert judge(OUTAGE, OUTAGE[-1]) == (False, True, trip.services)


def test_a_breach_exactly_a_window_before_is_counted_when_nothing_trips() -> None:
    runs = [breach(0, "checkout"), breach(300, "payments")]
    decision = judge_blast_radius(runs, runs[1], SERVICES_IN_CLUSTER, POLICY)
    assert decision.allowed
    assert decision.message == (
        "2 service(s) of cluster eu-west-1 breached within 5 min (checkout, payments): not more "
        "than 3 services, or more than 50 % of its 20 services, within 5 min"
    )


def test_the_refusal_that_trips_carries_its_trip_and_names_only_its_clusters_services() -> None:
    elsewhere = breach(200, "checkout-us", cluster="us-east-1")  # another cluster, same minutes
    runs = [*OUTAGE[:3], elsewhere, OUTAGE[3]]
    [trip] = find_trips(runs, CLUSTER, SERVICES_IN_CLUSTER, POLICY)
    assert trip.cluster == CLUSTER
    decision = judge_blast_radius(runs, OUTAGE[3], SERVICES_IN_CLUSTER, POLICY)
    assert decision.allowed is False and decision.notify
    # the flow tells the platform team only with the trip (its end is in the notice)
    assert decision.trip == trip and decision.trip.until == T0 + timedelta(minutes=35)
    assert decision.services == ("cart", "checkout", "payments", "search")


@pytest.mark.usefixtures("tokyo")
def test_the_refusal_says_in_full_why_and_until_when_in_utc_whatever_the_local_zone() -> None:
    assert datetime.fromtimestamp(0).astimezone().utcoffset() == timedelta(hours=9)
    decision = judge_blast_radius(OUTAGE, OUTAGE[0], SERVICES_IN_CLUSTER, POLICY)
    assert decision.message == (
        "not rolled back: 4 services of cluster eu-west-1 breached within 5 min (cart, checkout, "
        "payments, search), more than 3 services, or more than 50 % of its 20 services, within "
        "5 min: when many services fail together the cause is almost never a release (DNS, "
        "network, a node), so automatic rollbacks of cluster eu-west-1 stop until 2026-12-02 "
        "03:35:00 UTC; the platform team is told once; a person can still roll back from the "
        "Prefect UI"
    )


def test_a_breach_exactly_when_the_cooling_ends_is_refused_and_trips_nothing_new() -> None:
    # the trip at 03:05 cools until 03:35; the outage goes on: three more services in the
    # cooling, one exactly at its end, one a minute after it
    runs = [
        *OUTAGE,
        breach(1800, "cart-worker"),
        breach(1860, "inventory"),
        breach(1920, "pricing"),
        breach(2100, "reviews"),  # 03:35:00, exactly the end of the cooling
        breach(2160, "shipping"),  # 03:36:00
    ]
    at_end, after = runs[-2], runs[-1]
    # the run at the cooling's end sees only the runs created before it: still refused
    assert judge(runs[:-1], at_end)[:2] == (False, False)
    # it is not a new trip, so the next outage's run after the cooling trips again, told once
    trips = find_trips(runs, CLUSTER, SERVICES_IN_CLUSTER, POLICY)
    assert [t.run_id for t in trips] == ["run-cart-300", "run-shipping-2160"]
    assert judge(runs, after)[:2] == (False, True)
