"""The warm-process worker (warm_worker), as the local stack runs it for every flow run.

Real parts throughout: the session stack's Prefect server and its `local` pool of type
`warm-process`, the stack's worker, the cluster. A run's process is read from /proc: a child
of the fork server, not a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from cluster import REPOSITORY, build_history, eventually, snapshot, use_services
from flow_runs import flow_finished_logged, logs_of
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from playbook.services import SERVICES_ENV
from stack.local import StackState
from stack.prefect_worker import (
    WORK_POOL,
    WORKER_TYPE,
    plain_http_client_settings,
    start_worker,
)
from stack.processes import stop
from warm_worker.worker import PRELOAD_ENV, WarmProcessWorker

pytestmark = pytest.mark.stack

GOOD, BAD = "v1.2.3", "v1.2.4"


def start(deployment: str, parameters: dict[str, Any]) -> UUID:
    """A run of `deployment` on the stack's pool, pointed at the test's services file."""
    run: FlowRun = run_deployment(  # type: ignore[call-arg, assignment]
        deployment,
        parameters=parameters,
        job_variables={"env": {SERVICES_ENV: os.environ[SERVICES_ENV]}},
        timeout=0,
        _sync=True,
    )
    return run.id


def read(run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(run_id)


def final(run_id: UUID) -> FlowRun | None:
    run = read(run_id)
    return run if run.state is not None and run.state.is_final() else None


def running_pid(run_id: UUID) -> int:
    """The pid of a run's process once it runs (the worker records it on the run)."""

    def pid() -> int | None:
        run = read(run_id)
        assert run.state is not None and not run.state.is_final(), run.state
        if run.state.type == StateType.RUNNING and run.infrastructure_pid:
            return int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
        return None

    return eventually(pid, 120, "the run running with its pid", interval=0.1)  # type: ignore[no-any-return]


def parent_command(pid: int) -> str:
    """The command line of a process's parent, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
    return Path(f"/proc/{ppid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def monitor(namespace: str) -> UUID:
    """A post-rollback monitor of rag-api in `namespace`: ten minutes of watching."""
    return start(
        "post-rollback-monitor/default",
        {
            "service": "rag-api",
            "namespace": namespace,
            "since": datetime.now(UTC).isoformat(),
            "duration": "PT10M",
            "interval": "PT1M",
        },
    )


@pytest.fixture
def services(namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    use_services(monkeypatch, tmp_path, namespace, timeout=30)
    return namespace


def test_the_stack_pool_is_a_warm_process_pool(local_stack: StackState) -> None:
    with get_client(sync_client=True) as prefect:
        pool = prefect.read_work_pool(WORK_POOL)
    assert pool.type == WORKER_TYPE == "warm-process"
    assert set(pool.base_job_template["variables"]["properties"]) >= {"env", "working_dir"}


def test_the_stack_worker_spares_its_clients_tls_and_csrf_setup_on_plain_http(
    local_stack: StackState,
) -> None:
    ca = Path("/stack/ca.crt")
    assert plain_http_client_settings("https://prefect.example.com/api", ca) == {}
    assert plain_http_client_settings("http://127.0.0.1:4200/api", ca) == {
        "PREFECT_API_SSL_CERT_FILE": str(ca),
        "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
    }
    # the stack's worker (its runs inherit its environment) has them, with a trust file that
    # holds one certificate; the rollbacks below run under them
    environ = Path(f"/proc/{local_stack.pids['worker']}/environ").read_bytes().split(b"\0")
    env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
    assert env["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] == "false"
    trust = Path(env["PREFECT_API_SSL_CERT_FILE"]).read_text()
    assert trust.count("BEGIN CERTIFICATE") == 1


def test_a_rollback_on_the_warm_worker_completes_with_one_undo(
    local_stack: StackState, kube_api: client.ApiClient, services: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    build_history(apps, services, [GOOD, BAD])
    before = snapshot(apps, services)

    run_id = start("kubernetes-rollback/default", {"namespace": services, "comment": "warm"})
    run = eventually(lambda: final(run_id), 120, "the rollback run's end")

    assert run.state.type == StateType.COMPLETED, run.state
    after = snapshot(apps, services)
    assert after.image == f"{REPOSITORY}:{GOOD}"
    assert after.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}
    assert after.generation == before.generation + 1
    # the child's last logs reach the server before it exits (a forked child leaves by
    # os._exit, so it drains Prefect's log service itself)
    eventually(lambda: flow_finished_logged(run_id), 30, "the run's last log line on the server")
    logs = logs_of(run_id)
    # the flow came from the fork server's import of the pull step's very file
    assert "already imported by the worker's fork server" in logs
    assert "Running 1 deployment pull step" not in logs
    # the pods' events and logs are read side by side without Prefect's note on each
    assert "pod(s) running and ready" in logs
    assert "running in a worker thread" not in logs


def test_a_run_is_a_child_of_the_fork_server_and_a_cancelled_one_ends_cancelled(
    local_stack: StackState, services: str
) -> None:
    run_id = monitor(services)
    pid = running_pid(run_id)

    assert "forkserver" in parent_command(pid)

    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(run_id, Cancelling(), force=True)
    run = eventually(lambda: final(run_id), 60, "the cancelled run's end")

    assert run.state.type == StateType.CANCELLED, run.state
    assert not Path(f"/proc/{pid}").exists() or "Z" in _process_state(pid)


def test_a_killed_run_is_crashed_and_the_worker_serves_the_next(
    local_stack: StackState, kube_api: client.ApiClient, services: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    build_history(apps, services, [GOOD, BAD])
    doomed = monitor(services)
    os.kill(running_pid(doomed), signal.SIGKILL)

    crashed = eventually(lambda: final(doomed), 60, "the killed run's end")
    assert crashed.state.type == StateType.CRASHED, crashed.state
    assert "-9" in str(crashed.state.message) or "SIGKILL" in str(crashed.state.message)

    next_run = start("kubernetes-rollback/default", {"namespace": services, "comment": "next"})
    done = eventually(lambda: final(next_run), 120, "the next run's end")
    assert done.state.type == StateType.COMPLETED, done.state
    assert snapshot(apps, services).image == f"{REPOSITORY}:{GOOD}"


def test_two_rollbacks_of_one_service_at_once_make_one_undo(
    local_stack: StackState, kube_api: client.ApiClient, services: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    build_history(apps, services, [GOOD, BAD])
    before = snapshot(apps, services)

    runs = [
        start("kubernetes-rollback/default", {"namespace": services, "comment": name})
        for name in ("one", "two")
    ]
    ended = [eventually(lambda r=r: final(r), 120, "a rollback run's end") for r in runs]

    states = sorted(run.state.type.value for run in ended)
    after = snapshot(apps, services)
    assert after.generation == before.generation + 1, "both runs changed the Deployment"
    assert after.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}
    # one rolled back; the other was refused, by the lock while the first held it or, after
    # it, by the repeat guard (undoing again would restore the version just removed)
    assert states == ["COMPLETED", "FAILED"], [(r.state.type, r.state.message) for r in ended]


HELLO = """
from prefect import flow, get_run_logger
from hello_flows.words import WORD

