"""Background processes of the local stack: start with a log file, wait until ready, stop.

Every service of the stack (etcd and the control plane are kwokctl's; Prometheus,
Alertmanager, the rag-api simulator and Prefect are ours) runs as a detached process whose
pid is kept in the stack's state, so that `make stack-down` or a test session's finaliser can
stop it even after the process that started it has died.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from stack.errors import StackError as StackError  # raised here, imported from here


def ensure_port_free(port: int, what: str) -> None:
    """Fail with a message naming the port when something already listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(
                f"port {port} on 127.0.0.1 is already in use; {what} cannot start there "
                f"(find the owner with `ss -ltnp 'sport = :{port}'`, or choose another port)"
            ) from exc


FREE_PORTS = range(20000, 32000)
"""Where `free_port` looks: below Linux's ephemeral range (32768-60999), from which every
outgoing connection takes its source port, so a port chosen now is not taken by some client
before the service that is to listen on it starts (two stacks start side by side in tests)."""


def free_port() -> int:
    """A TCP port on loopback that is free right now, outside the ephemeral range."""
    for _ in range(200):
        port = random.choice(FREE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StackError(f"no free loopback port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def start(name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start `argv` detached from this process group, output to `log_path`; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    return proc.pid


def alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def stop(pid: int, timeout: float = 10.0) -> None:
    """Stop a process group started by `start`: SIGTERM, then SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.05)


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    pid: int | None = None,
    log_path: Path | None = None,
) -> None:
    """Poll `check` until it is true; fail if `pid` dies or `timeout` passes, quoting the log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if pid is not None and not alive(pid):
            raise StackError(f"{what} exited while starting{_log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not ready after {timeout:.0f}s{_log_tail(log_path)}")
        time.sleep(0.1)


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: GET `url` answers 2xx."""

    def check() -> bool:
        return httpx.get(url, timeout=2.0).is_success

    return check


def _log_tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(tail)
