"""The last known-good revision of a service's Deployment, from the cluster and Prometheus.

read each revision and when it was current (the cluster) → read its version's own error rate
and P99 over that time (Prometheus) → judge each revision and choose (`playbook.known_good`).
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from prefect.logging import get_run_logger

from playbook.errors import InvalidInputError, RollbackError
from playbook.known_good import (
    KNOWN_GOOD_INDICATORS,
    KnownGoodChoice,
    Reading,
    RevisionEvidence,
    RevisionSpan,
    Verdict,
    assessment_plan,
    choose_last_good,
    judge_revision,
    judge_so_far,
    revision_spans,
)
from playbook.rollout import RolloutSnapshot
from playbook.services import ServiceConfig
from playbook.thresholds import Indicator, load_decision_matrix
from tasks.prefect_runs import root_flow_run_id
from tasks.prometheus import read_values_at, resolve_prometheus_url
from tasks.workloads import read_revision_spans


def _queries(
    cfg: ServiceConfig, span: RevisionSpan, end: datetime | None
) -> list[tuple[Indicator, str, tuple[datetime, ...]]]:
    """The span's version's own query of each known-good indicator (none without dates)."""
    matrix = load_decision_matrix()
    queries = []
    if span.version and span.current_from is not None and end is not None:
        for name in KNOWN_GOOD_INDICATORS:
            indicator = matrix.indicator(name)
            plan = assessment_plan(span.current_from, end, indicator.window)
            if plan is not None:
                query = indicator.render(cfg.name, plan.window, {"version": span.version})
                queries.append((indicator, query, plan.times))
    return queries


def _readings(
    cfg: ServiceConfig, spans: list[tuple[RevisionSpan, datetime | None]]
) -> list[tuple[Reading, ...]]:
    """Each span's readings up to its end, every range query of them side by side."""
    matrix = load_decision_matrix()
    queries = [_queries(cfg, span, end) for span, end in spans]
    jobs = [(query, times) for each in queries for _, query, times in each]
    url = resolve_prometheus_url(cfg.prometheus_url) if spans else ""

    def read(query: str, times: tuple[datetime, ...]) -> tuple[float | None, ...]:
        # one range query, without a task run of its own: its client retries
        return read_values_at.fn(url, query, times, matrix.prometheus)

    # each query in a thread with its own copy of the run's context
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), 8))) as pool:
        values = iter(list(pool.map(lambda job: contextvars.copy_context().run(read, *job), jobs)))
    return [tuple(Reading(indicator, next(values)) for indicator, _, _ in each) for each in queries]


def find_last_good(
    cfg: ServiceConfig, min_current_minutes: float, snapshot: RolloutSnapshot | None = None
) -> KnownGoodChoice:
    """Every revision's evidence and the newest earlier one known good (None: none is).

    The revisions are those of `snapshot` (the flow's own read of the Deployment and its
    ReplicaSets), else read now.

    Raises:
        InvalidInputError: no Prometheus URL, or a matrix query that cannot select a version.
        RollbackError: the cluster or Prometheus could not be read.
    """
    key = _judged_key(cfg, min_current_minutes, snapshot)
    judged = _JUDGED.get(key) if key else None
    if judged is not None and time.monotonic() - judged[0] <= JUDGED_TTL_SECONDS:
        get_run_logger().info("%s (as judged seconds ago in this run)", judged[1].message)
        return judged[1]
    min_current = timedelta(minutes=min_current_minutes)
    spans = (
        revision_spans(snapshot.deployment, snapshot.replicasets, cfg.container)
        if snapshot is not None
        else read_revision_spans(cfg.namespace, cfg.deployment, cfg.container)
    )
    now = datetime.now(UTC)
    readings = _readings(cfg, [(span, now if span.current else span.current_to) for span in spans])
    evidence = [
        judge_revision(span, found, min_current)
        for span, found in zip(spans, readings, strict=True)
    ]
    choice = choose_last_good(evidence, min_current)
    get_run_logger().info("%s\n%s", choice.message, choice.to_text())
    if key:
        now_s = time.monotonic()
        for old, (at, _) in list(_JUDGED.items()):  # only the judgements still fresh are kept
            if now_s - at > JUDGED_TTL_SECONDS:
                _JUDGED.pop(old, None)
        _JUDGED[key] = (now_s, choice)
    return choice


