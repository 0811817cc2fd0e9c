"""Deploy prefect.yaml to a Prefect server and run a process worker for it, on loopback.

This is how the local stack makes flow runs created from the UI, from schedules
(post-rollback monitoring) and from alerts (the receiver) actually execute: the same
`prefect deploy --all` an SRE runs in production, on a `warm-process` work pool (this
project's worker: runs forked from a parent that has imported the flows, see `warm_worker`)
instead of a `kubernetes` one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stack.config import REPO_DIR
from stack.processes import StackError, start, wait_until

WORK_POOL = "local"
WORKER_TYPE = "warm-process"


def _prefect(*args: str, env: dict[str, str], timeout: float = 180) -> str:
    argv = [str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args]
    try:
        result = subprocess.run(
            argv,
            cwd=REPO_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`prefect {' '.join(args)}` timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        raise StackError(
            f"`prefect {' '.join(args)}` failed (exit {result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
    return result.stdout


def _env(api_url: str, home: Path) -> dict[str, str]:
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "ROLLBACK_FLOWS_HOME": str(REPO_DIR),
        "ROLLBACK_FLOWS_WORK_POOL": WORK_POOL,
    }


def plain_http_client_settings(api_url: str, trust_file: Path) -> dict[str, str]:
    """Settings that spare each Prefect client of a worker's runs two costs, when its server
    speaks plain HTTP without CSRF protection (the stack's, on loopback).

    - A Prefect client builds a TLS context when it is created, whether or not it will speak
      TLS: by default from certifi's bundle (about 150 certificates), 16 ms of CPU here. A
      flow run creates several (the engine's, its suspension observer's, one per subflow for
      the tracking task), two of them before the run is Running. With one certificate as the
      trust file (`trust_file`, the stack's own CA) it takes 0.3 ms. No TLS is spoken to an
      `http://` API, so nothing is ever checked against it.
    - With CSRF support on, each client's first change asks the server for a token, which a
      server without CSRF protection refuses: one more call per client.

    Nothing for an `https://` API: its trust and CSRF are the server's own business.
    """
    if not api_url.startswith("http://"):
        return {}
    return {
        "PREFECT_API_SSL_CERT_FILE": str(trust_file),
        "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
    }


def create_work_pool(api_url: str, home: Path) -> None:
    """Create (or replace) the local work pool, of this project's worker type."""
    env = _env(api_url, home)
    _prefect("work-pool", "create", WORK_POOL, "--type", WORKER_TYPE, "--overwrite", env=env)


def deploy_all(api_url: str, home: Path) -> None:
    """Create every deployment of prefect.yaml on the server, on the local work pool."""
    _prefect("deploy", "--all", env=_env(api_url, home))


def start_worker(
    api_url: str,
    home: Path,
    env: dict[str, str],
    log_path: Path,
    *,
    pool: str = WORK_POOL,
    name: str = "local-worker",
    worker_type: str = WORKER_TYPE,
) -> int:
    """Start a worker of `worker_type` on `pool`; return its pid.

    It polls every second; the warm-process worker also picks a run up as soon as the
    server's events say one was scheduled.
    """
    argv = [
        str(Path(sys.executable).with_name("prefect")),
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        worker_type,
        "--name",
        name,
    ]
    worker_env = {
        **env,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
    }
    pid = start("Prefect worker", argv, log_path, env=worker_env)
    wait_until(
        "the Prefect worker",
        lambda: "started!" in log_path.read_text(errors="replace"),
        60,
        pid=pid,
        log_path=log_path,
    )
    return pid
