"""Steps every rollback procedure shares, in the order it takes them.

one rollback of a service at a time (its lock, in its environment's cluster) → keep a GitOps
owner from reverting the change → (the procedure's own check and change) → the shared ending:
wait for the change to settle, verify the serving pods, then the service (the playbook's
checklist), schedule the post-rollback monitor, publish the report (`wait_verify_and_report`;
a dry run ends in `publish_dry_run`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from flows.notices import current_trigger, tell
from flows.verify_rollback import check_the_service
from playbook.checks import Checklist
from playbook.errors import (
    RollbackError,
    RollbackRefusedError,
    TransientError,
    VerificationFailedError,
)
from playbook.guard import lifetime_window
from playbook.images import validate_version, version_of
from playbook.incident import StartedBy, audit_payload, deployment_resource
from playbook.names import lock_name
from playbook.notices import Cause, infrastructure_evidence
from playbook.post_rollback import load_post_rollback
from playbook.rollback_report import RollbackReport, Stopwatch, unready_pods
from playbook.rollout import PodState, RolloutStatus
from playbook.services import ServiceConfig
from playbook.task_results import EventRecord, LogScan
from playbook.thresholds import load_decision_matrix
from tasks.audit import record_change
from tasks.boundary import as_is
from tasks.concurrency import hold_service_lock
from tasks.followup import schedule_post_rollback_monitor
from tasks.gitops import read_gitops_owner, suspend_gitops_owner
from tasks.kubernetes import (
    kubernetes_context,
    list_pods,
    read_deployment_status,
    read_error_logs,
    read_recent_events,
)
from tasks.prefect_runs import run_link
from tasks.probes import probe_urls


class _NoThreadTimeoutNote(logging.Filter):
    """Drops Prefect's note, on every task run in a thread (the reads side by side, each
    service of a fleet), that a task's timeout cannot interrupt a blocking call there: every
    Kubernetes and Prometheus call of the tasks has its own request timeout, the task's is
    only a backstop, and the note on every such step would bury the warnings that matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in str(record.msg)


logging.getLogger("prefect.task_runs").addFilter(_NoThreadTimeoutNote())


@contextlib.contextmanager
def one_rollback_at_a_time(
    cfg: ServiceConfig, what: str, dry_run: bool, verified: bool = True
) -> Iterator[None]:
    """Act in the service's environment (its kubeconfig context) and hold the service's lock
    while changing it; refuse at once if another rollback holds it.

    A dry run changes nothing and takes no lock. A rollback run inside `guarded_rollback`,
    which already holds the lock, goes on. A change the playbook's checklist follows
    (`verified`) needs the service's /health and /version URLs: without them it is refused
    before anything changes.

    Raises:
        RollbackRefusedError: another rollback of the service is in progress (nothing changed).
        InvalidInputError: the checklist is on and the service has no URLs to probe.
    """
    with kubernetes_context(cfg.kube_context):
        if dry_run:
            yield
            return
        if (
            verified
            and load_post_rollback(load_decision_matrix()).verification.after_rollback.enabled
        ):
            probe_urls(cfg)  # the checklist after the change probes these
        name = lock_name(cfg.namespace, cfg.name)
        with hold_service_lock(name, f"{what} of {cfg.namespace}/{cfg.name}", create=True):
            yield


T = TypeVar("T")


class Background(Generic[T]):
    """A read that goes on beside the flow's next steps: a thread with a copy of the run's
    context (its logger, its task runs). `result()` waits for it; a failure of it becomes
    `on_error`'s value, so a read the report only shows never fails the change."""

    def __init__(self, read: Callable[[], T], on_error: Callable[[Exception], T]) -> None:
        self._on_error = on_error
        pool = ThreadPoolExecutor(max_workers=1)
        self._future = pool.submit(contextvars.copy_context().run, read)
        pool.shutdown(wait=False)

    def result(self) -> T:
        try:
            return self._future.result()
        except Exception as exc:
            instead = self._on_error(exc)
            get_run_logger().warning("%s", instead)
            return instead


