"""During a canary phase: roll the canary back automatically when a playbook trigger holds.

every `interval_seconds` until the canary window ends: observe the canary itself (its pods
ready, its own `/health`, the error rate and P99 of its own series in Prometheus: the service's
series with the canary's track label and the version its Deployment runs) → evaluate the
automatic triggers (pure, `playbook.guard`; their limits are the decision matrix's `canary`
section) → on the first that holds, run `guarded_rollback` with `canary_rollback` (one
rollback per service at a time, hourly cap) → report which trigger fired and the observed
values. At the end of the window a health check that still fails is a trigger too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import Field

from flows.guarded_rollback import Action, GuardedRollback, guarded_rollback
from playbook.errors import InvalidInputError, NotFoundError, RollbackError
from playbook.guard import (
    CanaryObservation,
    CanaryTriggers,
    CanaryVerdict,
    Health,
    evaluate_canary,
)
from playbook.images import validate_version, version_of
from playbook.post_rollback import ProbeSettings
from playbook.rollout import RolloutStatus
from playbook.services import CanaryConfig, ServiceConfig, load_service
from playbook.thresholds import DecisionMatrix, label_matchers, load_decision_matrix
from tasks.kubernetes import kubernetes_context, read_deployment_status
from tasks.probes import probe_health
from tasks.prometheus import read_value, resolve_prometheus_url


@dataclass(frozen=True)
class CanaryGuardResult:
    """How the canary phase ended: passed, or rolled back (or capped) by which trigger."""

    service: str
    namespace: str
    outcome: Literal["passed"] | Action
    verdict: CanaryVerdict
    observations: int
    rollback: GuardedRollback | None = None
    series: dict[str, str] | None = None
    """The matchers of the canary's own series at the last observation (None: its Deployment
    was not there to tell its version, so no figures)."""
    health_url: str = ""

    def to_markdown(self) -> str:
        """The result as the run's markdown artifact."""
        obs = self.verdict.observation
        lines = [
            f"# Canary guard of {self.namespace}/{self.service}: {self.outcome}",
            "",
            f"**{self.verdict.summary}**",
            "",
            "| observed | value |",
            "|---|---|",
            f"| elapsed | {obs.elapsed_seconds:.0f} s ({self.observations} observations) |",
            f"| health ({self.health_url}) | {obs.health.value}: {obs.health_detail} |",
            f"| the canary's error rate | {_fmt(obs.error_ratio, 100, '%')} |",
            f"| the canary's P99 latency | {_fmt(obs.p99_seconds, 1000, 'ms')} |",
            f"| its series | {_series(self.series)} |",
        ]
        if self.verdict.fired:
            lines += ["", "Triggers that fired:", *(f"- {f}" for f in self.verdict.fired)]
        if self.rollback is not None:
            lines += ["", f"Rollback: {self.rollback.action}: {self.rollback.message}"]
        return "\n".join(lines)


def _fmt(value: float | None, scale: float, unit: str) -> str:
    return "no data" if value is None else f"{value * scale:.2f} {unit}"


def _series(labels: dict[str, str] | None) -> str:
    if labels is None:
        return "none: no canary Deployment to tell its version"
    return f"`{label_matchers(labels)}`"


def _check_canary_version(cfg: ServiceConfig, version: str) -> None:
    """The canary Deployment runs `version`, or InvalidInputError (nothing is watched)."""
    assert cfg.canary is not None
    where = f"canary Deployment {cfg.namespace}/{cfg.canary.deployment}"
    try:
        status = read_deployment_status(cfg.namespace, cfg.canary.deployment)
    except NotFoundError:
        raise InvalidInputError(f"{where} does not exist: canary {version} not watched") from None
    running = version_of(status.image_of(cfg.container))
    if running != version:
        raise InvalidInputError(
            f"{where} runs {running}, not {version}: canary {version} not watched"
        )


def _canary_status(canary: CanaryConfig, namespace: str) -> RolloutStatus | None:
    try:
        return read_deployment_status(namespace, canary.deployment)
    except NotFoundError:
        return None


def _health(
    canary: CanaryConfig, status: RolloutStatus | None, url: str, settings: ProbeSettings
) -> tuple[Health, str]:
    """The canary's health check: its pods all ready and its own `/health` answering 200."""
    if status is None:
        return Health.FAILING, f"canary Deployment {canary.deployment} does not exist"
    if status.ready_replicas < max(status.desired_replicas, 1):
        return Health.FAILING, (
            f"{status.ready_replicas}/{status.desired_replicas} canary pods ready"
        )
    try:
        probe = probe_health(url, settings)
    except RollbackError as exc:
        return Health.FAILING, f"the canary's /health unreachable: {exc}"
    if probe.status_code == 503 or "unhealthy" in probe.body_excerpt.lower():
        return Health.UNHEALTHY, (
            f"the canary's /health answered {probe.status_code}: {probe.body_excerpt}"
        )
    if not probe.ok:
        return Health.FAILING, f"the canary's /health answered {probe.status_code}"
    return Health.HEALTHY, "canary pods ready, the canary's /health 200"


