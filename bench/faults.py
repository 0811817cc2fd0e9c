"""Benchmark: the fault matrix, N rollbacks per fault, on a local stack of its own.

Each rollback undoes a fresh `rag-api` (revision 1 good, revision 2 bad) with
`kubernetes_rollback` while one fault is injected with the tools of tests/faults.py (Toxiproxy,
API Priority and Fairness, a down admission webhook, the kube-apiserver restarted). Then the
cluster is read back: a rollback *completed* when its run completed with the good template and
exactly one new revision; it *failed clearly* when its run failed and the Deployment (spec,
annotations, ReplicaSets) is as before; anything else is *unclear* (the count that must stay 0).
Prints, per fault: rollbacks attempted, completed, failed clearly, unclear, undos performed
(new revisions), and alerts lost (these faults start no alerts: "-").

    .venv/bin/python bench/faults.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rollback-flows-bench-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402
from cluster import REPOSITORY, build_history, snapshot, use_services  # noqa: E402
from conftest import write_post_rollback_settings  # noqa: E402
from kubernetes import client, config  # noqa: E402
from test_rbac import apply_rbac, service_account_kubeconfig  # noqa: E402

from playbook.post_rollback import POST_ROLLBACK_ENV  # noqa: E402
from stack.config import Ports  # noqa: E402
from stack.local import LocalStack, StackState  # noqa: E402
from stack.processes import free_port  # noqa: E402
from tests.faults import (  # noqa: E402
    Proxy,
    Starved,
    Toxiproxy,
    apiserver_address,
    apiserver_metric,
    in_background,
    kubeconfig_through,
    remove_webhook,
    restart_apiserver,
    wait_for_mark,
    webhook_down,
)

GOOD, BAD = "v1.2.2", "v1.2.3"


@dataclass
class Tally:
    attempted: int = 0
    completed: int = 0
    failed_clearly: int = 0
    unclear: int = 0
    undos: int = 0


@dataclass
class Bench:
    stack: StackState
    api: client.ApiClient
    toxiproxy: Toxiproxy
    kube_proxy: Proxy
    work: Path

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)


def rollback() -> Any:
    from flows.kubernetes_rollback import kubernetes_rollback

    return kubernetes_rollback("rag-api", return_state=True)


def no_fault(bench: Bench, ns: str, mp: pytest.MonkeyPatch) -> Any:
    return rollback()


def reset_mid_patch(bench: Bench, ns: str, mp: pytest.MonkeyPatch) -> Any:
    mp.setenv(
        "KUBECONFIG",
        str(
            kubeconfig_through(
                bench.stack.kubeconfig, bench.kube_proxy, bench.work / f"{ns}.kubeconfig"
            )
        ),
    )
    slow = bench.kube_proxy.add_toxic("latency", latency=1000)
    run = in_background(rollback)
    try:
        wait_for_mark(bench.apps, ns)
        bench.kube_proxy.cut()
    finally:
        bench.kube_proxy.remove_toxic(slow)
    return run.result(timeout=120)


def starved_429(bench: Bench, ns: str, mp: pytest.MonkeyPatch) -> Any:
    apply_rbac(bench.api, ns)
    mp.setenv("KUBECONFIG", str(service_account_kubeconfig(bench.stack, bench.api, bench.work)))
    starved = Starved(bench.api, bench.toxiproxy, ("rollback-flows", "rollback-flows"), f"b-{ns}")
    try:
        starved.start()
        time.sleep(1.5)  # the FlowSchemas take effect
        run = in_background(rollback)
        time.sleep(3)
    finally:
        starved.lift()
    return run.result(timeout=120)


def webhook_500(bench: Bench, ns: str, mp: pytest.MonkeyPatch) -> Any:
    webhook_down(bench.api, f"b-{ns}", ns)
    try:
        time.sleep(1.5)  # the API server's webhook configuration is refreshed
        return rollback()
    finally:
        remove_webhook(bench.api, f"b-{ns}")


def webhook_500_then_up(bench: Bench, ns: str, mp: pytest.MonkeyPatch) -> Any:
    name = f"b-{ns}"
    webhook_down(bench.api, name, ns)
    time.sleep(1.5)
    label = {"name": f"{name}.rollback-flows.dev"}
    calls = apiserver_metric(bench.api, "apiserver_admission_webhook_rejection_count", **label)
    run = in_background(rollback)
    try:
        deadline = time.monotonic() + 30
        while (
            apiserver_metric(bench.api, "apiserver_admission_webhook_rejection_count", **label)
            <= calls
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    finally:
        remove_webhook(bench.api, name)
    return run.result(timeout=120)


def apiserver_restart(bench: Bench, ns: str, mp: pytest.MonkeyPatch) -> Any:
    run = in_background(rollback)
    wait_for_mark(bench.apps, ns)
    restart_apiserver(apiserver_address(bench.stack.kubeconfig), down_seconds=10)
    return run.result(timeout=240)


# Each fault, and how long each new pod must be ready before it counts (`minReadySeconds`):
# the restart needs a wait long enough to fall inside.
FAULTS: dict[str, tuple[Callable[[Bench, str, pytest.MonkeyPatch], Any], int]] = {
    "none": (no_fault, 0),
    "connection reset mid-patch": (reset_mid_patch, 0),
    "429s for 3 s (APF)": (starved_429, 0),
    "webhook down, 500 on every patch": (webhook_500, 0),
    "webhook 500, then back": (webhook_500_then_up, 0),
    "kube-apiserver restart in the wait": (apiserver_restart, 5),
}


def one(bench: Bench, fault: str, tally: Tally) -> None:
    inject, min_ready = FAULTS[fault]
    ns = f"b-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(bench.api)
    core.create_namespace({"metadata": {"name": ns}})
    with pytest.MonkeyPatch.context() as mp:
        # Room for the controllers' retry backoff after an API server outage (about 45 s).
        use_services(mp, bench.work, ns, timeout=180)
        build_history(bench.apps, ns, [GOOD, BAD], minReadySeconds=min_ready)
        before = snapshot(bench.apps, ns)
        try:
            state = inject(bench, ns, mp)
            outcome = state.type.value
        except Exception as exc:  # the flow itself raised: counted as it is, not hidden
            outcome = f"raised {type(exc).__name__}: {exc}"
    after = snapshot(bench.apps, ns)
    new = max(after.replicasets) - max(before.replicasets)
    tally.attempted += 1
    tally.undos += new
    if outcome == "COMPLETED" and after.image == f"{REPOSITORY}:{GOOD}" and new == 1:
        tally.completed += 1
    elif outcome == "FAILED" and after == before:
        tally.failed_clearly += 1
    else:
        tally.unclear += 1
        print(f"  unclear: {fault} in {ns}: {outcome}, {new} new revision(s)", file=sys.stderr)
    core.delete_namespace(ns)


@contextmanager
def bench_stack() -> Iterator[Bench]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    ports = Ports(*(free_port() for _ in range(5)))
    stack = LocalStack(f"bench-faults-{os.getpid()}", ports, prefect=True)
    os.environ[POST_ROLLBACK_ENV] = str(
        write_post_rollback_settings(work, after_rollback={"enabled": False}, enabled=False)
    )
    toxiproxy = Toxiproxy(work / "toxiproxy.log")
    try:
        state = stack.up()
        os.environ.update(state.env())
        toxiproxy.start()
        api = config.new_client_from_config(config_file=state.kubeconfig)
        kube_proxy = toxiproxy.proxy("kube-apiserver", apiserver_address(state.kubeconfig))
        with temporary_settings(
            {PREFECT_API_URL: state.prefect_api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ):
            yield Bench(state, api, toxiproxy, kube_proxy, work)
    finally:
        toxiproxy.stop()
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rollbacks per fault (default 3)")
    parser.add_argument("--fault", action="append", choices=list(FAULTS), help="only these")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = args.fault or list(FAULTS)
    tallies = {fault: Tally() for fault in chosen}
    started = time.monotonic()
    with bench_stack() as bench:
        for fault in chosen:
            for _ in range(args.runs):
                one(bench, fault, tallies[fault])
                bench.toxiproxy.reset()
    header = (
        "fault",
        "attempted",
        "completed",
        "failed clearly",
        "unclear",
        "undos",
        "alerts lost",
    )
    rows = [
        (
            f,
            str(t.attempted),
            str(t.completed),
            str(t.failed_clearly),
            str(t.unclear),
            str(t.undos),
            "-",
        )
        for f, t in tallies.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(
        f"\n{sum(t.attempted for t in tallies.values())} rollbacks in {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
