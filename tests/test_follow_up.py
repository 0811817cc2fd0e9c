"""What every rollback flow does around its procedure: one rollback of a service at a time,
and the post-rollback monitor scheduled as a follow-up run."""

from __future__ import annotations

from pathlib import Path

import pytest
from cluster import REPOSITORY, snapshot
from conftest import write_post_rollback_settings
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.concurrency.sync import concurrency

from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import RollbackRefusedError
from playbook.names import lock_name
from playbook.post_rollback import POST_ROLLBACK_ENV
from tasks.concurrency import create_service_lock

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]


def test_a_rollback_schedules_one_monitor_run(
    local_stack: object,
    kube_api: client.ApiClient,
    bad_release: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = write_post_rollback_settings(
        tmp_path, after_rollback={"enabled": False}, enabled=True, duration_minutes=1
    )
    monkeypatch.setenv(POST_ROLLBACK_ENV, str(settings))

    state = kubernetes_rollback("rag-api", return_state=True)
    report = state.result()
    rollback_run_id = state.state_details.flow_run_id
    assert snapshot(client.AppsV1Api(kube_api), bad_release).image == f"{REPOSITORY}:v1.2.3"

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["default"]),
            )
        )
        monitors = [
            r for r in runs if r.idempotency_key == f"post-rollback-monitor:{rollback_run_id}"
        ]
        assert len(monitors) == 1
        monitor = monitors[0]
        deployment = prefect.read_deployment(monitor.deployment_id)
    assert deployment.name == "default"
    assert prefect_flow_name(monitor.flow_id) == "post-rollback-monitor"
    assert monitor.parameters["service"] == "rag-api"
    assert monitor.parameters["namespace"] == bad_release
    assert monitor.parameters["environment"] == bad_release  # the services file's only one
    assert monitor.parameters["duration"] == "PT1M"
    assert any(monitor.name in detail for detail in report.details)


def test_no_monitor_when_nothing_changed(
    local_stack: object, bad_release: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = write_post_rollback_settings(
        tmp_path, after_rollback={"enabled": False}, enabled=True, duration_minutes=1
    )
    monkeypatch.setenv(POST_ROLLBACK_ENV, str(settings))
    state = kubernetes_rollback("rag-api", dry_run=True, return_state=True)
    report = state.result()
    assert report.dry_run and not report.changed
    # the server holds no monitor run for this rollback run (its idempotency key names it)
    with get_client(sync_client=True) as prefect:
        keys = {run.idempotency_key for run in prefect.read_flow_runs(limit=200)}
    assert f"post-rollback-monitor:{state.state_details.flow_run_id}" not in keys
    assert not any("monitor" in detail for detail in report.details)


def test_a_manual_rollback_is_refused_while_another_holds_the_service(
    kube_api: client.ApiClient, bad_release: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    before = snapshot(apps, bad_release)
    name = lock_name(bad_release, "rag-api")
    create_service_lock(name)
    with (
        concurrency(name, occupy=1, strict=True, max_retries=0),  # another rollback's hold
        pytest.raises(RollbackRefusedError, match="another rollback of this service"),
    ):
        kubernetes_rollback("rag-api")
    assert snapshot(apps, bad_release) == before

    # Once the other rollback is done, the same request goes through.
    kubernetes_rollback("rag-api")
    assert snapshot(apps, bad_release).image == f"{REPOSITORY}:v1.2.3"


def prefect_flow_name(flow_id: object) -> str:
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow(flow_id).name  # type: ignore[arg-type]
