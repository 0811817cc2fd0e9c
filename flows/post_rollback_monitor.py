"""Post-rollback short-term monitoring (5-30 min), as a flow scheduled after every rollback.

check inputs → baseline (before the incident) and level at the rollback → evaluate every
interval until the end (progress artifact) → error patterns in the logs → decay table and
charts (markdown artifact) → escalate (notification and a failed run) unless recovered.

Every query names its evaluation time, and the flow only waits for times still in the
future: a window in the past (backfilled history, a rehearsal) is evaluated in seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.logging import get_run_logger

from flows.post_incident import review_the_incident, tell_monitoring_failed, tell_the_verdict
from playbook.errors import (
    InvalidInputError,
    RollbackError,
    TransientError,
    VerificationFailedError,
)
from playbook.incident import StartedBy
from playbook.monitor_report import (
    Evaluation,
    IndicatorOutcome,
    LogFindings,
    MonitorReport,
    new_error_patterns,
)
from playbook.post_rollback import MonitorSettings, load_post_rollback
from playbook.recovery import (
    RecoveryState,
    Verdict,
    baseline_of,
    counts,
    overall_verdict,
    recovery_levels,
    start,
    track,
)
from playbook.services import ServiceConfig, load_service
from playbook.thresholds import DecisionMatrix, Indicator, load_decision_matrix
from tasks.kubernetes import kubernetes_context, read_deployment_status, read_error_logs
from tasks.prometheus import (
    MAX_POINTS_PER_QUERY,
    read_series,
    read_value,
    resolve_prometheus_url,
    values_at,
)
from tasks.workloads import read_revision_created

MAX_EVALUATIONS = 10_000
LOG_TAIL_LINES = 5000
"""Lines per pod read for the log patterns: enough to reach back before the release."""


class Clock(Protocol):
    """Where the monitor gets the time and how it waits (injectable for tests)."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, UTC."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        time.sleep(seconds)


@dataclass
class _Counter:
    queries: int = 0


def _grid(since: datetime, interval: timedelta, count: int) -> list[datetime]:
    return [since + k * interval for k in range(1, count + 1)]


NoDataCallback = Callable[[str, Sequence[datetime], TransientError], None]
"""Told when an indicator's points could not be queried: its name, the points, the error."""


class _Fetcher:
    """Range-queries each indicator's points as they become available, in as few queries as
    possible: every point already in the past in one query per indicator. A query that fails
    after its retries (Prometheus down, slow, answering 5xx) leaves its points without data
    (never a pass) and the monitoring goes on with the next points."""

    def __init__(
        self,
        url: str,
        matrix: DecisionMatrix,
        queries: dict[str, str],
        grid: list[datetime],
        interval: timedelta,
        counter: _Counter,
        on_no_data: NoDataCallback,
    ) -> None:
        self.url, self.matrix, self.queries = url, matrix, queries
        self.grid, self.interval, self.counter = grid, interval, counter
        self.on_no_data = on_no_data
        self.fetched = 0
        self.values: dict[str, list[float | None]] = {name: [] for name in queries}

    def fetch_until(self, available: int) -> None:
        """Fetch grid points up to index `available` (exclusive) not fetched yet."""
        while self.fetched < available:
            upto = min(available, self.fetched + MAX_POINTS_PER_QUERY - 1)
            times = self.grid[self.fetched : upto]
            for name, query in self.queries.items():
                self.counter.queries += 1
                try:
                    points = read_series(
                        self.url, query, times[0], times[-1], self.interval, self.matrix.prometheus
                    )
                except TransientError as exc:
                    self.on_no_data(name, times, exc)
                    points = ()
                self.values[name].extend(values_at(points, times))
            self.fetched = upto


def _baseline(
    url: str,
    matrix: DecisionMatrix,
    query: str,
    start_at: datetime,
    end_at: datetime,
    interval: timedelta,
    counter: _Counter,
) -> float | None:
    span = (end_at - start_at).total_seconds()
    step = timedelta(seconds=max(interval.total_seconds(), math.ceil(span / 1000)))
    points = read_series(url, query, start_at, end_at, step, matrix.prometheus)
    counter.queries += 1
    return baseline_of(value for _, value in points)