def keep_gitops_from_reverting(
    cfg: ServiceConfig, suspend: bool, dry_run: bool, deployment: dict[str, Any] | None = None
) -> tuple[str, ...]:
    """Before any change: a GitOps owner (Argo CD, Flux) that would put the bad version back
    is suspended when a person asked for it (`suspend`), else the rollback is refused.

    Returns the lines the report carries (what owns the Deployment, what was suspended, and
    the action item to resume it).

    Raises:
        RollbackRefusedError: an owner would revert the rollback and `suspend` is False;
            nothing was changed.
    """
    logger = get_run_logger()
    state = read_gitops_owner(
        cfg.namespace, cfg.deployment, cfg.argocd_namespace, as_is(deployment)
    )
    if state is None:
        return ()
    if not state.reverts:
        line = f"{state.owner} owns the Deployment; {state.why}, so it does not revert this"
        logger.info("%s", line)
        return (line,)
    if not suspend:
        raise RollbackRefusedError(state.refusal())
    if dry_run:
        return (f"dry run: would suspend {state.owner} ({state.why}) before rolling back",)
    if suspend_gitops_owner(state.owner):
        logger.warning("suspended %s: %s", state.owner, state.action_item())
        return (f"suspended {state.owner} ({state.why})", f"Action item: {state.action_item()}")
    logger.warning("%s cannot be found; nothing to suspend", state.owner)
    return (f"{state.owner} named by the Deployment cannot be found; nothing was suspended",)


def follow_up(
    cfg: ServiceConfig, report: RollbackReport, rolled_out_at: datetime | None = None
) -> RollbackReport:
    """Schedule the post-rollback monitor after a rollback that changed something.

    One monitor per rollback run (its flow run id is the idempotency key); it watches from
    `rolled_out_at` (when the change settled), tells the verdict and writes the review. A
    failure to schedule does not undo or fail the rollback: it is logged and written into the
    report.
    """
    settings = load_post_rollback(load_decision_matrix()).follow_up
    if not report.changed or report.dry_run or not settings.enabled:
        return report
    logger = get_run_logger()
    run_id = flow_run.get_id()
    trigger = current_trigger()
    state = schedule_post_rollback_monitor(
        cfg.name,
        since=rolled_out_at or datetime.now(UTC),
        rollback_id=str(run_id),
        namespace=cfg.namespace,
        environment=cfg.environment,
        duration=timedelta(minutes=settings.duration_minutes),
        interval=timedelta(minutes=settings.interval_minutes),
        incident_start=trigger.alert_started_at,
        deployment=settings.deployment,
        about={
            "rollback_run_id": str(run_id),
            "from_version": report.from_version,
            "to_version": report.to_version,
            "bad_revision": report.from_revision,
            "reason": trigger.text(),
            "indicator": trigger.indicator,
            "notify_secret_block": trigger.notify_secret_block,
        },
        return_state=True,
    )
    if state.is_completed():
        scheduled = state.result()
        detail = (
            f"post-rollback monitor scheduled: flow run {scheduled.flow_run_name} of "
            f"{scheduled.deployment}, watching for {settings.duration_minutes:g} min; it "
            "writes the post-incident review when its verdict is in"
        )
        logger.info("%s", detail)
        create_link_artifact(
            run_link(scheduled.flow_run_id),
            link_text=f"post-rollback monitor {scheduled.flow_run_name} (verdict and review)",
            key=f"post-incident-review-{cfg.name}",
            description="The monitor run writes the post-incident review when its verdict is in",
        )
    else:
        detail = f"post-rollback monitor NOT scheduled: {state.message}"
        logger.error("%s; start post-rollback-monitor by hand", detail)
    return replace(report, details=(*report.details, detail))


