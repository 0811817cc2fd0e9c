"""Who made a Deployment's current revision and when, from the objects the API serves (pure),
and what that means for an alert and for a repeated undo."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from playbook.errors import InvalidInputError, RollbackRefusedError
from playbook.guard import (
    before_release_window,
    duration_seconds,
    judge_recheck,
    judge_release_cause,
    lifetime_window,
)
from playbook.provenance import (
    FIELD_MANAGER,
    ROLLBACK_MARK_ANNOTATION,
    RollbackMark,
    check_repeat,
    judge_alert_age,
    parse_mark,
    rollout_origin,
)
from playbook.thresholds import load_decision_matrix

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
UID = "d-uid"


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "rag-api"}},
        "spec": {"containers": [{"name": "rag-api", "image": image}]},
    }


def replicaset(name: str, revision: int, image: str, created: datetime) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": stamp(created),
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"controller": True, "uid": UID}],
        },
        "spec": {"template": template(image)},
    }


def deployment(
    image: str,
    revision: int,
    writes: list[tuple[str, datetime]],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    managed = [
        {
            "manager": manager,
            "operation": "Update",
            "time": stamp(at),
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {}}}},
        }
        for manager, at in writes
    ]
    managed += [  # the controller's writes never touch the template
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "time": stamp(T0 + timedelta(hours=5)),
            "fieldsV1": {"f:status": {}},
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "time": stamp(T0 + timedelta(hours=5)),
            "fieldsV1": {"f:metadata": {"f:annotations": {}}},
        },
        {
            "manager": "hpa",
            "operation": "Update",
            "subresource": "scale",
            "time": stamp(T0 + timedelta(hours=5)),
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        },
    ]
    return {
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": UID,
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                **(annotations or {}),
            },
            "managedFields": managed,
        },
        "spec": {"template": template(image)},
    }


GOOD, BAD = "ghcr.io/acme/rag-api:v1.2.3", "ghcr.io/acme/rag-api:v1.2.4"
RS_GOOD = replicaset("rag-api-good", 3, GOOD, T0 - timedelta(days=2))
RS_BAD = replicaset("rag-api-bad", 2, BAD, T0 - timedelta(hours=1))


def mark(run: str = "run-1", at: datetime = T0, rs: str = "rag-api-good") -> RollbackMark:
    return RollbackMark(run, 2, 1, rs, at)


def test_a_rollback_by_kubectl_is_dated_by_its_managed_fields_not_the_replicaset() -> None:
    # revision 1's ReplicaSet (two days old) was made current again by `kubectl rollout undo`
    d = deployment(GOOD, 3, [("kubectl-create", T0 - timedelta(days=2)), ("kubectl-rollout", T0)])
    origin = rollout_origin(d, [RS_GOOD, RS_BAD])
    assert origin.replicaset == "rag-api-good" and origin.revision == 3
    assert origin.by == "kubectl-rollout"
    # whole seconds are read as the end of their second
    assert T0 < origin.since < T0 + timedelta(seconds=1)  # type: ignore[operator]
    assert origin.mark is None


def test_this_tools_mark_counts_only_while_its_rollback_is_what_runs() -> None:
    marked = {ROLLBACK_MARK_ANNOTATION: mark().to_annotation()}
    ours = deployment(
        GOOD, 3, [("kubectl-create", T0 - timedelta(days=2)), (FIELD_MANAGER, T0)], marked
    )
    assert rollout_origin(ours, [RS_GOOD, RS_BAD]).mark == mark()
    # someone set another image since: the mark no longer describes what runs
    later = deployment(
        BAD, 4, [(FIELD_MANAGER, T0), ("kubectl-set", T0 + timedelta(minutes=1))], marked
    )
    origin = rollout_origin(later, [RS_GOOD, RS_BAD])
    assert origin.mark is None and origin.by == "kubectl-set" and origin.replicaset == "rag-api-bad"
    # a person's `kubectl rollout undo` copied the mark back from the ReplicaSet: not ours
    copied = deployment(
        GOOD, 5, [(FIELD_MANAGER, T0), ("kubectl-rollout", T0 + timedelta(minutes=9))], marked
    )
    assert rollout_origin(copied, [RS_GOOD, RS_BAD]).mark is None


def test_an_alert_older_than_the_current_revision_is_stale() -> None:
    d = deployment(GOOD, 3, [("kubectl-rollout", T0)], {"kubernetes.io/change-cause": "by hand"})
    origin = rollout_origin(d, [RS_GOOD, RS_BAD])
    stale = judge_alert_age(origin, T0 - timedelta(minutes=2))
    assert stale.stale
    assert "revision 3 (ReplicaSet rag-api-good)" in stale.message
    assert "kubectl-rollout" in stale.message and "'by hand'" in stale.message
    assert not judge_alert_age(origin, T0 + timedelta(minutes=2)).stale
    # within the same whole second as the write: it cannot be about the new revision
    assert judge_alert_age(origin, T0 + timedelta(milliseconds=500)).stale
    with pytest.raises(InvalidInputError):
        judge_alert_age(origin, datetime(2026, 12, 1, 12, 0))


def test_when_the_cluster_says_nothing_the_alert_is_not_taken_as_fresh() -> None:
    d = deployment(GOOD, 3, [])
    origin = rollout_origin(d, [])  # no ReplicaSet, no template write recorded
    assert origin.since is None
    verdict = judge_alert_age(origin, T0)
    assert verdict.stale and "does not say when" in verdict.message


def test_a_second_attempt_of_the_same_run_resumes_and_a_new_undo_soon_after_is_refused() -> None:
    marked = {ROLLBACK_MARK_ANNOTATION: mark().to_annotation()}
    d = deployment(GOOD, 3, [(FIELD_MANAGER, T0)], marked)
    origin = rollout_origin(d, [RS_GOOD, RS_BAD])
    resume = check_repeat(origin, "run-1", T0 + timedelta(minutes=1), to_revision=None, force=False)
    assert resume is not None and resume.mark == mark()
    with pytest.raises(RollbackRefusedError, match="return to revision 2") as refused:
        check_repeat(origin, "run-2", T0 + timedelta(minutes=10), to_revision=None, force=False)
    assert "run-1" in str(refused.value) and "Nothing was changed" in str(refused.value)
    later = T0 + timedelta(minutes=10)
    assert check_repeat(origin, "run-2", later, to_revision=1, force=False) is None
    assert check_repeat(origin, "run-2", later, to_revision=None, force=True) is None
    after_window = T0 + timedelta(minutes=61)
    assert check_repeat(origin, "run-2", after_window, to_revision=None, force=False) is None
    assert (
        check_repeat(origin, "run-2", later, to_revision=None, force=False, window=timedelta(0))
        is None
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "not json",
        "{}",
        '{"flow_run_id":"x","to_revision":1,"replicaset":"r","at":"2026-12-01T12:00:00"}',
    ],
)
def test_a_mark_edited_by_hand_is_no_mark(value: object) -> None:
    assert parse_mark(value) is None


def test_the_mark_round_trips() -> None:
    assert parse_mark(mark().to_annotation()) == mark()


def test_the_recheck_window_is_the_current_revisions_age_at_most_the_indicators() -> None:
    assert duration_seconds("1h30m") == 5400 and duration_seconds("500ms") == 0.5
    with pytest.raises(InvalidInputError):
        duration_seconds("5 minutes")
    assert lifetime_window(T0, T0 + timedelta(seconds=42.7), "5m") == "42s"
    assert lifetime_window(T0, T0 + timedelta(hours=2), "5m") == "300s"
    assert lifetime_window(T0, T0, "5m") == "1s"


def test_the_stretch_before_a_release_never_reaches_back_past_the_previous_revision() -> None:
    """Rolled back at T0, released again 90 s later: the 5 m before the release would hold the
    bad version the rollback removed; the window is the previous revision's 90 s."""
    released = T0 + timedelta(seconds=90.6)
    assert before_release_window(T0, released, "5m") == "90s"
    assert before_release_window(T0 - timedelta(hours=1), released, "5m") == "300s"
    assert before_release_window(None, released, "5m") == "300s"  # nothing known before
    assert before_release_window(released, released, "5m") == "1s"
    assert before_release_window(released + timedelta(seconds=5), released, "5m") == "1s"


