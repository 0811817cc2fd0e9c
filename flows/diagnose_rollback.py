"""The playbook's "Troubleshooting" section as a flow: its four known problems, with evidence.

check inputs → read the Deployment, its pods, events and previous logs, its pull secrets and
the ConfigMaps/Secrets it references (by name, existence only), the registry tag, /health, the
Service, its EndpointSlices and the VirtualService → interpret each problem
(`playbook.diagnosis`) → with `remedy=True` and a stuck rollout only: `kubectl rollout
restart`, wait for the rollout → one markdown report (problem, what was looked at, what was
found, what to do).

Without `remedy` nothing is written to the cluster. The remedy never deletes anything: a
restart makes the Deployment replace its pods, as kubectl does.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from flows.approval import approval_key, ask_a_person, asks_approval
from flows.rollback_steps import one_rollback_at_a_time
from playbook.checks import ProbeResult
from playbook.diagnosis import (
    RESTARTED_AT_ANNOTATION,
    Diagnosis,
    PodFacts,
    Presence,
    RemedyOutcome,
    TagEvidence,
    Workload,
    diagnose_health,
    diagnose_image_pull,
    diagnose_stuck,
    diagnose_traffic,
    restart_patch,
    restart_plan_markdown,
)
from playbook.errors import (
    InvalidInputError,
    NotFoundError,
    RollbackError,
    RollbackRefusedError,
    RolloutFailedError,
)
from playbook.images import version_of
from playbook.post_rollback import load_post_rollback
from playbook.provenance import FIELD_MANAGER
from playbook.services import ServiceConfig, load_service
from playbook.task_results import patch_text
from playbook.thresholds import load_decision_matrix
from playbook.traffic import VirtualServiceState
from tasks.istio import read_virtual_service
from tasks.kubernetes import (
    kubernetes_context,
    read_recent_events,
    read_rollout_history,
    wait_for_rollout,
)
from tasks.probes import probe_health, probe_urls
from tasks.registry import confirm_image_tag
from tasks.workloads import (
    check_objects_exist,
    read_endpoint_slices,
    read_pod_details,
    read_previous_logs,
    read_service,
    read_workload,
    restart_deployment,
)

EVENTS = 10
"""How many of the most recent events of the Deployment, its ReplicaSets and pods to show."""


def _tag(cfg: ServiceConfig, image: str) -> TagEvidence:
    if cfg.registry is None:
        return TagEvidence(
            image, None, "not checked: the service has no registry in the services file"
        )
    tag = version_of(image)
    if not tag:
        return TagEvidence(image, None, "not checked: the image has no tag")
    registry = cfg.registry
    try:
        found = confirm_image_tag(registry, tag)
    except NotFoundError as exc:
        return TagEvidence(image, False, str(exc))
    except RollbackError as exc:
        return TagEvidence(image, None, f"not checked: {exc}")
    return TagEvidence(
        image,
        True,
        f"tag {tag} exists in container package {registry.owner}/{registry.package} "
        f"(version {found.version_id})",
    )


def _health(cfg: ServiceConfig, base_url: str | None) -> ProbeResult | str:
    try:
        url, _ = probe_urls(cfg, base_url)
    except InvalidInputError as exc:
        return f"not checked: {exc}"
    try:
        return probe_health(url, load_post_rollback(load_decision_matrix()).probes)
    except RollbackError as exc:
        return f"not checked, unreachable: {exc}"


def _virtual_service(cfg: ServiceConfig) -> VirtualServiceState | str:
    if cfg.canary is None:
        return "no canary configured"
    name = cfg.canary.virtual_service
    try:
        return read_virtual_service(cfg.namespace, name)
    except NotFoundError:
        return f"VirtualService {cfg.namespace}/{name} does not exist"
    except RollbackError as exc:
        return f"not read: {exc}"


def _restart(
    cfg: ServiceConfig, work: Workload, dry_run: bool
) -> tuple[RemedyOutcome, RollbackError | None]:
    """`kubectl rollout restart`, then wait for the rollout it starts."""
    ns, name = cfg.namespace, cfg.deployment
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # RFC 3339, as kubectl writes it
    action = f"`kubectl -n {ns} rollout restart deployment/{name}`" + (
        " (dry run)" if dry_run else ""
    )
    try:
        with one_rollback_at_a_time(cfg, "diagnose-rollback restart", dry_run, verified=False):
            result = restart_deployment(ns, name, at, dry_run)
            if dry_run:
                return RemedyOutcome(
                    action,
                    False,
                    "would patch the pod template (validated by the API server); changed nothing",
                    True,
                    patch=patch_text(result.patch),
                ), None
            after = wait_for_rollout(ns, name, cfg.rollout_timeout_seconds)
    except RolloutFailedError as exc:
        return RemedyOutcome(
            action, True, f"restarted at {at}; the rollout did not complete: {exc}", False
        ), exc
    except RollbackError as exc:
        return RemedyOutcome(action, False, f"not restarted: {exc}", False), exc
    revision = next((r for r in read_rollout_history(ns, name) if r.number == after.revision), None)
    return RemedyOutcome(
        action,
        True,
        f"restarted at {at} (pod template annotation {RESTARTED_AT_ANNOTATION}, field manager "
        f"{FIELD_MANAGER}; revision {work.status.revision} → {after.revision}): {after.message}",
        True,
        patch=patch_text(restart_patch(at)),
        new_replicaset=revision.replicaset if revision else None,
        new_revision=after.revision,
    ), None


def _approved_restart(
    cfg: ServiceConfig, diagnosis: Diagnosis, work: Workload, pods: tuple[PodFacts, ...]
) -> tuple[RemedyOutcome, RollbackError | None]:
    """The restart a person approved: its dry run is the plan; once approved, the Deployment is
    read again, and restarted only if it is still the one approved and still stuck."""
    plan, error = _restart(cfg, work, dry_run=True)
    if error is not None:
        return plan, error
    action = plan.action.removesuffix(" (dry run)")
    text = restart_plan_markdown(
        diagnosis, plan, pods, cfg.environment, cfg.env.approval_timeout_minutes
    )
    try:
        approved = ask_a_person(
            approval_key(cfg.name), cfg.env.approval_timeout_minutes, text, action
        )
    except RollbackRefusedError as exc:
        return RemedyOutcome(action, False, str(exc), False), exc
    now = read_workload(cfg.namespace, cfg.deployment)
    if now.status.revision != work.status.revision or now.template != work.template:
        message = (
            f"{approved}, but the Deployment changed while waiting (revision "
            f"{work.status.revision} → {now.status.revision}): not restarted; nothing changed. "
            "Diagnose again"
        )
        return RemedyOutcome(action, False, message, False), RollbackRefusedError(message)
    if now.status.complete and not now.status.paused:
        message = (
            f"{approved}, but the rollout completed while waiting ({now.status.message}): "
            "not restarted; nothing changed"
        )
        return RemedyOutcome(action, False, message, True), None
    outcome, error = _restart(cfg, now, dry_run=False)
    return replace(outcome, detail=f"{approved}; {outcome.detail}"), error


@flow(name="diagnose-rollback", log_prints=True)
def diagnose_rollback(
    service: str,
    namespace: str | None = None,
    environment: str | None = None,
    remedy: bool = False,
    dry_run: bool = False,
    skip_confirmation: bool | None = None,
    kubernetes_service: str | None = None,
    base_url: str | None = None,
) -> Diagnosis:
    """Check the playbook's four known problems of a service and report each with its evidence.

    Rollout stuck in "Progressing", image pull errors, health checks failing, traffic going
    to the bad version; a healthy service gets a clean report saying what was checked. The
    run completes whatever it finds; read the artifact (or the returned Diagnosis).

    Args:
        service: A service of the services file (deployments/services.yaml).
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        remedy: When the rollout is stuck, `kubectl rollout restart` the Deployment and wait
            for the rollout (holding the service's rollback lock). Nothing else is remedied,
            and nothing is ever deleted.
        dry_run: With `remedy`, print the restart patch (validated by the API server) and
            change nothing.
        skip_confirmation: With `remedy`, restart without a person's approval; by default
            the environment's (production asks: the restart's plan is published and the run
            pauses for an answer; rejected or unanswered, nothing changes).
        kubernetes_service: The Service in front of the Deployment; the Deployment's name when
            None.
        base_url: Probe `<base_url>/health` instead of the configured health URL.

    Raises:
        InvalidInputError: unknown service or environment, or the configured container is
            not in the Deployment (nothing read beyond that).
        NotFoundError: the Deployment does not exist.
        RolloutFailedError: the remedy's rollout did not complete (after the report).
        RollbackRefusedError: the remedy was refused because another rollback of the service
            runs, or it was not approved (after the report; nothing changed).
    """
    logger = get_run_logger()
    cfg = load_service(service, namespace, environment)
    with kubernetes_context(cfg.kube_context):
        ns, name = cfg.namespace, cfg.deployment

        # look
        checked_at = datetime.now(UTC)
        work = read_workload(ns, name)
        image = work.status.image_of(cfg.container)
        selector = work.status.label_selector
        # the pods of the Deployment's ReplicaSets (another workload's pods that its selector
        # also matches are looked at with the Service)
        pods = tuple(p for p in read_pod_details(ns, selector) if work.owns(p))
        events = read_recent_events(ns, name, selector, limit=EVENTS)
        restarted = tuple(p.name for p in pods if p.restarts and not p.deleting)
        previous = read_previous_logs(ns, restarted, cfg.container)
        template = work.template
        wanted = [("Secret", s) for s in template.pull_secrets] + [
            (r.kind, r.name) for r in template.references()
        ]
        presence = {(p.kind, p.name): p for p in check_objects_exist(ns, wanted)}
        pull_secrets = [presence[("Secret", s)] for s in dict.fromkeys(template.pull_secrets)]
        references: list[Presence] = [
            presence[key] for key in dict.fromkeys((r.kind, r.name) for r in template.references())
        ]
        tag = _tag(cfg, image)
        health = _health(cfg, base_url)
        service_name = kubernetes_service or name
        svc = read_service(ns, service_name)
        service_pods = (
            read_pod_details(ns, svc.label_selector) if svc is not None and svc.selector else ()
        )
        slices = read_endpoint_slices(ns, service_name) if svc is not None else ()
        virtual_service = _virtual_service(cfg)

        # interpret
        diagnosis = Diagnosis(
            service=cfg.name,
            namespace=ns,
            deployment=name,
            checked_at=checked_at,
            revision=work.status.revision,
            image=image,
            rollout=work.status.message,
            problems=(
                diagnose_stuck(work, pods, events, previous),
                diagnose_image_pull(work, pods, pull_secrets, tag),
                diagnose_health(work, pods, references, health),
                diagnose_traffic(
                    work,
                    cfg.container,
                    service_name,
                    svc,
                    pods,
                    service_pods,
                    slices,
                    cfg.canary.canary_destination if cfg.canary else None,
                    virtual_service,
                ),
            ),
            remedy_requested=remedy,
        )
        for problem in diagnosis.found:
            logger.warning("found: %s", problem.title)

        # remedy: only a stuck rollout, only when asked
        error: RollbackError | None = None
        if remedy and diagnosis.stuck:
            outcome, error = (
                _approved_restart(cfg, diagnosis, work, pods)
                if asks_approval(cfg, skip_confirmation, dry_run)
                else _restart(cfg, work, dry_run)
            )
            diagnosis = replace(diagnosis, remedy=outcome)
            logger.info("remedy %s: %s", outcome.action, outcome.detail)

        # report
        create_markdown_artifact(
            diagnosis.to_markdown(),
            key=f"diagnose-rollback-{cfg.name}",
            description=f"{ns}/{name}: {diagnosis.summary()}",
        )
        logger.info("%s/%s: %s", ns, name, diagnosis.summary())
        if error is not None:
            raise error
        return diagnosis
