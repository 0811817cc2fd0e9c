"""The Quick Reference on the session's stack: `make rollback-staging VERSION=...` starts the
image-rollback deployment on the Prefect server and follows it to its end; a missing or
malformed VERSION is refused and no flow run is created."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster import REPOSITORY, build_history, snapshot
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
)
from prefect.client.schemas.objects import FlowRun

from stack.local import StackState

pytestmark = [pytest.mark.stack, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parent.parent


def image_rollback_runs() -> list[FlowRun]:
    with get_client(sync_client=True) as prefect:
        return list(
            prefect.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["image-rollback"])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["default"])),
            )
        )


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make` in the repository, with the session stack's environment (PREFECT_API_URL, ...)
    and the worker's services file, as a shell after `eval $(python -m stack env)`."""
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


@pytest.fixture
def staging(kube_api: client.ApiClient) -> Iterator[str]:
    """The `staging` namespace of the shipped services file (other tests use it too: it is
    kept, and emptied of Deployments afterwards)."""
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    try:
        core.create_namespace({"metadata": {"name": "staging"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield "staging"
    for deployment in apps.list_namespaced_deployment("staging").items:
        apps.delete_namespaced_deployment(deployment.metadata.name, "staging")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollback-prod", "VERSION=not-a-version"], "malformed version 'not-a-version'"),
        (["rollback-prod"], "VERSION is missing"),
        (["rollback-staging", "VERSION=v1.2"], "malformed version 'v1.2'"),
    ],
)
def test_a_missing_or_malformed_version_starts_nothing(
    args: list[str], message: str, local_stack: StackState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VERSION", raising=False)
    before = image_rollback_runs()

    result = make(*args)

    assert result.returncode != 0
    assert f"refused, nothing started: {message}" in result.stderr
    assert image_rollback_runs() == before


def test_rollback_staging_runs_the_deployment_to_its_end(
    kube_api: client.ApiClient, local_stack: StackState, staging: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    build_history(apps, staging, ["v1.2.3", "v1.2.4"])
    before = {run.id for run in image_rollback_runs()}

    result = make("rollback-staging", "VERSION=v1.2.3")

    assert result.returncode == 0, result.stdout + result.stderr
    [run] = [r for r in image_rollback_runs() if r.id not in before]
    assert run.parameters == {
        "service": "rag-api",
        "environment": "staging",
        "target_version": "v1.2.3",
    }
    assert run.state is not None and run.state.is_completed()
    assert f"/runs/flow-run/{run.id}" in result.stdout
    assert snapshot(apps, staging).image == f"{REPOSITORY}:v1.2.3"
