"""Who made the current revision and when, stated exactly: the cluster's timestamps read as
the latest instant they may stand for, managed-fields entries that do or do not write the
template, this tool's mark, and the stale-alert and repeat guards at their boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from playbook.errors import InvalidInputError, RollbackRefusedError
from playbook.provenance import (
    ROLLBACK_MARK_ANNOTATION,
    RollbackMark,
    RolloutOrigin,
    StaleAlert,
    TemplateWrite,
    _time,
    check_repeat,
    judge_alert_age,
    parse_mark,
    previous_replicaset,
    rollout_origin,
    template_writes,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
END_OF_SECOND = timedelta(seconds=1) - timedelta(microseconds=1)


def entry(manager: str, at: str, *, template: bool = True, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"f:template": {}} if template else {"f:replicas": {}}
    return {
        "manager": manager,
        "operation": "Update",
        "time": at,
        "fieldsV1": {"f:spec": spec},
        **extra,
    }


def origin(**changes: Any) -> RolloutOrigin:
    base: dict[str, Any] = dict(
        namespace="production",
        name="rag-api",
        revision=4,
        replicaset="rag-api-good",
        since=T0,
        by="kubectl-rollout",
        change_cause=None,
        mark=None,
    )
    return RolloutOrigin(**{**base, **changes})


def test_api_timestamps_are_read_as_the_end_of_their_second() -> None:
    assert _time("2026-12-01T12:00:00Z") == T0 + END_OF_SECOND
    assert _time("2026-12-01T12:00:00") == T0 + END_OF_SECOND  # no zone: UTC
    assert _time("2026-12-01T12:00:00.250Z") == T0 + timedelta(milliseconds=250)
    assert _time("2026-12-01T12:00:00.000+00:00") == T0  # a written fraction is exact
    for unreadable in (None, "", "yesterday", 5):
        assert _time(unreadable) is None


def test_only_entries_that_own_the_template_date_it_and_none_stops_the_search() -> None:
    deployment = {
        "metadata": {
            "managedFields": [
                entry("kube-controller-manager", "2026-12-01T12:09:00Z", subresource="status"),
                entry("hpa", "2026-12-01T12:08:00Z", template=False),
                entry("kubectl-rollout", "2026-12-01T12:05:00Z"),
                entry("ci", "2026-12-01T12:01:00Z", operation="Apply"),
                entry("nobody", "not a time"),
                {"time": "2026-12-01T12:03:00Z", "fieldsV1": {"f:spec": {"f:template": {}}}},
            ]
        }
    }
    assert template_writes(deployment) == (
        TemplateWrite("ci", "Apply", T0 + timedelta(minutes=1) + END_OF_SECOND),
        TemplateWrite("", "", T0 + timedelta(minutes=3) + END_OF_SECOND),
        TemplateWrite("kubectl-rollout", "Update", T0 + timedelta(minutes=5) + END_OF_SECOND),
    )
    assert template_writes({}) == ()


def rs(name: str, created: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "ownerReferences": [{"controller": True, "uid": "d"}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}},
    }


def dep(*fields: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": "d",
            "annotations": {"deployment.kubernetes.io/revision": "4", **(annotations or {})},
            "managedFields": list(fields),
        },
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}},
    }


def test_a_new_replicaset_created_after_the_last_template_write_dates_the_revision() -> None:
    found = rollout_origin(
        dep(entry("ci", "2026-12-01T12:00:00Z")), [rs("rag-api-new", "2026-12-01T12:00:02Z")]
    )
    assert found == RolloutOrigin(
        namespace="production",
        name="rag-api",
        revision=4,
        replicaset="rag-api-new",
        since=T0 + timedelta(seconds=2) + END_OF_SECOND,
        by="ci",
        change_cause=None,
        mark=None,
        written=T0 + END_OF_SECOND,  # the write itself came first
        previous_since=None,
    )
    nothing = rollout_origin({"metadata": {}, "spec": {}}, [])
    assert (nothing.namespace, nothing.name, nothing.since, nothing.by) == ("", "", None, None)
    assert nothing.describe() == "revision None (ReplicaSet not created yet), since an unknown time"


def test_the_origin_says_revision_time_writer_or_mark_and_change_cause() -> None:
    assert origin(change_cause="release v1.2.3").describe() == (
        "revision 4 (ReplicaSet rag-api-good), current since 2026-12-01T12:00:00.000+00:00, "
        "written by kubectl-rollout, change-cause 'release v1.2.3'"
    )
    mark = RollbackMark("run-1", None, 3, "rag-api-good", T0 + timedelta(hours=1, minutes=1))
    assert origin(mark=mark, by=None).describe() == (
        "revision 4 (ReplicaSet rag-api-good), current since 2026-12-01T12:00:00.000+00:00, "
        "made by this tool: flow run run-1 rolled back from revision None to revision 3 "
        "(ReplicaSet rag-api-good) at 2026-12-01T13:01:00.000+00:00"
    )


def test_the_mark_is_compact_json_in_utc_and_a_missing_from_revision_stays_missing() -> None:
    local = datetime(2026, 12, 1, 14, 0, tzinfo=timezone(timedelta(hours=1)))
    mark = RollbackMark("run-1", None, 3, "rs", local)
    assert mark.to_annotation() == (
        '{"flow_run_id":"run-1","from_revision":null,"to_revision":3,"replicaset":"rs",'
        '"at":"2026-12-01T13:00:00+00:00"}'
    )
    assert parse_mark(mark.to_annotation()) == RollbackMark("run-1", None, 3, "rs", local)
    assert parse_mark(RollbackMark("r", 2, 3, "rs", T0).to_annotation()).from_revision == 2  # type: ignore[union-attr]
    annotated = dep(
        entry("rollback-flows", "2026-12-01T12:00:00Z"),
        annotations={ROLLBACK_MARK_ANNOTATION: mark.to_annotation()},
    )
    assert rollout_origin(annotated, [rs("rs", "2026-11-01T00:00:00Z")]).mark == parse_mark(
        mark.to_annotation()
    )


def test_an_alert_that_starts_exactly_when_the_rollback_ran_is_about_the_version_it_made() -> None:
    fresh = judge_alert_age(origin(), T0)
    assert fresh == StaleAlert(
        False,
        "the alert started at 2026-12-01T12:00:00.000+00:00, after Deployment production/rag-api "
        "became revision 4 (ReplicaSet rag-api-good), current since "
        "2026-12-01T12:00:00.000+00:00, written by kubectl-rollout",
    )
    stale = judge_alert_age(origin(), T0 - timedelta(milliseconds=1))
    assert stale == StaleAlert(
        True,
        "not rolled back: the alert started at 2026-12-01T11:59:59.999+00:00, before Deployment "
        "production/rag-api changed to revision 4 (ReplicaSet rag-api-good), current since "
        "2026-12-01T12:00:00.000+00:00, written by kubectl-rollout; the alert is about the "
        "version before it, and undoing now would undo that newer change",
    )
    unknown = judge_alert_age(origin(since=None, by=None), T0)
    assert unknown == StaleAlert(
        True,
        "not rolled back: the cluster does not say when Deployment production/rag-api's current "
        "revision became current (revision 4 (ReplicaSet rag-api-good), since an unknown time), "
        "so the alert (started 2026-12-01T12:00:00.000+00:00) cannot be shown to be about it",
    )
    with pytest.raises(InvalidInputError, match=r"^alert_started_at must carry a time zone$"):
        judge_alert_age(origin(), datetime(2026, 12, 1, 12, 0))


def test_the_repeat_guard_lasts_exactly_its_window_and_names_the_removed_revision() -> None:
    mark = RollbackMark("run-1", 5, 3, "rag-api-good", T0)
    marked = origin(mark=mark)
    assert (
        check_repeat(marked, None, T0 + timedelta(minutes=60), to_revision=None, force=False)
        is None
    )
    with pytest.raises(RollbackRefusedError) as refused:
        check_repeat(
            marked, "run-2", T0 + timedelta(minutes=59, seconds=59), to_revision=None, force=False
        )
    assert str(refused.value) == (
        "refused: Deployment production/rag-api was rolled back by this tool 60 min ago (flow "
        "run run-1 rolled back from revision 5 to revision 3 (ReplicaSet rag-api-good) at "
        "2026-12-01T12:00:00.000+00:00); undoing to the previous revision now would return to "
        "revision 5, the version that rollback removed. Nothing was changed. Pass to_revision "
        "to choose a revision, or force=True to undo anyway (this guard lasts 60 min after a "
        "rollback)"
    )
    assert check_repeat(marked, "run-2", T0, to_revision=0, force=False) is None
    assert check_repeat(marked, "run-2", T0, to_revision=None, force=True) is None
    with pytest.raises(RollbackRefusedError, match=r"this guard lasts 7\.5 min"):
        check_repeat(marked, None, T0, to_revision=None, force=False, window=timedelta(minutes=7.5))


def numbered(name: str, revision: int, created: str, owner: str = "d") -> dict[str, Any]:
    found = rs(name, created)
    found["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": str(revision)}
    found["metadata"]["ownerReferences"][0]["uid"] = owner
    if name != "rag-api-new":  # only the current ReplicaSet has the Deployment's template
        found["spec"]["template"]["spec"]["containers"][0]["image"] = f"a:{name}"
    return found


def created_at(deployment: dict[str, Any], at: str) -> dict[str, Any]:
    deployment["metadata"]["creationTimestamp"] = at
    return deployment


def test_a_slow_controller_does_not_date_the_release_after_its_write() -> None:
    """Under load the controller creates the new ReplicaSet seconds after the template write:
    the stale guard takes the later time, the stretch before the release ends at the write."""
    found = rollout_origin(
        created_at(dep(entry("ci", "2026-12-01T12:00:00Z")), "2026-12-01T11:00:00Z"),
        [
            numbered("rag-api-old", 3, "2026-12-01T11:00:00Z"),
            numbered("rag-api-new", 4, "2026-12-01T12:00:08Z"),
        ],
    )
    assert found.since == T0 + timedelta(seconds=8) + END_OF_SECOND
    assert found.written == T0 + END_OF_SECOND
    assert found.previous_since == T0 - timedelta(hours=1)


def test_a_later_write_of_the_same_manager_does_not_hide_the_new_replicasets_creation() -> None:
    """A manager's time moves with its later writes (a label, replicas): the new ReplicaSet's
    creation is then the earlier bound of when the template changed."""
    found = rollout_origin(
        dep(entry("ci", "2026-12-01T12:00:30Z")),
        [
            numbered("rag-api-old", 3, "2026-12-01T11:50:00Z"),
            numbered("rag-api-new", 4, "2026-12-01T12:00:01Z"),
        ],
    )
    assert found.since == T0 + timedelta(seconds=30) + END_OF_SECOND
    assert found.written == T0 + timedelta(seconds=1) + END_OF_SECOND
    assert found.previous_since == T0 - timedelta(minutes=10)


def test_a_replicaset_brought_back_by_a_rollback_is_dated_by_the_write_not_its_creation() -> None:
    found = rollout_origin(
        dep(entry("kubectl-rollout", "2026-12-01T12:00:00Z")),
        [
            numbered("rag-api-new", 4, "2026-12-01T10:00:00Z"),  # created long before
            numbered("rag-api-bad", 3, "2026-12-01T11:50:00Z"),
        ],
    )
    assert found.written == found.since == T0 + END_OF_SECOND
    assert found.previous_since == T0 - timedelta(minutes=10)


def test_the_previous_revision_became_current_no_earlier_than_this_tools_mark_naming_it() -> None:
    """Released, rolled back by this tool at 11:58 (the mark names that ReplicaSet), released
    again at 12:00: the stretch before the new release starts at the rollback, so the bad
    version it removed does not count against the version that ran after it."""
    mark = RollbackMark("run-1", 3, 4, "rag-api-good", T0 - timedelta(minutes=2))
    found = rollout_origin(
        created_at(
            dep(
                entry("ci", "2026-12-01T12:00:00Z"),
                annotations={ROLLBACK_MARK_ANNOTATION: mark.to_annotation()},
            ),
            "2026-12-01T09:00:00Z",
        ),
        [
            numbered("rag-api-good", 4, "2026-12-01T10:00:00Z"),
            numbered("rag-api-bad", 3, "2026-12-01T11:50:00Z"),
            numbered("rag-api-new", 5, "2026-12-01T12:00:00Z"),
        ],
    )
    assert found.mark is None  # the mark is about the revision before
    assert found.previous_since == T0 - timedelta(minutes=2)
    assert found.written == T0 + END_OF_SECOND
    # a mark naming another ReplicaSet says nothing about the previous one
    other = RollbackMark("run-1", 3, 4, "rag-api-bad", T0 - timedelta(minutes=1))
    found = rollout_origin(
        dep(
            entry("ci", "2026-12-01T12:00:00Z"),
            annotations={ROLLBACK_MARK_ANNOTATION: other.to_annotation()},
        ),
        [
            numbered("rag-api-good", 4, "2026-12-01T10:00:00Z"),
            numbered("rag-api-new", 5, "2026-12-01T12:00:00Z"),
        ],
    )
    assert found.previous_since == T0 - timedelta(hours=2)


def test_the_previous_replicaset_is_the_second_highest_revision_of_this_deployment() -> None:
    deployment = dep()
    replicasets = [
        numbered("rag-api-a", 2, "2026-12-01T10:00:00Z"),
        numbered("rag-api-c", 7, "2026-12-01T10:00:00Z"),
        numbered("rag-api-b", 5, "2026-12-01T10:00:00Z"),
        numbered("other", 6, "2026-12-01T10:00:00Z", owner="x"),
        rs("rag-api-unnumbered", "2026-12-01T10:00:00Z"),
    ]
    previous = previous_replicaset(deployment, replicasets)
    assert previous is not None and previous["metadata"]["name"] == "rag-api-b"
    assert previous_replicaset(deployment, replicasets[:1]) is None
    assert previous_replicaset(deployment, []) is None