def _at(
    url: str, matrix: DecisionMatrix, query: str, at: datetime, counter: _Counter
) -> float | None:
    counter.queries += 1
    return read_value(url, query, at, matrix.prometheus)


def _scan_logs(
    cfg: ServiceConfig, since: datetime, now: datetime, released_at: datetime, lookback: timedelta
) -> LogFindings:
    """Error patterns in the pods' logs since the rollback that were not there before the bad
    release (`lookback` before it)."""
    try:
        status = read_deployment_status(cfg.namespace, cfg.deployment)
        scan = read_error_logs(
            cfg.namespace,
            status.label_selector,
            cfg.container,
            cfg.logs.error_pattern,
            max(cfg.logs.tail_lines, LOG_TAIL_LINES),
            since_seconds=max(1, int((now - released_at + lookback).total_seconds())),
        )
    except RollbackError as exc:
        return LogFindings(False, (), str(exc))
    if not scan.available:
        return LogFindings(False, (), scan.unavailable_reason)
    patterns, baseline = new_error_patterns(scan.lines, released_at, since)
    return LogFindings(True, patterns, baseline=baseline)


def _released_at(cfg: ServiceConfig, bad_revision: int | None) -> datetime | None:
    """When the bad revision was released (its ReplicaSet's creation), if it can be read."""
    if bad_revision is None:
        return None
    try:
        created = read_revision_created(cfg.namespace, cfg.deployment, bad_revision)
    except RollbackError:
        return None
    return datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None


class _Progress:
    """The run's progress artifact, updated when the whole percentage changes."""

    def __init__(self, total: int, description: str) -> None:
        self.total, self.last = total, 0
        self.id: Any = create_progress_artifact(0.0, key=None, description=description)

    def update(self, done: int, description: str) -> None:
        percent = int(100 * done / self.total)
        if percent != self.last:
            self.last = percent
            update_progress_artifact(self.id, float(percent), description=description)


def monitor_window(
    cfg: ServiceConfig,
    matrix: DecisionMatrix,
    settings: MonitorSettings,
    url: str,
    since: datetime,
    duration: timedelta,
    interval: timedelta,
    incident_start: datetime | None,
    clock: Clock,
    on_evaluation: Callable[[int, int, Evaluation], None] = lambda done, total, ev: None,
    on_no_data: NoDataCallback = lambda name, times, exc: None,
) -> tuple[tuple[Evaluation, ...], tuple[IndicatorOutcome, ...], bool, int]:
    """Evaluate the recovery of every monitored indicator at each interval after `since`.

    A point whose query fails (`on_no_data` is told) has no data: it ends any "back at
    baseline" stretch, and the monitoring goes on.

    Returns the evaluations, the final outcome per indicator, whether it stopped early
    (worse) and the number of Prometheus queries issued.
    """
    counter = _Counter()
    indicators: dict[str, Indicator] = {n: matrix.indicator(n) for n in settings.indicators}
    queries = {n: ind.render(cfg.name, settings.window) for n, ind in indicators.items()}
    baseline_end = incident_start or since - timedelta(minutes=settings.incident_lead_minutes)
    baseline_start = baseline_end - timedelta(minutes=settings.baseline_minutes)
    states: dict[str, RecoveryState] = {}
    for name, ind in indicators.items():
        baseline = _baseline(
            url, matrix, queries[name], baseline_start, baseline_end, interval, counter
        )
        incident = _at(url, matrix, queries[name], since, counter)
        policy = settings.indicators[name]
        states[name] = start(recovery_levels(ind, policy, baseline, incident), policy)

    grid = _grid(since, interval, int(duration / interval))
    fetcher = _Fetcher(url, matrix, queries, grid, interval, counter, on_no_data)
    delay = timedelta(seconds=settings.evaluation_delay_seconds)
    evaluations: list[Evaluation] = []
    stopped_early = False
    for k, at in enumerate(grid):
        wait = (at + delay - clock.now()).total_seconds()
        if wait > 0:
            clock.sleep(wait)
        now = clock.now()
        available = max(k + 1, sum(1 for t in grid if t + delay <= now))
        fetcher.fetch_until(available)
        for name in indicators:
            states[name] = track(states[name], at, fetcher.values[name][k])
        verdicts = tuple((n, s.verdict) for n, s in states.items())
        ev = Evaluation(
            at=at,
            values=tuple((n, fetcher.values[n][k]) for n in indicators),
            verdicts=verdicts,
            verdict=overall_verdict(v for n, v in verdicts if counts(indicators[n], v)),
        )
        evaluations.append(ev)
        on_evaluation(k + 1, len(grid), ev)
        if ev.verdict is Verdict.WORSE:
            stopped_early = k + 1 < len(grid)
            break

    outcomes = tuple(
        IndicatorOutcome(
            indicator=indicators[name],
            levels=state.levels,
            verdict=state.verdict,
            latest=state.latest,
            back_for_seconds=state.back_for_seconds,
            worse_at=state.worse_at,
        )
        for name, state in states.items()
    )
    return tuple(evaluations), outcomes, stopped_early, counter.queries


