"""Times in provenance are instants: the mark and its description are written in UTC whatever
the worker's local time zone, and a creation time with an offset, without a zone or that is
no text at all bounds the previous revision as the instant it stands for (or not at all). The
write that made the current revision is dated by the latest template write, never an earlier
one, and by a ReplicaSet created at the very instant the previous revision became current."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from playbook.provenance import RollbackMark, rollout_origin

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.usefixtures("tokyo")
def test_the_mark_and_its_description_are_in_utc_whatever_the_local_time_zone() -> None:
    assert datetime.fromtimestamp(0).astimezone().utcoffset() == timedelta(hours=9)
    at = datetime(2026, 12, 1, 14, 0, tzinfo=timezone(timedelta(hours=1)))
    mark = RollbackMark("run-1", 3, 4, "rag-api-good", at)
    assert mark.to_annotation().endswith('"at":"2026-12-01T13:00:00+00:00"}')
    assert mark.describe().endswith("at 2026-12-01T13:00:00.000+00:00")


def replicaset(name: str, revision: int, created: object, image: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"controller": True, "uid": "d"}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": image}]}}},
    }


def previous_since(deployment_created: object, previous_created: object) -> datetime | None:
    deployment = {
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": "d",
            "creationTimestamp": deployment_created,
            "annotations": {"deployment.kubernetes.io/revision": "5"},
            "managedFields": [],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:new"}]}}},
    }
    replicasets = [
        replicaset("rag-api-old", 4, previous_created, "a:old"),
        replicaset("rag-api-new", 5, "2026-12-01T12:30:00Z", "a:new"),
    ]
    return rollout_origin(deployment, replicasets).previous_since


def test_a_creation_time_with_an_offset_is_the_instant_it_names() -> None:
    # 13:00 at UTC+1 is 12:00 UTC, later than the ReplicaSet's 11:00 UTC
    assert previous_since("2026-12-01T13:00:00+01:00", "2026-12-01T11:00:00Z") == T0
    assert previous_since("2026-12-01T10:00:00Z", "2026-12-01T13:00:00+01:00") == T0


def test_a_creation_time_without_a_zone_is_utc() -> None:
    found = previous_since("2026-12-01T12:00:00", "2026-12-01T11:00:00Z")
    assert found == T0 and found.tzinfo is not None


def test_a_creation_time_that_is_no_text_bounds_nothing() -> None:
    assert previous_since(1764590400, "2026-12-01T11:00:00Z") == T0 - timedelta(hours=1)
    assert previous_since("", "2026-12-01T11:00:00Z") == T0 - timedelta(hours=1)
    assert previous_since(None, ["2026-12-01T11:00:00Z"]) is None


def deployment_with(*writes: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": "d",
            "creationTimestamp": "2026-12-01T09:00:00Z",
            "annotations": {"deployment.kubernetes.io/revision": "5"},
            "managedFields": [
                {
                    "manager": m,
                    "operation": "Update",
                    "time": t,
                    "fieldsV1": {"f:spec": {"f:template": {}}},
                }
                for m, t in writes
            ],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:new"}]}}},
    }


def test_an_earlier_template_write_of_another_manager_does_not_date_the_release() -> None:
    found = rollout_origin(
        deployment_with(("helm", "2026-12-01T11:00:00Z"), ("ci", "2026-12-01T12:00:00Z")),
        [
            replicaset("rag-api-old", 4, "2026-12-01T11:00:00Z", "a:old"),
            replicaset("rag-api-new", 5, "2026-12-01T12:00:00Z", "a:new"),
        ],
    )
    assert found.by == "ci"
    assert found.written == T0 + timedelta(seconds=1) - timedelta(microseconds=1)


def test_a_replicaset_created_the_instant_the_previous_revision_became_current_dates_the_write() -> (
    None
):
    found = rollout_origin(
        deployment_with(("ci", "2026-12-01T12:00:30Z")),
        [
            replicaset("rag-api-old", 4, "2026-12-01T12:00:00.500Z", "a:old"),
            replicaset("rag-api-new", 5, "2026-12-01T12:00:00.500Z", "a:new"),
        ],
    )
    assert found.previous_since == T0 + timedelta(milliseconds=500)
    assert found.written == T0 + timedelta(milliseconds=500)