@flow(name="warm-hello")
def hello() -> str:
    get_run_logger().info("the word is %s", WORD)
    return WORD
"""


def test_code_changed_on_disk_runs_as_it_is_now_not_as_the_fork_server_imported_it(
    local_stack: StackState, tmp_path: Path
) -> None:
    """A worker of its own preloads a project of the test's; one of its modules then changes
    on disk (an SRE pulled a fix). The next run is the new code, in a fresh process, and says
    why it did not start warm."""
    project = tmp_path / "project"
    (project / "hello_flows").mkdir(parents=True)
    (project / "hello_flows" / "__init__.py").write_text("")
    (project / "hello_flows" / "hello.py").write_text(HELLO)
    words = project / "hello_flows" / "words.py"
    words.write_text("WORD = 'first'\n")
    pool = f"warm-{uuid4().hex[:8]}"
    assert local_stack.prefect_api_url is not None
    with get_client(sync_client=True) as prefect:
        prefect.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type=WORKER_TYPE,
                base_job_template=WarmProcessWorker.get_default_base_job_template(),
            )
        )
        flow_id = prefect.create_flow_from_name("warm-hello")
        deployment = prefect.create_deployment(
            flow_id,
            pool,
            work_pool_name=pool,
            entrypoint="hello_flows/hello.py:hello",
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}
            ],
        )
    pid = start_worker(
        local_stack.prefect_api_url,
        Path(local_stack.kubeconfig).parent / "prefect",
        {
            PRELOAD_ENV: "hello_flows.hello",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.getenv("PYTHONPATH")])),
        },
        tmp_path / "worker.log",
        pool=pool,
        name=pool,
    )
    try:

        def run_once(word: str) -> str:
            """A run's logs once they hold the word it logged (they reach the server in
            batches: the last of them may come after its final state)."""
            run: FlowRun = run_deployment(deployment, timeout=0, _sync=True)  # type: ignore[call-arg, assignment]
            ended = eventually(lambda: final(run.id), 120, "the hello run's end")
            assert ended.state.type == StateType.COMPLETED, ended.state

            def logged() -> str | None:
                logs = logs_of(run.id)
                return logs if "the word is" in logs else None

            return eventually(logged, 30, f"the run's log of its word ({word})")  # type: ignore[no-any-return]

        warm = run_once("first")
        assert "the word is first" in warm
        assert "already imported by the worker's fork server" in warm

        words.write_text("WORD = 'second'\n")
        mtime = words.stat().st_mtime_ns + 10**9  # a new mtime even on a coarse clock
        os.utime(words, ns=(mtime, mtime))
        fresh = run_once("second")
        assert "the word is second" in fresh
        assert "code changed on disk since this worker started" in fresh
        assert str(words) in fresh
        assert "already imported by the worker's fork server" not in fresh
        assert "code changed on disk" in (tmp_path / "worker.log").read_text()
    finally:
        stop(pid)
        with get_client(sync_client=True) as prefect, contextlib.suppress(ObjectNotFound):
            prefect.delete_deployment(deployment)
            prefect.delete_work_pool(pool)


def _process_state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return "gone"
    return next(line for line in status.splitlines() if line.startswith("State:"))
