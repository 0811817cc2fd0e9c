"""A rollback started by a machine (an alert, the canary guard): one at a time, capped per hour.

take the service's lock (refuse at once if another rollback of it runs) → for an automatic
one, ask the Prefect server whether many services of the same cluster breach at once (blast
radius: change nothing, the platform team is told once) → for an alert, ask the
cluster whether the alert is older than the current revision (stale: change nothing) and ask
Prometheus whether the alert's indicator still breaches over the current revision's lifetime
(no longer, or no data: change nothing) → with `target="last-good"`, find the newest earlier
revision known to be good (none: notify a person with the evidence, change nothing) → check
the hourly cap of automatic rollbacks (past it: notify a person, change nothing) → record this
one → run the playbook procedure
(`kubernetes_rollback` or `canary_rollback`) → report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.logging import get_run_logger
from pydantic import Field

from flows.blast_radius import check_blast_radius
from flows.canary_rollback import canary_rollback
from flows.known_good import find_last_good
from flows.kubernetes_rollback import kubernetes_rollback
from flows.notices import started_by, tell
from flows.rollback_steps import one_rollback_at_a_time
from playbook.blast_radius import BlastRadiusPolicy
from playbook.errors import RollbackError, RollbackRefusedError
from playbook.guard import (
    LedgerEntry,
    before_release_window,
    check_cap,
    judge_recheck,
    judge_release_cause,
    lifetime_window,
    now_utc,
)
from playbook.incident import StartedBy
from playbook.names import ledger_name
from playbook.notices import Cause
from playbook.provenance import judge_alert_age, rollout_origin
from playbook.rollback_report import RollbackReport
from playbook.rollout import RolloutSnapshot
from playbook.services import ServiceConfig, load_service
from playbook.thresholds import Indicator, load_decision_matrix
from tasks.concurrency import read_rollback_ledger, record_automatic_rollback
from tasks.kubernetes import read_rollout
from tasks.prefect_runs import subflows_share_root
from tasks.prometheus import read_value, resolve_prometheus_url

Procedure = Literal["kubernetes_rollback", "canary_rollback"]
DEFAULT_BLAST_RADIUS = BlastRadiusPolicy()
Action = Literal[
    "rolled_back",
    "capped",
    "stale",
    "recovered",
    "no_data",
    "not_release",
    "no_known_good",
    "blast_radius",
    "refused",
    "dry_run",
]


@dataclass(frozen=True)
class GuardedRollback:
    """What a guarded rollback did: rolled back, or stopped by the cap (and notified)."""

    service: str
    namespace: str
    procedure: Procedure
    action: Action
    message: str
    automatic: bool
    reason: str
    cap: int
    recent_automatic: int
    report: RollbackReport | None = None

    def to_markdown(self) -> str:
        """The outcome as the run's markdown artifact."""
        lines = [
            f"# Guarded rollback of {self.namespace}/{self.service}: {self.action}",
            "",
            f"- **Outcome:** {self.message}",
            f"- **Procedure:** `{self.procedure}`",
            f"- **Started by:** {'automation' if self.automatic else 'a person'}",
            f"- **Reason:** {self.reason or 'not given'}",
            f"- **Automatic rollbacks in the last hour:** {self.recent_automatic} (cap {self.cap})",
        ]
        if self.report is not None:
            lines += ["", self.report.to_markdown()]
        return "\n".join(lines)


def _run_id() -> str | None:
    flow_run = getattr(get_run_context(), "flow_run", None)
    return str(flow_run.id) if flow_run is not None else None


def _tell_not_performed(
    cfg: ServiceConfig, trigger: StartedBy, why: str, evidence: str = ""
) -> str:
    """A person must decide: the automatic rollback did nothing, and why. Never raises."""
    values = {
        "environment": cfg.environment,
        "service": cfg.name,
        "namespace": cfg.namespace,
        "time": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC",
        "reason": trigger.text(),
        "why": why,
        "evidence": evidence,
    }
    breached = frozenset({trigger.indicator} if trigger.indicator else ())
    return tell("rollback-not-performed", values, Cause(breached), trigger).outcome()


