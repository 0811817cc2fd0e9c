"""Config changed in place, stated exactly: pull secrets are required references, a reference
required anywhere is required, times read from managed fields or creation, the refusal and the
warnings word for word."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from playbook.config_drift import (
    ConfigObject,
    judge_config,
    last_change,
    referenced_objects,
    target_stopped_at,
)
from playbook.diagnosis import ObjectRef
from playbook.errors import RollbackRefusedError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_pull_secrets_are_required_and_required_anywhere_wins_over_optional() -> None:
    template = {
        "spec": {
            "imagePullSecrets": [{"name": "ghcr"}],
            "containers": [
                {
                    "name": "api",
                    "env": [
                        {
                            "name": "A",
                            "valueFrom": {
                                "configMapKeyRef": {"name": "cfg", "key": "a", "optional": True}
                            },
                        },
                        {
                            "name": "B",
                            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "b"}},
                        },
                        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "c"}}},
                        {
                            "name": "D",
                            "valueFrom": {
                                "secretKeyRef": {"name": "s", "key": "d", "optional": True}
                            },
                        },
                    ],
                }
            ],
        }
    }
    assert referenced_objects(template) == (
        ObjectRef("ConfigMap", "cfg", "env B of api", False),
        ObjectRef("Secret", "s", "env C of api", False),
        ObjectRef("Secret", "ghcr", "imagePullSecrets", False),
    )


def test_the_last_change_is_the_latest_managed_field_or_the_creation() -> None:
    meta = {
        "creationTimestamp": "2026-03-01T11:00:00Z",
        "managedFields": [{"time": "2026-03-01T12:00:00Z"}, {"time": ""}, {"time": "bad"}, {}],
    }
    assert last_change(meta) == T0
    assert last_change({"creationTimestamp": "2026-03-01T13:00:00"}) == datetime(
        2026, 3, 1, 13, tzinfo=UTC
    )
    assert last_change({"creationTimestamp": 5}) is None
    assert last_change({}) is None


def test_the_target_stopped_when_the_next_revisions_replicaset_was_created() -> None:
    def rs(name: str, revision: int, created: str | None) -> dict[str, object]:
        meta: dict[str, object] = {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"controller": True, "uid": "d"}],
        }
        if created:
            meta["creationTimestamp"] = created
        return {"metadata": meta}

    deployment = {"metadata": {"uid": "d"}}
    sets = [
        rs("a", 1, "2026-03-01T10:00:00Z"),
        rs("b", 3, "2026-03-01T12:00:00Z"),
        rs("c", 2, None),  # no creation time: no evidence
        rs("d", 4, "2026-03-01T11:00:00Z"),
    ]
    # the next numbered revision with a creation time (3), not the earliest time (4's reused RS)
    assert target_stopped_at(deployment, sets, 1) == T0
    assert target_stopped_at(deployment, sets, 3) == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert target_stopped_at(deployment, sets, 4) is None


def test_the_refusal_and_the_warnings_say_what_the_rollback_does_not_bring_back() -> None:
    refs = (
        ObjectRef("ConfigMap", "cfg", "envFrom of api", False),
        ObjectRef("Secret", "tls", "volume tls", False),
        ObjectRef("Secret", "opt", "env X of api", True),
        ObjectRef("ConfigMap", "unread", "volume u", False),
    )
    objects = (
        ConfigObject("ConfigMap", "cfg", True, datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ConfigObject("Secret", "tls", True, T0),  # changed exactly when it stopped: no warning
        ConfigObject("Secret", "opt", False),
        ConfigObject("ConfigMap", "unread", None),
    )
    assert judge_config(2, refs, objects, T0).warnings == (
        "ConfigMap cfg (envFrom of api) changed at 2026-03-01T12:30:00+00:00, after revision 2 "
        "stopped being current (2026-03-01T12:00:00+00:00): the rollback brings back the image, "
        "not that config",
        "ConfigMap unread (volume u): could not be checked; the rollback brings back the image, "
        "not its config",
    )
    assert judge_config(2, refs[:2], objects, None).warnings == ()
    with pytest.raises(RollbackRefusedError) as refused:
        judge_config(
            2,
            refs,
            (ConfigObject("ConfigMap", "cfg", False), ConfigObject("Secret", "tls", False)),
            T0,
        )
    assert str(refused.value) == (
        "refused: revision 2 needs ConfigMap cfg (envFrom of api), Secret tls (volume tls), which "
        "does not exist: its pods could not start. Nothing was changed. Recreate it (or roll back "
        "to another revision) first"
    )


def test_the_first_required_use_of_an_object_is_the_one_named() -> None:
    template = {
        "spec": {
            "containers": [{"name": "api", "envFrom": [{"configMapRef": {"name": "cfg"}}]}],
            "volumes": [{"name": "v", "configMap": {"name": "cfg"}}],
        }
    }
    assert referenced_objects(template) == (ObjectRef("ConfigMap", "cfg", "envFrom of api", False),)


def test_a_time_with_an_offset_is_the_same_instant_in_utc() -> None:
    assert last_change({"creationTimestamp": "2026-03-01T14:00:00+02:00"}) == T0
