"""Post-rollback verification, immediate checks (0-5 min), as a flow.

check inputs → observe pods, /health, /version, error rate and P99 → the verification
checklist → table artifact; the run fails when a critical check fails or has no data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from playbook.checks import (
    Checklist,
    ProbeResult,
    check_health,
    check_indicator,
    check_pods,
    check_version,
)
from playbook.errors import RollbackError, VerificationFailedError
from playbook.images import validate_version
from playbook.post_rollback import ProbeSettings, load_post_rollback
from playbook.rollout import PodState
from playbook.services import ServiceConfig, load_service
from playbook.thresholds import DecisionMatrix, Indicator, load_decision_matrix
from tasks.kubernetes import kubernetes_context, list_pods, read_deployment_status
from tasks.probes import probe_health, probe_urls, probe_version
from tasks.prometheus import read_value, resolve_prometheus_url


@dataclass(frozen=True)
class VerificationReport:
    """The checklist of one verification and what it was run against."""

    service: str
    namespace: str
    expected_version: str
    checked_at: datetime
    checklist: Checklist

    @property
    def passed(self) -> bool:
        """True when every critical check passed."""
        return self.checklist.passed

    def failure(self) -> str:
        """Why verification failed, in one line."""
        return (
            f"verification of {self.service} in {self.namespace} at {self.expected_version} "
            f"{self.checklist.summary()}"
        )


def _pods(cfg: ServiceConfig) -> tuple[PodState, ...] | str:
    try:
        status = read_deployment_status(cfg.namespace, cfg.deployment)
        return list_pods(cfg.namespace, status.label_selector)
    except RollbackError as exc:
        return f"cannot read pods: {exc}"


def _probe(
    probe: Callable[[str, ProbeSettings], ProbeResult], url: str, settings: ProbeSettings
) -> ProbeResult | str:
    try:
        return probe(url, settings)
    except RollbackError as exc:
        return f"unreachable: {exc}"


def _indicator_value(
    url: str, indicator: Indicator, service: str, window: str, at: datetime, matrix: DecisionMatrix
) -> float | str | None:
    query = indicator.render(service, window)
    try:
        return read_value(url, query, at, matrix.prometheus)
    except RollbackError as exc:
        return f"query failed: {exc}"


def check_the_service(
    cfg: ServiceConfig,
    expected_version: str,
    *,
    base_url: str | None = None,
    prometheus_url: str | None = None,
    window: str | None = None,
) -> VerificationReport:
    """Observe the service once and run the verification checklist over what was seen; the
    table artifact is published. Does not raise on a failed check (see `passed`).

    Raises:
        InvalidInputError: malformed version, URL, window or configuration (nothing probed).
    """
    logger = get_run_logger()
    validate_version(expected_version)
    matrix = load_decision_matrix()
    settings = load_post_rollback(matrix)
    verification = settings.verification
    health_url, version_url = probe_urls(cfg, base_url)
    prom = resolve_prometheus_url(prometheus_url or cfg.prometheus_url)
    rate_window = window or verification.window
    indicators = {name: matrix.indicator(name) for name in verification.indicators}
    for indicator in indicators.values():
        indicator.render(cfg.name, rate_window)  # a malformed window fails here
    critical = set(verification.critical)

    # observe
    at = datetime.now(UTC)
    pods = _pods(cfg)
    health = _probe(probe_health, health_url, settings.probes)
    version = _probe(probe_version, version_url, settings.probes)
    values = {
        name: _indicator_value(prom, ind, cfg.name, rate_window, at, matrix)
        for name, ind in indicators.items()
    }

    # verify
    checklist = Checklist(
        (
            *check_pods(pods, verification.min_pods, critical),
            check_health(health, critical),
            check_version(version, expected_version, critical),
            *(
                check_indicator(ind, verification.indicators[name], values[name], critical)
                for name, ind in indicators.items()
            ),
        )
    )
    for result in checklist.results:
        log = logger.info if result.passed else logger.warning
        log(
            "%s: %s (expected %s) %s", result.check, result.observed, result.expected, result.status
        )

    # report
    create_table_artifact(
        checklist.rows(),
        key=f"verify-rollback-{cfg.name}",
        description=f"Verification of {cfg.namespace}/{cfg.deployment} at "
        f"{expected_version} (rate window {rate_window}): {checklist.summary()}",
    )
    return VerificationReport(cfg.name, cfg.namespace, expected_version, at, checklist)


@flow(name="verify-rollback", log_prints=True)
def verify_rollback(
    service: str,
    expected_version: str,
    namespace: str | None = None,
    environment: str | None = None,
    base_url: str | None = None,
    prometheus_url: str | None = None,
    window: str | None = None,
) -> VerificationReport:
    """The playbook's immediate checks after a rollback, as a table artifact.

    Pods >= 3 and all ready, /health 200, /version equals `expected_version`, error rate
    < 1 %, P99 < 300 ms (limits and which checks are critical: deployments/post-rollback.yaml).

    Args:
        service: A service of the services file.
        expected_version: The version the rollback went to, e.g. v1.2.3.
        namespace: The namespace of one of the service's environments.
        environment: The service's environment in the services file (production, staging,
            ...); its default one unless this or `namespace` names one.
        base_url: Probe `<base_url>/health` and `/version` instead of the configured URLs.
        prometheus_url: Prometheus base URL; `$ROLLBACK_FLOWS_PROMETHEUS_URL` when None.
        window: Rate window of the error-rate and P99 queries (e.g. 1m).

    Raises:
        InvalidInputError: unknown service, malformed version or configuration (nothing probed).
        VerificationFailedError: a critical check failed or had no data.
    """
    cfg = load_service(service, namespace, environment)
    with kubernetes_context(cfg.kube_context):
        report = check_the_service(
            cfg, expected_version, base_url=base_url, prometheus_url=prometheus_url, window=window
        )
    if not report.passed:
        raise VerificationFailedError(report.failure())
    get_run_logger().info("verification of %s passed: %s", cfg.name, report.checklist.summary())
    return report