@flow(name="guarded-rollback", log_prints=True)
def guarded_rollback(
    service: str,
    procedure: Procedure = "kubernetes_rollback",
    namespace: str | None = None,
    environment: str | None = None,
    cluster: str | None = None,
    reason: str = "",
    automatic: bool = True,
    max_per_hour: Annotated[int, Field(ge=0, le=10)] | None = None,
    notify_secret_block: str | None = None,
    alert_started_at: datetime | None = None,
    alert_fingerprint: str | None = None,
    indicator: str | None = None,
    recheck: bool = True,
    max_release_age_minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60)] = 360,
    target: Literal["previous", "last-good"] = "previous",
    known_good_minutes: Annotated[float, Field(gt=0, le=30 * 24 * 60)] | None = None,
    blast_radius: BlastRadiusPolicy = DEFAULT_BLAST_RADIUS,
    dry_run: bool = False,
) -> GuardedRollback:
    """Run a playbook rollback procedure for a service, guarded by its lock and hourly cap.

    For an alert (`alert_started_at`), it decides from the cluster and Prometheus first: an
    alert that started before the Deployment's current revision became current (whoever made
    it: a person, CI, this tool) is about an older version and is refused as stale; and the
    alert's `indicator` is measured again over the current revision's lifetime only, so an
    alert whose rate window still holds the previous version's errors does nothing; and the
    release must be the cause (recent, and the indicator not critical before it), else a
    person is told and nothing changes.

    Args:
        service: A service of the services file.
        procedure: `kubernetes_rollback` (undo to the previous revision) or `canary_rollback`.
        namespace: The namespace of one of the service's environments (an alert's label).
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        cluster: The `cluster` label of the alert, naming the environment's cluster.
        reason: Why (the alert's summary or the fired canary trigger); shown in reports.
        automatic: Started by automation; only automatic rollbacks count toward the cap.
        max_per_hour: The most automatic rollbacks of the service within an hour (the
            decision matrix's `automatic_rollbacks.max_per_hour` when None).
        notify_secret_block: The Secret block with the notification webhook URL (else
            `$ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL`).
        alert_started_at: When the triggering alert started (its `startsAt`).
        alert_fingerprint: The triggering alert's fingerprint, for the audit trail.
        indicator: The decision-matrix indicator the alert is about (e.g. `error_rate`).
        recheck: Measure `indicator` again before acting; refuse unless still critical.
        max_release_age_minutes: An alert is about a release only if the current revision
            became current this recently (and `indicator` was not critical before it).
        target: Where `kubernetes_rollback` goes: `previous` (kubectl's meaning) or
            `last-good`, the newest earlier revision known to be good (what the alert
            deployment, `guarded-rollback/alert`, uses); with none known good, a person is
            told with the evidence and nothing changes.
        known_good_minutes: How long a revision must have been current to be known good (the
            service's `known_good_minutes` when None).
        blast_radius: When too many services of one cluster breach at once, automatic
            rollbacks of that cluster stop for a cooling period (manual runs never do).
        dry_run: Passed to the procedure; a dry run is not counted.

    Raises:
        InvalidInputError: unknown service or indicator (nothing changed).
        RollbackRefusedError: another rollback of the service holds its lock (nothing changed).
    """
    logger = get_run_logger()
    cfg = load_service(service, namespace, environment, cluster)
    ns = cfg.namespace
    matrix = load_decision_matrix()
    measured = matrix.indicator(indicator) if indicator else None
    cap = matrix.max_automatic_per_hour() if max_per_hour is None else max_per_hour
    trigger = StartedBy(
        "alert" if alert_started_at is not None else "automation" if automatic else "person",
        reason,
        indicator=indicator,
        alert_fingerprint=alert_fingerprint,
        alert_started_at=alert_started_at,
        notify_secret_block=notify_secret_block,
    )

    def stopped(action: Action, message: str, recent: int = 0) -> GuardedRollback:
        logger.warning("%s", message)
        return _publish(
            GuardedRollback(
                cfg.name,
                ns,
                procedure,
                action,
                message,
                automatic,
                reason,
                cap,
                recent,
            )
        )

    recent = 0
    with one_rollback_at_a_time(cfg, "guarded rollback", dry_run=False):
        logger.info("holding the lock of %s/%s: no other rollback of it runs now", ns, cfg.name)
        if automatic and not dry_run:
            blast = check_blast_radius(cfg, blast_radius, trigger)
            if not blast.allowed:
                return stopped("blast_radius", blast.message)
        snapshot = (  # one read of the cluster for the alert's age and the known-good table
            read_rollout(ns, cfg.deployment)
            if procedure == "kubernetes_rollback"
            and (alert_started_at is not None or target == "last-good")
            else None
        )
        if alert_started_at is not None and snapshot is not None:
            refusal = check_the_alert(
                cfg,
                snapshot,
                alert_started_at,
                measured if recheck else None,
                measured,
                timedelta(minutes=max_release_age_minutes),
            )
            if refusal is not None:
                message = refusal.message
                if refusal.notify and automatic and not dry_run:
                    message += f"; {_tell_not_performed(cfg, trigger, refusal.message)}"
                return stopped(refusal.action, message)
        if procedure == "kubernetes_rollback" and target == "last-good":
            minutes = known_good_minutes or cfg.known_good_minutes
            try:
                known = find_last_good(cfg, minutes, snapshot)
                why, evidence = f"not rolled back: {known.message}", known.to_text()
            except RollbackError as exc:
                known, evidence = None, ""
                why = f"not rolled back: could not tell which revision is known good: {exc}"
            if known is None or known.target is None:
                message = why
                if automatic and not dry_run:
                    message += f"; {_tell_not_performed(cfg, trigger, why, evidence)}"
                return stopped("no_known_good", message)
            logger.info("%s", known.message)
        if automatic and not dry_run:
            ledger = ledger_name(ns, cfg.name)
            entries = read_rollback_ledger(ledger)
            now = now_utc()
            decision = check_cap(entries, now, cap)
            recent = len(decision.recent)
            if not decision.allowed:
                told = _tell_not_performed(cfg, trigger, f"{decision.message}.")
                return stopped("capped", f"not rolled back: {decision.message}; {told}", recent)
            logger.info("%s; this is one more", decision.message)
            record_automatic_rollback(ledger, entries, LedgerEntry(now, _run_id(), reason[:100]))
            recent += 1
        try:
            with started_by(trigger), subflows_share_root():
                if procedure == "kubernetes_rollback":
                    report = kubernetes_rollback(
                        service=cfg.name,
                        environment=cfg.environment,
                        dry_run=dry_run,
                        skip_confirmation=True,  # automatic rollbacks never ask
                        target=target,
                        known_good_minutes=known_good_minutes,
                    )
                else:
                    report = canary_rollback(
                        service=cfg.name,
                        environment=cfg.environment,
                        dry_run=dry_run,
                        skip_confirmation=True,
                    )
        except RollbackRefusedError as exc:
            message = str(exc)
            if automatic and not dry_run:
                message += f"; {_tell_not_performed(cfg, trigger, str(exc))}"
            return stopped("refused", message, recent)
    return _publish(
        GuardedRollback(
            cfg.name,
            ns,
            procedure,
            "dry_run" if dry_run else "rolled_back",
            report.outcome,
            automatic,
            reason,
            cap,
            recent,
            report,
        )
    )