def verify_pods(
    service: ServiceConfig, status: RolloutStatus
) -> tuple[tuple[PodState, ...], tuple[EventRecord, ...], LogScan]:
    """Playbook step 4: pods running and ready, recent events, recent error lines in the logs.

    Raises:
        VerificationFailedError: a pod is not ready or fewer than the desired pods are ready.
    """
    logger = get_run_logger()
    selector = status.label_selector
    pods = list_pods(status.namespace, selector)  # listed once: the events and logs are theirs
    events_read = read_recent_events.submit(  # the two reads side by side
        status.namespace, status.name, selector, pods=tuple(p.name for p in pods)
    )
    logs_read = read_error_logs.submit(
        status.namespace,
        selector,
        service.container,
        service.logs.error_pattern,
        service.logs.tail_lines,
        pods=tuple(p.name for p in pods if not p.deleting),
    )
    events, logs = events_read.result(), logs_read.result()
    for event in events:
        if event.type == "Warning":
            logger.warning("event %s %s: %s", event.object, event.reason, event.message)
    if not logs.available:
        logger.info("recent logs unavailable: %s", logs.unavailable_reason)
    for line in logs.lines:
        logger.warning("error in logs: %s", line)
    problems = unready_pods(pods, status.desired_replicas)
    if problems:
        raise VerificationFailedError(
            f"Deployment {status.namespace}/{status.name} rolled out but its pods are not "
            f"healthy: {'; '.join(problems)}"
        )
    logger.info("%d pod(s) running and ready", sum(1 for p in pods if p.ready))
    return pods, events, logs


def container_version(images: tuple[tuple[str, str], ...], container: str) -> str | None:
    """The version (image tag) a pod template runs in `container`, if it has that container."""
    image = dict(images).get(container)
    return version_of(image) if image else None


def publish_dry_run(report: RollbackReport, watch: Stopwatch, text: str) -> RollbackReport:
    """The ending of a dry run: print the exact change it would make, publish the report."""
    print(text)
    return publish_report(
        replace(report, durations=tuple(watch.steps), total_seconds=watch.total())
    )


@dataclass(frozen=True)
class Settled:
    """What a procedure's change came to once it took effect."""

    status: RolloutStatus
    """The Deployment whose pods now serve (verified next)."""
    new_revision: int | None = None
    to_revision: int | None = None
    details: tuple[str, ...] = ()


Evidence = tuple[str, tuple[dict[str, str], ...]]
"""The report's line on whether the target is known good, and the revisions' table."""


