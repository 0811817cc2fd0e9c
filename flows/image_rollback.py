"""Procedure 3, container registry rollback: `kubectl set image` to a tag the registry has.

validate the version → check status → confirm the tag in the registry → set image → wait for
the rollout → verify pods → markdown report.
"""

from __future__ import annotations

from prefect import flow
from prefect.logging import get_run_logger

from flows.approval import approve_the_plan
from flows.known_good import read_known_good, target_is_known_good
from flows.notices import current_trigger, started_by
from flows.rollback_steps import (
    Settled,
    keep_gitops_from_reverting,
    one_rollback_at_a_time,
    publish_dry_run,
    wait_verify_and_report,
)
from playbook.images import parse_image, set_image_patch, validate_version, version_of
from playbook.incident import ManualReason
from playbook.rollback_report import RollbackReport, Stopwatch
from playbook.services import load_service
from playbook.task_results import patch_text
from tasks.kubernetes import read_deployment_status, set_deployment_image, wait_for_rollout
from tasks.registry import confirm_image_tag


@flow(name="image-rollback", log_prints=True)
def image_rollback(
    service: str,
    target_version: str,
    namespace: str | None = None,
    environment: str | None = None,
    container: str | None = None,
    dry_run: bool = False,
    suspend_gitops: bool = False,
    skip_confirmation: bool | None = None,
    reason: ManualReason | None = None,
    comment: str = "",
) -> RollbackReport:
    """Set a service's container image to `target_version` after confirming the tag exists.

    The report says whether an earlier revision that ran that version is known good (see
    `kubernetes_rollback`'s `target`) and carries every revision's table.

    Args:
        service: A service of the services file (deployments/services.yaml).
        target_version: The image tag to run, e.g. v1.2.3.
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        container: Overrides the service's container.
        dry_run: Print the exact patch (validated by the API server) and change nothing.
        suspend_gitops: When an Argo CD Application or Flux Kustomization/HelmRelease would put
            the old version back, suspend it first (it is never resumed by this flow).
        skip_confirmation: Go ahead without a person's approval of the plan; the
            environment's `skip_confirmation` when None (production asks).
        reason: Why a person rolls back: one of the playbook's Manual Rollback Indicators
            (carried into the notices, the audit events and the review).
        comment: A free comment on the reason.

    Raises:
        InvalidInputError: unknown service or container, malformed version (nothing changed).
        NotFoundError: the registry has no such tag (nothing changed).
        RolloutFailedError: the rollout failed; the message names the pods' waiting reasons.
    """
    logger = get_run_logger()
    cfg = load_service(service, namespace, environment)
    with (
        one_rollback_at_a_time(cfg, "image-rollback", dry_run),
        started_by(current_trigger(reason, comment)),
    ):
        version = validate_version(target_version)
        approval = approve_the_plan(
            cfg,
            skip_confirmation,
            dry_run,
            lambda: image_rollback.fn(
                service,
                version,
                namespace=namespace,
                environment=environment,
                container=container,
                dry_run=True,
                suspend_gitops=suspend_gitops,
            ),
        )
        ns, name = cfg.namespace, cfg.deployment
        container_name = container or cfg.container
        watch = Stopwatch()

        with watch.step("check status"):
            before = read_deployment_status(ns, name)
        with watch.step("find the last known-good revision"):
            known, unknown_why = read_known_good(
                cfg.model_copy(update={"container": container_name}),
                cfg.known_good_minutes,
                required=False,
            )
        with watch.step("check GitOps owner"):
            gitops = keep_gitops_from_reverting(cfg, suspend_gitops, dry_run)
        current_image = before.image_of(container_name)
        image = f"{cfg.image_repository}:{version}"
        if parse_image(current_image).repository != cfg.image_repository:
            logger.warning(
                "container %s runs %s, outside the configured repository %s",
                container_name,
                current_image,
                cfg.image_repository,
            )
        already = current_image == image
        change_cause = f"image_rollback to {version} (Prefect flow)"
        report = RollbackReport(
            flow="image_rollback",
            service=cfg.name,
            namespace=ns,
            deployment=name,
            from_version=version_of(current_image),
            to_version=version,
            from_revision=before.revision,
            change=None
            if already
            else patch_text(set_image_patch(container_name, image, change_cause)),
            outcome=f"dry run: would set {container_name}={image}",
            changed=False,
            dry_run=dry_run,
            details=(
                target_is_known_good(known, unknown_why, version=version),
                *gitops,
                *approval,
            ),
            revisions=tuple(known.rows()) if known else (),
        )

        if already:
            logger.info("container %s already runs %s; nothing to change", container_name, image)
        else:
            with watch.step("confirm tag in registry"):
                if cfg.registry is None:
                    logger.warning(
                        "no registry configured for %s; tag %s not checked", cfg.name, version
                    )
                else:
                    confirm_image_tag(cfg.registry, version)
        with watch.step("set image"):
            change = set_deployment_image(ns, name, container_name, image, change_cause, dry_run)
        if dry_run:
            text = (
                f"dry run: strategic-merge patch for Deployment {ns}/{name}:\n{report.change}"
                if report.change
                else f"dry run: container {container_name} already runs {image}; nothing to change"
            )
            return publish_dry_run(report, watch, text)

        def settle() -> Settled:
            with watch.step("wait for rollout"):
                after = wait_for_rollout(ns, name, cfg.rollout_timeout_seconds)
            return Settled(after, new_revision=after.revision, to_revision=after.revision)

        def outcome(settled: Settled) -> str:
            if change.already_current:
                return f"{container_name} already runs {image}; nothing changed"
            return f"set {container_name} from {current_image} to {image} (revision {settled.new_revision})"

        return wait_verify_and_report(
            cfg, report, watch, changed=change.applied, settle=settle, outcome=outcome
        )
