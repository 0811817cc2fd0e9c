"""Two process workers serve one pool; the one running a rollback dies (SIGKILL, with its flow
run, as when its machine goes). The other keeps serving, and the per-service lock
(tasks/concurrency.py) still holds across workers: a second rollback of the same service, on
the surviving worker, is refused while the dead run's lease lasts, and nothing is undone twice.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cluster import (
    REPOSITORY,
    build_history,
    deployment_body,
    eventually,
    snapshot,
    wait_rolled_out,
)
from faults import kill_machine
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pools import pool_with_deployment
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from playbook.names import ledger_name, lock_name
from playbook.provenance import ROLLBACK_MARK_ANNOTATION
from playbook.services import SERVICES_ENV
from stack.config import REPO_DIR
from stack.local import StackState
from stack.prefect_worker import start_worker
from stack.processes import stop
from tasks.concurrency import LEASE_SECONDS, forget_rollbacks

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]

GOOD, BAD = "v1.2.3", "v1.2.4"


@pytest.fixture
def two_namespaces(kube_api: client.ApiClient) -> Iterator[tuple[str, str]]:
    """Two fresh namespaces (rag-api's environments `first` and `second`), deleted after."""
    core = client.CoreV1Api(kube_api)
    names = (f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}")
    for name in names:
        core.create_namespace({"metadata": {"name": name}})
    yield names
    for name in names:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)
    with get_client(sync_client=True) as prefect:
        for name in names:
            with contextlib.suppress(ObjectNotFound):
                prefect.delete_global_concurrency_limit_by_name(lock_name(name, "rag-api"))
            forget_rollbacks(ledger_name(name, "rag-api"))


def write_services(path: Path, first: str, second: str) -> Path:
    """rag-api with two environments, one namespace each."""
    path.write_text(
        f"""
default_service: rag-api
services:
  rag-api:
    default_environment: first
    environments:
      first: {{namespace: {first}}}
      second: {{namespace: {second}}}
    deployment: rag-api
    container: rag-api
    image_repository: {REPOSITORY}
    rollout_timeout_seconds: 60
"""
    )
    return path


def submitted_by(logs: dict[str, Path], run_id: UUID) -> str | None:
    """The worker that started the flow run (both may try; the server lets one)."""
    started = []
    for name, log in logs.items():
        text = log.read_text(errors="replace")
        tried = f"submitting flow run '{run_id}'" in text
        if tried and f"Aborted submission of flow run '{run_id}'" not in text:
            started.append(name)
    assert len(started) <= 1, started
    return started[0] if started else None


def release(apps: client.AppsV1Api, namespace: str, version: str) -> None:
    """A new release, as CI makes it: a new image on the Deployment, rolled out."""
    container = {"name": "rag-api", "image": f"{REPOSITORY}:{version}"}
    body = {"spec": {"template": {"spec": {"containers": [container]}}}}
    apps.patch_namespaced_deployment("rag-api", namespace, body)
    wait_rolled_out(apps, namespace, "rag-api")


def final(prefect: Any, run_id: UUID) -> FlowRun | None:
    run = prefect.read_flow_run(run_id)
    return run if run.state is not None and run.state.is_final() else None


