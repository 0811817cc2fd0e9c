"""Blast radius on the Prefect server: do many services of this cluster breach at once?

wait for the outage's other alerts to arrive (the policy's settle time) → read the recent
automatic guarded-rollback runs from the Prefect server → judge (`playbook.blast_radius`) →
the run that tripped it tells the platform team, once, with the list.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from prefect.context import get_run_context
from prefect.logging import get_run_logger

from flows.notices import tell
from playbook.blast_radius import (
    DEFAULT_CLUSTER,
    BlastDecision,
    BlastRadiusPolicy,
    Breach,
    judge_blast_radius,
)
from playbook.errors import InvalidInputError
from playbook.incident import StartedBy
from playbook.notices import Cause
from playbook.services import Environment, ServiceConfig, load_service, load_services
from tasks.prefect_runs import FlowRunFacts, read_recent_flow_runs

GUARDED_FLOW = "guarded-rollback"


def cluster_of(env: Environment) -> str:
    """The cluster an environment runs in: its `cluster` label, else its kube context."""
    return env.cluster or env.context or DEFAULT_CLUSTER


def services_in(cluster: str) -> int:
    """How many services of the services file have an environment in `cluster`."""
    return sum(
        any(cluster_of(env) == cluster for env in service.environments.values())
        for service in load_services().services.values()
    )


def breaches_of(runs: Iterable[FlowRunFacts]) -> list[Breach]:
    """The breaches automatic guarded-rollback runs stand for: a person's run, a dry run, or
    one whose parameters name no configured service stands for none."""
    where: dict[tuple[str | None, ...], tuple[str, str] | None] = {}
    found = []
    for run in runs:
        p = run.parameters
        if p.get("automatic", True) is False or p.get("dry_run") is True:
            continue
        key = tuple(
            None if p.get(k) is None else str(p.get(k))
            for k in ("service", "namespace", "environment", "cluster")
        )
        if key not in where:
            try:
                cfg = load_service(*key)
                where[key] = (cfg.name, cluster_of(cfg.env))
            except InvalidInputError:
                where[key] = None
        resolved = where[key]
        if resolved is not None:
            found.append(Breach(run.id, run.created, *resolved))
    return found


def check_blast_radius(
    cfg: ServiceConfig, policy: BlastRadiusPolicy, trigger: StartedBy
) -> BlastDecision:
    """Whether this automatic rollback may go on, from the runs on the Prefect server.

    Only the run that tripped the stop sends the platform notice; the others say why.
    """
    logger = get_run_logger()
    cluster = cluster_of(cfg.env)
    total = services_in(cluster)
    if not policy.can_trip(total):
        return BlastDecision(
            True, f"cluster {cluster} has {total} service(s): the blast radius cannot trip"
        )
    flow_run = getattr(get_run_context(), "flow_run", None)
    if flow_run is None or flow_run.created is None:
        raise InvalidInputError("the blast radius is decided inside a flow run")
    me = Breach(str(flow_run.id), flow_run.created, cfg.name, cluster)
    wait = (
        me.created + timedelta(seconds=policy.settle_seconds) - datetime.now(UTC)
    ).total_seconds()
    if wait > 0:
        logger.info("waiting %.1f s for other alerts of cluster %s to arrive", wait, cluster)
        time.sleep(wait)
    since = me.created - policy.window - policy.cooling
    runs = read_recent_flow_runs(GUARDED_FLOW, since)
    breaches = breaches_of(runs)
    decision = judge_blast_radius(breaches, me, total, policy)
    if decision.allowed:
        logger.info("%s", decision.message)
        return decision
    logger.warning("%s", decision.message)
    if decision.notify and decision.trip is not None:
        told = _tell_platform(cluster, decision, policy, total, trigger)
        return BlastDecision(
            False, f"{decision.message}; {told}", decision.trip, True, decision.services
        )
    return decision


def _tell_platform(
    cluster: str,
    decision: BlastDecision,
    policy: BlastRadiusPolicy,
    total: int,
    trigger: StartedBy,
) -> str:
    """The one notice of this stop, to the platform team (and the on-call engineer)."""
    assert decision.trip is not None
    values = {
        "cluster": cluster,
        "time": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "count": len(decision.services),
        "services": decision.services,
        "window": f"{policy.window_minutes:g} min",
        "policy": policy.describe(total),
        "until": f"{decision.trip.until.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "reason": trigger.text(),
    }
    evidence = (
        f"{len(decision.services)} services of cluster {cluster} breached at once: "
        + ", ".join(decision.services),
    )
    return tell(
        "automatic-rollbacks-stopped", values, Cause(infrastructure=evidence), trigger
    ).outcome()
