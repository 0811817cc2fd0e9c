"""The post-incident review's pure parts: impact figures, what the bad template changed, the
playbook's template filled in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from playbook.notices import duration_text
from playbook.review import Review, TimelineEvent, impact_of, template_changes
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def template(image: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "rag-api"}},
        "spec": {"containers": [{"name": "rag-api", "image": image, **container}]},
    }


def test_impact_is_the_peak_and_mean_inside_the_incident_only() -> None:
    points = [(at(-30), 0.9), (at(0), 0.0), (at(60), 0.2), (at(120), 0.1), (at(200), 0.8)]
    impact = impact_of(MATRIX.indicator("error_rate"), points, at(0), at(120))
    assert impact is not None
    assert (impact.peak, impact.points) == (0.2, 3)
    assert impact.mean == pytest.approx(0.1)
    assert impact.line() == (
        "Error Rate: peak 20 %, mean 10 % over 2 min 0 s (03:00:00 to 03:02:00 UTC, 3 points)"
    )
    assert impact_of(MATRIX.indicator("error_rate"), points, at(300), at(400)) is None


def test_the_peak_of_an_indicator_that_breaches_below_is_its_lowest_value() -> None:
    points = [(at(0), 0.8), (at(10), 0.41), (at(20), 0.7)]
    impact = impact_of(MATRIX.indicator("rag_quality_ndcg"), points, at(0), at(20))
    assert impact is not None and impact.peak == 0.41


def test_template_changes_name_image_env_refs_resources_and_probes_never_values() -> None:
    good = template(
        "ghcr.io/acme/rag-api:v1.2.3",
        env=[{"name": "MODEL", "value": "small"}, {"name": "OLD_FLAG", "value": "1"}],
        envFrom=[{"configMapRef": {"name": "rag-config-v1"}}],
        resources={"limits": {"memory": "1Gi"}},
        readinessProbe={"httpGet": {"path": "/health", "port": 8000}},
    )
    bad = template(
        "ghcr.io/acme/rag-api:v1.2.4",
        env=[
            {"name": "MODEL", "value": "large"},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "k"}}},
        ],
        envFrom=[{"configMapRef": {"name": "rag-config-v2"}}],
        resources={"limits": {"memory": "512Mi"}},
        readinessProbe={"httpGet": {"path": "/ready", "port": 8000}},
    )
    changes = template_changes(bad, good, "rag-api")
    assert changes == (
        "image: `ghcr.io/acme/rag-api:v1.2.3` → `ghcr.io/acme/rag-api:v1.2.4`",
        "environment variables added: API_KEY",
        "environment variables removed: OLD_FLAG",
        "ConfigMap rag-config-v2 referenced (not by the good revision)",
        "Secret llm referenced (not by the good revision)",
        "ConfigMap rag-config-v1 no longer referenced",
        'resources: {"limits":{"memory":"1Gi"}} → {"limits":{"memory":"512Mi"}}',
        "probes: readiness httpGet port 8000 path /health → readiness httpGet port 8000 path /ready",
    )
    assert not any("large" in c or "small" in c for c in changes)  # values never shown


def test_identical_templates_say_so_and_a_missing_container_is_named() -> None:
    same = template("ghcr.io/acme/rag-api:v1.2.3")
    assert template_changes(same, same, "rag-api") == (
        "no difference in image, env names, references, resources or probes",
    )
    assert template_changes(same, same, "sidecar") == (
        "container 'sidecar' is not in both templates",
    )


def test_the_review_fills_the_playbook_template_and_leaves_the_rest_to_people() -> None:
    review = Review(
        service="rag-api",
        environment="production",
        namespace="production",
        reason="error rate 20 %",
        from_version="v1.2.4",
        to_version="v1.2.3",
        timeline=(
            TimelineEvent("Issue detected (the alert started)", at(0), "the alert's startsAt"),
            TimelineEvent("Rollback initiated", at(4), "flow run x started"),
            TimelineEvent("Rollback complete", at(9), "the rollout finished"),
            TimelineEvent("Verification complete", None, "no verification table"),
            TimelineEvent("Monitor verdict: recovered", at(1809), "this run"),
        ),
        impact=("Error Rate: peak 20 %",),
        verdict="rag-api: RECOVERED",
        changes=("image: `a` → `b`",),
        runs=(("rollback (completed)", "http://ui/runs/flow-run/1"),),
    )
    assert review.duration_seconds == 1809
    markdown = review.to_markdown()
    assert markdown.startswith("## Post-Incident Review: 2026-12-01 Rollback\n")
    assert "- **Duration**: 30 min 9 s\n" in markdown
    assert "| 03:00:04 | Rollback initiated | flow run x started |" in markdown
    assert "| — | Verification complete | no verification table |" in markdown
    assert "- **Root Cause**: \n" in markdown
    for heading in ("What Went Well", "What Could Be Improved", "Action Items", "Attendees"):
        assert f"### {heading}\n" in markdown


def test_durations_read_as_a_person_says_them() -> None:
    assert [duration_text(s) for s in (0, 45.4, 65, 3600 + 180 + 5)] == [
        "0 s",
        "45 s",
        "1 min 5 s",
        "1 h 3 min",
    ]
