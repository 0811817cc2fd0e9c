"""Benchmark: the fault matrix, N runs per fault, on a local stack of its own (with the alert
receiver).

Rollback faults: each rollback undoes a fresh `rag-api` (revision 1 good, revision 2 bad) with
`kubernetes_rollback` while one fault is injected with the tools of tests/faults.py (Toxiproxy,
API Priority and Fairness, a down admission webhook, the kube-apiserver restarted, the worker
killed mid-rollback and its run resubmitted). Then the cluster is read back: a rollback
*completed* when its run completed with the good template and exactly one new revision; it
*failed clearly* when its run failed and the Deployment (spec, annotations, ReplicaSets) is as
before; anything else is *unclear* (the count that must stay 0).

Prometheus faults (Prometheus refused through Toxiproxy): `verify_rollback` of a good release
with Prometheus going down during it *failed clearly* when it failed with the error rate NO
DATA and nothing changed (a pass would be unclear: no data never reads as healthy);
`post_rollback_monitor` with Prometheus down for 12 s then back *completed* when it went on to
RECOVERED from the points after, that point NO DATA; down until the end, it *failed clearly*
when it escalated NO DATA.

Alert faults (the real Prometheus fires, the real Alertmanager delivers to the real receiver,
whose run the worker executes): the Prefect server stopped while the alert is delivered and
started again; the receiver killed (SIGKILL) right after it created the run, before it
answered, and started again. *completed*: exactly one guarded-rollback run for the alert,
completed, and one undo. An alert is *lost* when it ends as neither a run nor a recorded
refusal. The bench's alert routes leave out the indicator re-check, so that one bad release
after another in one namespace each rolls back (the guard's "before the release" window, 5
minutes, would otherwise see the previous run's bad release and refuse, changing nothing).

Prints, per fault: runs attempted, completed, failed clearly, unclear, undos performed (new
revisions), and alerts lost ("-" where the fault starts no alert).

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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rollback-flows-bench-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402
import yaml  # noqa: E402
from alerting import alert_events, runs_tagged, wait_final  # noqa: E402
from cluster import (  # noqa: E402
    REPOSITORY,
    build_history,
    error_ratio,
    eventually,
    snapshot,
    use_services,
)
from conftest import write_post_rollback_settings  # noqa: E402
from kubernetes import client, config  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.objects import FlowRun  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from prefect.states import Scheduled  # noqa: E402
from test_alert_faults import ERRORS, AlertStack, new_runs, release, release_fresh  # noqa: E402
from test_rbac import apply_rbac, service_account_kubeconfig  # noqa: E402
from test_verify_rollback import WINDOW, rows_of, serving  # noqa: E402

from flows.kubernetes_rollback import kubernetes_rollback  # noqa: E402
from flows.post_rollback_monitor import post_rollback_monitor  # noqa: E402
from flows.verify_rollback import verify_rollback  # noqa: E402
from playbook.names import ledger_name, lock_name, target_tag  # noqa: E402
from playbook.post_rollback import DEFAULT_POST_ROLLBACK_FILE, POST_ROLLBACK_ENV  # noqa: E402
from playbook.provenance import ROLLBACK_MARK_ANNOTATION  # noqa: E402
from playbook.recovery import Verdict  # noqa: E402
from receiver.app import UNAVAILABLE  # noqa: E402
from receiver.config import DEFAULT_ROUTES_FILE, ROUTES_ENV  # noqa: E402
from stack.config import Ports  # noqa: E402
from stack.local import LocalStack, StackState  # noqa: E402
from stack.processes import free_port  # noqa: E402
from stack.sink import WebhookSink  # noqa: E402
from tasks.concurrency import forget_rollbacks  # noqa: E402
from tests.faults import (  # noqa: E402
    Proxy,
    Starved,
    Toxiproxy,
    apiserver_address,
    apiserver_metric,
    in_background,
    kill_receiver,
    kill_worker,
    kubeconfig_through,
    remove_webhook,
    restart_apiserver,
    start_another_worker,
    start_prefect_server_again,
    start_receiver,
    stop_prefect_server,
    wait_for_mark,
    webhook_down,
)

GOOD, BAD = "v1.2.2", "v1.2.3"
SIMULATED = "production"  # the namespace the simulator follows and the alert rules watch
ALERTED_GOOD = "v1.2.3"  # the good version before the alerting release (ERRORS)


@dataclass
class Tally:
    attempted: int = 0
    completed: int = 0
    failed_clearly: int = 0
    unclear: int = 0
    undos: int = 0
    alerts_lost: int | None = None  # None: the fault starts no alert


@dataclass(frozen=True)
class Result:
    """One run of one fault, read back from the cluster, the Prefect server, Alertmanager."""

    outcome: str  # "completed", "failed clearly" or "unclear"
    undos: int
    alerts_lost: int | None = None
    detail: str = ""


@dataclass
class Bench:
    stack: StackState
    api: client.ApiClient
    toxiproxy: Toxiproxy
    kube_proxy: Proxy
    prometheus_proxy: Proxy
    work: Path

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def alerts(self) -> AlertStack:
        return AlertStack(self.stack, self.api, self.work)


def rollback() -> Any:
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


# Each rollback fault, and how long each new pod must be ready before it counts
# (`minReadySeconds`): the restart needs a wait long enough to fall inside.
ROLLBACK_FAULTS: dict[str, tuple[Callable[[Bench, str, pytest.MonkeyPatch], Any], int]] = {
    "none": (no_fault, 0),
    "connection reset mid-patch": (reset_mid_patch, 0),
    "429s for 3 s (APF)": (starved_429, 0),
    "webhook down, 500 on every patch": (webhook_500, 0),
    "webhook 500, then back": (webhook_500_then_up, 0),
    "kube-apiserver restart in the wait": (apiserver_restart, 5),
}


def one_rollback(bench: Bench, fault: str) -> Result:
    inject, min_ready = ROLLBACK_FAULTS[fault]
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
    result = judge_rollback(bench, ns, before, outcome)
    core.delete_namespace(ns)
    return result


def judge_rollback(bench: Bench, ns: str, before: Any, outcome: str) -> Result:
    after = snapshot(bench.apps, ns)
    new = max(after.replicasets) - max(before.replicasets)
    if outcome == "COMPLETED" and after.image == f"{REPOSITORY}:{GOOD}" and new == 1:
        return Result("completed", new)
    if outcome == "FAILED" and after == before:
        return Result("failed clearly", new)
    return Result("unclear", new, detail=f"in {ns}: {outcome}, {new} new revision(s)")


def killed_worker(bench: Bench) -> Result:
    """The worker killed (SIGKILL, with its run) right after the undo's patch; once the run's
    lock lease has ended, the run is resubmitted to a new worker."""
    ns = "staging"  # an environment of the worker's services file, without approval
    core = client.CoreV1Api(bench.api)
    if not [n for n in core.list_namespace().items if n.metadata.name == ns]:
        core.create_namespace({"metadata": {"name": ns}})
    for d in bench.apps.list_namespaced_deployment(ns).items:
        bench.apps.delete_namespaced_deployment(d.metadata.name, ns)
    eventually(lambda: not bench.apps.list_namespaced_replica_set(ns).items, 60, "empty staging")
    build_history(bench.apps, ns, [GOOD, BAD])
    before = snapshot(bench.apps, ns)
    submitted = run_deployment(
        "kubernetes-rollback/default",
        parameters={"service": "rag-api", "namespace": ns},
        timeout=0,
    )
    assert isinstance(submitted, FlowRun)

    def patched() -> bool:
        d = bench.apps.read_namespaced_deployment("rag-api", ns)
        return ROLLBACK_MARK_ANNOTATION in (d.metadata.annotations or {})

    eventually(patched, 60, "the rollback's patch", interval=0.05)
    kill_worker(bench.stack)
    start_another_worker(bench.stack)
    with get_client(sync_client=True) as prefect:
        eventually(
            lambda: (
                prefect.read_global_concurrency_limit_by_name(lock_name(ns, "rag-api")).active_slots
                == 0
            ),
            120,
            "the dead run's lease to end",
            interval=2,
        )
        prefect.set_flow_run_state(submitted.id, Scheduled(), force=True)

        def finished() -> Any:
            run = prefect.read_flow_run(submitted.id)
            return run if run.state is not None and run.state.is_final() else None

        run = eventually(finished, 120, "the resubmitted run to finish")
    return judge_rollback(bench, ns, before, run.state.type.value)


# Prometheus down ----------------------------------------------------------------------------


def through_proxies(bench: Bench, mp: pytest.MonkeyPatch) -> None:
    kubeconfig = kubeconfig_through(bench.stack.kubeconfig, bench.kube_proxy, bench.work / "kc")
    mp.setenv("KUBECONFIG", str(kubeconfig))
    mp.setenv("ROLLBACK_FLOWS_PROMETHEUS_URL", f"http://{bench.prometheus_proxy.listen}")


def verify_prometheus_down(bench: Bench) -> Result:
    """verify_rollback of a good release; Prometheus goes down while it reads the pods."""
    serving(bench.stack, bench.apps, SIMULATED, "v1.2.3", 0.0)
    before = snapshot(bench.apps, SIMULATED)
    with pytest.MonkeyPatch.context() as mp:
        through_proxies(bench, mp)
        bench.kube_proxy.add_toxic("latency", latency=2000)
        run = in_background(
            lambda: verify_rollback("rag-api", "v1.2.3", window=WINDOW, return_state=True)
        )
        time.sleep(1)
        bench.prometheus_proxy.set_enabled(False)
        state = run.result(timeout=120)
    bench.toxiproxy.reset()
    rows = rows_of(state)
    unchanged = snapshot(bench.apps, SIMULATED) == before
    if state.type.value == "FAILED" and rows["Error Rate"]["result"] == "NO DATA" and unchanged:
        return Result("failed clearly", 0)
    return Result("unclear", 0, detail=f"verify {state.type.value}: {rows['Error Rate']}")


def monitor(bench: Bench, since: datetime, seconds: int, down: float, up: float | None) -> Any:
    """The monitor from `since`; Prometheus refused from since + `down` to since + `up`."""
    run = in_background(
        lambda: post_rollback_monitor(
            "rag-api",
            since,
            duration=timedelta(seconds=seconds),
            interval=timedelta(seconds=5),
            scan_logs=False,
            return_state=True,
        )
    )
    for at, enabled in ((down, False), (up, True)):
        if at is not None:
            time.sleep(
                max(0.0, (since + timedelta(seconds=at) - datetime.now(UTC)).total_seconds())
            )
            bench.prometheus_proxy.set_enabled(enabled)
    state = run.result(timeout=180)
    bench.toxiproxy.reset()
    return state


def monitor_prometheus_down_a_while(bench: Bench) -> Result:
    serving(bench.stack, bench.apps, SIMULATED, "v1.2.3", 0.0)
    with pytest.MonkeyPatch.context() as mp:
        through_proxies(bench, mp)
        settings = yaml.safe_load(DEFAULT_POST_ROLLBACK_FILE.read_text())
        for policy in settings["monitor"]["indicators"].values():
            policy["hold_seconds"] = 10
        path = bench.work / "post-rollback-hold-10s.yaml"
        path.write_text(yaml.safe_dump(settings))
        mp.setenv(POST_ROLLBACK_ENV, str(path))
        since = datetime.now(UTC).replace(microsecond=0)
        state = monitor(bench, since, 30, down=13, up=25)
    if state.type.value != "COMPLETED":
        return Result("failed clearly", 0, detail=f"monitor {state.type.value}: {state.message}")
    report = state.result()
    gap = dict(report.evaluations[0].verdicts)["error_rate"]
    if report.verdict is Verdict.RECOVERED and gap is Verdict.NO_DATA and report.unqueried:
        return Result("completed", 0)
    return Result("unclear", 0, detail=f"monitor: {report.summary()}, first point {gap}")


def monitor_prometheus_down_to_the_end(bench: Bench) -> Result:
    serving(bench.stack, bench.apps, SIMULATED, "v1.2.3", 0.0)
    with pytest.MonkeyPatch.context() as mp:
        through_proxies(bench, mp)
        since = datetime.now(UTC).replace(microsecond=0)
        state = monitor(bench, since, 10, down=17, up=None)
    if state.type.value == "FAILED" and "NO DATA" in str(state.message):
        return Result("failed clearly", 0)
    return Result("unclear", 0, detail=f"monitor {state.type.value}: {state.message}")


# Alerts -------------------------------------------------------------------------------------


def alert_outcome(bench: Bench, fingerprint: str, runs: list[Any], bad: str, before: Any) -> Result:
    """How the alert ended: its runs (one, completed, one undo), or a refusal, or lost."""
    refused = [
        event
        for action in ("refused", "rejected")
        for event in alert_events(f"rollback-flows.alert.{action}", fingerprint, timeout=0)
    ]
    lost = 0 if runs or refused else 1
    finals = [wait_final(run.id, timeout=120) for run in runs]
    after = snapshot(bench.apps, SIMULATED)
    undos = max(after.replicasets) - max(before.replicasets)
    if (
        len(finals) == 1
        and finals[0].state is not None
        and finals[0].state.is_completed()
        and undos == 1
        and after.image == f"{REPOSITORY}:{ALERTED_GOOD}"
        and after.replicasets[2] == f"{REPOSITORY}:{bad}"
    ):
        outcome = Result("completed", undos, lost)
    elif not finals and refused and after == before:
        outcome = Result("failed clearly", undos, lost)
    else:
        states = [f.state_name for f in finals]
        outcome = Result("unclear", undos, lost, detail=f"alert {fingerprint}: runs {states}")
    # The next firing must be a new one: wait until this alert has resolved.
    eventually(
        lambda: not bench.alerts.firing("RollbackHighErrorRate"), 90, "the alert resolved", 1
    )
    return outcome


def fire(bench: Bench) -> tuple[Any, set[Any]]:
    """A fresh good rag-api in the simulated namespace, calm; returns its tag's runs so far."""
    forget_rollbacks(ledger_name(SIMULATED, "rag-api"))  # the hourly cap is not the subject
    release_fresh(bench.alerts, ALERTED_GOOD)
    eventually(lambda: error_ratio(bench.stack.prometheus_url) == 0.0, 60, "a calm error ratio")
    tag = target_tag(SIMULATED, "rag-api")
    return tag, {run.id for run in runs_tagged(tag)}


