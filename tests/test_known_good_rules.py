"""The known-good choice at its edges, from typed data: which ReplicaSet and image a span names,
a ReplicaSet reused twice, a Deployment whose template has no ReplicaSet yet, exact
boundaries (a span of one second, of exactly the minimum, of 2 min, 2 h, 2 days), every
reason a verdict gives, and the table and text a person reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from playbook.known_good import (
    AssessmentPlan,
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
from playbook.provenance import ROLLBACK_MARK_ANNOTATION
from playbook.thresholds import load_decision_matrix

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MATRIX = load_decision_matrix()
ERRORS, P99 = MATRIX.indicator("error_rate"), MATRIX.indicator("p99_latency")
AVAILABILITY = MATRIX.indicator("availability")
HOUR = timedelta(hours=1)
UID = "5b2c3f4e-6f0a-4d2b-9a51-0d7c8e1f2a3b"
REPOSITORY = "ghcr.io/acme/rag-api"
END_OF_SECOND = timedelta(seconds=1) - timedelta(microseconds=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    return f"{at(minutes):%Y-%m-%dT%H:%M:%SZ}"


def pod_template(tag: str, sidecar: bool = False) -> dict[str, Any]:
    containers = [{"name": "rag-api", "image": f"{REPOSITORY}:{tag}"}]
    if sidecar:  # Istio's injected proxy, listed first
        containers.insert(0, {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.3"})
    return {"metadata": {"labels": {"app": "rag-api"}}, "spec": {"containers": containers}}


def replicaset(
    name: str, revision: int, tag: str, created: float, history: str = "", sidecar: bool = False
) -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if history:
        annotations["deployment.kubernetes.io/revision-history"] = history
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": "production",
            "creationTimestamp": stamp(created),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "rag-api",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"replicas": 0, "template": pod_template(tag, sidecar)},
    }


def deployment(
    revision: int, tag: str, written: float, sidecar: bool = False, **annotations: str
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": UID,
            "annotations": {"deployment.kubernetes.io/revision": str(revision), **annotations},
            "managedFields": [
                {
                    "manager": "kubectl-set",
                    "operation": "Update",
                    "time": stamp(written),
                    "fieldsV1": {"f:spec": {"f:template": {}}},
                }
            ],
        },
        "spec": {"replicas": 3, "template": pod_template(tag, sidecar)},
    }


def by_number(spans: tuple[RevisionSpan, ...]) -> dict[int, RevisionSpan]:
    return {s.number: s for s in spans}


# --- when each revision was current, from the cluster ----------------------------------------


def test_each_span_names_its_replicaset_and_the_services_image_not_a_sidecars() -> None:
    replicasets = [
        replicaset("rag-api-5d8f7c9b6d", 1, "v1.2.2", 0, sidecar=True),
        replicaset("rag-api-6c7b9d8f5e", 2, "v1.2.3", 60, sidecar=True),
    ]
    spans = revision_spans(deployment(2, "v1.2.3", 60, sidecar=True), replicasets, "rag-api")
    assert [(s.number, s.replicaset, s.version) for s in spans] == [
        (2, "rag-api-6c7b9d8f5e", "v1.2.3"),
        (1, "rag-api-5d8f7c9b6d", "v1.2.2"),
    ]


def test_a_replicaset_rolled_back_to_twice_is_dated_by_the_mark_of_the_latest_undo() -> None:
    # v1 (rev 1), v2 (rev 2), undo to v1 (rev 3), v3 (rev 4), this tool's undo to v1 again
    # (rev 5: its history is "1,3"), then v4 released (rev 6)
    mark = {
        "flow_run_id": "0b6f1c1e-8d43-4c4e-9a0e-3f7d2a1b5c6d",
        "from_revision": 4,
        "to_revision": 3,
        "replicaset": "rag-api-a",
        "at": at(70).isoformat(),
    }
    replicasets = [
        replicaset("rag-api-a", 5, "v1", 0, history="1,3"),
        replicaset("rag-api-b", 2, "v2", 20),
        replicaset("rag-api-c", 4, "v3", 60),
        replicaset("rag-api-d", 6, "v4", 100),
    ]
    marked = deployment(6, "v4", 100, **{ROLLBACK_MARK_ANNOTATION: json.dumps(mark)})
    spans = by_number(revision_spans(marked, replicasets, "rag-api"))
    # revision 6 is dated as the provenance check dates it: the end of the second it was written
    assert (spans[5].current_from, spans[5].current_to) == (at(70), at(100) + END_OF_SECOND)
    assert (spans[4].current_from, spans[4].current_to) == (at(60), at(70))
    # revision 2 ended when the ReplicaSet became revision 3, which nothing recorded
    assert (spans[2].current_from, spans[2].current_to) == (at(20), None)
    # without the mark, the ReplicaSet's creation (revision 1's start) dates nothing later
    plain = by_number(revision_spans(deployment(6, "v4", 100), replicasets, "rag-api"))
    assert plain[5].current_from is None and plain[4].current_to is None


def test_a_template_without_its_replicaset_yet_makes_no_revision_current() -> None:
    # `kubectl set image` to v1.2.5 was just written; the controller has not created its
    # ReplicaSet yet
    replicasets = [
        replicaset("rag-api-a", 1, "v1.2.3", 0),
        replicaset("rag-api-b", 2, "v1.2.4", 60),
    ]
    spans = by_number(revision_spans(deployment(2, "v1.2.5", 120), replicasets, "rag-api"))
    assert not any(s.current for s in spans.values())
    assert (spans[1].current_from, spans[1].current_to) == (at(0), at(60))


def test_the_current_revision_has_no_end_even_before_the_controller_renumbers_it() -> None:
    # `kubectl rollout undo` just set the template back to revision 1's; the controller has not
    # yet given that ReplicaSet revision 4
    replicasets = [
        replicaset("rag-api-a", 1, "v1", 0),
        replicaset("rag-api-b", 2, "v2", 60),
        replicaset("rag-api-c", 3, "v3", 90),
    ]
    spans = by_number(revision_spans(deployment(3, "v1", 120), replicasets, "rag-api"))
    assert spans[1].current and spans[1].current_to is None and spans[1].seconds is None
    assert spans[1].period().endswith(" - now")


def test_a_period_with_an_unrecorded_end_shows_a_question_mark_for_it() -> None:
    started = RevisionSpan(2, "rag-api-b", "v2", at(20), None, current=False)
    assert started.period() == "2026-12-01 12:20:00 UTC - ?"
    ended = RevisionSpan(3, "rag-api-a", "v1", None, at(100), current=False)
    assert ended.period() == "? - 2026-12-01 13:40:00 UTC"


@pytest.mark.usefixtures("tokyo")
def test_a_period_is_written_in_utc_whatever_the_local_time_zone() -> None:
    assert datetime.fromtimestamp(0).astimezone().utcoffset() == timedelta(hours=9)
    span = RevisionSpan(1, "rag-api-a", "v1", at(0), at(90), current=False)
    assert span.period() == "2026-12-01 12:00:00 UTC - 2026-12-01 13:30:00 UTC"


# --- how an indicator is assessed over a span ------------------------------------------------


def test_a_span_of_exactly_one_second_is_assessed_over_that_second() -> None:
    plan = assessment_plan(at(0), at(0) + timedelta(seconds=1), "5m")
    assert plan == AssessmentPlan("1s", (at(0) + timedelta(seconds=1),))


# --- the verdict on one revision, and its reasons --------------------------------------------


def span(number: int, start: float, end: float | None, current: bool = False) -> RevisionSpan:
    return RevisionSpan(
        number,
        f"rag-api-{number}",
        f"v1.0.{number}",
        at(start),
        None if end is None else at(end),
        current,
    )


def good() -> tuple[Reading, ...]:
    return (Reading(ERRORS, (0.001, 0.004)), Reading(P99, (0.21, 0.34)))


def test_a_good_revision_says_how_long_it_was_current_and_that_each_indicator_stayed_under() -> (
    None
):
    evidence = judge_revision(span(2, 0, 90), good(), HOUR)
    assert evidence.verdict is Verdict.GOOD and evidence.span.number == 2
    assert (
        evidence.why == "current for 90 min, Error Rate under critical, P99 Latency under critical"
    )
    assert evidence.row()["revision"] == "2"


def test_a_revision_current_for_exactly_the_minimum_is_long_enough() -> None:
    assert judge_revision(span(2, 0, 60), good(), HOUR).verdict is Verdict.GOOD


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (119, "119 s"),
        (120, "2 min"),
        (7199, "120 min"),
        (2 * 3600, "2.0 h"),
        ((2 * 60 + 21) * 60, "2.4 h"),  # 2.35 h
        (2 * 86400 - 1, "48.0 h"),
        (2 * 86400, "2.0 days"),
        ((2 * 24 + 8) * 3600 + 24 * 60, "2.4 days"),  # 2.35 days
    ],
)
def test_how_long_a_revision_was_current_is_told_in_the_unit_that_reads_best(
    seconds: int, text: str
) -> None:
    current = RevisionSpan(2, "rag-api-b", "v2", at(0), at(0) + timedelta(seconds=seconds), False)
    evidence = judge_revision(current, good(), timedelta(seconds=1))
    assert evidence.why.startswith(f"current for {text}, "), evidence.why


def test_a_revision_whose_end_is_not_recorded_is_unknown_and_keeps_its_readings() -> None:
    evidence = judge_revision(span(2, 20, None), good(), HOUR)
    assert evidence.verdict is Verdict.UNKNOWN
    assert evidence.why == "when it stopped being current is not recorded in the cluster"
    assert evidence.row()["revision"] == "2" and evidence.row()["error rate"] == "max 0.4 %"


def test_both_critical_indicators_are_named_in_a_bad_revisions_reason() -> None:
    readings = (Reading(ERRORS, (0.002, 0.12)), Reading(P99, (0.3, 1.8)))
    evidence = judge_revision(span(2, 0, 90), readings, HOUR)
    assert evidence.verdict is Verdict.BAD
    assert evidence.why == (
        "Error Rate reached 12 % (critical > 5 %); P99 Latency reached 1800 ms (critical > 1000 ms)"
    )


def test_a_revision_nothing_was_read_for_says_so() -> None:
    evidence = judge_revision(span(2, 0, 90), (), HOUR)
    assert evidence.verdict is Verdict.UNKNOWN and evidence.why == "nothing was read"
    assert evidence.row()["error rate"] == "not read" and evidence.row()["P99"] == "not read"


def test_an_indicator_where_lower_is_worse_reports_its_lowest_value() -> None:
    reading = Reading(AVAILABILITY, (0.9995, 0.9962, 0.9991))
    assert reading.observed() == "min 99.6 %"


def test_the_current_revision_gives_no_reason_and_a_digest_pinned_image_no_version() -> None:
    pinned = RevisionSpan(3, "rag-api-c", None, at(120), None, current=True)
    evidence = judge_revision(pinned, good(), HOUR)
    assert evidence.verdict is Verdict.CURRENT and evidence.why == ""
    assert evidence.describe() == "revision 3 (?): current"
    assert evidence.row()["version"] == "?"


def test_the_stable_revision_judged_so_far_keeps_the_reason() -> None:
    stable = span(3, 0, None, current=True)
    evidence = judge_so_far(stable, good(), HOUR, at(90))
    assert evidence.verdict is Verdict.GOOD
    assert evidence.describe() == (
        "revision 3 (v1.0.3): known good: current for 90 min, Error Rate under critical, "
        "P99 Latency under critical"
    )


# --- the choice, its table and its text ------------------------------------------------------


def evidence(number: int, verdict: Verdict, current: bool = False) -> RevisionEvidence:
    return RevisionEvidence(span(number, 0, None if current else 90, current), (), verdict, "")


def test_without_a_current_revision_the_newest_known_good_one_is_the_target() -> None:
    # the Deployment's new template has no ReplicaSet yet: no revision is current
    choice = choose_last_good([evidence(1, Verdict.GOOD), evidence(2, Verdict.GOOD)], HOUR)
    assert choice.target is not None and choice.target.span.number == 2
    assert choice.min_current == HOUR


def test_a_revision_newer_than_the_current_one_is_never_the_target() -> None:
    # the template was just set back to revision 1's, which is current again before the
    # controller renumbers it; revision 2, newer, was good
    revisions = [evidence(1, Verdict.CURRENT, current=True), evidence(2, Verdict.GOOD)]
    assert choose_last_good(revisions, HOUR).target is None
    # a current revision judged good so far (the stable one of a canary) is not a target either
    so_far = RevisionEvidence(span(2, 0, None, current=True), good(), Verdict.GOOD, "")
    assert choose_last_good([evidence(1, Verdict.BAD), so_far], HOUR).target is None


def test_a_deployment_without_revisions_has_no_table() -> None:
    assert choose_last_good([], HOUR).to_markdown() == "No revisions."


def test_the_table_of_one_revision_has_its_header_separator_and_row() -> None:
    first = judge_revision(span(1, 0, None, current=True), good(), HOUR)
    assert choose_last_good([first], HOUR).to_markdown().splitlines() == [
        "| revision | version | current from-to | error rate | P99 | verdict |",
        "|---|---|---|---|---|---|",
        "| 1 | v1.0.1 | 2026-12-01 12:00:00 UTC - now | max 0.4 % | max 340 ms | current |",
    ]


def test_a_pipe_in_a_cell_is_escaped_so_the_row_keeps_its_columns() -> None:
    # a decision matrix may title an indicator with a pipe in it
    errors = ERRORS.model_copy(update={"title": "Errors (5xx|all)"})
    thin = judge_revision(span(1, 0, 90), (Reading(errors, (None, None)),), HOUR)
    [_, _, row] = choose_last_good([thin], HOUR).to_markdown().splitlines()
    assert row.endswith("| unknown: too little data for Errors (5xx\\|all) (0 of 2 times) |")
    assert row.count(" | ") == 5


def test_the_text_of_the_choice_has_one_line_per_revision() -> None:
    revisions = [
        judge_revision(span(3, 120, None, current=True), good(), HOUR),
        judge_revision(span(2, 0, 120), (Reading(ERRORS, (0.2,)), Reading(P99, (0.3,))), HOUR),
    ]
    assert choose_last_good(revisions, HOUR).to_text() == (
        "- 3 v1.0.3, 2026-12-01 14:00:00 UTC - now: error rate max 0.4 %, P99 max 340 ms → current\n"
        "- 2 v1.0.2, 2026-12-01 12:00:00 UTC - 2026-12-01 14:00:00 UTC: error rate max 20 %, "
        "P99 max 300 ms → bad: Error Rate reached 20 % (critical > 5 %)"
    )
