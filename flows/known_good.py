"""The last known-good revision of a service's Deployment, from the cluster and Prometheus.

read each revision and when it was current (the cluster) → read its version's own error rate
and P99 over that time (Prometheus) → judge each revision and choose (`playbook.known_good`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.logging import get_run_logger

from playbook.known_good import (
    KNOWN_GOOD_INDICATORS,
    KnownGoodChoice,
    Reading,
    assessment_plan,
    choose_last_good,
    judge_revision,
)
from playbook.services import ServiceConfig
from playbook.thresholds import load_decision_matrix
from tasks.prometheus import read_values_at, resolve_prometheus_url
from tasks.workloads import read_revision_spans


def find_last_good(cfg: ServiceConfig, min_current_minutes: float) -> KnownGoodChoice:
    """Every revision's evidence and the newest earlier one known good (None: none is).

    Raises:
        InvalidInputError: no Prometheus URL, or a matrix query that cannot select a version.
        RollbackError: the cluster or Prometheus could not be read.
    """
    min_current = timedelta(minutes=min_current_minutes)
    spans = read_revision_spans(cfg.namespace, cfg.deployment, cfg.container)
    matrix = load_decision_matrix()
    indicators = [matrix.indicator(name) for name in KNOWN_GOOD_INDICATORS]
    url = resolve_prometheus_url(cfg.prometheus_url)
    now = datetime.now(UTC)
    evidence = []
    for span in spans:
        readings = []
        end = now if span.current else span.current_to
        if span.version and span.current_from is not None and end is not None:
            for indicator in indicators:
                plan = assessment_plan(span.current_from, end, indicator.window)
                if plan is None:
                    continue
                query = indicator.render(cfg.name, plan.window, {"version": span.version})
                # one range query each, without a task run of its own: its client retries
                values = read_values_at.fn(url, query, plan.times, matrix.prometheus)
                readings.append(Reading(indicator, values))
        evidence.append(judge_revision(span, readings, min_current))
    choice = choose_last_good(evidence, min_current)
    get_run_logger().info("%s\n%s", choice.message, choice.to_text())
    return choice
