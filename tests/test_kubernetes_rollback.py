"""Procedure 2 on the real local cluster: `kubernetes_rollback` undoes like `kubectl rollout undo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster import REPOSITORY, build_history, ready_pod_images, snapshot, use_services
from kubernetes import client

import tasks.kubernetes
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import InvalidInputError, RevisionNotFoundError
from tasks.kubernetes import read_rollout, undo_deployment

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

GOOD, BAD, WORSE = "v1.2.2", "v1.2.3", "v1.2.4-crashloop"


@pytest.fixture
def three_revisions(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """rag-api with revision 1 good, revision 2 bad, revision 3 crash-looping (stuck)."""
    use_services(monkeypatch, tmp_path, namespace)
    build_history(apps, namespace, [GOOD, BAD, WORSE])
    assert snapshot(apps, namespace).replicasets == {
        1: f"{REPOSITORY}:{GOOD}",
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{WORSE}",
    }
    return namespace


def test_undo_to_the_previous_revision(
    apps: client.AppsV1Api, core: client.CoreV1Api, three_revisions: str
) -> None:
    ns = three_revisions
    report = kubernetes_rollback("rag-api")

    after = snapshot(apps, ns)
    assert after.image == f"{REPOSITORY}:{BAD}"
    # the ReplicaSet of revision 2 is reused under revision 4, as kubectl's undo does
    assert after.replicasets == {
        1: f"{REPOSITORY}:{GOOD}",
        3: f"{REPOSITORY}:{WORSE}",
        4: f"{REPOSITORY}:{BAD}",
    }
    assert ready_pod_images(core, ns) == [f"{REPOSITORY}:{BAD}"] * 3
    d = apps.read_namespaced_deployment("rag-api", ns)
    assert "pod-template-hash" not in d.spec.template.metadata.labels
    assert (report.from_revision, report.to_revision, report.new_revision) == (3, 2, 4)
    assert (report.from_version, report.to_version) == (WORSE, BAD)
    assert report.changed


def test_undo_to_a_specific_revision_past_two_bad_ones(
    apps: client.AppsV1Api, core: client.CoreV1Api, three_revisions: str
) -> None:
    ns = three_revisions
    report = kubernetes_rollback("rag-api", to_revision=1)

    after = snapshot(apps, ns)
    assert after.image == f"{REPOSITORY}:{GOOD}"
    assert after.replicasets == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{WORSE}",
        4: f"{REPOSITORY}:{GOOD}",
    }
    assert ready_pod_images(core, ns) == [f"{REPOSITORY}:{GOOD}"] * 3
    assert "rolled back from revision 3 to revision 1 (now revision 4)" in report.outcome

    # Running the same rollback again changes nothing and says so.
    again = kubernetes_rollback("rag-api", to_revision=1)
    assert snapshot(apps, ns) == after
    assert not again.changed
    assert "already at revision 4" in again.outcome


def test_undo_when_already_at_the_target_changes_nothing(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_services(monkeypatch, tmp_path, namespace)
    build_history(apps, namespace, [GOOD, BAD])
    before = snapshot(apps, namespace)
    report = kubernetes_rollback("rag-api", to_revision=2)
    assert snapshot(apps, namespace) == before  # same generation and resourceVersion
    assert not report.changed
    assert "already at revision 2" in report.outcome


def test_missing_revision_is_a_clear_error_and_changes_nothing(
    apps: client.AppsV1Api, three_revisions: str
) -> None:
    before = snapshot(apps, three_revisions)
    with pytest.raises(RevisionNotFoundError, match=r"revision 9 .*revisions: 1, 2, 3"):
        kubernetes_rollback("rag-api", to_revision=9)
    assert snapshot(apps, three_revisions) == before


def test_unknown_service_is_a_clear_error_and_changes_nothing(
    apps: client.AppsV1Api, three_revisions: str
) -> None:
    before = snapshot(apps, three_revisions)
    with pytest.raises(InvalidInputError, match="unknown service 'rag-apii'"):
        kubernetes_rollback("rag-apii")
    assert snapshot(apps, three_revisions) == before


def test_dry_run_prints_the_patch_and_changes_nothing(
    apps: client.AppsV1Api, three_revisions: str
) -> None:
    before = snapshot(apps, three_revisions)
    report = kubernetes_rollback("rag-api", dry_run=True)
    assert snapshot(apps, three_revisions) == before
    assert report.dry_run and not report.changed
    assert report.change is not None and f"{REPOSITORY}:{BAD}" in report.change
    assert '"path": "/spec/template"' in report.change


def test_a_change_after_the_flows_read_is_not_overwritten_by_its_plan(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The undo decides from the flow's one read of the Deployment; a release landing after
    that read fails the patch's resourceVersion test, and the retry decides from the cluster
    as it is then: the stale plan (back to revision 1) is never written over the release."""
    use_services(monkeypatch, tmp_path, namespace)
    build_history(apps, namespace, [GOOD, BAD])
    read = read_rollout.fn(namespace, "rag-api")  # the flow's read: 2 (BAD) over 1 (GOOD)
    apps.patch_namespaced_deployment(  # then CI releases WORSE (revision 3)
        "rag-api",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "rag-api", "image": f"{REPOSITORY}:{WORSE}"}]}}}},
    )  # fmt: skip

    result = undo_deployment(namespace, "rag-api", snapshot=read)

    after = snapshot(apps, namespace)
    # the undo of what is current now (3 → 2), decided on the second attempt's own read
    assert (result.plan.current_revision, result.plan.target.number) == (3, 2)
    assert after.image == f"{REPOSITORY}:{BAD}"
    assert after.replicasets == {
        1: f"{REPOSITORY}:{GOOD}",
        3: f"{REPOSITORY}:{WORSE}",
        4: f"{REPOSITORY}:{BAD}",
    }


def test_the_rollout_wait_follows_the_watch_without_a_read_per_change(
    apps: client.AppsV1Api, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_history(apps, namespace, [GOOD, BAD])
    reads: list[str] = []
    real_read = tasks.kubernetes.get_deployment

    def counted(ns: str, name: str) -> dict[str, Any]:
        reads.append(name)
        return real_read(ns, name)

    monkeypatch.setattr(tasks.kubernetes, "get_deployment", counted)
    container = {"name": "rag-api", "image": f"{REPOSITORY}:{GOOD}"}
    body = {"spec": {"template": {"spec": {"containers": [container]}}}}
    apps.patch_namespaced_deployment("rag-api", namespace, body)
    status = tasks.kubernetes.wait_for_rollout.fn(namespace, "rag-api", 60)
    assert status.complete and status.updated_replicas == status.desired_replicas == 3
    # one read, then the watch's own objects for every step of the rollout (a broken watch
    # would read again after each change or pause)
    assert reads == ["rag-api"]
    assert snapshot(apps, namespace).image == f"{REPOSITORY}:{GOOD}"