def test_the_recheck_acts_only_on_a_critical_value_and_no_data_is_neither() -> None:
    error_rate = load_decision_matrix().indicator("error_rate")
    still = judge_recheck(error_rate, 0.2, "42s")
    assert still.breaching is True and "20 %" in still.message
    recovered = judge_recheck(error_rate, 0.002, "42s")
    assert recovered.breaching is False and "no longer critical" in recovered.message
    assert "0.2 %" in recovered.message
    for missing in (None, math.nan):
        nothing = judge_recheck(error_rate, missing, "42s")
        assert nothing.breaching is None and "no data" in nothing.message
    availability = load_decision_matrix().indicator("availability")
    assert judge_recheck(availability, 0.5, "42s").breaching is True
    assert judge_recheck(availability, 1.0, "42s").breaching is False


def test_only_a_recent_release_after_which_the_indicator_went_bad_is_the_cause() -> None:
    error_rate = load_decision_matrix().indicator("error_rate")
    six_hours = timedelta(hours=6)
    since = T0 - timedelta(minutes=20)
    fresh = judge_release_cause(since, T0, six_hours, error_rate, 0.001, "5m")
    assert fresh.is_release and "20 min old" in fresh.message and "0.1 %" in fresh.message
    old = judge_release_cause(T0 - timedelta(days=3, hours=4), T0, six_hours, error_rate, 0.0, "5m")
    assert not old.is_release
    assert "current for 3 d 4 h, longer than 6 h" in old.message
    assert "cause lies elsewhere" in old.message
    before = judge_release_cause(since, T0, six_hours, error_rate, 0.07, "5m")
    assert not before.is_release and "was already 7 %" in before.message
    # a value exactly at the critical threshold is not above it: still healthy before
    assert judge_release_cause(since, T0, six_hours, error_rate, 0.05, "5m").is_release
    for missing in (None, math.nan):
        unknown = judge_release_cause(since, T0, six_hours, error_rate, missing, "5m")
        assert not unknown.is_release and "no data" in unknown.message
    # without an indicator only the age counts; the boundary itself is still recent
    assert judge_release_cause(T0 - six_hours, T0, six_hours).is_release
    assert not judge_release_cause(T0 - six_hours - timedelta(seconds=1), T0, six_hours).is_release
