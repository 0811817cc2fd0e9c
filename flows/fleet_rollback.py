"""Many services rolled back in one incident: each by Procedure 2, side by side.

check inputs (every service known, one environment each, or the Deployments a label selector
matches in the cluster) → where an environment asks, one approval of the whole fleet's plan
(each service's own dry run) → each service's `kubernetes-rollback` as a subflow, at most
`max_parallel` at once, each under its own lock, the run's progress artifact counting the
services done → one summary table (service, from, to, outcome, seconds). One service failing
or refused does not stop the others; the run fails at the end, naming them.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Annotated, Any

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.logging import get_run_logger
from pydantic import Field

from flows.approval import approval_key, ask_a_person, asks_approval
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import InvalidInputError, RollbackError
from playbook.fleet import FleetReport, FleetRow
from playbook.incident import ManualReason
from playbook.rollback_report import RollbackReport
from playbook.services import ServiceConfig, load_service, load_services
from tasks.kubernetes import kubernetes_context, list_deployment_names, without_rollout_progress
from tasks.prefect_runs import subflows_share_root

FLEET_KEY = "fleet-rollback"
PROGRESS_INTERVAL = 1.0
"""Seconds between updates of the fleet's progress artifact (each is a Prefect API call)."""


def choose_services(
    services: list[str] | None, selector: str | None, environment: str | None
) -> tuple[ServiceConfig, ...]:
    """The services to roll back, each in its environment: the named ones, or those of the
    services file whose Deployment matches `selector` in the cluster now.

    Raises:
        InvalidInputError: neither or both of `services` and `selector`; an unknown service or
            environment; nothing matches (nothing was changed).
    """
    if bool(services) == bool(selector):
        raise InvalidInputError("give either services (a list of names) or selector, not both")
    if services:
        if len(set(services)) != len(services):
            raise InvalidInputError(f"a service is named twice in {services}")
        return tuple(load_service(name, environment=environment) for name in services)
    assert selector is not None
    chosen = []
    for name, service in load_services().services.items():
        if environment is not None and environment not in service.environments:
            continue
        cfg = load_service(name, environment=environment)
        with kubernetes_context(cfg.kube_context):
            matching = list_deployment_names(cfg.namespace, selector)
        if cfg.deployment in matching:
            chosen.append(cfg)
    if not chosen:
        where = f" in environment {environment!r}" if environment else ""
        raise InvalidInputError(f"no service's Deployment matches {selector!r}{where}")
    return tuple(chosen)


def _row(cfg: ServiceConfig, call: Callable[[], RollbackReport]) -> FleetRow:
    """One service's rollback, its failure caught: a row either way."""
    started = time.monotonic()
    try:
        report = call()
    except Exception as exc:  # one service's failure, whatever it is, never stops the others
        what = str(exc) if isinstance(exc, RollbackError) else f"{type(exc).__name__}: {exc}"
        return FleetRow(
            cfg.name, cfg.environment, cfg.namespace, what, False, time.monotonic() - started
        )
    return FleetRow(
        cfg.name,
        cfg.environment,
        cfg.namespace,
        report.outcome,
        True,
        time.monotonic() - started,
        report.from_version,
        report.to_version,
    )


def _each(
    targets: tuple[ServiceConfig, ...],
    max_parallel: int,
    rollback: Callable[[ServiceConfig], RollbackReport],
    doing: str,
) -> tuple[FleetRow, ...]:
    """`rollback` of every target, `max_parallel` at once, in their order; the run's progress
    artifact says how many are `doing` (updated at most once a second, and at the end)."""
    progress: Any = create_progress_artifact(
        0.0, description=f"{doing}: 0 of {len(targets)} services done"
    )
    shown = time.monotonic()
    with (
        subflows_share_root(),
        without_rollout_progress(),
        ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="fleet") as pool,
    ):
        futures = [
            # each subflow runs in its own copy of this run's context: it is a child of it
            pool.submit(contextvars.copy_context().run, _row, cfg, lambda c=cfg: rollback(c))
            for cfg in targets
        ]
        for done, _ in enumerate(as_completed(futures), start=1):
            if done == len(futures) or time.monotonic() - shown >= PROGRESS_INTERVAL:
                update_progress_artifact(
                    progress,
                    100.0 * done / len(futures),
                    description=f"{doing}: {done} of {len(futures)} services done",
                )
                shown = time.monotonic()
        return tuple(f.result() for f in futures)


@flow(name="fleet-rollback", log_prints=True)
def fleet_rollback(
    services: list[str] | None = None,
    selector: str | None = None,
    environment: str | None = None,
    max_parallel: Annotated[int, Field(ge=1, le=50)] = 10,
    dry_run: bool = False,
    skip_confirmation: bool | None = None,
    reason: ManualReason | None = None,
    comment: str = "",
) -> FleetReport:
    """Roll back many services in one incident, each to its previous revision (Procedure 2).

    Args:
        services: The services to roll back (names of the services file).
        selector: Instead of `services`: every service whose Deployment matches this label
            selector (`kubectl -l`) in its environment's namespace now.
        environment: The environment of every service (its default one when None).
        max_parallel: How many rollbacks run at once.
        dry_run: Every service's exact patch, validated by the API server; nothing changes.
        skip_confirmation: Go ahead without a person's approval of the whole plan; by
            default an environment's own setting (production asks, once for the fleet).
        reason: Why a person rolls back (one of the playbook's Manual Rollback Indicators).
        comment: A free comment on the reason.

    Raises:
        InvalidInputError: bad input (nothing changed).
        RollbackRefusedError: the plan was not approved (nothing changed).
        RollbackError: one or more services failed; the others were rolled back (the table
            says which).
    """
    logger = get_run_logger()
    started = time.monotonic()
    targets = choose_services(services, selector, environment)
    logger.info("fleet of %d: %s", len(targets), ", ".join(c.name for c in targets))

    def undo(cfg: ServiceConfig, plan_only: bool) -> RollbackReport:
        return kubernetes_rollback(
            service=cfg.name,
            environment=cfg.environment,
            dry_run=plan_only,
            skip_confirmation=True,  # the fleet asks once, below
            reason=reason,
            comment=comment,
        )

    if any(asks_approval(cfg, skip_confirmation, dry_run) for cfg in targets):
        planned = _each(targets, max_parallel, lambda c: undo(c, True), "plan for approval")
        plan = FleetReport(planned, True, 0.0)
        if plan.failed:
            _publish(plan)
            raise InvalidInputError(f"the fleet's plan failed, nothing changed: {plan.summary()}")
        timeout = min(cfg.env.approval_timeout_minutes for cfg in targets)
        approved = ask_a_person(
            approval_key(FLEET_KEY), timeout, plan.to_markdown(), plan.summary()
        )
        logger.info("%s", approved)
    doing = "dry run" if dry_run else "rollback"
    rows = _each(targets, max_parallel, lambda c: undo(c, dry_run), doing)
    report = FleetReport(rows, dry_run, time.monotonic() - started)
    _publish(report)
    logger.info("%s", report.summary())
    if report.failed:
        raise RollbackError(report.summary())
    return report


def _publish(report: FleetReport) -> None:
    create_markdown_artifact(
        report.to_markdown(), key=FLEET_KEY, description=report.summary()[:500]
    )
