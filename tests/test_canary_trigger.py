"""The release pipeline starts the canary guard: `make canary-start` (flows/canary_start.py)
emits `rollback-flows.canary.started`, and prefect.yaml's deployment trigger turns each event
into one canary-guard run with the service, namespace and canary version of its resource."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cluster import REPOSITORY, deployment_body, eventually, use_services
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from flows.canary_guard import canary_guard
from flows.canary_start import EVENT, canary_resource, emit_command
from playbook.errors import InvalidInputError
from stack.config import REPO_DIR
from stack.local import StackState


def canary_start(*args: str) -> subprocess.CompletedProcess[str]:
    """`make canary-start`'s command, as a pipeline runs it."""
    return subprocess.run(
        [sys.executable, "-m", "flows.canary_start", *args],
        cwd=REPO_DIR,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_event_names_the_canary_in_its_resource() -> None:
    resource = canary_resource("rag-api", "production", "v1.3.0")
    assert resource == {
        "prefect.resource.id": "rollback-flows.canary.production.rag-api",
        "prefect.resource.name": "production/rag-api canary v1.3.0",
        "rollback-flows.service": "rag-api",
        "rollback-flows.namespace": "production",
        "rollback-flows.canary-version": "v1.3.0",
    }
    command = emit_command("rag-api", "production", "v1.3.0")
    assert [Path(command[0]).name, *command[1:4]] == ["prefect", "event", "emit", EVENT]


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (("rag-api", "production", "1.3"), "malformed version '1.3'"),
        (("rag-api", "production", "latest"), "malformed version 'latest'"),
        (("ghost", "production", "v1.3.0"), "ghost"),
        (("rag-api", "nowhere", "v1.3.0"), "nowhere"),
    ],
)
def test_bad_input_emits_nothing(args: tuple[str, str, str], refusal: str) -> None:
    with pytest.raises(InvalidInputError, match=refusal):
        emit_command(*args)


def guard_runs(prefect: Any, version: str) -> list[Any]:
    """The canary-guard runs whose canary_version is `version`."""
    deployment = prefect.read_deployment_by_name("canary-guard/default")
    runs = prefect.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
    )
    return [r for r in runs if r.parameters.get("canary_version") == version]


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_the_canary_started_event_starts_one_guard_run_with_its_parameters(
    local_stack: StackState, simulator_namespace: str
) -> None:
    version = f"v1.3.{random.randrange(1000, 10**6)}"
    refused = canary_start("rag-api", simulator_namespace, "not-a-version")
    assert refused.returncode == 2
    assert "refused, nothing emitted: malformed version 'not-a-version'" in refused.stderr

    started = canary_start("rag-api", simulator_namespace, version)
    assert started.returncode == 0, started.stderr
    assert "prefect event emit rollback-flows.canary.started --resource" in started.stderr

    with get_client(sync_client=True) as prefect:
        [run] = eventually(lambda: guard_runs(prefect, version), 30, "the canary-guard run")

        def finished() -> Any:
            stored = prefect.read_flow_run(run.id)
            return stored if stored.state is not None and stored.state.is_final() else None

        # The session's worker runs it: no canary Deployment runs that version here, so the
        # guard refuses to watch it, at once and saying so.
        done = eventually(finished, 60, "the guard run to end")
        assert len(guard_runs(prefect, version)) == 1  # one event, one run
    assert {k: done.parameters[k] for k in ("service", "namespace", "canary_version")} == {
        "service": "rag-api",
        "namespace": simulator_namespace,
        "canary_version": version,
    }
    assert done.state.type.value == "FAILED", done.state
    assert (
        f"canary Deployment {simulator_namespace}/rag-api-canary does not exist: "
        f"canary {version} not watched"
    ) in str(done.state.message)


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_the_guard_watches_only_the_canary_version_it_was_started_for(
    kube_api: client.ApiClient, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = client.AppsV1Api(kube_api)
    apps.create_namespaced_deployment(
        namespace, deployment_body(f"{REPOSITORY}:v1.3.0", replicas=1, name="rag-api-canary")
    )
    use_services(monkeypatch, tmp_path, namespace, canary_url="http://127.0.0.1:9")
    with pytest.raises(InvalidInputError) as refused:
        canary_guard("rag-api", canary_version="v1.3.1")
    assert str(refused.value) == (
        f"canary Deployment {namespace}/rag-api-canary runs v1.3.0, not v1.3.1: "
        "canary v1.3.1 not watched"
    )
    with pytest.raises(InvalidInputError, match="malformed version 'latest'"):
        canary_guard("rag-api", canary_version="latest")