def _canary_health_url(cfg: ServiceConfig, base_url: str | None) -> str:
    """The canary's own /health: `<base_url>/health`, else the services file's."""
    assert cfg.canary is not None
    if base_url is not None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"malformed canary URL {base_url!r}: expected http(s)://...")
        return f"{base_url.rstrip('/')}/health"
    url = cfg.canary.health_url_in(cfg.namespace)
    if url is None:
        raise InvalidInputError(
            f"service {cfg.name!r} has no canary health_url in the services file: the guard "
            "probes the canary's own /health, never the stable one; set it or pass base_url"
        )
    return url


def _figures(
    prom: str,
    matrix: DecisionMatrix,
    service: str,
    window: str,
    series: dict[str, str] | None,
) -> tuple[float | None, float | None]:
    """The canary's own error ratio and P99 now (None, None without its series)."""
    if series is None:
        return None, None
    at = datetime.now(UTC)
    error_ratio, p99 = (
        read_value(
            prom, matrix.indicator(name).render(service, window, series), at, matrix.prometheus
        )
        for name in ("error_rate", "p99_latency")
    )
    return error_ratio, p99


@flow(name="canary-guard", log_prints=True)
def canary_guard(
    service: str,
    namespace: str | None = None,
    environment: str | None = None,
    triggers: CanaryTriggers | None = None,
    interval_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0,
    rate_window: str = "1m",
    metrics_service: str | None = None,
    base_url: str | None = None,
    prometheus_url: str | None = None,
    max_per_hour: Annotated[int, Field(ge=0, le=10)] | None = None,
    dry_run: bool = False,
    canary_version: str | None = None,
) -> CanaryGuardResult:
    """Watch a service's canary for its window; roll it back when a playbook trigger holds.

    Args:
        service: A service of the services file with a `canary` section.
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        triggers: The automatic triggers (the decision matrix's `canary` section when None:
            window 10 min, error rate 5 %, P99 500 ms; a value not given is the matrix's).
        interval_seconds: Time between observations.
        rate_window: Rate window of the error-rate and P99 queries.
        metrics_service: The `service` label of the canary's metrics (the service's name).
        base_url: Probe `<base_url>/health` instead of the canary's configured health URL.
        prometheus_url: Overrides `$ROLLBACK_FLOWS_PROMETHEUS_URL`.
        max_per_hour: Hourly cap of automatic rollbacks of the service (the decision
            matrix's `automatic_rollbacks.max_per_hour` when None).
        dry_run: Report what would be rolled back; change nothing.
        canary_version: The version the canary runs, as the pipeline's
            `rollback-flows.canary.started` event says: the canary Deployment must run it,
            else nothing is watched.

    Raises:
        InvalidInputError: unknown service, no canary (or no canary health URL) configured,
            a malformed window, URL or version, or a canary Deployment that does not run
            `canary_version`.
        RollbackRefusedError: a trigger fired while another rollback of the service ran.
    """
    logger = get_run_logger()
    if canary_version is not None:
        validate_version(canary_version)
    cfg = load_service(service, namespace, environment)
    with kubernetes_context(cfg.kube_context):
        canary = cfg.canary
        if canary is None:
            raise InvalidInputError(f"service {cfg.name!r} has no canary configured")
        health_url = _canary_health_url(cfg, base_url)
        if canary_version is not None:
            _check_canary_version(cfg, canary_version)
        matrix = load_decision_matrix()
        limits = triggers or matrix.canary_triggers()
        labels = metrics_service or cfg.name
        prom = resolve_prometheus_url(prometheus_url or cfg.prometheus_url)
        probes = ProbeSettings()

        started = time.monotonic()
        observations = 0
        while True:
            elapsed = time.monotonic() - started
            status = _canary_status(canary, cfg.namespace)
            # the canary's own series: its track and the version its Deployment runs now
            series = (
                canary.own_series(version_of(status.image_of(cfg.container)))
                if status is not None
                else None
            )
            health, detail = _health(canary, status, health_url, probes)
            error_ratio, p99 = _figures(prom, matrix, labels, rate_window, series)
            observation = CanaryObservation(elapsed, health, detail, error_ratio, p99)
            observations += 1
            verdict = evaluate_canary(observation, limits)
            logger.info(
                "canary %s/%s (%s): %s", cfg.namespace, cfg.name, _series(series), verdict.summary
            )
            if verdict.rollback or verdict.window_over:
                break
            time.sleep(min(interval_seconds, max(limits.window_seconds - elapsed, 0.0)))

        rollback = None
        outcome: Literal["passed"] | Action = "passed"
        if verdict.rollback:
            logger.warning("automatic rollback trigger(s): %s", verdict.summary)
            rollback = guarded_rollback(
                service=cfg.name,
                procedure="canary_rollback",
                environment=cfg.environment,
                reason=f"canary guard: {verdict.summary} (the canary's own series "
                f"{label_matchers(series) if series else 'none'}, its /health {health_url})",
                automatic=True,
                max_per_hour=max_per_hour,
                dry_run=dry_run,
            )
            outcome = rollback.action
        result = CanaryGuardResult(
            cfg.name, cfg.namespace, outcome, verdict, observations, rollback, series, health_url
        )
        create_markdown_artifact(
            result.to_markdown(),
            key=f"canary-guard-{cfg.namespace}-{cfg.name}".lower(),
            description=f"{outcome}: {verdict.summary}"[:500],
        )
        return result
