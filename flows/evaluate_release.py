"""When to roll back: the playbook's decision matrix applied to a release, now.

query every indicator of the decision matrix (deployments/decision-matrix.yaml) for the
service → classify each OK / WARNING / CRITICAL (NO DATA when Prometheus has none) → the
overall level → a table artifact. CRITICAL means the playbook says roll back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from playbook.services import load_service
from playbook.thresholds import Classification, Level, MatrixResult, load_decision_matrix
from tasks.prometheus import read_value, resolve_prometheus_url


@dataclass(frozen=True)
class ReleaseEvaluation:
    """The decision matrix for one service at one instant: per metric and overall."""

    service: str
    at: datetime
    level: Level
    classifications: tuple[Classification, ...]

    @property
    def summary(self) -> str:
        """One line: the overall level and each metric's value and level."""
        parts = ", ".join(
            f"{c.indicator.title} {c.observed} {c.level.value}" for c in self.classifications
        )
        return f"{self.service}: {self.level.value} ({parts})"

    def rows(self) -> list[dict[str, str]]:
        """Table-artifact rows: one per metric, then the overall level."""
        rows = MatrixResult(self.classifications).rows()
        return [*rows, {"metric": "Overall", "value": "", "level": self.level.value,
                        "warning": "", "critical": ""}]  # fmt: skip


@flow(name="evaluate-release", log_prints=True)
def evaluate_release(
    service: str,
    window: str | None = None,
    at: datetime | None = None,
    prometheus_url: str | None = None,
) -> ReleaseEvaluation:
    """Classify a service's current error rate, P99, availability, RAG quality and complaints.

    Args:
        service: A service of the services file; its name is the `service` label queried.
        window: Overrides every indicator's rate window (a Prometheus duration, e.g. `5m`).
        at: Evaluate at this instant instead of now.
        prometheus_url: Overrides `$ROLLBACK_FLOWS_PROMETHEUS_URL`.

    Raises:
        InvalidInputError: unknown service, malformed window or URL, an indicator whose query
            returns several series.
    """
    logger = get_run_logger()
    cfg = load_service(service)
    matrix = load_decision_matrix()
    url = resolve_prometheus_url(prometheus_url)
    when = (at or datetime.now(UTC)).astimezone(UTC)
    values: dict[str, float | None] = {}
    for name, indicator in matrix.indicators.items():
        query = indicator.render(cfg.name, window)
        values[name] = read_value(url, query, when, matrix.prometheus)
    result = matrix.classify(values)
    evaluation = ReleaseEvaluation(cfg.name, when, result.level, result.classifications)
    for c in evaluation.classifications:
        logger.info("%s: %s → %s", c.indicator.title, c.observed, c.level.value)
    create_table_artifact(
        evaluation.rows(),
        key=f"evaluate-release-{cfg.name}",
        description=f"Decision matrix of {cfg.name} at {when.isoformat(timespec='seconds')}: "
        f"{evaluation.level.value}",
    )
    logger.info("%s", evaluation.summary)
    return evaluation
