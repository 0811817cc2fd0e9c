"""Benchmark: Alertmanager webhook received by the receiver → Deployment patched by the rollback.

Each round posts one Alertmanager-shaped webhook (a new firing: new fingerprint) to the
receiver, which creates a `guarded-rollback/alert` flow run on the Prefect server; the stack's
process worker picks it up and `kubernetes_rollback` undoes rag-api in a scratch namespace.
The end is the Deployment's MODIFIED watch event with a new generation (the undo's patch).
Rounds alternate between the last two revisions, and the hourly-cap ledger is reset between
rounds (the cap would stop the fourth). Prints the median and p95, then where the time goes.

    .venv/bin/python bench/alert_to_action.py --rounds 10

Uses the stack of the environment (`eval "$(.venv/bin/python -m stack env)"` after
`make stack-up`: KUBECONFIG, PREFECT_API_URL, ROLLBACK_FLOWS_SERVICES, a worker on the local
pool); without PREFECT_API_URL it starts a private stack on free ports and removes it after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402

ROUTES = """
token_secret: alert-receiver-token-bench
routes:
  - name: error-rate-critical
    match: {{alertname: RollbackHighErrorRate, severity: critical}}
    deployment: guarded-rollback/alert
    parameters:
      service: rag-api
      namespace: {namespace}
      procedure: kubernetes_rollback
      reason: "{{{{ annotations.summary }}}}"
      alert_started_at: "{{{{ alert.starts_at }}}}"
"""


@contextlib.contextmanager
def stack_environment() -> Iterator[None]:
    """The environment's stack, or a private one started for this run."""
    if os.environ.get("PREFECT_API_URL") and os.environ.get("KUBECONFIG"):
        yield
        return
    from stack.config import Ports
    from stack.local import LocalStack, running_stack
    from stack.processes import free_port

    ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port())
    print("bench: starting a private stack ...", file=sys.stderr)
    with running_stack(LocalStack(f"bench-{os.getpid()}", ports, prefect=True)) as state:
        os.environ.update(state.env())
        yield


def patched_at(apps: client.AppsV1Api, namespace: str, ready: threading.Event) -> list[float]:
    """Watch rag-api; return [time] of the first MODIFIED event with a newer generation."""
    d = apps.read_namespaced_deployment("rag-api", namespace)
    generation, version = d.metadata.generation, d.metadata.resource_version
    seen: list[float] = []
    stream = watch.Watch()
    ready.set()
    for event in stream.stream(
        apps.list_namespaced_deployment,
        namespace,
        field_selector="metadata.name=rag-api",
        resource_version=version,
        timeout_seconds=120,
    ):
        if event["type"] == "MODIFIED" and event["object"].metadata.generation > generation:
            seen.append(time.time())
            stream.stop()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    with stack_environment():
        from alerting import payload, running_receiver, save_token, wait_final
        from cluster import build_history, wait_rolled_out
        from prefect.client.orchestration import get_client

        from playbook.names import ledger_name
        from receiver.config import parse_config
        from tasks.concurrency import forget_rollbacks

        api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": namespace}})
        try:
            build_history(apps, namespace, ["v1.0.0", "v1.0.1"])
            token = save_token("alert-receiver-token-bench")
            totals, to_run, to_start = [], [], []
            with running_receiver(parse_config(ROUTES.format(namespace=namespace))) as url:
                for _ in range(args.rounds):
                    forget_rollbacks(ledger_name(namespace, "rag-api"))
                    ready, result = threading.Event(), list[float]()
                    watcher = threading.Thread(
                        target=lambda r=result, e=ready: r.extend(patched_at(apps, namespace, e))
                    )
                    watcher.start()
                    ready.wait(10)
                    time.sleep(0.2)  # the watch is connected
                    body = payload(starts_at=datetime.now(UTC).isoformat())
                    sent = time.time()
                    response = httpx.post(
                        f"{url}/alerts",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                    )
                    answered = time.time()
                    outcome = response.json()["alerts"][0]
                    assert outcome["action"] == "started", outcome
                    watcher.join(130)
                    if not result:
                        raise SystemExit("bench: the Deployment was never patched")
                    run = wait_final(outcome["flow_run_id"])
                    assert run.state is not None and run.state.is_completed(), run.state
                    with get_client(sync_client=True) as c:
                        start = c.read_flow_run(run.id).start_time
                    totals.append(result[0] - sent)
                    to_run.append(answered - sent)
                    if start is not None:
                        to_start.append(start.timestamp() - sent)
                    wait_rolled_out(apps, namespace, "rag-api", timeout=120)
        finally:
            core.delete_namespace(namespace)
            forget_rollbacks(ledger_name(namespace, "rag-api"))

    p95 = statistics.quantiles(totals, n=20, method="inclusive")[18]
    print(
        f"alert-to-action (webhook received → Deployment patched), {len(totals)} rounds: "
        f"median {statistics.median(totals):.2f} s, p95 {p95:.2f} s"
    )
    print(
        f"  of which: receiver answered (flow run created) median "
        f"{statistics.median(to_run) * 1000:.0f} ms; flow run started by the worker median "
        f"{statistics.median(to_start):.2f} s; undo patch median "
        f"{statistics.median(totals) - statistics.median(to_start):.2f} s after the run started"
    )


if __name__ == "__main__":
    main()