def prefect_down_alert(bench: Bench) -> Result:
    """The Prefect server stopped; the bad release fires the alert; the receiver answers 503
    until the server is started again."""
    tag, runs_before = fire(bench)
    stop_prefect_server(bench.stack)
    try:
        unavailable = bench.alerts.receiver_health()["alerts"].get(UNAVAILABLE, 0)
        release(bench.alerts, ERRORS)
        before = snapshot(bench.apps, SIMULATED)
        eventually(
            lambda: bench.alerts.receiver_health()["alerts"].get(UNAVAILABLE, 0) > unavailable,
            60,
            "the receiver answering 503",
        )
        [alert] = bench.alerts.firing("RollbackHighErrorRate")
    finally:
        start_prefect_server_again(bench.stack)
    runs = wait_for_runs(tag, runs_before)
    return alert_outcome(bench, alert["fingerprint"], runs, ERRORS, before)


def killed_receiver_alert(bench: Bench) -> Result:
    """The receiver, its Prefect answers 0.7 s late, killed the moment the alert's run exists."""
    tag, runs_before = fire(bench)
    prefect = bench.toxiproxy.proxy(
        f"prefect-{uuid.uuid4().hex[:6]}", f"127.0.0.1:{bench.stack.ports.prefect}"
    )
    prefect.add_toxic("latency", latency=700)
    kill_receiver(bench.stack)
    start_receiver(bench.stack, f"http://{prefect.listen}/api")
    release(bench.alerts, ERRORS)
    before = snapshot(bench.apps, SIMULATED)
    try:
        eventually(lambda: new_runs(tag, runs_before), 60, "the alert's run", interval=0.05)
        [alert] = bench.alerts.firing("RollbackHighErrorRate")
    finally:
        kill_receiver(bench.stack)
        start_receiver(bench.stack)
    runs = wait_for_runs(tag, runs_before)
    return alert_outcome(bench, alert["fingerprint"], runs, ERRORS, before)


