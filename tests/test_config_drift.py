"""Config changed in place: a rollback checks the ConfigMaps and Secrets its target revision
names. Pure rules, then on the real local cluster: a missing one refuses and nothing changes;
one edited after the target stopped being current is a warning in the report."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cluster import REPOSITORY, build_history, snapshot, use_services, wait_settled
from kubernetes import client

from flows.kubernetes_rollback import kubernetes_rollback
from playbook.config_drift import (
    ConfigObject,
    judge_config,
    last_change,
    referenced_objects,
    target_stopped_at,
)
from playbook.diagnosis import ObjectRef
from playbook.errors import RollbackRefusedError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def template(**spec: Any) -> dict[str, Any]:
    container = {"name": "rag-api", "image": "r:v1", **spec.pop("container", {})}
    return {"metadata": {"labels": {"app": "rag-api"}}, "spec": {"containers": [container], **spec}}


def test_every_config_object_the_template_names_is_found_once() -> None:
    refs = referenced_objects(
        template(
            container={
                "envFrom": [{"configMapRef": {"name": "settings"}}],
                "env": [
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "t"}}},
                    {
                        "name": "X",
                        "valueFrom": {
                            "configMapKeyRef": {"name": "settings", "key": "x", "optional": True}
                        },
                    },
                ],
            },
            volumes=[{"name": "v", "configMap": {"name": "prompts", "optional": True}}],
            imagePullSecrets=[{"name": "ghcr"}],
        )
    )
    by_name = {(r.kind, r.name): r for r in refs}
    assert set(by_name) == {
        ("ConfigMap", "settings"),
        ("Secret", "api"),
        ("ConfigMap", "prompts"),
        ("Secret", "ghcr"),
    }
    assert not by_name[("ConfigMap", "settings")].optional  # required by envFrom
    assert by_name[("ConfigMap", "prompts")].optional


def test_a_missing_required_object_refuses_and_a_changed_one_warns() -> None:
    settings = ObjectRef("ConfigMap", "settings", "container rag-api envFrom", False)
    prompts = ObjectRef("ConfigMap", "prompts", "volume v", True)
    with pytest.raises(RollbackRefusedError, match="revision 1 needs ConfigMap settings"):
        judge_config(1, [settings], [ConfigObject("ConfigMap", "settings", False)], T0)
    # an optional one may be missing
    assert (
        judge_config(1, [prompts], [ConfigObject("ConfigMap", "prompts", False)], T0).warnings == ()
    )
    changed = judge_config(
        1, [settings], [ConfigObject("ConfigMap", "settings", True, T0 + timedelta(minutes=5))], T0
    )
    assert (
        len(changed.warnings) == 1
        and "after revision 1 stopped being current" in changed.warnings[0]
    )
    same = judge_config(1, [settings], [ConfigObject("ConfigMap", "settings", True, T0)], T0)
    assert same.warnings == ()
    unknown = judge_config(1, [settings], [ConfigObject("ConfigMap", "settings", None)], T0)
    assert "could not be checked" in unknown.warnings[0]


def test_the_target_stopped_being_current_when_the_next_revision_was_made() -> None:
    def rs(number: int, created: datetime) -> dict[str, Any]:
        return {
            "metadata": {
                "name": f"rs-{number}",
                "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "annotations": {"deployment.kubernetes.io/revision": str(number)},
                "ownerReferences": [{"controller": True, "uid": "u"}],
            }
        }

    deployment = {"metadata": {"uid": "u"}}
    sets = [rs(1, T0), rs(2, T0 + timedelta(hours=1)), rs(3, T0 + timedelta(hours=2))]
    assert target_stopped_at(deployment, sets, 1) == T0 + timedelta(hours=1)
    assert target_stopped_at(deployment, sets, 3) is None
    meta = {
        "creationTimestamp": "2026-12-01T10:00:00Z",
        "managedFields": [{"time": "2026-12-01T11:00:00Z"}, {"time": "2026-12-01T10:30:00Z"}],
    }
    assert last_change(meta) == datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


# --- on the real local cluster ----------------------------------------------------------------


@pytest.fixture
def configured_release(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """rag-api reading ConfigMap `settings` (envFrom): revision 1 good, revision 2 bad."""
    use_services(monkeypatch, tmp_path, namespace)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"MODE": "v1"}}
    )
    env_from = {"envFrom": [{"configMapRef": {"name": "settings"}}]}
    build_history(apps, namespace, ["v1.2.3"])
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "rag-api", **env_from}]}}}},
    )
    time.sleep(1.1)  # whole seconds: the edit below comes after revision 2 was made
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "rag-api", "image": f"{REPOSITORY}:v1.2.4"}]}
                }
            }
        },
    )
    wait_settled(apps, namespace, "rag-api")
    return namespace


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_deleted_config_map_refuses_the_rollback_and_nothing_changes(
    apps: client.AppsV1Api, core: client.CoreV1Api, configured_release: str
) -> None:
    ns = configured_release
    core.delete_namespaced_config_map("settings", ns)
    before = snapshot(apps, ns)
    with pytest.raises(
        RollbackRefusedError, match=r"needs ConfigMap settings .*which does not exist"
    ):
        kubernetes_rollback("rag-api")
    assert snapshot(apps, ns) == before


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_config_map_edited_after_the_target_stopped_being_current_is_a_warning(
    apps: client.AppsV1Api, core: client.CoreV1Api, configured_release: str
) -> None:
    ns = configured_release
    time.sleep(1.1)
    core.patch_namespaced_config_map("settings", ns, {"data": {"MODE": "v2"}})  # edited in place

    report = kubernetes_rollback("rag-api")

    assert report.changed and snapshot(apps, ns).image == f"{REPOSITORY}:v1.2.3"
    [warning] = [d for d in report.details if "ConfigMap settings" in d]
    assert "stopped being current" in warning and "not that config" in warning
    assert "not that config" in report.to_markdown()