def wait_verify_and_report(
    cfg: ServiceConfig,
    report: RollbackReport,
    watch: Stopwatch,
    *,
    changed: bool,
    settle: Callable[[], Settled],
    outcome: Callable[[Settled], str],
    evidence: Callable[[], Evidence] | None = None,
) -> RollbackReport:
    """The ending every rollback procedure shares, once its change is made.

    `settle` waits for the change to take effect and checks what only that procedure can;
    then the serving pods are verified (playbook step 4), then the service with the playbook's
    checklist (`verify_the_service`). A failure publishes the report naming the error and
    re-raises; the post-rollback monitor is scheduled after a success and after a failed
    checklist (the change is in place and must be watched).

    `evidence`, for the report only, is read while the change settles: after the patch, never
    before it (its Prometheus queries and parsing, in a thread beside the undo, slowed the
    patch by a quarter of a second), and in the report whether the change settles or fails.
    A failure to read it is a line of the report, never a failure of the change.
    """
    reading = (
        Background(evidence, lambda exc: (f"known-good evidence not read: {exc}", ()))
        if evidence is not None
        else None
    )
    trigger = current_trigger()
    breached = frozenset({trigger.indicator} if trigger.indicator else ())
    began = datetime.now(UTC)
    report = replace(
        report, details=(f"started by {trigger.who()}: {trigger.text()}", *report.details)
    )
    audit = _Audit(cfg, report, trigger, began) if changed else None
    started = (
        tell(
            "incident-start",
            _notice_values(cfg, report, trigger, status="In Progress", impact=_impact(cfg, report)),
            Cause(breached),
            trigger,
            wait=False,  # sent while the rollout goes on
        )
        if changed
        else None
    )

    rolled_out_at: datetime | None = None

    def failed(exc: RollbackError, done: RollbackReport, watched: bool) -> RollbackError:
        """Publish the failure, tell people, schedule the monitor when the change stays."""
        if watched:
            done = follow_up(cfg, done, rolled_out_at)
        evidence = infrastructure_evidence(
            done.pods or _pods_for_evidence(cfg),
            [f"Kubernetes API: {exc}"] if isinstance(exc, TransientError) else [],
        )
        diagnosis = diagnose(cfg)
        done = replace(done, details=(*done.details, f"diagnosis: {diagnosis}"))
        told = tell(
            "rollback-failed",
            {
                **_notice_values(cfg, done, trigger),
                "failure": str(exc),
                "changed": changed,
                "diagnosis": diagnosis,
            },
            Cause(breached, evidence),
            trigger,
        )
        lines = [started.outcome()] if started else []
        lines.append(told.outcome())
        if audit:
            lines.append(audit.record("failed", done, f"FAILED: {exc}"))
        publish_failure(replace(done, details=(*done.details, *lines)), exc, watch, changed)
        return exc

    try:
        try:
            settled = settle()
        finally:
            if reading is not None:
                with watch.step("find the last known-good revision"):
                    line, rows = reading.result()
                report = replace(report, details=(*report.details, line), revisions=rows)
        # whole seconds (the monitor's grid), rounded up: the rollout had finished by then
        rolled_out_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        with watch.step("verify pods"):
            pods, events, logs = verify_pods(cfg, settled.status)
    except RollbackError as exc:
        raise failed(exc, report, watched=False) from None
    done = replace(
        report,
        outcome=outcome(settled),
        changed=changed,
        new_revision=settled.new_revision,
        to_revision=settled.to_revision or report.to_revision,
        details=(*report.details, *settled.details),
        pods=pods,
        events=events,
        logs=logs,
    )
    try:
        with watch.step("verify service"):
            done = verify_the_service(cfg, done, waited_since=time.monotonic() if changed else None)
    except RollbackError as exc:
        raise failed(exc, done, watched=changed) from None
    done = replace(done, durations=tuple(watch.steps), total_seconds=watch.total())
    if done.verification is not None and not done.verification.passed:
        raise failed(
            VerificationFailedError(
                f"{done.outcome}, but verification of {cfg.name} in {cfg.namespace} at "
                f"{done.to_version} {done.verification.summary()}"
            ),
            done,
            watched=True,
        )
    if started:
        done = replace(done, details=(*done.details, started.outcome()))
    if audit:
        done = replace(done, details=(*done.details, audit.record("completed", done, done.outcome)))
    return publish_report(follow_up(cfg, done, rolled_out_at))


class _Audit:
    """The audit trail of one change: `rollback-flows.rollback.started` now, then
    `.completed` or `.failed`, each about the Deployment and related to this run."""

    def __init__(
        self, cfg: ServiceConfig, report: RollbackReport, trigger: StartedBy, began: datetime
    ) -> None:
        self.trigger, self.began = trigger, began
        self.resource = deployment_resource(cfg.env.cluster, cfg.namespace, report.deployment)
        self.before = {"version": report.from_version, "revision": report.from_revision}
        self.parameters = dict(flow_run.get_parameters() or {})
        record_change(
            "started",
            self.resource,
            audit_payload(
                trigger,
                self.parameters,
                self.before,
                {"version": report.to_version, "revision": report.to_revision},
                {"started": began, "ended": None},
                report.change or "",
            ),
        )

    def record(self, phase: str, done: RollbackReport, outcome: str) -> str:
        after = {
            "version": done.to_version,
            "revision": done.new_revision,
            "verification": done.verification.summary() if done.verification else None,
        }
        times = {"started": self.began, "ended": datetime.now(UTC)}
        payload = audit_payload(self.trigger, self.parameters, self.before, after, times, outcome)
        event = record_change(phase, self.resource, payload)
        return f"audit: rollback-flows.rollback.started and .{phase} recorded ({event})"