def test_a_killed_worker_leaves_the_other_serving_and_the_lock_holding(
    local_stack: StackState,
    kube_api: client.ApiClient,
    two_namespaces: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apps = client.AppsV1Api(kube_api)
    first, second = two_namespaces
    monkeypatch.setenv(
        SERVICES_ENV, str(write_services(tmp_path / "services.yaml", *two_namespaces))
    )
    # Revision 1's pods become ready 3 s after they start (a KWOK stage): the undo's rollout
    # lasts that long, time enough to kill its worker mid-run.
    slow = deployment_body(f"{REPOSITORY}:{GOOD}")
    slow["spec"]["template"]["metadata"]["annotations"] = {"rollback-flows.dev/ready-delay": "3s"}
    apps.create_namespaced_deployment(first, slow)
    wait_rolled_out(apps, first, "rag-api")
    release(apps, first, BAD)
    build_history(apps, second, [GOOD, BAD])
    before = snapshot(apps, first)
    pool = f"two-workers-{uuid.uuid4().hex[:8]}"
    api_url, home = local_stack.prefect_api_url, Path(local_stack.kubeconfig).parent / "prefect"
    assert api_url is not None
    env = {k: v for k, v in local_stack.env().items() if k not in ("PREFECT_API_URL", SERVICES_ENV)}
    logs = {name: tmp_path / f"{name}.log" for name in ("worker-a", "worker-b")}
    pids: dict[str, int] = {}
    with pool_with_deployment(
        local_stack, pool, "process", "kubernetes-rollback", "default", REPO_DIR, tmp_path
    ) as deployment:
        try:
            with ThreadPoolExecutor(2) as starting:  # side by side: each takes seconds
                started = {
                    name: starting.submit(
                        start_worker,
                        api_url,
                        home,
                        env,
                        log,
                        pool=pool,
                        name=name,
                        worker_type="process",
                    )
                    for name, log in logs.items()
                }
                pids.update({name: future.result() for name, future in started.items()})

            # The first rollback of rag-api in `first`: killed with its worker mid-run, right
            # after its undo's patch landed, while it holds the service's lock.
            one = run_deployment(
                deployment, parameters={"namespace": first, "comment": "one"}, timeout=0
            )
            with get_client(sync_client=True) as prefect:

                def patched() -> bool:
                    assert final(prefect, one.id) is None, "the first run ended before the kill"
                    d = apps.read_namespaced_deployment("rag-api", first)
                    return ROLLBACK_MARK_ANNOTATION in (d.metadata.annotations or {})

                eventually(patched, 90, "the first rollback's patch", interval=0.05)
            dead = submitted_by(logs, one.id)
            assert dead is not None
            kill_machine(pids[dead])
            killed_at = time.monotonic()
            with get_client(sync_client=True) as prefect:  # the dead run still holds it
                lock = prefect.read_global_concurrency_limit_by_name(lock_name(first, "rag-api"))
            [survivor] = [name for name in logs if name != dead]

            with get_client(sync_client=True) as prefect:
                # A second rollback of the same service, while the dead run's lease lasts, and
                # one of another environment, side by side: the surviving worker runs both;
                # the lock refuses the first, the other rolls back.
                two = run_deployment(
                    deployment, parameters={"namespace": first, "comment": "two"}, timeout=0
                )
                three = run_deployment(
                    deployment, parameters={"namespace": second, "comment": "three"}, timeout=0
                )
                refused = eventually(lambda: final(prefect, two.id), 90, "the second run")
                assert time.monotonic() - killed_at < LEASE_SECONDS, (
                    "too slow to tell: the dead run's lease ended before the second run ended"
                )
                done = eventually(lambda: final(prefect, three.id), 90, "the third run")
                orphaned = prefect.read_flow_run(one.id)
                prefect.delete_flow_run(one.id)  # nothing will ever report on it
        finally:
            for pid in pids.values():
                stop(pid)

    # The runs, as the Prefect server holds them.
    assert submitted_by(logs, two.id) == survivor
    assert submitted_by(logs, three.id) == survivor
    assert orphaned.state is not None and orphaned.state.type.value == "RUNNING", orphaned.state
    assert lock.active_slots == 1  # still the dead run's, until its lease ends
    assert refused.state is not None and refused.state.type.value == "FAILED", refused.state
    assert "another rollback of this service is in progress" in str(refused.state.message)
    assert done.state is not None and done.state.type.value == "COMPLETED", done.state

    # The Deployments' revisions: one undo in each namespace, none twice.
    after = snapshot(apps, first)
    assert after.image == f"{REPOSITORY}:{GOOD}"
    assert after.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}
    assert after.generation == before.generation + 1
    other = snapshot(apps, second)
    assert other.image == f"{REPOSITORY}:{GOOD}"
    assert other.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}
