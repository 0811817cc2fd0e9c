"""Benchmark: Alertmanager webhook received by the receiver → Deployment patched by the rollback.

Each round is an incident as it happens: CI releases a new version of rag-api in the
stack's staging environment, then an Alertmanager-shaped webhook (a new firing: new
fingerprint) reaches the receiver, which creates a `guarded-rollback/alert` flow run on the
Prefect server; the stack's worker picks it up and `kubernetes_rollback` undoes the release.
The end is the Deployment's MODIFIED watch event with a new generation (the undo's patch).
The first round warms up and is not counted; the hourly-cap ledger is reset between rounds
(the cap would stop the fourth). Prints the median and p95, then where the time goes.

    .venv/bin/python bench/alert_to_action.py --rounds 20

Measures the environment's stack (`make stack-up`, then `eval "$(.venv/bin/python -m stack
env)"`) or, without one, a private stack on free ports (see bench/common.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import environment, follow_ups_since, measured_stack, release
from kubernetes import client, config, watch

NAMESPACE = "staging"  # an environment of the stack's services file
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
      target: previous
      reason: "{{{{ annotations.summary }}}}"
      alert_started_at: "{{{{ alert.starts_at }}}}"
"""


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


def print_timeline(run_id: UUID, sent: float, patched: float) -> None:
    """One round as it happened: each state and log line of the run and its subflows, in
    seconds after the webhook was sent."""
    from cluster import eventually
    from flow_runs import child_run_ids, flow_finished_logged
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    lines = [(patched, "(bench) the Deployment's patch seen by a watch")]
    runs = [run_id, *child_run_ids(run_id)]
    with get_client(sync_client=True) as c:
        for each in runs:
            name = c.read_flow_run(each).name
            lines += [
                (s.timestamp.timestamp(), f"[{name}] state {s.name}")
                for s in c.read_flow_run_states(each)
            ]
        # the services store the logs a moment after the run ended: wait for its last line
        eventually(lambda: flow_finished_logged(run_id), 30, "the run's logs, stored")
        logs = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
        lines += [(log.timestamp.timestamp(), f"  {log.message[:110]}") for log in logs]
    print(
        f"timeline of the last round (flow run {run_id}), seconds after the webhook ({sent:.3f}):"
    )
    for at, what in sorted(lines):
        print(f"  {at - sent:7.3f}  {what}")


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method, as the issue's targets are read)."""
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print the last round's states and logs (its own and its subflows') from the webhook",
    )
    args = parser.parse_args()

    with measured_stack("alert") as kind:
        from alerting import payload, running_receiver, save_token, wait_final
        from cluster import build_history
        from prefect.client.orchestration import get_client

        from playbook.names import ledger_name
        from receiver.config import parse_config
        from tasks.concurrency import forget_rollbacks

        api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        try:
            core.create_namespace({"metadata": {"name": NAMESPACE}})
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        began = datetime.now(UTC)
        totals, to_run, to_pending, to_start = [], [], [], []
        build_history(apps, NAMESPACE, ["v1.0.0"])  # refused if staging has a rag-api
        try:
            token = save_token("alert-receiver-token-bench")
            with running_receiver(parse_config(ROUTES.format(namespace=NAMESPACE))) as url:
                for round_ in range(args.rounds + 1):
                    release(apps, NAMESPACE, f"v1.0.{round_ + 1}")
                    forget_rollbacks(ledger_name(NAMESPACE, "rag-api"))
                    ready, result = threading.Event(), list[float]()
                    watcher = threading.Thread(
                        target=lambda r=result, e=ready: r.extend(patched_at(apps, NAMESPACE, e))
                    )
                    watcher.start()
                    ready.wait(10)
                    time.sleep(0.2)  # the watch is connected
                    body = payload(namespace=NAMESPACE, starts_at=datetime.now(UTC).isoformat())
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
                        pending = [
                            s.timestamp
                            for s in c.read_flow_run_states(run.id)
                            if s.type.value == "PENDING"
                        ]
                    if round_ == 0:
                        continue  # warm-up
                    totals.append(result[0] - sent)
                    last = (run.id, sent, result[0])
                    to_run.append(answered - sent)
                    if start is not None:
                        to_start.append(start.timestamp() - sent)
                    if pending:
                        to_pending.append(pending[0].timestamp() - sent)
                    print(f"round {round_}: {totals[-1]:.3f} s", file=sys.stderr)
            follow_ups = follow_ups_since(began)
            print(environment(kind))
            if args.timeline:
                print_timeline(*last)
        finally:
            apps.delete_namespaced_deployment("rag-api", NAMESPACE)
            forget_rollbacks(ledger_name(NAMESPACE, "rag-api"))

    print(
        f"alert-to-action (webhook received → Deployment patched), {len(totals)} rounds after"
        f" one warm-up: median {statistics.median(totals):.3f} s, p95 {p95(totals):.3f} s,"
        f" max {max(totals):.3f} s"
    )
    print(
        f"  of which: receiver answered (flow run created) median "
        f"{statistics.median(to_run) * 1000:.0f} ms; picked up by the worker (Pending) median "
        f"{statistics.median(to_pending):.3f} s; flow run started (Running) median "
        f"{statistics.median(to_start):.3f} s; undo patch median "
        f"{statistics.median(totals) - statistics.median(to_start):.3f} s after the run started"
    )
    print(
        f"  before the flow's first line (webhook → Running: the receiver, the Prefect server"
        f" and the worker): p95 {p95(to_start):.3f} s, max {max(to_start):.3f} s; over 0.5 s"
        f" in {sum(t > 0.5 for t in to_start)} of {len(to_start)} rounds"
    )
    print(f"  follow-up monitor runs created while measuring: {follow_ups}")


if __name__ == "__main__":
    main()
