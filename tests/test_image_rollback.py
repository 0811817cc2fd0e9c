"""Procedure 3 on the real local cluster: `image_rollback` checks the registry, sets the image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import REPOSITORY, build_history, ready_pod_images, snapshot, use_services
from fake_github import FakeGitHub
from kubernetes import client
from prefect.blocks.system import Secret

from flows.image_rollback import image_rollback
from playbook.errors import AccessDeniedError, InvalidInputError, NotFoundError, RolloutFailedError
from playbook.rollout import CHANGE_CAUSE_ANNOTATION, REVISION_ANNOTATION

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

TOKEN_BLOCK = "it-github-token"


@pytest.fixture
def github(local_stack: object) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.add_package(
        "org",
        "acme",
        "rag-api",
        [["v1.2.6-neverready"], ["v1.2.5-pullfail"], ["v1.2.4", "latest"], ["v1.2.3"], []],
    )
    Secret(value=fake.token).save(TOKEN_BLOCK, overwrite=True)
    yield fake
    fake.stop()


@pytest.fixture
def at_v124(
    apps: client.AppsV1Api,
    namespace: str,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """rag-api at v1.2.4 (revision 2, after v1.2.3), flows pointed at the fake registry."""
    use_services(monkeypatch, tmp_path, namespace, timeout=10, registry_url=github.url)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    return namespace


def test_image_rollback_sets_the_image_after_checking_the_registry(
    apps: client.AppsV1Api, kube_api: client.ApiClient, at_v124: str, github: FakeGitHub
) -> None:
    report = image_rollback("rag-api", "v1.2.3")

    after = snapshot(apps, at_v124)
    assert after.image == f"{REPOSITORY}:v1.2.3"
    assert ready_pod_images(client.CoreV1Api(kube_api), at_v124) == [f"{REPOSITORY}:v1.2.3"] * 3
    newest = max(
        apps.list_namespaced_replica_set(at_v124).items,
        key=lambda rs: int(rs.metadata.annotations[REVISION_ANNOTATION]),
    )
    assert newest.metadata.annotations[REVISION_ANNOTATION] == "3"
    assert "image_rollback to v1.2.3" in newest.metadata.annotations[CHANGE_CAUSE_ANNOTATION]
    assert any(r.path.endswith("/packages/container/rag-api/versions") for r in github.requests)
    assert (report.from_version, report.to_version, report.new_revision) == ("v1.2.4", "v1.2.3", 3)

    # Again: nothing changes, and the report says so.
    again = image_rollback("rag-api", "v1.2.3")
    assert snapshot(apps, at_v124) == after
    assert not again.changed and "nothing changed" in again.outcome


@pytest.mark.parametrize("version", ["latest", "v1.2", "1.2.3; rm -rf /"])
def test_malformed_version_changes_nothing(
    apps: client.AppsV1Api, at_v124: str, version: str
) -> None:
    before = snapshot(apps, at_v124)
    with pytest.raises(InvalidInputError, match="malformed version"):
        image_rollback("rag-api", version)
    assert snapshot(apps, at_v124) == before


def test_tag_missing_from_the_registry_changes_nothing(
    apps: client.AppsV1Api, at_v124: str
) -> None:
    before = snapshot(apps, at_v124)
    with pytest.raises(NotFoundError, match=r"tag 'v1.1.0' does not exist"):
        image_rollback("rag-api", "v1.1.0")
    assert snapshot(apps, at_v124) == before


def test_unknown_container_changes_nothing(apps: client.AppsV1Api, at_v124: str) -> None:
    before = snapshot(apps, at_v124)
    with pytest.raises(InvalidInputError, match="no container 'sidecar'"):
        image_rollback("rag-api", "v1.2.3", container="sidecar")
    assert snapshot(apps, at_v124) == before


def test_missing_token_changes_nothing(
    apps: client.AppsV1Api,
    namespace: str,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(
        monkeypatch, tmp_path, namespace, registry_url=github.url, token_secret="it-absent"
    )
    build_history(apps, namespace, ["v1.2.4"])
    before = snapshot(apps, namespace)
    with pytest.raises(AccessDeniedError, match="Secret block 'it-absent' does not exist"):
        image_rollback("rag-api", "v1.2.3")
    assert snapshot(apps, namespace) == before


def test_dry_run_changes_nothing(apps: client.AppsV1Api, at_v124: str) -> None:
    before = snapshot(apps, at_v124)
    report = image_rollback("rag-api", "v1.2.3", dry_run=True)
    assert snapshot(apps, at_v124) == before
    assert report.dry_run and report.change is not None and "v1.2.3" in report.change


def test_image_pull_backoff_fails_naming_the_waiting_reason(
    apps: client.AppsV1Api, at_v124: str
) -> None:
    with pytest.raises(RolloutFailedError, match="ImagePullBackOff: rag-api-") as info:
        image_rollback("rag-api", "v1.2.5-pullfail")
    assert "did not finish rolling out within 10s" in str(info.value)
    # the change was made (it is the rollout that failed), and the old pods still serve
    assert snapshot(apps, at_v124).image == f"{REPOSITORY}:v1.2.5-pullfail"
    d = apps.read_namespaced_deployment("rag-api", at_v124)
    assert d.status.available_replicas >= 2


def test_exceeded_progress_deadline_fails_naming_the_condition(
    apps: client.AppsV1Api,
    namespace: str,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace, timeout=90, registry_url=github.url)
    build_history(apps, namespace, ["v1.2.4"], progressDeadlineSeconds=5)
    with pytest.raises(RolloutFailedError, match="ProgressDeadlineExceeded") as info:
        image_rollback("rag-api", "v1.2.6-neverready")
    assert "exceeded its progress deadline" in str(info.value)
    assert "running but not ready" in str(info.value)
    conditions = apps.read_namespaced_deployment("rag-api", namespace).status.conditions
    progressing = next(c for c in conditions if c.type == "Progressing")
    assert progressing.reason == "ProgressDeadlineExceeded"
