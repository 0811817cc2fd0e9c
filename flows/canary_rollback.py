"""Procedure 4, canary rollback: all traffic back to stable, canary Deployment scaled to 0.

check the VirtualService and both Deployments → take every path of traffic to the canary
away (routes wholly to it removed, weighted splits sent 100 % to stable, mirrors to it
dropped), found by their destination, in one `test`-guarded JSON patch → scale the canary to 0
→ wait for its pods to go → verify every HTTP route sends 100 % to stable and none mirrors to
the canary, and the stable pods are ready → markdown report.

The playbook scales the canary down first and then removes its route; while the route still
exists that sends the canary's share of requests to a subset without endpoints (503s), so this
flow moves the traffic first and scales down second.
"""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from flows.approval import approve_the_plan
from flows.known_good import stable_is_known_good
from flows.notices import current_trigger, started_by
from flows.rollback_steps import (
    Settled,
    container_version,
    one_rollback_at_a_time,
    publish_dry_run,
    wait_verify_and_report,
)
from playbook.errors import InvalidInputError, NotFoundError
from playbook.incident import ManualReason
from playbook.rollback_report import RollbackReport, Stopwatch
from playbook.rollout import RolloutStatus
from playbook.services import load_service
from playbook.task_results import patch_text
from tasks.istio import read_virtual_service, remove_canary_routes, verify_traffic_to_stable
from tasks.kubernetes import read_deployment_status, scale_deployment, wait_for_rollout


@flow(name="canary-rollback", log_prints=True)
def canary_rollback(
    service: str,
    namespace: str | None = None,
    environment: str | None = None,
    dry_run: bool = False,
    skip_confirmation: bool | None = None,
    reason: ManualReason | None = None,
    comment: str = "",
) -> RollbackReport:
    """Send all of a service's traffic to stable, mirror none to the canary, and scale the
    canary Deployment to 0.

    Args:
        service: A service of the services file with a `canary` section.
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        dry_run: Print the exact JSON patch and scale (validated by the API server), change
            nothing.
        skip_confirmation: Go ahead without a person's approval of the plan; the
            environment's `skip_confirmation` when None (production asks).
        reason: Why a person rolls back: one of the playbook's Manual Rollback Indicators
            (carried into the notices, the audit events and the review).
        comment: A free comment on the reason.

    Raises:
        InvalidInputError: unknown service, or a service without a canary (nothing changed).
        UnsafePatchError: a route cannot be made safe (it splits traffic between the canary
            and another destination, or would not send all traffic to stable); the message
            names it and nothing changed.
        VerificationFailedError: traffic or stable pods are not as expected afterwards.
    """
    logger = get_run_logger()
    cfg = load_service(service, namespace, environment)
    with (
        one_rollback_at_a_time(cfg, "canary-rollback", dry_run),
        started_by(current_trigger(reason, comment)),
    ):
        if cfg.canary is None:
            raise InvalidInputError(f"service {cfg.name!r} has no canary configured")
        canary = cfg.canary
        approval = approve_the_plan(
            cfg,
            skip_confirmation,
            dry_run,
            lambda: canary_rollback.fn(
                service, namespace=namespace, environment=environment, dry_run=True
            ),
        )
        ns = cfg.namespace
        watch = Stopwatch()

        with watch.step("check status"):
            routes_before = read_virtual_service(ns, canary.virtual_service)
            stable = read_deployment_status(ns, cfg.deployment)
            try:
                canary_status: RolloutStatus | None = read_deployment_status(ns, canary.deployment)
            except NotFoundError:
                canary_status = None
        for route in routes_before.routes:
            logger.info("VirtualService %s/%s %s", ns, canary.virtual_service, route)
        with watch.step("check the stable revision is known good"):
            # every request goes to it afterwards: the report says whether it is known good
            stable_known, stable_rows = stable_is_known_good(cfg, cfg.known_good_minutes)

        with watch.step("remove canary route"):
            removal = remove_canary_routes(
                ns,
                canary.virtual_service,
                canary.canary_destination,
                canary.stable_destination,
                dry_run,
            )
        with watch.step("scale canary to 0"):
            scale = scale_deployment(ns, canary.deployment, 0, dry_run, missing_ok=True)

        plan = removal.plan
        details = [f"route http[{c.index}] {c.name or ''}: {c.action}" for c in plan.changes]
        if not scale.exists:
            details.append(f"canary Deployment {canary.deployment} does not exist")
        elif scale.replicas_before != 0:
            details.append(
                f"canary Deployment {canary.deployment}: {scale.replicas_before} → 0 replicas"
            )
        change = None
        if plan.patch or scale.replicas_before:
            change = patch_text(
                {
                    f"VirtualService {ns}/{canary.virtual_service} (JSON patch)": list(plan.patch),
                    f"Deployment {ns}/{canary.deployment} scale": {"spec": {"replicas": 0}}
                    if scale.replicas_before
                    else None,
                }
            )
        nothing = plan.nothing_to_do and scale.replicas_before == 0
        report = RollbackReport(
            flow="canary_rollback",
            service=cfg.name,
            namespace=ns,
            deployment=canary.deployment,
            from_version=container_version(canary_status.images, cfg.container)
            if canary_status
            else None,
            to_version=container_version(stable.images, cfg.container),
            change=change,
            outcome="dry run: " + ("; ".join(details) or "nothing to do"),
            changed=False,
            dry_run=dry_run,
            details=(*details, stable_known, *approval),
            revisions=stable_rows,
        )
        if dry_run:
            return publish_dry_run(
                report,
                watch,
                f"dry run: would change:\n{change}" if change else "dry run: nothing to do",
            )

        def settle() -> Settled:
            if scale.exists:
                with watch.step("wait for canary pods to go"):
                    wait_for_rollout(ns, canary.deployment, cfg.rollout_timeout_seconds)
            with watch.step("verify traffic"):
                routes_after = verify_traffic_to_stable(
                    ns, canary.virtual_service, canary.stable_destination, canary.canary_destination
                )
            return Settled(stable, details=tuple(f"now {r}" for r in routes_after.routes))

        def outcome(settled: Settled) -> str:
            if nothing:
                return (
                    "canary already rolled back: no route to the canary and no canary "
                    "replicas; nothing changed"
                )
            return "canary rolled back: " + "; ".join(details)

        return wait_verify_and_report(
            cfg,
            report,
            watch,
            changed=removal.applied or scale.applied,
            settle=settle,
            outcome=outcome,
        )
