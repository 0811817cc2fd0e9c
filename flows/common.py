"""Steps shared by the rollback flows: verify the pods after a rollout, publish the report."""

from __future__ import annotations

from dataclasses import replace

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from playbook.errors import VerificationFailedError
from playbook.report import RollbackReport, Stopwatch, unready_pods
from playbook.results import EventRecord, LogScan
from playbook.rollout import PodState, RolloutStatus
from playbook.services import ServiceConfig
from tasks.kubernetes import list_pods, read_error_logs, read_recent_events


def verify_pods(
    service: ServiceConfig, status: RolloutStatus
) -> tuple[tuple[PodState, ...], tuple[EventRecord, ...], LogScan]:
    """Playbook step 4: pods running and ready, recent events, recent error lines in the logs.

    Raises:
        VerificationFailedError: a pod is not ready or fewer than the desired pods are ready.
    """
    logger = get_run_logger()
    selector = status.label_selector
    pods = list_pods(status.namespace, selector)
    events = read_recent_events(status.namespace, status.name, selector)
    logs = read_error_logs(
        status.namespace,
        selector,
        service.container,
        service.logs.error_pattern,
        service.logs.tail_lines,
    )
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
