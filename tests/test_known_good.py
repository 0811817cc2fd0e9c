"""The last known-good revision, decided from typed data: when each revision was current, how
each indicator is assessed over that time, the verdict on one revision, and the choice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from playbook.errors import InvalidInputError
from playbook.known_good import (
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
from playbook.thresholds import Level, load_decision_matrix

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MATRIX = load_decision_matrix()
ERRORS, P99 = MATRIX.indicator("error_rate"), MATRIX.indicator("p99_latency")
HOUR = timedelta(hours=1)
UID = "uid-1"
END_OF_SECOND = timedelta(seconds=1) - timedelta(microseconds=1)


def stamp(minutes: float) -> str:
    return f"{T0 + timedelta(minutes=minutes):%Y-%m-%dT%H:%M:%SZ}"


def template(tag: str) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "rag-api", "image": f"ghcr.io/acme/rag-api:{tag}"}]}}


def rs(name: str, revision: int, tag: str, created: float, former: str = "") -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if former:
        annotations["deployment.kubernetes.io/revision-history"] = former
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": stamp(created),
            "annotations": annotations,
            "ownerReferences": [{"controller": True, "uid": UID}],
        },
        "spec": {"template": template(tag)},
    }


def deployment(revision: int, tag: str, written: float, **annotations: str) -> dict[str, Any]:
    return {
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
        "spec": {"template": template(tag)},
    }


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_each_revision_is_current_from_its_number_until_the_next_one() -> None:
    replicasets = [rs("a", 1, "v1", 0), rs("b", 2, "v2", 90), rs("c", 3, "v3", 120)]
    spans = revision_spans(deployment(3, "v3", 120), replicasets, "rag-api")
    assert [(s.number, s.version, s.current) for s in spans] == [
        (3, "v3", True),
        (2, "v2", False),
        (1, "v1", False),
    ]
    current, second, first = spans
    assert (first.current_from, first.current_to) == (at(0), at(90))
    # the current revision is dated as the provenance check dates it: the end of the second
    # its template was written, so the one before it ends there too
    assert (second.current_from, second.current_to) == (at(90), at(120) + END_OF_SECOND)
    assert current.current_from == at(120) + END_OF_SECOND and current.current_to is None
    assert first.seconds == 90 * 60 and current.seconds is None
    assert first.period() == "2026-12-01 12:00:00 UTC - 2026-12-01 13:30:00 UTC"
    assert current.period().endswith(" - now")


def test_a_reused_replicaset_is_dated_by_this_tools_mark_and_else_unknown() -> None:
    # v1 (rev 1), v2 (rev 2), rolled back to v1 (its ReplicaSet now rev 3), v3 (rev 4)
    mark = {
        "flow_run_id": "run-1",
        "from_revision": 2,
        "to_revision": 1,
        "replicaset": "a",
        "at": (at(30)).isoformat(),
    }
    replicasets = [rs("a", 3, "v1", 0, former="1"), rs("b", 2, "v2", 20), rs("c", 4, "v3", 100)]
    marked = deployment(4, "v3", 100, **{ROLLBACK_MARK_ANNOTATION: json.dumps(mark)})
    spans = {s.number: s for s in revision_spans(marked, replicasets, "rag-api")}
    assert (spans[3].current_from, spans[3].current_to) == (at(30), at(100) + END_OF_SECOND)
    assert (spans[2].current_from, spans[2].current_to) == (at(20), at(30))
    # without the mark (someone else's `kubectl rollout undo`), when v1 came back is unknown,
    # and so is when v2 stopped being current
    plain = {s.number: s for s in revision_spans(deployment(4, "v3", 100), replicasets, "rag-api")}  # fmt: skip
    assert spans[3].version == "v1"
    # a mark of another undo (copied back by a later `kubectl rollout undo`) dates nothing
    stale = {**mark, "from_revision": 1}
    copied = deployment(4, "v3", 100, **{ROLLBACK_MARK_ANNOTATION: json.dumps(stale)})
    assert {s.number: s for s in revision_spans(copied, replicasets, "rag-api")}[
        3
    ].current_from is None
    assert plain[3].current_from is None and plain[3].current_to == at(100) + END_OF_SECOND
    assert plain[2].current_from == at(20) and plain[2].current_to is None


def test_a_missing_next_revision_leaves_the_end_unknown() -> None:
    # revision 2's ReplicaSet was garbage-collected: when revision 1 ended is not recorded
    replicasets = [rs("a", 1, "v1", 0), rs("c", 3, "v3", 120)]
    spans = {s.number: s for s in revision_spans(deployment(3, "v3", 120), replicasets, "rag-api")}  # fmt: skip
    assert spans[1].current_from == at(0) and spans[1].current_to is None


@pytest.mark.parametrize(
    ("minutes", "window", "expected_window", "count"),
    [
        (10, "5m", "300s", 2),  # windows of the indicator's own length tile the span
        (3, "5m", "180s", 1),  # a span shorter than the window: one window, the span
        (24 * 60, "5m", "720s", 120),  # a day: at most 120 times, windows still tile it
    ],
)
def test_assessment_windows_cover_the_span_and_end_when_it_ended(
    minutes: float, window: str, expected_window: str, count: int
) -> None:
    plan = assessment_plan(at(0), at(minutes), window)
    assert plan is not None
    assert plan.window == expected_window and len(plan.times) == count
    assert plan.times[-1] == at(minutes)
    seconds = int(expected_window.removesuffix("s"))
    assert plan.times[0] - timedelta(seconds=seconds) >= at(0)
    assert (plan.times[0] - at(0)).total_seconds() < 2 * seconds  # nothing long left out


def test_no_plan_for_less_than_a_second() -> None:
    assert assessment_plan(at(0), at(0) + timedelta(milliseconds=500), "5m") is None


def span(number: int = 1, start: float = 0, end: float | None = 90, current: bool = False) -> RevisionSpan:  # fmt: skip
    return RevisionSpan(
        number, f"rs-{number}", f"v1.0.{number}", at(start), None if end is None else at(end), current
    )  # fmt: skip


def good_readings() -> tuple[Reading, ...]:
    return (Reading(ERRORS, (0.001, 0.02, 0.0)), Reading(P99, (0.2, 0.6, 0.3)))


def test_warnings_are_still_good_and_one_critical_value_is_bad() -> None:
    good = judge_revision(span(), good_readings(), HOUR)
    assert good.verdict is Verdict.GOOD, good.why
    spike = (Reading(ERRORS, (0.001, 0.051, 0.0)), Reading(P99, (0.2, 0.3, 0.3)))
    bad = judge_revision(span(), spike, HOUR)
    assert bad.verdict is Verdict.BAD
    assert bad.why == "Error Rate reached 5.1 % (critical > 5 %)"
    assert bad.row()["error rate"] == "max 5.1 %"


def test_no_data_is_unknown_never_good() -> None:
    gaps = (Reading(ERRORS, (0.0, None, None, 0.0, 0.0)), Reading(P99, (0.2,) * 5))
    partial = judge_revision(span(), gaps, HOUR)
    assert partial.verdict is Verdict.UNKNOWN
    assert "too little data for Error Rate (3 of 5 times)" in partial.why
    assert partial.row()["error rate"] == "max 0 % (data at 3 of 5 times)"
    nothing = judge_revision(span(), (Reading(ERRORS, (None,)), Reading(P99, ())), HOUR)
    assert nothing.verdict is Verdict.UNKNOWN and nothing.row()["P99"] == "no data"
    assert judge_revision(span(), (), HOUR).verdict is Verdict.UNKNOWN
    # 4 of 5 is enough; a critical value counts even when data is thin
    assert Reading(ERRORS, (0.0, None, 0.0, 0.0, 0.0)).level is Level.OK
    assert Reading(ERRORS, (None, None, None, 0.2)).level is Level.CRITICAL


def test_too_short_current_and_unrecorded_revisions_are_not_good() -> None:
    short = judge_revision(span(end=20), good_readings(), HOUR)
    assert short.verdict is Verdict.TOO_SHORT
    assert short.why == "current for 20 min, less than 60 min"
    assert judge_revision(span(end=None), good_readings(), HOUR).verdict is Verdict.UNKNOWN
    unrecorded = RevisionSpan(1, "rs-1", "v1", None, at(90), False)
    assert "became current is not recorded" in judge_revision(unrecorded, (), HOUR).why
    assert judge_revision(span(current=True, end=None), (), HOUR).verdict is Verdict.CURRENT


def evidence(number: int, verdict: Verdict, current: bool = False) -> RevisionEvidence:
    return RevisionEvidence(span(number, current=current), (), verdict, "")


def test_the_newest_earlier_known_good_revision_is_chosen() -> None:
    revisions = [
        evidence(1, Verdict.GOOD),
        evidence(4, Verdict.CURRENT, current=True),
        evidence(3, Verdict.BAD),
        evidence(2, Verdict.GOOD),
    ]
    choice = choose_last_good(revisions, HOUR)
    assert choice.target is not None and choice.target.span.number == 2
    assert [e.span.number for e in choice.evidence] == [4, 3, 2, 1]
    assert choice.message == "the last known-good revision is revision 2 (v1.0.2): known good"
    assert choice.of(3) is not None and choice.of(9) is None


def test_without_a_known_good_revision_there_is_no_target_and_the_evidence_says_why() -> None:
    revisions = [
        judge_revision(span(3, 120, None, current=True), good_readings(), HOUR),
        judge_revision(span(2, 90, 120), (Reading(ERRORS, (0.2,)), Reading(P99, (0.1,))), HOUR),
        judge_revision(span(1, 0, 90), (Reading(ERRORS, (None,)), Reading(P99, (None,))), HOUR),
    ]
    choice = choose_last_good(revisions, HOUR)
    assert choice.target is None
    assert choice.message == (
        "no earlier revision is known to be good: revision 2 (v1.0.2): too short: current for "
        "30 min, less than 60 min; revision 1 (v1.0.1): unknown: too little data for Error Rate "
        "(0 of 1 times); too little data for P99 Latency (0 of 1 times)"
    )
    table = choice.to_markdown().splitlines()
    assert table[0] == "| revision | version | current from-to | error rate | P99 | verdict |"
    assert table[2].startswith("| 3 | v1.0.3 | 2026-12-01 14:00:00 UTC - now | max 2 % |")
    assert "| 2 | v1.0.2 |" in table[3] and "max 20 %" in table[3]
    assert choose_last_good([evidence(1, Verdict.CURRENT, current=True)], HOUR).message == (
        "no earlier revision to roll back to"
    )


def test_a_matrix_query_is_narrowed_to_one_versions_own_series() -> None:
    query = ERRORS.render("rag-api", "30s", {"version": 'v1.2.3"x'})
    assert query.count('service="rag-api",version="v1.2.3\\"x"') == 3
    assert 'code=~"5.."' in query and "[30s]" in query
    assert P99.render("rag-api", labels={"version": "v1", "track": "canary"}) == (
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{service="rag-api",version="v1",track="canary"}[5m])))'
    )
    assert ERRORS.render("rag-api") == ERRORS.render("rag-api", labels={})
    with pytest.raises(InvalidInputError, match="malformed Prometheus label name"):
        ERRORS.render("rag-api", labels={"bad-name": "x"})
    odd = ERRORS.model_copy(update={"query": 'sum(rate(x{service=~"$service"}[$window]))'})
    with pytest.raises(InvalidInputError, match="cannot be narrowed"):
        odd.render("rag-api", labels={"version": "v1"})


def test_the_revision_before_the_current_one_ends_at_the_earliest_evidence_of_the_write() -> None:
    # the writer's managed-fields time moved on later (it also changed replicas at 12:05):
    # the current ReplicaSet's creation at 12:02 bounds when revision 2 stopped being current
    replicasets = [rs("a", 1, "v1", 0), rs("b", 2, "v2", 1), rs("c", 3, "v3", 2)]
    spans = {s.number: s for s in revision_spans(deployment(3, "v3", 5), replicasets, "rag-api")}  # fmt: skip
    assert spans[2].current_to == at(2) + END_OF_SECOND
    assert spans[3].current_from == at(5) + END_OF_SECOND  # the current one: the latest


def test_the_stable_revision_a_canary_rollback_goes_to_is_judged_as_if_it_ended_now() -> None:
    current = span(3, 0, None, current=True)
    so_far = judge_so_far(current, good_readings(), HOUR, at(90))
    assert so_far.verdict is Verdict.GOOD and so_far.span.current  # the row still says "now"
    assert so_far.row()["current from-to"].endswith(" - now")
    young = judge_so_far(current, good_readings(), HOUR, at(20))
    assert young.verdict is Verdict.TOO_SHORT
    bad = (Reading(ERRORS, (0.3,)), Reading(P99, (0.1,)))
    assert judge_so_far(current, bad, HOUR, at(90)).verdict is Verdict.BAD
    earlier = span(2, 0, 90)
    assert judge_so_far(earlier, good_readings(), HOUR, at(500)).verdict is Verdict.GOOD
