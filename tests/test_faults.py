"""The rollback on a bad day, on the real local stack: faults injected with real tools.

Network faults between the flows and kube-apiserver / Prometheus through Toxiproxy, real 429s
from API Priority and Fairness, real 500s from a validating admission webhook that is down,
and the kube-apiserver process restarted. Each test asserts the cluster afterwards (revision,
template, ReplicaSets: exactly one undo per intended rollback, or a clear failure with nothing
changed) and the flow and task runs the Prefect server recorded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import (
    REPOSITORY,
    build_history,
    deployment_body,
    eventually,
    ready_pod_images,
    snapshot,
    use_services,
    wait_rolled_out,
)
from faults import (
    Proxy,
    Starved,
    Toxiproxy,
    apiserver_address,
    apiserver_metric,
    in_background,
    kill_worker,
    kubeconfig_through,
    remove_webhook,
    restart_apiserver,
    start_another_worker,
    wait_for_mark,
    webhook_down,
)
from flow_runs import flow_run_id, logs_of, read_flow_run
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.deployments import run_deployment
from prefect.states import Scheduled, State
from test_rbac import apply_rbac, service_account_kubeconfig
from test_verify_rollback import WINDOW, rows_of, serving

from flows.kubernetes_rollback import kubernetes_rollback
from flows.post_rollback_monitor import post_rollback_monitor
from flows.verify_rollback import verify_rollback
from playbook.errors import VerificationFailedError
from playbook.names import lock_name
from playbook.post_rollback import DEFAULT_POST_ROLLBACK_FILE, POST_ROLLBACK_ENV
from playbook.provenance import ROLLBACK_MARK_ANNOTATION, parse_mark
from playbook.recovery import Verdict
from playbook.rollout import REVISION_ANNOTATION
from stack.local import StackState
from stack.sink import WebhookSink
from tasks.concurrency import LEASE_SECONDS

pytestmark = [pytest.mark.stack, pytest.mark.faults, pytest.mark.timeout(240)]

GOOD, BAD = "v1.2.2", "v1.2.3"
SERVICE_ACCOUNT = ("rollback-flows", "rollback-flows")  # its namespace and name


@pytest.fixture(scope="module")
def toxiproxy(
    local_stack: StackState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Toxiproxy]:
    """A toxiproxy-server for this module's tests."""
    server = Toxiproxy(tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kube_proxy(toxiproxy: Toxiproxy, local_stack: StackState) -> Proxy:
    """Toxiproxy in front of the session's kube-apiserver."""
    return toxiproxy.proxy("kube-apiserver", apiserver_address(local_stack.kubeconfig))


@pytest.fixture(scope="module")
def prometheus_proxy(toxiproxy: Toxiproxy, local_stack: StackState) -> Proxy:
    """Toxiproxy in front of the session's Prometheus."""
    return toxiproxy.proxy("prometheus", local_stack.prometheus_url.split("://", 1)[1])


@pytest.fixture
def through_proxies(
    local_stack: StackState,
    toxiproxy: Toxiproxy,
    kube_proxy: Proxy,
    prometheus_proxy: Proxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    """The flows of this test reach kube-apiserver and Prometheus only through Toxiproxy."""
    kubeconfig = kubeconfig_through(local_stack.kubeconfig, kube_proxy, tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("ROLLBACK_FLOWS_PROMETHEUS_URL", f"http://{prometheus_proxy.listen}")
    yield
    toxiproxy.reset()


@pytest.fixture
def two_revisions(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """rag-api with revision 1 good and revision 2 (current) bad."""
    use_services(monkeypatch, tmp_path, namespace)
    build_history(apps, namespace, [GOOD, BAD])
    return namespace


@pytest.fixture
def staging(kube_api: client.ApiClient) -> Iterator[str]:
    """The `staging` environment of the stack's services file (the worker's), emptied after:
    a rollback there goes ahead without asking for an approval."""
    core = client.CoreV1Api(kube_api)
    try:
        core.create_namespace({"metadata": {"name": "staging"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield "staging"
    apps = client.AppsV1Api(kube_api)
    for deployment in apps.list_namespaced_deployment("staging").items:
        apps.delete_namespaced_deployment(deployment.metadata.name, "staging")


def task_runs(state: State[Any]) -> dict[str, list[Any]]:
    """The task runs of a flow run as the Prefect server stored them, by task name, once the
    server has recorded each one's end: the server's services record task runs from the
    events the flow sends, a moment after the flow itself ended. Settled: every one final,
    and the same on two reads 0.5 s apart."""
    flow_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)]))
    deadline = time.monotonic() + 30
    seen: list[tuple[Any, Any]] | None = None
    with get_client(sync_client=True) as prefect:
        while True:
            runs = prefect.read_task_runs(flow_run_filter=flow_run)
            now = sorted((r.id, r.state_type) for r in runs)
            final = all(r.state is not None and r.state.is_final() for r in runs)
            if (final and now == seen) or time.monotonic() > deadline:
                break
            seen = now
            time.sleep(0.5)
    found: dict[str, list[Any]] = {}
    for run in runs:
        found.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return found


def patch_refused(apps: client.AppsV1Api, namespace: str) -> bool:
    """Whether a (dry-run) patch of the Deployment is answered 500 by the API server now."""
    try:
        apps.patch_namespaced_deployment(
            "rag-api", namespace, {"metadata": {"labels": {"probe": "1"}}}, dry_run="All"
        )
    except ApiException as exc:
        return exc.status == 500
    return False


def run_logs(state: State[Any]) -> str:
    """Every log line of a flow run (and its task runs) as the Prefect server stored them."""
    return logs_of(flow_run_id(state))


def assert_one_undo(apps: client.AppsV1Api, namespace: str, generation_before: int) -> None:
    """Exactly one undo from revision 2 to revision 1: revision 3 runs the good template."""
    after = snapshot(apps, namespace)
    assert after.image == f"{REPOSITORY}:{GOOD}"
    assert after.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}
    assert after.generation == generation_before + 1  # one write of the template
    d = apps.read_namespaced_deployment("rag-api", namespace)
    assert d.metadata.annotations[REVISION_ANNOTATION] == "3"


def test_connection_reset_mid_patch_undoes_once(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    two_revisions: str,
    kube_proxy: Proxy,
    through_proxies: None,
) -> None:
    """The patch reaches the API server, its answer never reaches the flow: the connection is
    reset. The retry re-reads the Deployment, finds its own change and does not undo again."""
    ns = two_revisions
    before = snapshot(apps, ns)
    slow = kube_proxy.add_toxic("latency", latency=1000)  # every answer 1 s late
    run = in_background(lambda: kubernetes_rollback("rag-api", return_state=True))
    mark = wait_for_mark(apps, ns)
    kube_proxy.cut()  # the patch's answer is still on its way: the flow sees a reset
    kube_proxy.remove_toxic(slow)
    state = run.result(timeout=120)

    assert read_flow_run(state).state == "COMPLETED"
    assert mark.flow_run_id == str(flow_run_id(state))
    assert_one_undo(apps, ns, before.generation)
    assert ready_pod_images(core, ns) == [f"{REPOSITORY}:{GOOD}"] * 3
    [undo] = task_runs(state)["undo_deployment"]
    assert undo.run_count == 2  # the reset attempt, then the one that found its change
    assert undo.state.type.value == "COMPLETED"
    report = state.result()
    assert "by an earlier attempt of this flow run" in report.outcome
    assert "the earlier attempt's patch had landed although it reported a failure" in run_logs(
        state
    )


def test_apiserver_429_is_waited_out(
    local_stack: StackState,
    kube_api: client.ApiClient,
    toxiproxy: Toxiproxy,
    apps: client.AppsV1Api,
    two_revisions: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """API Priority and Fairness answers every request of the flows' ServiceAccount 429 with
    Retry-After for a few seconds; the flow waits it out inside each call and rolls back once."""
    ns = two_revisions
    apply_rbac(kube_api, ns)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    before = snapshot(apps, ns)
    starved = Starved(kube_api, toxiproxy, SERVICE_ACCOUNT, f"starve-{uuid.uuid4().hex[:6]}")

    def rejected() -> float:
        return apiserver_metric(
            kube_api,
            "apiserver_flowcontrol_rejected_requests_total",
            flow_schema=starved.flow_schema,
        )

    try:
        starved.start()
        as_flows = config.new_client_from_config(config_file=str(kubeconfig))
        as_flows.rest_client.pool_manager.connection_pool_kw["retries"] = False

        def answers_429() -> bool:
            try:
                client.AppsV1Api(as_flows).read_namespaced_deployment("rag-api", ns)
            except ApiException as exc:
                return exc.status == 429 and bool(exc.headers.get("Retry-After"))
            return False

        eventually(answers_429, 20, "a 429 with Retry-After for the ServiceAccount")
        as_flows.close()
        already = rejected()
        run = in_background(lambda: kubernetes_rollback("rag-api", return_state=True))
        eventually(lambda: rejected() >= already + 3, 30, "the flow's requests rejected with 429")
        time.sleep(2)
        assert snapshot(apps, ns) == before  # nothing got through while starved
    finally:
        starved.lift()
    state = run.result(timeout=120)

    assert read_flow_run(state).state == "COMPLETED"
    assert_one_undo(apps, ns, before.generation)
    runs = task_runs(state)
    # Waited out inside each call (Retry-After), never failed and retried as a task.
    assert [r.run_count for r in runs["read_rollout"]] == [1]
    assert [r.run_count for r in runs["undo_deployment"]] == [1]


def test_admission_webhook_500_on_the_patch_changes_nothing_or_once(
    kube_api: client.ApiClient, apps: client.AppsV1Api, two_revisions: str
) -> None:
    """A validating webhook that is down (failurePolicy: Fail) makes every patch a 500: the
    rollback fails clearly and nothing changed. When the webhook is removed between two
    attempts, the retry re-reads and undoes once."""
    ns = two_revisions
    name = f"down-{uuid.uuid4().hex[:6]}"
    before = snapshot(apps, ns)
    webhook_down(kube_api, name, ns)
    try:
        eventually(lambda: patch_refused(apps, ns), 20, "the webhook to refuse patches")
        state = kubernetes_rollback("rag-api", return_state=True)
        assert read_flow_run(state).state == "FAILED"
        assert "HTTP 500" in str(state.message) and name in str(state.message)
        assert snapshot(apps, ns) == before
        [undo] = task_runs(state)["undo_deployment"]
        assert (undo.run_count, undo.state.type.value) == (4, "FAILED")  # 3 retries, all 500

        # Again, and the webhook is removed after the first 500.
        calls = apiserver_metric(
            kube_api,
            "apiserver_admission_webhook_rejection_count",
            name=f"{name}.rollback-flows.dev",
        )
        run = in_background(lambda: kubernetes_rollback("rag-api", return_state=True))
        deadline = time.monotonic() + 30
        while (
            apiserver_metric(
                kube_api,
                "apiserver_admission_webhook_rejection_count",
                name=f"{name}.rollback-flows.dev",
            )
            <= calls
        ):
            assert time.monotonic() < deadline, "the webhook was never called"
            time.sleep(0.1)
    finally:
        remove_webhook(kube_api, name)
    state = run.result(timeout=120)
    assert read_flow_run(state).state == "COMPLETED"
    assert_one_undo(apps, ns, before.generation)
    [undo] = task_runs(state)["undo_deployment"]
    assert undo.run_count >= 2
    assert "carries no change of this flow run (a patch it sent did not land)" in run_logs(state)


def test_apiserver_restart_during_the_wait_completes(
    local_stack: StackState,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kube-apiserver stopped (and killed after 2 s of graceful shutdown), down for 10 s and
    started again while the flow waits for the rollout (each new pod must stay ready for 5 s,
    `minReadySeconds`, before the controller counts it): the wait outlives the restart and the
    rollback completes with one undo. The controllers come back with their retry backoff,
    slower than the API server (about 45 s here): the wait allows for it."""
    use_services(monkeypatch, tmp_path, namespace, timeout=180)
    build_history(apps, namespace, [GOOD, BAD], minReadySeconds=5)
    before = snapshot(apps, namespace)
    run = in_background(lambda: kubernetes_rollback("rag-api", return_state=True))
    wait_for_mark(apps, namespace)
    restart_apiserver(apiserver_address(local_stack.kubeconfig), down_seconds=10)
    state = run.result(timeout=200)

    assert read_flow_run(state).state == "COMPLETED"
    assert_one_undo(apps, namespace, before.generation)
    assert ready_pod_images(core, namespace) == [f"{REPOSITORY}:{GOOD}"] * 3
    runs = task_runs(state)
    assert [r.run_count for r in runs["undo_deployment"]] == [1]
    # The restart fell in the wait, which went on through it.
    assert [(r.run_count, r.state.type.value) for r in runs["wait_for_rollout"]] == [
        (1, "COMPLETED")
    ]
    assert "reading the rollout failed, retrying" in run_logs(state)


def test_prometheus_down_during_verify_fails_the_check(
    local_stack: StackState,
    apps: client.AppsV1Api,
    simulator_namespace: str,
    kube_proxy: Proxy,
    prometheus_proxy: Proxy,
    through_proxies: None,
) -> None:
    """Prometheus goes down while the verification reads the pods (slowed down by 2 s per
    answer): error rate and P99 are NO DATA, never a pass, and the verification fails."""
    serving(local_stack, apps, simulator_namespace, "v1.2.3", 0.0)
    before = snapshot(apps, simulator_namespace)
    kube_proxy.add_toxic("latency", latency=2000)
    run = in_background(
        lambda: verify_rollback("rag-api", "v1.2.3", window=WINDOW, return_state=True)
    )
    time.sleep(1)
    prometheus_proxy.set_enabled(False)  # refused from now on
    state = run.result(timeout=120)

    assert read_flow_run(state).state == "FAILED"
    rows = rows_of(state)
    assert {name: row["result"] for name, row in rows.items()} == {
        "Pod Count": "PASS",
        "Ready Status": "PASS",
        "Health Check": "PASS",
        "Version": "PASS",
        "Error Rate": "NO DATA",
        "P99 Latency": "NO DATA",
    }
    assert rows["Error Rate"]["observed"].startswith("query failed: ")
    assert "Error Rate" in str(state.message)
    assert snapshot(apps, simulator_namespace) == before  # a verification changes nothing


def monitor_in_background(since: datetime, seconds: int) -> Future[Any]:
    """The monitor of rag-api from `since`, one point every 5 s, in a thread."""
    return in_background(
        lambda: post_rollback_monitor(
            "rag-api",
            since,
            duration=timedelta(seconds=seconds),
            interval=timedelta(seconds=5),
            scan_logs=False,
            return_state=True,
        )
    )


def sleep_until(at: datetime) -> None:
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


def artifact_evaluations(state: State[Any]) -> list[dict[str, str]]:
    """Each point of the monitor's decay table as the Prefect server stored the report: the
    value of each indicator, by title."""
    markdown = str(read_flow_run(state).keyed("post-rollback-monitor-rag-api").data)
    table = markdown.split("## Decay", 1)[1].split("## Charts", 1)[0]
    header, _, *rows = [line for line in table.splitlines() if line.startswith("|")]
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    points = []
    for row in rows:
        cells = dict(zip(titles[1:-1:2], row.strip("|").split("|")[1:-1:2], strict=True))
        points.append({title: value.strip() for title, value in cells.items()})
    return points


def failed_queries(state: State[Any]) -> list[Any]:
    """The monitor's range queries the Prefect server recorded as failed (after retries)."""
    return [r for r in task_runs(state)["read_series"] if r.state.type.value == "FAILED"]


def test_prometheus_down_during_the_monitor_is_no_data_and_escalates(
    local_stack: StackState,
    apps: client.AppsV1Api,
    simulator_namespace: str,
    prometheus_proxy: Proxy,
    through_proxies: None,
    notifications: WebhookSink,
) -> None:
    """The monitor's first point is read from Prometheus; then Prometheus is down until the
    end. The points it cannot query are NO DATA, never a pass: the monitor goes on to its
    last point, does not call the service recovered, escalates to a person and fails."""
    serving(local_stack, apps, simulator_namespace, "v1.2.3", 0.0)
    since = datetime.now(UTC).replace(microsecond=0)
    run = monitor_in_background(since, 10)
    # The first point is read 10 s after it (scrape lag): since + 5 s + 10 s.
    sleep_until(since + timedelta(seconds=17))
    prometheus_proxy.set_enabled(False)
    state = run.result(timeout=120)

    assert read_flow_run(state).state == "FAILED"
    report = state.result(raise_on_failure=False)
    assert isinstance(report, VerificationFailedError)
    [first, second] = [
        (point["Error Rate"], point["P99 Latency"]) for point in artifact_evaluations(state)
    ]
    assert "no data" not in first  # read before the outage
    assert second == ("no data", "no data")
    assert {run.run_count for run in failed_queries(state)} == {2}  # retried once, then no data
    [sent] = notifications.received("/slack")
    text = sent.body["text"]
    assert text.startswith("🚨 ESCALATION: rag-api has not recovered after the rollback")
    assert "Verdict: NO DATA" in text
    assert "- Error Rate: no data; now no data" in text
    assert "- no data, the query failed: Error Rate at " in text
    assert "Connection refused" in text


def test_prometheus_down_for_a_while_the_monitor_goes_on_to_its_verdict(
    local_stack: StackState,
    apps: client.AppsV1Api,
    simulator_namespace: str,
    prometheus_proxy: Proxy,
    through_proxies: None,
    notifications: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Prometheus is down for 12 s while the monitor reads its first point, then back. That
    point is NO DATA (it breaks any "back at baseline" stretch, it never passes); the monitor
    does not stop there: it reads the points after and reaches its verdict from them
    (recovered: back at baseline for the 10 s these settings ask, without a gap)."""
    settings = yaml.safe_load(DEFAULT_POST_ROLLBACK_FILE.read_text())
    for policy in settings["monitor"]["indicators"].values():
        policy["hold_seconds"] = 10
    (tmp_path / "post-rollback.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv(POST_ROLLBACK_ENV, str(tmp_path / "post-rollback.yaml"))
    serving(local_stack, apps, simulator_namespace, "v1.2.3", 0.0)
    since = datetime.now(UTC).replace(microsecond=0)
    run = monitor_in_background(since, 30)
    sleep_until(since + timedelta(seconds=13))  # the first point is read at since + 15 s
    prometheus_proxy.set_enabled(False)
    sleep_until(since + timedelta(seconds=25))  # after the first query's retry failed
    prometheus_proxy.set_enabled(True)
    state = run.result(timeout=120)

    assert read_flow_run(state).state == "COMPLETED"
    report = state.result()
    assert report.verdict is Verdict.RECOVERED
    assert len(report.evaluations) == 6  # every point, the gap included
    gap = report.evaluations[0]
    assert dict(gap.values)["error_rate"] is None
    assert dict(gap.verdicts)["error_rate"] is Verdict.NO_DATA
    after = report.evaluations[1:]
    assert all(dict(ev.values)["error_rate"] is not None for ev in after)
    assert [dict(ev.verdicts)["error_rate"] for ev in after][-1] is Verdict.RECOVERED
    assert report.unqueried and report.unqueried[0].startswith("Error Rate at ")
    assert "Connection refused" in report.unqueried[0]
    assert failed_queries(state)  # the Prefect server holds the failed query
    assert artifact_evaluations(state)[0]["Error Rate"] == "no data"
    [sent] = notifications.received("/slack")
    assert sent.body["text"].startswith("✅")


def test_a_killed_worker_run_resubmitted_completes_with_one_undo(
    local_stack: StackState,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    staging: str,
) -> None:
    """The worker dies (SIGKILL, with the flow run it executes) right after the undo's patch.
    The run's lock lease runs out; the run, resubmitted on a new worker, finds its own change
    and completes without undoing again."""
    ns = staging
    # revision 1's pods become ready 3 s after they start (a KWOK stage): the undo's rollout
    # lasts that long, so the worker dies mid-run and not after the run's report
    slow = deployment_body(f"{REPOSITORY}:{GOOD}")
    slow["spec"]["template"]["metadata"]["annotations"] = {"rollback-flows.dev/ready-delay": "3s"}
    apps.create_namespaced_deployment(ns, slow)
    wait_rolled_out(apps, ns, "rag-api", timeout=60)
    bad = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "rag-api", "image": f"{REPOSITORY}:{BAD}"}]}
            }
        }
    }
    apps.patch_namespaced_deployment("rag-api", ns, bad)
    wait_rolled_out(apps, ns, "rag-api")
    before = snapshot(apps, ns)
    submitted = run_deployment(
        "kubernetes-rollback/default",
        parameters={"service": "rag-api", "namespace": ns},
        timeout=0,
    )
    with get_client(sync_client=True) as prefect:

        def patched() -> bool:
            state = prefect.read_flow_run(submitted.id).state
            assert state is None or not state.is_final(), f"the run ended first: {state}"
            d = apps.read_namespaced_deployment("rag-api", ns)
            return ROLLBACK_MARK_ANNOTATION in (d.metadata.annotations or {})

        eventually(patched, 60, "the rollback's patch", interval=0.05)
    kill_worker(local_stack)
    mark = parse_mark(
        apps.read_namespaced_deployment("rag-api", ns).metadata.annotations[
            ROLLBACK_MARK_ANNOTATION
        ]
    )
    assert mark is not None
    start_another_worker(local_stack)
    assert mark.flow_run_id == str(submitted.id)
    lock = lock_name(ns, "rag-api")
    with get_client(sync_client=True) as prefect:
        orphaned = prefect.read_flow_run(submitted.id).state
        assert orphaned is not None and orphaned.type.value in ("RUNNING", "CRASHED"), orphaned
        # The dead run's slot is freed when its lease ends, never by hand.
        eventually(
            lambda: prefect.read_global_concurrency_limit_by_name(lock).active_slots == 0,
            LEASE_SECONDS + 40,
            "the dead run's lock lease to end",
            interval=2,
        )
        prefect.set_flow_run_state(submitted.id, Scheduled(), force=True)  # resubmitted

        def finished() -> Any:
            run = prefect.read_flow_run(submitted.id)
            return run if run.state is not None and run.state.is_final() else None

        run = eventually(finished, 90, "the resubmitted run to finish")
        [report] = [
            a
            for a in prefect.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            if a.type == "markdown"
        ]

    assert run.state.type.value == "COMPLETED", run.state
    assert run.run_count == 2
    assert_one_undo(apps, ns, before.generation)
    assert ready_pod_images(core, ns) == [f"{REPOSITORY}:{GOOD}"] * 3
    assert "by an earlier attempt of this flow run" in str(report.data)