JUDGED_TTL_SECONDS = 30.0
"""How long a run's judgement of the revisions serves its own next look at the same ones."""
_JUDGED: dict[tuple[object, ...], tuple[float, KnownGoodChoice]] = {}


def _judged_key(
    cfg: ServiceConfig, minutes: float, snapshot: RolloutSnapshot | None
) -> tuple[object, ...] | None:
    """Which judgement a look at the revisions may reuse: the same root flow run (a guarded
    rollback and the procedure it runs), the same service and rule, and a snapshot whose
    Deployment and ReplicaSets have the same resourceVersions (the cluster unchanged since:
    its truth is read again every time, only Prometheus's evidence seconds old is reused)."""
    root = root_flow_run_id()
    if snapshot is None or not root:
        return None
    versions = tuple(
        str((obj.get("metadata") or {}).get("resourceVersion", ""))
        for obj in (snapshot.deployment, *snapshot.replicasets)
    )
    return (
        root,
        cfg.namespace,
        cfg.deployment,
        cfg.container,
        cfg.prometheus_url,
        minutes,
        versions,
    )


def read_known_good(
    cfg: ServiceConfig, minutes: float, required: bool, snapshot: RolloutSnapshot | None = None
) -> tuple[KnownGoodChoice | None, str]:
    """The revisions' evidence; when not `required`, a failure to read it is only reported
    (a person's rollback does not wait for Prometheus): (None, why)."""
    try:
        return find_last_good(cfg, minutes, snapshot), ""
    except (RollbackError, InvalidInputError) as exc:
        if required:
            raise
        get_run_logger().warning("could not tell which revision is known good: %s", exc)
        return None, f"could not tell which revision is known good: {exc}"


def target_is_known_good(
    known: KnownGoodChoice | None,
    unknown_why: str,
    revision: int | None = None,
    version: str | None = None,
) -> str:
    """Whether the revision (or the newest earlier revision of the version) a rollback goes
    to is known good, as a report line."""
    what = f"revision {revision}" if revision is not None else f"version {version}"
    if known is None:
        return f"Target {what}: {unknown_why}"
    evidence: RevisionEvidence | None
    if revision is not None:
        evidence = known.of(revision)
    else:
        evidence = next(
            (e for e in known.evidence if e.span.version == version and not e.span.current),
            None,
        )
    if evidence is None:
        return f"Target {what}: no earlier revision of the Deployment ran it, so not known good"
    if evidence.verdict is Verdict.GOOD:
        return f"Target {evidence.describe()}"
    return f"Target {what} is NOT known good: {evidence.describe()}"


def stable_is_known_good(
    cfg: ServiceConfig, minutes: float
) -> tuple[str, tuple[dict[str, str], ...]]:
    """Whether the revision the stable Deployment runs now (where a canary rollback sends
    every request) is known good so far, as a report line, and its row; never raises."""
    try:
        spans = read_revision_spans(cfg.namespace, cfg.deployment, cfg.container)
        current = next((s for s in spans if s.current), None)
        if current is None:
            return f"Stable {cfg.deployment}: no current revision found", ()
        now = datetime.now(UTC)
        evidence = judge_so_far(
            current, _readings(cfg, [(current, now)])[0], timedelta(minutes=minutes), now
        )
    except (RollbackError, InvalidInputError) as exc:
        get_run_logger().warning(
            "could not tell whether the stable revision is known good: %s", exc
        )
        return f"Stable {cfg.deployment}: could not tell whether it is known good: {exc}", ()
    good = evidence.verdict is Verdict.GOOD
    line = f"Stable {cfg.deployment} {'' if good else 'is NOT known good: '}{evidence.describe()}"
    return line, (evidence.row(),)