def _check_window(since: datetime, duration: timedelta, interval: timedelta) -> datetime:
    if since.tzinfo is None:
        raise InvalidInputError(f"since {since.isoformat()} has no timezone (use e.g. ...Z)")
    if interval.total_seconds() < 1 or interval.total_seconds() % 1:
        raise InvalidInputError(f"interval must be whole seconds, at least 1 s; got {interval}")
    if duration < interval:
        raise InvalidInputError(f"duration {duration} is shorter than the interval {interval}")
    if duration / interval > MAX_EVALUATIONS:
        raise InvalidInputError(f"more than {MAX_EVALUATIONS} evaluations; use a longer interval")
    return since.astimezone(UTC).replace(microsecond=0)


@flow(name="post-rollback-monitor", log_prints=True)
def post_rollback_monitor(
    service: str,
    since: datetime,
    duration: timedelta = timedelta(minutes=30),
    interval: timedelta = timedelta(minutes=1),
    namespace: str | None = None,
    environment: str | None = None,
    incident_start: datetime | None = None,
    prometheus_url: str | None = None,
    notify_secret_block: str | None = None,
    scan_logs: bool = True,
    rollback_run_id: str | None = None,
    from_version: str | None = None,
    to_version: str | None = None,
    bad_revision: int | None = None,
    reason: str = "",
    indicator: str | None = None,
) -> MonitorReport:
    """Watch error rate and latency return to their pre-incident baseline after a rollback.

    Args:
        service: A service of the services file.
        since: When the rollback completed (timezone-aware); evaluation starts one interval later.
        duration: How long to watch.
        interval: How often to evaluate.
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        incident_start: When the incident began; the baseline ends there (estimated when None).
        prometheus_url: Prometheus base URL; `$ROLLBACK_FLOWS_PROMETHEUS_URL` when None.
        notify_secret_block: Secret block with the webhook URL; else
            `$ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL`.
        scan_logs: Look for error patterns in the pods' logs since the rollback.
        rollback_run_id: The rollback's flow run, for the review's timeline and links.
        from_version: The version rolled back from (the bad one), for the notices and review.
        to_version: The version rolled back to.
        bad_revision: The Deployment revision rolled back from; the review shows what its pod
            template changed against the current one.
        reason: Why the rollback was made (the alert's summary, the person's reason).
        indicator: The decision-matrix indicator the alert was about, if any.

    Raises:
        InvalidInputError: unknown service, bad window or configuration (nothing queried).
        VerificationFailedError: escalated: not recovered by the end, worse, or no data.
    """
    logger = get_run_logger()
    # check inputs
    cfg = load_service(service, namespace, environment)
    trigger = StartedBy(
        "automation",
        reason or "post-rollback monitoring",
        indicator=indicator,
        alert_started_at=incident_start,
        notify_secret_block=notify_secret_block,
    )
    with kubernetes_context(cfg.kube_context):
        start_at = _check_window(since, duration, interval)
        if incident_start is not None and incident_start.tzinfo is None:
            raise InvalidInputError("incident_start has no timezone")
        matrix = load_decision_matrix()
        settings = load_post_rollback(matrix).monitor
        url = resolve_prometheus_url(prometheus_url or cfg.prometheus_url)
        clock = SystemClock()
        total = int(duration / interval)
        logger.info(
            "monitoring %s in %s from %s for %s, every %s (%d evaluations)",
            cfg.name, cfg.namespace, start_at.isoformat(), duration, interval, total,
        )  # fmt: skip

        # evaluate at each interval
        progress = _Progress(total, f"monitoring {cfg.name} since {start_at:%H:%M:%S}")

        def show(done: int, total: int, ev: Evaluation) -> None:
            text = ", ".join(f"{n} {v.value}" for n, v in ev.verdicts)
            logger.info("%s [%d/%d] %s", ev.at.strftime("%H:%M:%S"), done, total, text)
            progress.update(done, f"{ev.at:%H:%M:%S}: {ev.verdict.value} ({text})")

        unqueried: list[str] = []

        def no_data(name: str, times: Sequence[datetime], exc: TransientError) -> None:
            span = f"{times[0]:%H:%M:%S}" + (f" to {times[-1]:%H:%M:%S}" if len(times) > 1 else "")
            line = f"{matrix.indicator(name).title} at {span} ({len(times)} point(s)): {exc}"
            logger.warning("no data, the monitoring goes on: %s", line)
            unqueried.append(line)

        try:
            evaluations, outcomes, stopped_early, queries = monitor_window(
                cfg,
                matrix,
                settings,
                url,
                start_at,
                duration,
                interval,
                incident_start,
                clock,
                show,
                no_data,
            )
        except RollbackError as exc:  # e.g. no baseline (Prometheus unreachable): nobody watches
            tell_monitoring_failed(cfg, exc, trigger)
            raise
        released_at = (
            _released_at(cfg, bad_revision)
            or incident_start
            or start_at - timedelta(minutes=settings.incident_lead_minutes)
        )
        logs = (
            _scan_logs(
                cfg,
                start_at,
                clock.now(),
                released_at,
                timedelta(minutes=settings.baseline_minutes),
            )
            if scan_logs
            else LogFindings(False, (), "not scanned")
        )
        report = MonitorReport(
            service=cfg.name,
            namespace=cfg.namespace,
            since=start_at,
            until=start_at + duration,
            evaluations=evaluations,
            outcomes=outcomes,
            verdict=overall_verdict(o.verdict for o in outcomes if counts(o.indicator, o.verdict)),
            stopped_early=stopped_early,
            queries=queries,
            logs=logs,
            unqueried=tuple(unqueried),
        )

        # report
        key = f"post-rollback-monitor-{cfg.name}"
        create_table_artifact(
            [o.row() for o in outcomes], key=f"{key}-verdict", description=report.summary()
        )
        create_markdown_artifact(report.to_markdown(), key=key, description=report.summary())

        # the post-incident review, and the resolution or the escalation
        review = review_the_incident(
            cfg,
            report,
            matrix,
            url,
            settings.window,
            trigger,
            rollback_run_id=rollback_run_id,
            from_version=from_version,
            to_version=to_version,
            bad_revision=bad_revision,
        )
        told = tell_the_verdict(cfg, report, review, trigger)
        if not report.escalate:
            logger.info("recovered: %s; %s", report.summary(), told)
            return report
        logger.error("escalating: %s; %s", report.summary(), told)
        raise VerificationFailedError(f"escalated after the rollback: {report.summary()}")
