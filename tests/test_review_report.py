"""The post-incident review as a person reads it: the playbook's template filled in, compared
whole with the reviewed text in tests/golden/; what the bad template changed, every kind of it;
the peak of an indicator whichever way it breaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playbook.review import Review, TimelineEvent, impact_of, template_changes
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

GOLDEN = Path(__file__).with_name("golden")
MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def review(timeline: tuple[TimelineEvent, ...], **changed: Any) -> Review:
    facts: dict[str, Any] = {
        "service": "rag-api",
        "environment": "production",
        "namespace": "rag-prod",
        "reason": "RagApiErrorRateCritical: error rate 20 %",
        "from_version": "v1.2.4",
        "to_version": "v1.2.3",
        "timeline": timeline,
        "impact": (
            "Error Rate: peak 20 %, mean 14 % over 3 min 5 s",
            "P99 Latency: peak 1.20 s, mean 0.80 s over 3 min 5 s",
        ),
        "verdict": "rag-api: RECOVERED",
        "changes": ("image: `rag-api:v1.2.3` → `rag-api:v1.2.4`", "environment variables added: X"),
        "runs": (
            ("rollback (completed)", "http://ui/runs/flow-run/1"),
            ("monitor (completed)", "http://ui/runs/flow-run/2"),
        ),
    }
    return Review(**{**facts, **changed})


def test_a_reviewed_incident_reads_as_the_reviewed_text_its_timeline_in_its_order() -> None:
    # the monitor's verdict comes last although a run's artifact time may be earlier: the
    # timeline is told in the order the runs give it, each with where its time comes from
    timeline = (
        TimelineEvent("Issue detected (the alert started)", at(-65), "the alert's startsAt"),
        TimelineEvent("Rollback initiated", at(4), "flow run rollback started"),
        TimelineEvent("Rollback complete", at(19), "the rollout finished"),
        TimelineEvent("Verification complete", None, "no verification table"),
        TimelineEvent("Monitor verdict: recovered", at(1809), "the monitor run"),
    )
    text = review(timeline).to_markdown()
    assert text == (GOLDEN / "review-recovered.md").read_text()


def test_a_review_without_known_times_leaves_date_and_duration_for_people() -> None:
    timeline = (
        TimelineEvent("Issue detected (the alert started)", None, "no alert"),
        TimelineEvent("Rollback initiated", None, "the run was not found"),
    )
    text = review(timeline, impact=(), changes=(), runs=()).to_markdown()
    assert text == (GOLDEN / "review-nothing-known.md").read_text()


def test_one_known_time_dates_the_review_but_gives_no_duration() -> None:
    one = review((TimelineEvent("Rollback initiated", at(4), "flow run"),))
    assert one.duration_seconds is None
    text = one.to_markdown()
    assert text.startswith("## Post-Incident Review: 2026-12-01 Rollback\n\n### Summary\n")
    assert "- **Date/Time**: 2026-12-01 03:00:04 UTC\n- **Duration**: \n" in text
    two = review((TimelineEvent("a", at(4), "x"), TimelineEvent("b", at(-6), "y")))
    assert two.duration_seconds == 10.0


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "rag-api", "image": "rag-api:v1", **fields}


def template(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": list(containers), **spec}}


def test_pull_secrets_count_as_references_both_ways() -> None:
    good = template(container(), imagePullSecrets=[{"name": "ghcr-old"}, {"name": "shared"}])
    bad = template(container(), imagePullSecrets=[{"name": "shared"}, {"name": "ghcr-new"}])
    assert template_changes(bad, good, "rag-api") == (
        "Secret ghcr-new referenced (not by the good revision)",
        "Secret ghcr-old no longer referenced",
    )
    # a pull secret of the good revision that the bad one names from a volume is no change
    same = template(
        container(),
        volumes=[{"name": "creds", "secret": {"secretName": "ghcr-old"}}],
    )
    assert template_changes(
        same, template(container(), imagePullSecrets=[{"name": "ghcr-old"}]), "rag-api"
    ) == ("no difference in image, env names, references, resources or probes",)


def test_several_env_names_are_listed_sorted_with_commas() -> None:
    good = template(container(env=[{"name": "KEEP"}, {"name": "OLD_B"}, {"name": "OLD_A"}]))
    bad = template(container(env=[{"name": "NEW_Z"}, {"name": "KEEP"}, {"name": "NEW_Y"}]))
    assert template_changes(bad, good, "rag-api") == (
        "environment variables added: NEW_Y, NEW_Z",
        "environment variables removed: OLD_A, OLD_B",
    )


def test_probes_added_or_removed_read_none_on_the_side_without_them() -> None:
    ready = {"httpGet": {"path": "/ready", "port": 8000}}
    live = {"tcpSocket": {"port": 8000}}
    with_probes = template(container(readinessProbe=ready, livenessProbe=live))
    without = template(container())
    added = template_changes(with_probes, without, "rag-api")
    assert added == (
        "probes: none → liveness tcpSocket port 8000; readiness httpGet port 8000 path /ready",
    )
    removed = template_changes(without, with_probes, "rag-api")
    assert removed == (
        "probes: liveness tcpSocket port 8000; readiness httpGet port 8000 path /ready → none",
    )


def test_resources_are_shown_as_sorted_compact_json_and_none_when_absent() -> None:
    good = template(container())
    bad = template(container(resources={"requests": {"memory": "1Gi", "cpu": "1"}}))
    assert template_changes(bad, good, "rag-api") == (
        'resources: none → {"requests":{"cpu":"1","memory":"1Gi"}}',
    )
    # only the named container's resources count, not a sidecar's
    sidecar = {"name": "proxy", "image": "envoy", "resources": {"limits": {"cpu": "2"}}}
    assert template_changes(template(container(), sidecar), good, "rag-api") == (
        "no difference in image, env names, references, resources or probes",
    )


def test_a_container_missing_from_either_template_is_named() -> None:
    with_it = template(container())
    without = template({"name": "other", "image": "x"})
    for bad, good in ((with_it, without), (without, with_it)):
        assert template_changes(bad, good, "rag-api") == (
            "container 'rag-api' is not in both templates",
        )


def test_the_peak_of_an_at_most_indicator_is_its_lowest_and_of_at_least_its_highest() -> None:
    ndcg = MATRIX.indicator("rag_quality_ndcg").model_copy(update={"breach": "at_most"})
    complaints = MATRIX.indicator("user_complaints")
    points = [(at(0), 0.8), (at(10), 0.41), (at(20), 0.7)]
    low = impact_of(ndcg, points, at(0), at(20))
    high = impact_of(complaints, points, at(0), at(20))
    assert low is not None and high is not None
    assert (low.peak, high.peak) == (0.41, 0.8)
