"""Procedure 2, manual Kubernetes rollback: `kubectl rollout undo [--to-revision]`, as a flow.

check status and history → undo (client-side, like kubectl) → wait for the rollout → verify
pods, events and logs → markdown report.
"""

from __future__ import annotations

from typing import Annotated, Literal

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import Field

from flows.approval import approve_the_plan
from flows.known_good import read_known_good, target_is_known_good
from flows.notices import current_trigger, started_by
from flows.rollback_steps import (
    Evidence,
    Settled,
    container_version,
    keep_gitops_from_reverting,
    one_rollback_at_a_time,
    publish_dry_run,
    wait_verify_and_report,
)
from playbook.errors import InvalidInputError, RollbackRefusedError
from playbook.incident import ManualReason
from playbook.known_good import KnownGoodChoice
from playbook.rollback_report import RollbackReport, Stopwatch
from playbook.services import load_service
from playbook.task_results import patch_text
from tasks.boundary import as_is
from tasks.kubernetes import (
    read_rollout,
    undo_deployment,
    wait_for_rollout,
)
from tasks.prefect_runs import root_flow_run_id


@flow(name="kubernetes-rollback", log_prints=True)
def kubernetes_rollback(
    service: str,
    namespace: str | None = None,
    environment: str | None = None,
    to_revision: int | None = None,
    dry_run: bool = False,
    suspend_gitops: bool = False,
    force: bool = False,
    skip_confirmation: bool | None = None,
    reason: ManualReason | None = None,
    comment: str = "",
    target: Literal["previous", "last-good"] = "previous",
    known_good_minutes: Annotated[float, Field(gt=0, le=30 * 24 * 60)] | None = None,
) -> RollbackReport:
    """Roll a service's Deployment back to its previous revision, to `to_revision`, or to
    the last revision known to be good (`target="last-good"`).

    Either way the report has every revision's table (version, when it was current, its own
    error rate and P99 from Prometheus, verdict) and says whether the target is known good.

    Repeating is safe: a second attempt of the same flow run (a Prefect retry, a resubmitted
    run) finds its change already made and only waits and verifies. A new run without
    `to_revision` soon after this tool rolled the Deployment back is refused, because undoing
    again would restore the version that rollback removed.

    Args:
        service: A service of the services file (deployments/services.yaml).
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        to_revision: The revision to return to; the previous one when None.
        dry_run: Print the exact patch (validated by the API server) and change nothing.
        force: Undo to the previous revision even within the service's `repeat_guard_minutes`
            after this tool's last rollback of it (which restores the version it removed).
        suspend_gitops: When an Argo CD Application or Flux Kustomization/HelmRelease would put
            the old version back, suspend it first (it is never resumed by this flow).
        skip_confirmation: Go ahead without a person's approval of the plan; the
            environment's `skip_confirmation` when None (production asks).
        reason: Why a person rolls back: one of the playbook's Manual Rollback Indicators
            (carried into the notices, the audit events and the review).
        comment: A free comment on the reason.
        target: `previous` (kubectl's meaning, or `to_revision`) or `last-good`: the newest
            earlier revision that was current for at least `known_good_minutes` while its
            version's error rate and P99 stayed under their critical thresholds; refused when
            none is (nothing changed).
        known_good_minutes: How long a revision must have been current to be known good;
            the service's `known_good_minutes` (30 by default) when None.

    Raises:
        InvalidInputError: unknown service, or a revision that does not exist (nothing changed).
        RollbackRefusedError: another rollback of the service runs, or this tool rolled it back
            within `repeat_guard_minutes` and neither `to_revision` nor `force` is given, or
            `last-good` finds no earlier revision known to be good (nothing changed).
        RolloutFailedError: the rollout exceeded its deadline; names the pods' waiting reasons.
        VerificationFailedError: the rollout finished but pods are not ready.
    """
    logger = get_run_logger()
    cfg = load_service(service, namespace, environment)
    if target == "last-good" and to_revision is not None:
        raise InvalidInputError("give either to_revision or target='last-good', not both")
    with (
        one_rollback_at_a_time(cfg, "kubernetes-rollback", dry_run),
        started_by(current_trigger(reason, comment)),
    ):
        approval = approve_the_plan(
            cfg,
            skip_confirmation,
            dry_run,
            lambda: kubernetes_rollback.fn(
                service,
                namespace=namespace,
                environment=environment,
                to_revision=to_revision,
                dry_run=True,
                suspend_gitops=suspend_gitops,
                force=force,
                target=target,
                known_good_minutes=known_good_minutes,
            ),
        )
        ns, name = cfg.namespace, cfg.deployment
        watch = Stopwatch()

        with watch.step("check status and history"):
            snapshot = read_rollout(ns, name)  # one read: status, history, owner and plan
            before, history = snapshot.status(), snapshot.history()
        logger.info(
            "Deployment %s/%s at revision %s, %s/%s ready; history: %s",
            ns,
            name,
            before.revision,
            before.ready_replicas,
            before.desired_replicas,
            "; ".join(f"{r.number}: {dict(r.images).get(cfg.container)}" for r in history),
        )

        minutes = known_good_minutes or cfg.known_good_minutes
        known: KnownGoodChoice | None = None
        if target == "last-good":
            with watch.step("find the last known-good revision"):
                known, unknown_why = read_known_good(cfg, minutes, required=True, snapshot=snapshot)
            if known is None or known.target is None:
                raise RollbackRefusedError(
                    f"not rolled back: {known.message if known else unknown_why}"
                )
            to_revision = known.target.span.number
            logger.info("%s: rolling back to it", known.message)

        with watch.step("check GitOps owner"):
            gitops = keep_gitops_from_reverting(cfg, suspend_gitops, dry_run, snapshot.deployment)
        with watch.step("undo"):
            undo = undo_deployment(
                ns,
                name,
                to_revision,
                dry_run,
                intent_id=None if dry_run else root_flow_run_id(),
                force=force,
                repeat_guard_minutes=cfg.repeat_guard_minutes,
                snapshot=as_is(snapshot),
            )
        plan = undo.plan

        def evidence() -> Evidence:
            """Whether the plan's target is known good, with the revisions' table."""
            found, why = (
                (known, "")
                if known is not None
                else read_known_good(cfg, minutes, required=False, snapshot=snapshot)
            )
            line = target_is_known_good(found, why, revision=plan.target.number)
            return line, tuple(found.rows()) if found else ()

        # a person's rollback does not wait for Prometheus: only the report needs the table,
        # read while the change settles (a dry run and `last-good` have it now)
        now = target == "last-good" or dry_run
        line, rows = evidence() if now else ("", ())
        change = patch_text(list(plan.patch)) if plan.patch else None
        report = RollbackReport(
            flow="kubernetes_rollback",
            service=cfg.name,
            namespace=ns,
            deployment=name,
            from_version=container_version(before.images, cfg.container),
            to_version=container_version(plan.target.images, cfg.container),
            from_revision=plan.current_revision,
            to_revision=plan.target.number,
            change=change,
            outcome=f"dry run: {plan.summary}",
            changed=False,
            dry_run=dry_run,
            details=(
                *((line,) if now else ()),
                *gitops,
                *(f"Warning: {w}" for w in undo.config_warnings),
                *approval,
            ),
            revisions=rows,
        )
        if dry_run:
            text = f"dry run: would {plan.summary}" if not plan.already_current else plan.summary
            if change:
                text += f"\nJSON patch for Deployment {ns}/{name}:\n{change}"
            return publish_dry_run(report, watch, text)

        def settle() -> Settled:
            with watch.step("wait for rollout"):
                after = wait_for_rollout(ns, name, cfg.rollout_timeout_seconds)
            return Settled(after, new_revision=after.revision)

        def outcome(settled: Settled) -> str:
            if plan.already_current:
                return plan.summary
            return (
                f"rolled back from revision {plan.current_revision} to revision "
                f"{plan.target.number} (now revision {settled.new_revision})"
                + (" by an earlier attempt of this flow run" if undo.resumed else "")
            )

        return wait_verify_and_report(
            cfg,
            report,
            watch,
            changed=undo.applied,
            settle=settle,
            outcome=outcome,
            evidence=None if now else evidence,
        )