def _notice_values(
    cfg: ServiceConfig, report: RollbackReport, trigger: StartedBy, **extra: object
) -> dict[str, object]:
    return {
        "environment": cfg.environment,
        "service": cfg.name,
        "namespace": cfg.namespace,
        "time": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "reason": trigger.text(),
        "from_version": report.from_version or "an unknown version",
        "to_version": report.to_version or "an unknown version",
        **extra,
    }


def _impact(cfg: ServiceConfig, report: RollbackReport) -> str:
    """What a person should expect while the rollback runs."""
    if report.flow == "canary_rollback":
        return (
            f"the canary's traffic returns to the stable {report.to_version or 'version'}; "
            "the stable pods keep serving"
        )
    return (
        f"rolling update of the pods of {cfg.namespace}/{cfg.deployment}; they keep serving "
        "while the old version's pods are replaced"
    )


def diagnose(cfg: ServiceConfig) -> str:
    """After a failed rollback: the playbook's troubleshooting, read-only, as a subflow run
    with its own report; one line naming what it found and where the report is."""
    from flows.diagnose_rollback import diagnose_rollback  # here: it imports this module

    state = diagnose_rollback(cfg.name, environment=cfg.environment, return_state=True)
    run = state.state_details.flow_run_id
    where = f"report in diagnose-rollback run {run_link(str(run))}" if run else ""
    if not state.is_completed():
        return f"the diagnosis itself failed: {state.message}; {where}"
    return f"{state.result().summary()}; {where}"


def _pods_for_evidence(cfg: ServiceConfig) -> tuple[PodState, ...]:
    """The Deployment's pods, for telling who must look; nothing when they cannot be read."""
    try:
        status = read_deployment_status(cfg.namespace, cfg.deployment)
        return list_pods(cfg.namespace, status.label_selector)
    except RollbackError:
        return ()


def verify_the_service(
    cfg: ServiceConfig, report: RollbackReport, waited_since: float | None
) -> RollbackReport:
    """The playbook's verification checklist, once the change has settled.

    After a change, waits `verification.after_rollback.settle_seconds` and measures the error
    rate and P99 over that time only, so the bad release's requests do not count against the
    version rolled back to. Skipped (and said so in the report) when turned off or when the
    version rolled back to is not known.
    """
    logger = get_run_logger()
    verification = load_post_rollback(load_decision_matrix()).verification
    settings = verification.after_rollback
    if not settings.enabled:
        return report
    try:
        expected = validate_version(report.to_version or "")
    except RollbackError:
        line = (
            f"service not verified: the version rolled back to is not known ({report.to_version!r})"
        )
        logger.warning("%s", line)
        return replace(report, details=(*report.details, line))
    window = verification.window
    if waited_since is not None:
        started = datetime.now(UTC)
        logger.info(
            "waiting %.0f s for %s to settle before verifying it",
            settings.settle_seconds,
            cfg.name,
        )
        time.sleep(max(0.0, settings.settle_seconds - (time.monotonic() - waited_since)))
        window = lifetime_window(started, datetime.now(UTC), verification.window)
    result = check_the_service(cfg, expected, window=window)
    log = logger.info if result.passed else logger.error
    log("verification of %s at %s %s", cfg.name, expected, result.checklist.summary())
    checklist: Checklist = result.checklist
    return replace(report, verification=checklist)


def publish_failure(
    report: RollbackReport, error: Exception, watch: Stopwatch, changed: bool
) -> RollbackReport:
    """Publish the report of a run that failed after acting, naming the error."""
    return publish_report(
        replace(
            report,
            outcome=f"FAILED: {error}",
            changed=changed,
            durations=tuple(watch.steps),
            total_seconds=watch.total(),
        )
    )


def publish_report(report: RollbackReport) -> RollbackReport:
    """Attach the report to the flow run as a markdown artifact and return it."""
    key = f"{report.flow}-{report.service}".replace("_", "-").lower()
    create_markdown_artifact(report.to_markdown(), key=key, description=report.outcome)
    get_run_logger().info("%s", report.outcome)
    return report