def wait_for_runs(tag: str, before: set[Any]) -> list[Any]:
    """The alert's runs once one exists and Alertmanager had 10 s more to deliver again."""
    try:
        eventually(lambda: new_runs(tag, before), 90, "a run for the alert")
    except AssertionError:
        return []
    time.sleep(10)
    return new_runs(tag, before)


FAULTS: dict[str, Callable[[Bench], Result]] = {
    **{
        fault: (lambda bench, fault=fault: one_rollback(bench, fault))  # type: ignore[misc]
        for fault in ROLLBACK_FAULTS
    },
    "worker killed mid-rollback, resubmitted": killed_worker,
    "Prometheus down during verify": verify_prometheus_down,
    "Prometheus down 12 s in the monitor": monitor_prometheus_down_a_while,
    "Prometheus down to the monitor's end": monitor_prometheus_down_to_the_end,
    "Prefect down at the alert, then up": prefect_down_alert,
    "receiver killed mid-delivery": killed_receiver_alert,
}
ALERT_FAULTS = {"Prefect down at the alert, then up", "receiver killed mid-delivery"}


def one(bench: Bench, fault: str, tally: Tally) -> None:
    try:
        result = FAULTS[fault](bench)
    except Exception as exc:  # the bench's own step failed: counted as unclear, not hidden
        result = Result("unclear", 0, 1 if fault in ALERT_FAULTS else None, f"raised {exc!r}")
    tally.attempted += 1
    tally.undos += result.undos
    if result.alerts_lost is not None:
        tally.alerts_lost = (tally.alerts_lost or 0) + result.alerts_lost
    if result.outcome == "completed":
        tally.completed += 1
    elif result.outcome == "failed clearly":
        tally.failed_clearly += 1
    else:
        tally.unclear += 1
    if result.detail:
        print(f"  {result.outcome}: {fault}: {result.detail}", file=sys.stderr)


