"""A throwaway Redis on loopback: the local Prefect server's message broker.

With Redis, the Prefect server's background services (the task-run recorder, the event
persister, the triggers, the scheduler, ...) run in a process of their own, beside the API's,
as Prefect's guide to scaling a self-hosted server describes; without it they share the API's
one event loop. Nothing is persisted: the data goes with the stack.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from stack.processes import StackError, ensure_port_free, start, wait_until


def redis_server() -> str:
    """Debian's redis-server."""
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("redis-server is not installed; `make setup` installs Debian's")
    return found


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, decode_responses=True)


def _pong(port: int) -> bool:
    with _client(f"redis://127.0.0.1:{port}") as client:
        return bool(client.ping())


def start_redis(port: int, log_path: Path, timeout: float = 30) -> int:
    """Start redis-server on 127.0.0.1:`port`, without persistence; return its pid."""
    ensure_port_free(port, "Redis")
    argv = [
        redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--dir", str(log_path.parent),
    ]  # fmt: skip
    pid = start("Redis", argv, log_path)
    wait_until("Redis", lambda: _pong(port), timeout, pid=pid, log_path=log_path)
    return pid


def consuming_events(url: str, groups: tuple[str, ...]) -> bool:
    """Whether each of `groups` reads the `events` stream at `url` with a consumer."""
    with _client(url) as client:
        try:
            found = {g["name"]: g["consumers"] for g in client.xinfo_groups("events")}
        except redis.ResponseError:  # no stream yet
            return False
    return all(found.get(group, 0) > 0 for group in groups)


def redis_settings(port: int) -> dict[str, str]:
    """The Prefect server's settings for messaging, ordering, leases and Docket in Redis."""
    url = f"redis://127.0.0.1:{port}"
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": f"{url}/0",
        "PREFECT_SERVER_DOCKET_URL": f"{url}/1",
    }
