"""Benchmark: the post-rollback recovery verdict over a 30-minute and a 24-hour window.

Backfills 26 h of a service's history (a bad release, the rollback, decay back to baseline)
into a fresh Prometheus on loopback, then runs `post_rollback_monitor` over the past window
after the rollback, at one evaluation per minute (30 and 1,440 evaluations). Prints, per
window: wall time of the whole flow run, time of the verdict alone (baseline, level at the
rollback, range queries and the per-minute evaluation), and the Prometheus queries issued.

    .venv/bin/python bench/analysis.py

Uses $PREFECT_API_URL when set (e.g. the local stack's), else a temporary Prefect server.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from stack.processes import free_port, stop  # noqa: E402
from stack.prometheus import (  # noqa: E402
    TrafficStep,
    backfill,
    render_history,
    render_prometheus_config,
    render_rules,
    start_prometheus,
)

SERVICE = "bench-api"
WINDOWS = {"30 min": timedelta(minutes=30), "24 h": timedelta(hours=24)}


@contextlib.contextmanager
def prometheus_with_history(root: Path, since: float, end: float) -> Iterator[str]:
    """A Prometheus over the service's history: baseline, 10 min of incident, decay."""
    steps = [
        TrafficStep(since - 2 * 3600, 20.0, 0.005, 0.1),
        TrafficStep(since - 600, 20.0, 0.10, 0.8),
        TrafficStep(since, 20.0, 0.03, 0.3),
        TrafficStep(since + 120, 20.0, 0.005, 0.1),
    ]
    started = time.monotonic()
    backfill(render_history(steps, end=end, service=SERVICE), root / "data")
    print(f"backfilled {(end - steps[0].start) / 3600:.0f} h in {time.monotonic() - started:.1f} s")
    port = free_port()
    config = render_prometheus_config(
        root,
        simulator_port=free_port(),
        alertmanager_port=free_port(),
        rules_path=render_rules(root, for_duration="1m"),
        interval="15s",
    )
    pid = start_prometheus(config, root / "data", port, root / "prometheus.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(pid)


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The configured Prefect API, or a temporary server; flow heartbeats off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        if os.environ.get("PREFECT_API_URL"):
            yield
        else:
            from prefect.testing.utilities import prefect_test_harness

            with prefect_test_harness(server_startup_timeout=120):
                yield


def main() -> None:
    now = time.time() // 60 * 60
    since = now - 25 * 3600  # the rollback, 25 h ago; history ends 10 min ago
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as scratch:
        root = Path(scratch)
        services = root / "services.yaml"
        services.write_text(
            f"default_service: {SERVICE}\nservices:\n  {SERVICE}:\n    namespace: bench\n"
            f"    deployment: {SERVICE}\n    container: app\n"
            f"    image_repository: ghcr.io/acme/{SERVICE}\n"
        )
        os.environ["ROLLBACK_FLOWS_SERVICES"] = str(services)
        with prometheus_with_history(root, since, now - 600) as url, prefect_api():
            from flows.post_rollback_monitor import (
                SystemClock,
                monitor_window,
                post_rollback_monitor,
            )
            from playbook.post_rollback import load_post_rollback
            from playbook.services import load_service
            from playbook.thresholds import load_decision_matrix

            matrix = load_decision_matrix()
            settings = load_post_rollback(matrix).monitor
            cfg = load_service(SERVICE)
            start = datetime.fromtimestamp(since, UTC)
            interval = timedelta(minutes=1)
            post_rollback_monitor(  # warm-up: imports, first connections
                SERVICE, start, timedelta(minutes=10), interval, prometheus_url=url, scan_logs=False
            )
            for label, duration in WINDOWS.items():
                began = time.perf_counter()
                evaluations, outcomes, _, queries = monitor_window(
                    cfg, matrix, settings, url, start, duration, interval, None, SystemClock()
                )
                verdict_seconds = time.perf_counter() - began
                began = time.perf_counter()
                state = post_rollback_monitor(
                    SERVICE,
                    start,
                    duration,
                    interval,
                    prometheus_url=url,
                    scan_logs=False,
                    return_state=True,
                )
                flow_seconds = time.perf_counter() - began
                verdicts = ", ".join(f"{o.indicator.name} {o.verdict.value}" for o in outcomes)
                print(
                    f"{label:>6} window: {len(evaluations):>4} evaluations, "
                    f"{queries} queries, verdict {verdict_seconds:.2f} s, "
                    f"flow run {flow_seconds:.2f} s ({state.type.value}) — {verdicts}"
                )


if __name__ == "__main__":
    main()
