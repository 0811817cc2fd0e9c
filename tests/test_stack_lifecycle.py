"""Starting and stopping the local stack: reuse, half-started stacks, busy ports, failed builds."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from stack import build
from stack.config import REPO_DIR, Ports
from stack.local import LocalStack
from stack.processes import StackError, alive, free_port, stop

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]


def fresh_ports() -> Ports:
    return Ports(
        prometheus=free_port(), alertmanager=free_port(), simulator=free_port(), prefect=free_port()
    )


@pytest.fixture
def spare_stack(request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """A second, short-lived stack (no Prefect), always torn down."""
    stack = LocalStack(f"spare-{os.getpid()}-{request.node.name[:20]}", fresh_ports())
    yield stack
    stack.down()


def cluster_processes(stack: LocalStack) -> list[str]:
    """Command lines of the processes that belong to this stack's cluster."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(stack.dir) in line]


def test_up_twice_reuses_the_running_stack(spare_stack: LocalStack) -> None:
    first = spare_stack.up()
    second = spare_stack.up()
    assert second.pids == first.pids
    assert all(alive(pid) for pid in first.pids.values())
    assert spare_stack.cluster.running()


def test_half_started_stack_is_torn_down_and_restarted(spare_stack: LocalStack) -> None:
    first = spare_stack.up()
    stop(first.pids["simulator"])  # as if it had crashed
    assert spare_stack.running() is None

    second = spare_stack.up()
    assert second.pids["simulator"] != first.pids["simulator"]
    assert not alive(first.pids["prometheus"])  # the rest of the old stack was stopped
    assert spare_stack.running() is not None


def test_a_port_taken_after_it_was_chosen_makes_the_cluster_start_on_others(
    spare_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Another process binds the port chosen for kube-controller-manager before the
    controller manager does (what a second stack or a test's server did on CI): the cluster is
    created again on other ports, at once, not after the 120 s wait for its controllers."""
    import stack.cluster as cluster_module

    chosen = iter(range(1000))
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", free_port()))
        thief.listen()
        taken = thief.getsockname()[1]

        def free_port_but_one() -> int:
            # the fifth port of the configuration is kube-controller-manager's
            return taken if next(chosen) == 4 else free_port()

        monkeypatch.setattr(cluster_module, "free_port", free_port_but_one)
        cluster = spare_stack.cluster
        try:
            cluster.create()
            assert cluster.running()
            options = (cluster.workdir / "kwokctl.yaml").read_text()
            assert f"kubeControllerManagerPort: {taken}" not in options
            api = cluster.api_client()
            try:
                # the controllers run: the default ServiceAccount exists
                client.CoreV1Api(api).read_namespaced_service_account("default", "default")
            finally:
                api.close()
        finally:
            cluster.delete()
    err = capfd.readouterr().err
    assert "kube-controller-manager" in err and f"{taken}" in err
    assert "creating cluster" in err and "again on other ports" in err


def test_down_leaves_nothing_behind(spare_stack: LocalStack) -> None:
    state = spare_stack.up()
    assert cluster_processes(spare_stack)
    spare_stack.down()
    assert not spare_stack.dir.exists()
    assert not any(alive(pid) for pid in state.pids.values())
    assert cluster_processes(spare_stack) == []
    spare_stack.down()  # repeating is safe


def test_busy_port_is_named_and_nothing_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = LocalStack(
            f"busy-{os.getpid()}", Ports(**{**fresh_ports().__dict__, "alertmanager": port})
        )
        with pytest.raises(StackError, match=rf"port {port} .*Alertmanager"):
            stack.up()
    assert not stack.dir.exists()
    assert cluster_processes(stack) == []


def test_failed_build_names_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = build.Binary("kube-nothing", "kubernetes", "k8s.io/kubernetes/cmd/kube-nothing")
    monkeypatch.setattr(build, "BINARIES", (build.BINARIES[0], broken))
    (tmp_path / "etcd").write_text("cached")  # the first step is already done
    with pytest.raises(StackError, match=r"build step \[1/1\] 'kube-nothing' failed") as failed:
        build.build_all(tmp_path)
    assert "kube-nothing" in str(failed.value)
    assert not (tmp_path / "kube-nothing").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["etcd"]  # no scratch directory left


def test_cli_reports_a_stack_that_is_not_running() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stack", "--name", f"absent-{os.getpid()}", "status"],
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
    )
    assert result.returncode == 1
    assert "is not running" in result.stderr
