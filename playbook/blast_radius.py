"""Blast radius: when many services of one cluster breach at once, it is not a release. Pure.

A DNS, network or node outage makes every service of a cluster fail together; rolling back
each of them adds a second incident to the first. So when, within `window_minutes`, more
than `max_services` services of one cluster (or, from two services on, more than
`max_share` of the cluster's services) had an automatic rollback started for them, that is a
*trip*: every automatic rollback of that cluster started within the window before it or
within `cooling_minutes` after it is refused, the run that tripped it tells the platform
team once, with the list. A person's rollback is never blocked.

The breaches are what the Prefect server holds: the automatic guarded-rollback runs (alert-
or guard-started), with their service, environment and creation time. The server orders
their creation, so every run that decides sees every run created before it: the trips found
are the same whichever run, delivery or receiver asks, and exactly one run trips each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_CLUSTER = "default"
"""How the cluster of an environment without a `cluster` label or context is named."""


class BlastRadiusPolicy(BaseModel):
    """When automatic rollbacks of a cluster stop, and for how long."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_services: int = Field(default=3, ge=1, le=1000)
    """More services than this breaching within the window is a trip."""
    max_share: float = Field(default=0.5, gt=0, le=1)
    """From two services on, more than this share of the cluster's services is a trip too."""
    window_minutes: float = Field(default=5.0, gt=0, le=24 * 60)
    cooling_minutes: float = Field(default=30.0, ge=0, le=7 * 24 * 60)
    settle_seconds: float = Field(default=20.0, ge=0, le=600)
    """How long after its run was created an automatic rollback waits for the alerts of the
    same outage to arrive (separate Alertmanager deliveries) before it decides."""

    @property
    def window(self) -> timedelta:
        """The window as a duration."""
        return timedelta(minutes=self.window_minutes)

    @property
    def cooling(self) -> timedelta:
        """The cooling period as a duration."""
        return timedelta(minutes=self.cooling_minutes)

    def can_trip(self, services_in_cluster: int) -> bool:
        """Whether a cluster with this many services could trip at all."""
        return self.exceeded(services_in_cluster, services_in_cluster)

    def exceeded(self, breaching: int, services_in_cluster: int) -> bool:
        """Whether `breaching` services of a cluster of `services_in_cluster` is a trip."""
        total = max(breaching, services_in_cluster)
        return breaching > self.max_services or (
            breaching >= 2 and breaching / total > self.max_share
        )

    def describe(self, services_in_cluster: int) -> str:
        """`more than 3 services, or more than 50 % of its 8 services, within 5 min`."""
        return (
            f"more than {self.max_services} services, or more than {self.max_share * 100:g} % "
            f"of its {services_in_cluster} services, within {self.window_minutes:g} min"
        )


@dataclass(frozen=True)
class Breach:
    """One automatic rollback run: which service of which cluster, created when."""

    run_id: str
    created: datetime
    service: str
    cluster: str


@dataclass(frozen=True)
class Trip:
    """The moment a cluster's automatic rollbacks stopped, and until when."""

    cluster: str
    at: datetime
    run_id: str
    """The run whose breach tripped it: it, and only it, tells the platform team."""
    services: tuple[str, ...]
    """The services that had breached within the window when it tripped."""
    until: datetime

    def covers(self, at: datetime, window: timedelta) -> bool:
        """Whether a breach at `at` belongs to this trip (its window or its cooling)."""
        return self.at - window <= at <= self.until


def _order(breach: Breach) -> tuple[datetime, str]:
    return breach.created, breach.run_id


def find_trips(
    breaches: Iterable[Breach], cluster: str, services_in_cluster: int, policy: BlastRadiusPolicy
) -> tuple[Trip, ...]:
    """Every trip of `cluster`, in time order, from the breaches in creation order."""
    ordered = sorted((b for b in breaches if b.cluster == cluster), key=_order)
    trips: list[Trip] = []
    for index, breach in enumerate(ordered):
        if trips and breach.created <= trips[-1].until:
            continue  # cooling: no new trip, and no second notice
        recent = [b for b in ordered[: index + 1] if b.created >= breach.created - policy.window]
        services = tuple(sorted({b.service for b in recent}))
        if policy.exceeded(len(services), services_in_cluster):
            until = breach.created + policy.cooling
            trips.append(Trip(cluster, breach.created, breach.run_id, services, until))
    return tuple(trips)


@dataclass(frozen=True)
class BlastDecision:
    """Whether this automatic rollback may go on, and if not whether it tells the platform."""

    allowed: bool
    message: str
    trip: Trip | None = None
    notify: bool = False
    services: tuple[str, ...] = ()
    """Every service that breached within the trip's window and cooling so far."""


def judge_blast_radius(
    breaches: Sequence[Breach],
    me: Breach,
    services_in_cluster: int,
    policy: BlastRadiusPolicy,
) -> BlastDecision:
    """Whether the automatic rollback of breach `me` may go on (`me` is among `breaches`)."""
    known = [b for b in breaches if b.run_id != me.run_id] + [me]
    trips = find_trips(known, me.cluster, services_in_cluster, policy)
    trip = next((t for t in trips if t.covers(me.created, policy.window)), None)
    if trip is None:
        recent = {
            b.service
            for b in known
            if b.cluster == me.cluster and me.created - policy.window <= b.created
        }
        return BlastDecision(
            True,
            f"{len(recent)} service(s) of cluster {me.cluster} breached within "
            f"{policy.window_minutes:g} min ({', '.join(sorted(recent))}): not "
            f"{policy.describe(services_in_cluster)}",
        )
    services = tuple(
        sorted(
            {
                b.service
                for b in known
                if b.cluster == me.cluster and trip.covers(b.created, policy.window)
            }
        )
    )
    return BlastDecision(
        False,
        f"not rolled back: {len(trip.services)} services of cluster {me.cluster} breached within "
        f"{policy.window_minutes:g} min ({', '.join(trip.services)}), "
        f"{policy.describe(services_in_cluster)}: when many services fail together the cause "
        "is almost never a release (DNS, network, a node), so automatic rollbacks of cluster "
        f"{me.cluster} stop until {trip.until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC; the "
        "platform team is told once; a person can still roll back from the Prefect UI",
        trip,
        notify=trip.run_id == me.run_id,
        services=services,
    )
