"""What the benchmarks share: the stack they measure, the line that says what it was, releases.

A benchmark measures the local stack the README describes: the environment's (after
`make stack-up` and `eval "$(.venv/bin/python -m stack env)"`) or, when none is set, a
private one started on free ports and removed afterwards. Either way its Prefect server is
the stack's PostgreSQL-backed one, never a temporary SQLite harness.

The checklist after a rollback and the 30-minute follow-up monitor are turned off for the
flows the benchmark runs itself, and for the worker of a private stack; a benchmark prints
how many follow-up monitor runs were created while it measured (a stack started before with
them on would show them here).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from kubernetes import client  # noqa: E402

IMAGE = "ghcr.io/acme/rag-api"
POST_ROLLBACK_ENV = "ROLLBACK_FLOWS_POST_ROLLBACK"


def quiet_post_rollback(directory: Path) -> Path:
    """The shipped post-rollback settings without the checklist and the follow-up, in use."""
    shipped = yaml.safe_load((REPO / "deployments" / "post-rollback.yaml").read_text())
    shipped["verification"]["after_rollback"]["enabled"] = False
    shipped["follow_up"]["enabled"] = False
    path = directory / "post-rollback.yaml"
    path.write_text(yaml.safe_dump(shipped))
    os.environ[POST_ROLLBACK_ENV] = str(path)
    return path


@contextlib.contextmanager
def measured_stack(name: str) -> Iterator[str]:
    """The environment's stack or a private one; yields which, its env set in os.environ."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with tempfile.TemporaryDirectory() as tmp:
        quiet_post_rollback(Path(tmp))
        if os.environ.get("PREFECT_API_URL") and os.environ.get("KUBECONFIG"):
            yield "the environment's stack"
            return
        from stack.config import Ports
        from stack.local import LocalStack, running_stack
        from stack.processes import free_port

        ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port())
        print("bench: starting a private stack ...", file=sys.stderr)
        stack = LocalStack(f"bench-{name}-{os.getpid()}", ports, prefect=True)
        with running_stack(stack) as state:
            os.environ.update(state.env())
            yield "a private stack"


def environment(kind: str) -> str:
    """One line: the machine, and the stack's Prefect server and work pool, as measured."""
    import prefect
    from prefect.client.orchestration import get_client

    from stack.prefect_worker import WORK_POOL

    with get_client(sync_client=True) as prefect_client:
        try:
            pool = prefect_client.read_work_pool(WORK_POOL).type
        except Exception as exc:
            pool = f"unreadable ({exc})"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"environment: {kind}; Prefect {prefect.__version__} server {os.environ['PREFECT_API_URL']}"
        f" (PostgreSQL; its API and its services, two processes on Redis), pool {WORK_POOL!r}"
        f" of type {pool}; cluster {os.environ['KUBECONFIG']}"
        f" (KWOK); {os.cpu_count()} cores, load {load}; Python {platform.python_version()}"
    )


def follow_ups_since(since: datetime) -> int:
    """Follow-up monitor runs created since `since` (0 when the follow-up stayed off)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as prefect_client:
        runs = prefect_client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["post-rollback-monitor"]))
        )
    return sum(1 for run in runs if run.created is not None and run.created >= since)


def now() -> datetime:
    return datetime.now(UTC)


def release(apps: client.AppsV1Api, namespace: str, version: str, name: str = "rag-api") -> None:
    """A new release, as CI makes it: the container's image set to `version`, rolled out."""
    from cluster import wait_rolled_out

    container = {"name": "rag-api", "image": f"{IMAGE}:{version}"}
    body = {"spec": {"template": {"spec": {"containers": [container]}}}}
    apps.patch_namespaced_deployment(name, namespace, body)
    wait_rolled_out(apps, namespace, name, timeout=180)
    time.sleep(1.1)  # an alert in the release's own second would be taken for older than it
