"""A real Prefect server on loopback, on PostgreSQL, for the demo (with its UI) and the tests."""

from __future__ import annotations

import sys
from pathlib import Path

from stack.processes import ensure_port_free, http_ok, start, wait_until
from stack.redis import consuming_events

# The services' consumers of the event stream without which the UI would miss what the flows
# report: their task runs, and the events on every run's page.
EVENT_CONSUMERS = ("task-run-recorder", "event-persister")

IN_MEMORY_DATABASE = (
    "sqlite+aiosqlite:///file::memory:?cache=shared&uri=true&check_same_thread=false"
)


def server_env(home: Path, database_url: str, ui: bool, port: int) -> dict[str, str]:
    """The environment of a local Prefect server process on 127.0.0.1:`port`."""
    return {
        "PREFECT_HOME": str(home),
        # The UI asks /ui-settings where the API is; unset, the server answers the default
        # port (4200), not its own, and the UI shows only "Oops. Something went wrong." (V1)
        # or "Unable to connect to Prefect server" (V2). The canonical name of
        # PREFECT_UI_API_URL, so that it wins over one inherited from the environment.
        "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # (its default) so that the stack's clients skip asking for a token: see
        # stack.prefect_worker.plain_http_client_settings
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_API_LOG_RETRYABLE_ERRORS": "true",
    }


def start_prefect_server(
    port: int,
    home: Path,
    log_path: Path,
    *,
    database: str,
    ui: bool,
    broker: dict[str, str],
    timeout: float = 90,
) -> int:
    """Start the API of a Prefect server (`prefect server start --no-services`) on
    127.0.0.1:`port` over `database` (a SQLAlchemy URL) and `broker` (`redis_settings`);
    return its pid once /api/health is OK. `start_prefect_services` runs its services."""
    ensure_port_free(port, "the Prefect server")
    home.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    argv = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    # The services (the task-run recorder, the event persister, the triggers, the scheduler,
    # ...) run in a process of their own, so that they do not hold up the API's one event
    # loop: the alert path's calls wait on it.
    pid = start(
        "prefect server",
        [*argv, "--no-services"],
        log_path,
        env={**server_env(home, database, ui, port), **broker},
    )
    wait_until(
        "the Prefect server",
        http_ok(f"http://127.0.0.1:{port}/api/health"),
        timeout,
        pid=pid,
        log_path=log_path,
    )
    return pid


def start_prefect_services(
    port: int,
    home: Path,
    log_path: Path,
    *,
    database: str,
    broker: dict[str, str],
    timeout: float = 60,
) -> int:
    """Start the Prefect server's background services (`prefect server services start`) in
    a process of their own, beside the API on `port`; return its pid once the consumers that
    record what the flows report (task runs, events) read the broker's event stream."""
    prefect = Path(sys.executable).with_name("prefect")
    pid = start(
        "prefect server services",
        [str(prefect), "server", "services", "start"],
        log_path,
        env={**server_env(home, database, False, port), **broker},
    )
    wait_until(
        "the Prefect server's services",
        lambda: consuming_events(broker["PREFECT_REDIS_MESSAGING_URL"], EVENT_CONSUMERS),
        timeout,
        pid=pid,
        log_path=log_path,
    )
    return pid