@dataclass(frozen=True)
class Refusal:
    """Why an alert-started rollback does nothing, and whether a person must hear of it."""

    action: Action
    message: str
    notify: bool


def check_the_alert(
    cfg: ServiceConfig,
    snapshot: RolloutSnapshot,
    alert_started_at: datetime,
    recheck: Indicator | None,
    indicator: Indicator | None,
    max_release_age: timedelta,
) -> Refusal | None:
    """Whether the alert is about the revision that runs now, still holds, and is its doing.

    From the cluster (`snapshot`, read after the lock was taken): an alert that started before
    the current revision became current is stale. From Prometheus: `recheck` measured over the
    current revision's lifetime only must still be critical; and the release must be the
    cause: recent (`max_release_age`), with `indicator` not critical over the previous
    revision's last stretch (never reaching back past when that revision became current: a
    bad version rolled back minutes before does not count against it). None when the rollback
    may go on.
    """
    logger = get_run_logger()
    origin = rollout_origin(snapshot.deployment, snapshot.replicasets)
    age = judge_alert_age(origin, alert_started_at)
    if age.stale or origin.since is None:
        return Refusal("stale", age.message, notify=False)
    logger.info("%s", age.message)
    now = now_utc()
    if recheck is not None:
        window = lifetime_window(origin.since, now, recheck.window)
        check = judge_recheck(recheck, measure(cfg, recheck, window, now), window)
        if check.breaching is None:
            return Refusal("no_data", check.message, notify=True)
        if not check.breaching:
            return Refusal("recovered", check.message, notify=False)
        logger.info("%s", check.message)
    released = origin.written or origin.since
    window = (
        before_release_window(origin.previous_since, released, indicator.window)
        if indicator
        else ""
    )
    before = measure(cfg, indicator, window, released) if indicator else None
    cause = judge_release_cause(origin.since, now, max_release_age, indicator, before, window)
    if not cause.is_release:
        return Refusal("not_release", cause.message, notify=True)
    logger.info("%s", cause.message)
    return None


def measure(cfg: ServiceConfig, indicator: Indicator, window: str, at: datetime) -> float | None:
    """The indicator's value for the service over `window` up to `at` (None: no data)."""
    matrix = load_decision_matrix()
    query = indicator.render(cfg.name, window)
    url = resolve_prometheus_url(cfg.prometheus_url)
    return read_value(url, query, at, matrix.prometheus)


def _publish(result: GuardedRollback) -> GuardedRollback:
    key = f"guarded-rollback-{result.namespace}-{result.service}".lower()
    create_markdown_artifact(result.to_markdown(), key=key, description=result.message[:500])
    return result
