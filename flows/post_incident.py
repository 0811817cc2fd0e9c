"""After the monitor's verdict: tell people (resolved, or escalate) and write the review.

Everything in them is read from the truth at that moment: the rollback run's times and
artifacts from the Prefect server, the bad and good pod templates from the cluster, the
impact from Prometheus.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from flows.notices import run_url, tell
from playbook.errors import RollbackError
from playbook.incident import StartedBy
from playbook.monitor_report import MonitorReport
from playbook.notices import Cause, duration_text
from playbook.review import Impact, Review, TimelineEvent, impact_of, template_changes
from playbook.services import ServiceConfig
from playbook.thresholds import DecisionMatrix
from tasks.prefect_runs import RunRecord, read_run
from tasks.prometheus import read_series
from tasks.workloads import read_revision_templates

MAX_IMPACT_POINTS = 240


def _rollback_run(run_id: str | None) -> RunRecord | None:
    if not run_id:
        return None
    try:
        return read_run(run_id)
    except RollbackError as exc:
        get_run_logger().warning("cannot read the rollback run %s: %s", run_id, exc)
        return None


def _impacts(
    cfg: ServiceConfig,
    report: MonitorReport,
    matrix: DecisionMatrix,
    url: str,
    window: str,
    start: datetime,
    end: datetime,
) -> tuple[str, ...]:
    """Each monitored indicator's peak and mean from the incident's start to the rollback."""
    seconds = max(1, int((end - start).total_seconds() / MAX_IMPACT_POINTS) or 1)
    lines = []
    for outcome in report.outcomes:
        indicator = outcome.indicator
        try:
            points = read_series(
                url,
                indicator.render(cfg.name, window),
                start,
                end,
                timedelta(seconds=seconds),
                matrix.prometheus,
            )
        except RollbackError as exc:
            lines.append(f"{indicator.title}: no figures ({exc})")
            continue
        impact: Impact | None = impact_of(indicator, points, start, end)
        lines.append(impact.line() if impact else f"{indicator.title}: no data in Prometheus")
    return tuple(lines)


def _changes(cfg: ServiceConfig, bad_revision: int | None) -> tuple[str, ...]:
    if bad_revision is None:
        return ("the bad revision is not known",)
    try:
        templates = read_revision_templates(cfg.namespace, cfg.deployment)
        current = max(templates) if templates else None
    except RollbackError as exc:
        return (f"cannot read the revisions: {exc}",)
    if bad_revision not in templates or current is None:
        return (f"revision {bad_revision} has no ReplicaSet any more",)
    return template_changes(templates[bad_revision], templates[current], cfg.container)


def review_the_incident(
    cfg: ServiceConfig,
    report: MonitorReport,
    matrix: DecisionMatrix,
    prometheus_url: str,
    window: str,
    trigger: StartedBy,
    *,
    rollback_run_id: str | None,
    from_version: str | None,
    to_version: str | None,
    bad_revision: int | None,
) -> Review:
    """Write the post-incident review as this run's artifact and return it."""
    verdict_at = datetime.now(UTC)
    rollback = _rollback_run(rollback_run_id)
    verified = rollback.artifact_created(f"verify-rollback-{cfg.name}") if rollback else None
    timeline = (
        TimelineEvent(
            "Issue detected (the alert started)",
            trigger.alert_started_at,
            "the alert's startsAt" if trigger.alert_started_at else "not known (no alert)",
        ),
        TimelineEvent(
            "Rollback initiated",
            rollback.start if rollback else None,
            f"flow run {rollback.name} started" if rollback else "rollback run unknown",
        ),
        TimelineEvent("Rollback complete", report.since, "the rollout finished (monitor's since)"),
        TimelineEvent(
            "Verification complete",
            verified,
            "verification table of the rollback run" if verified else "no verification table",
        ),
        TimelineEvent(f"Monitor verdict: {report.verdict.value}", verdict_at, "this run"),
    )
    incident_start = trigger.alert_started_at or (rollback.start if rollback else None)
    impact = (
        _impacts(cfg, report, matrix, prometheus_url, window, incident_start, report.since)
        if incident_start and incident_start < report.since
        else ()
    )
    runs = [("post-rollback monitor", run_url())]
    if rollback:
        runs.insert(0, (f"rollback ({rollback.state.lower()})", rollback.link))
    review = Review(
        service=cfg.name,
        environment=cfg.environment,
        namespace=cfg.namespace,
        reason=trigger.text(),
        from_version=from_version or "an unknown version",
        to_version=to_version or "an unknown version",
        timeline=timeline,
        impact=impact,
        verdict=report.summary(),
        changes=_changes(cfg, bad_revision),
        runs=tuple(runs),
    )
    create_markdown_artifact(
        review.to_markdown(),
        key=f"post-incident-review-{cfg.name}",
        description=f"Post-incident review of {cfg.name} in {cfg.environment}",
    )
    return review


def tell_the_verdict(
    cfg: ServiceConfig, report: MonitorReport, review: Review, trigger: StartedBy
) -> str:
    """The resolution notice when recovered, else the escalation; the line for the log."""
    not_recovered = frozenset(o.indicator.name for o in report.outcomes if not o.verdict.passed)
    known = [e.at for e in review.timeline if e.at is not None]
    base: dict[str, object] = {
        "environment": cfg.environment,
        "service": cfg.name,
        "namespace": cfg.namespace,
    }
    if not report.escalate:
        started, resolved = min(known), max(known)
        values = {
            **base,
            "started": f"{started:%Y-%m-%d %H:%M:%S} UTC",
            "resolved": f"{resolved:%Y-%m-%d %H:%M:%S} UTC",
            # from the times as the notice shows them (whole seconds), so the three agree
            "duration": duration_text(
                (resolved.replace(microsecond=0) - started.replace(microsecond=0)).total_seconds()
            ),
            "from_version": review.from_version,
            "to_version": review.to_version,
            "root_cause": "Under Investigation",
            "impact": list(review.impact) or ["no figures in Prometheus"],
            "verdict": report.summary(),
        }
        breached = frozenset({trigger.indicator} if trigger.indicator else ())
        return tell("incident-resolved", values, Cause(breached), trigger).outcome()
    values = {
        **base,
        "problem": "has not recovered after the rollback",
        **report.escalation_facts(),
    }
    return tell("escalation", values, Cause(not_recovered), trigger).outcome()


def tell_monitoring_failed(cfg: ServiceConfig, error: Exception, trigger: StartedBy) -> str:
    """Nobody is watching: the monitor itself failed."""
    values = {
        "environment": cfg.environment,
        "service": cfg.name,
        "namespace": cfg.namespace,
        "problem": "is not watched: the monitoring after the rollback failed",
        "since": "unknown",
        "verdict": "NO DATA (the monitoring itself failed)",
        "indicators": [f"monitoring failed: {error}"],
        "log_patterns": [],
        "log_pattern_count": 0,
    }
    return tell("escalation", values, Cause(), trigger).outcome()