def alert_routes(work: Path) -> Path:
    """The shipped alert routes without the indicator re-check (see the module's docstring)."""
    routes = yaml.safe_load(DEFAULT_ROUTES_FILE.read_text())
    for route in routes["routes"]:
        route["parameters"].pop("indicator", None)
    path = work / "alert-routes.yaml"
    path.write_text(yaml.safe_dump(routes))
    return path


@contextmanager
def bench_stack() -> Iterator[Bench]:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    ports = Ports(*(free_port() for _ in range(6)))
    stack = LocalStack(
        f"bench-faults-{os.getpid()}",
        ports,
        simulator_namespace=SIMULATED,
        prefect=True,
        receiver=True,
    )
    os.environ[POST_ROLLBACK_ENV] = str(
        write_post_rollback_settings(work, after_rollback={"enabled": False}, enabled=False)
    )
    os.environ[ROUTES_ENV] = str(alert_routes(work))
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{ports.prefect}/api"
    sink = WebhookSink()  # the rollbacks' notices
    sink.start()
    os.environ["ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL"] = f"{sink.url}/notices"
    toxiproxy = Toxiproxy(work / "toxiproxy.log")
    try:
        state = stack.up()
        os.environ.update(state.env())
        toxiproxy.start()
        api = config.new_client_from_config(config_file=state.kubeconfig)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": SIMULATED}})
        kube_proxy = toxiproxy.proxy("kube-apiserver", apiserver_address(state.kubeconfig))
        prometheus_proxy = toxiproxy.proxy("prometheus", state.prometheus_url.split("://")[1])
        with temporary_settings(
            {PREFECT_API_URL: state.prefect_api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ):
            yield Bench(state, api, toxiproxy, kube_proxy, prometheus_proxy, work)
    finally:
        toxiproxy.stop()
        stack.down()
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per fault (default 3)")
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
            "-" if t.alerts_lost is None else str(t.alerts_lost),
        )
        for f, t in tallies.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(
        f"\n{sum(t.attempted for t in tallies.values())} runs in {time.monotonic() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
