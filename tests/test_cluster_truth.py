"""Decisions from the cluster's truth, on the real local stack: an alert never undoes a newer
rollout (whoever made it), an alert that no longer breaches does nothing, and a rollback that
repeats (a retried attempt, a second run) never flips the Deployment back.

Each test asserts the Deployment afterwards: its template, its revision and its ReplicaSets.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cluster import (
    REPOSITORY,
    build_history,
    deployment_body,
    error_ratio,
    eventually,
    replicasets_by_revision,
    snapshot,
    use_services,
    wait_rolled_out,
    wait_settled,
)
from kubernetes import client
from prefect.client.orchestration import get_client

from flows.guarded_rollback import guarded_rollback
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import RollbackRefusedError
from playbook.names import ledger_name
from playbook.provenance import ROLLBACK_MARK_ANNOTATION, parse_mark
from playbook.services import SERVICES_ENV
from playbook.thresholds import DEFAULT_MATRIX_FILE, MATRIX_ENV
from stack.cluster import Cluster
from stack.config import bin_dir
from stack.local import StackState
from stack.sink import WebhookSink
from tasks.concurrency import forget_rollbacks, read_rollback_ledger

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

GOOD, BAD = "v1.2.3", "v1.2.4"  # the simulator fails 20 % of v1.2.4's requests


def kubectl(local_stack: StackState, *args: str) -> str:
    """Run the real kubectl against the session's cluster, as a person would."""
    done = subprocess.run(
        [str(bin_dir() / "kubectl"), *args],
        env={**os.environ, "KUBECONFIG": local_stack.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_alert_older_than_a_manual_rollback_is_refused_as_stale(
    apps: client.AppsV1Api, bad_release: str
) -> None:
    ns = bad_release
    alert_started = datetime.now(UTC)  # the error-rate alert about the bad release fires
    # meanwhile an SRE rolls back from the Prefect UI ...
    manual = kubernetes_rollback("rag-api")
    assert manual.changed
    wait_settled(apps, ns, "rag-api", quiet=1.0)
    rolled_back = snapshot(apps, ns)
    assert rolled_back.image == f"{REPOSITORY}:{GOOD}"
    assert rolled_back.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}

    # ... and then Alertmanager delivers the alert
    result = guarded_rollback("rag-api", reason="error rate", alert_started_at=alert_started)

    assert result.action == "stale" and result.report is None
    assert "revision 3" in result.message and "made by this tool" in result.message
    assert "the alert is about the version before it" in result.message
    assert snapshot(apps, ns) == rolled_back  # template, revision, ReplicaSets unchanged
    assert read_rollback_ledger.fn(ledger_name(ns, "rag-api")) == ()  # not counted


@pytest.mark.parametrize(
    ("command", "manager"),
    [
        (("set", "image", "deployment/rag-api", f"rag-api={REPOSITORY}:v1.2.5"), "kubectl-set"),
        (("rollout", "undo", "deployment/rag-api"), "kubectl"),
    ],
    ids=["set-image", "rollout-undo"],
)
def test_a_kubectl_rollout_after_the_alert_started_is_recognised_as_newer(
    apps: client.AppsV1Api,
    bad_release: str,
    local_stack: StackState,
    command: tuple[str, ...],
    manager: str,
) -> None:
    ns = bad_release
    alert_started = datetime.now(UTC)
    time.sleep(1.1)  # the API server records whole seconds
    kubectl(local_stack, *command, "-n", ns)
    wait_rolled_out(apps, ns, "rag-api")
    wait_settled(apps, ns, "rag-api")
    after_kubectl = snapshot(apps, ns)
    assert after_kubectl.image != f"{REPOSITORY}:{BAD}"

    result = guarded_rollback("rag-api", reason="error rate", alert_started_at=alert_started)

    assert result.action == "stale", result.message
    assert f"written by {manager}" in result.message
    assert snapshot(apps, ns) == after_kubectl


def test_a_second_manual_undo_without_to_revision_is_refused(
    apps: client.AppsV1Api, bad_release: str
) -> None:
    ns = bad_release
    first = kubernetes_rollback("rag-api")
    assert first.changed
    wait_settled(apps, ns, "rag-api", quiet=1.0)
    rolled_back = snapshot(apps, ns)
    assert rolled_back.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}

    with pytest.raises(RollbackRefusedError, match="rolled back by this tool") as refused:
        kubernetes_rollback("rag-api")
    assert "return to revision 2" in str(refused.value)
    assert snapshot(apps, ns) == rolled_back  # nothing changed: still good, revision 3

    # a person who means it says so; kubectl's semantics then apply (back to revision 2)
    forced = kubernetes_rollback("rag-api", force=True)
    assert forced.changed
    assert snapshot(apps, ns).replicasets == {3: f"{REPOSITORY}:{GOOD}", 4: f"{REPOSITORY}:{BAD}"}
    # naming the revision is always allowed
    named = kubernetes_rollback("rag-api", to_revision=3)
    assert named.changed
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"


def test_a_retried_run_does_not_undo_twice(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = namespace
    # pods of this Deployment become ready 6 s after they start; a rollout waits 4 s at most
    use_services(monkeypatch, tmp_path, ns, timeout=4)
    body = deployment_body(f"{REPOSITORY}:{GOOD}", replicas=1)
    body["spec"]["template"]["metadata"]["annotations"] = {"rollback-flows.dev/ready-delay": "6s"}
    apps.create_namespaced_deployment(ns, body)
    wait_rolled_out(apps, ns, "rag-api")
    apps.patch_namespaced_deployment(
        "rag-api",
        ns,
        {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{BAD}"}
        ]}}}},
    )  # fmt: skip
    wait_rolled_out(apps, ns, "rag-api")

    # the first attempt undoes, then times out waiting; Prefect retries the flow run
    retried = kubernetes_rollback.with_options(retries=3, retry_delay_seconds=1)
    state = retried("rag-api", return_state=True)

    assert state.is_completed(), state.message
    report = state.result()
    assert "by an earlier attempt of this flow run" in report.outcome
    with get_client(sync_client=True) as c:
        run = c.read_flow_run(state.state_details.flow_run_id)
    assert run.run_count >= 2
    # one undo: revision 1's ReplicaSet serves as revision 3; the bad one is not back
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"
    assert replicasets_by_revision(apps, ns) == {
        2: f"{REPOSITORY}:{BAD}",
        3: f"{REPOSITORY}:{GOOD}",
    }
    d = apps.read_namespaced_deployment("rag-api", ns)
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    mark = parse_mark(d.metadata.annotations[ROLLBACK_MARK_ANNOTATION])
    assert mark is not None and mark.flow_run_id == str(run.id)
    assert (mark.from_revision, mark.to_revision) == (2, 1)


def test_an_alert_that_no_longer_breaches_is_refused(
    apps: client.AppsV1Api,
    local_stack: StackState,
    simulator_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = simulator_namespace
    use_services(monkeypatch, tmp_path, ns)
    forget_rollbacks(ledger_name(ns, "rag-api"))
    build_history(apps, ns, [GOOD, BAD], serve_seconds=4)
    eventually(
        lambda: (error_ratio(local_stack.prometheus_url) or 0) > 0.1, 40, "the bad error ratio"
    )
    # the alert about the bad release, delivered after Alertmanager's group_wait: re-measured
    # over the bad revision's life only, it is still critical
    alert_started = datetime.now(UTC)
    time.sleep(5)
    first = guarded_rollback(
        "rag-api", reason="error rate", alert_started_at=alert_started, indicator="error_rate"
    )
    assert first.action == "rolled_back", first.message
    eventually(
        lambda: (
            httpx.get(f"{local_stack.simulator_url}/version", timeout=2).json()["version"] == GOOD
        ),
        10,
        "the simulator serving the good version",
    )
    time.sleep(8)  # the good version's own traffic, scraped every second
    rolled_back = snapshot(apps, ns)
    assert rolled_back.replicasets == {2: f"{REPOSITORY}:{BAD}", 3: f"{REPOSITORY}:{GOOD}"}

    # the 5-minute error-rate window still holds v1.2.4's errors, so a new alert can start
    # after the rollback; measured over the good revision's life only, it is not critical
    late = guarded_rollback(
        "rag-api", reason="error rate", alert_started_at=datetime.now(UTC), indicator="error_rate"
    )

    assert late.action == "recovered", late.message
    assert "Error Rate over the current revision's last" in late.message
    assert "no longer critical" in late.message
    assert snapshot(apps, ns) == rolled_back
    assert len(read_rollback_ledger.fn(ledger_name(ns, "rag-api"))) == 1  # the first only


@pytest.fixture(scope="module")
def second_cluster(
    local_stack: StackState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A second local cluster (its own control plane and KWOK nodes), deleted afterwards."""
    root = tmp_path_factory.mktemp("second-cluster")
    cluster = Cluster(f"second-{os.getpid()}", root / "kwok", root / "kubeconfig", bin_dir())
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.delete()


def merged_kubeconfig(path: Path, *sources: str) -> dict[str, str]:
    """One kubeconfig holding the contexts of `sources`; returns context name by source."""
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    contexts = {}
    for source in sources:
        config = yaml.safe_load(Path(source).read_text())
        for key in ("clusters", "users", "contexts"):
            merged.setdefault(key, []).extend(config[key])
        contexts[source] = config["current-context"]
    merged["current-context"] = contexts[sources[0]]
    path.write_text(yaml.safe_dump(merged))
    return contexts


def test_an_alert_for_the_second_cluster_acts_only_there(
    local_stack: StackState,
    kube_api: client.ApiClient,
    second_cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    contexts = merged_kubeconfig(kubeconfig, local_stack.kubeconfig, str(second_cluster.kubeconfig))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    services = tmp_path / "services.yaml"
    services.write_text(
        f"""
default_service: rag-api
services:
  rag-api:
    environments:
      production: {{namespace: shop, cluster: one, context: {contexts[local_stack.kubeconfig]}}}
      staging: {{namespace: shop, cluster: two, context: {contexts[str(second_cluster.kubeconfig)]}}}
    deployment: rag-api
    container: rag-api
    image_repository: {REPOSITORY}
    rollout_timeout_seconds: 60
"""
    )
    monkeypatch.setenv(SERVICES_ENV, str(services))
    other = second_cluster.api_client()
    here, there = client.AppsV1Api(kube_api), client.AppsV1Api(other)
    try:
        for api in (kube_api, other):  # the same namespace and release in both clusters
            client.CoreV1Api(api).create_namespace({"metadata": {"name": "shop"}})
            build_history(client.AppsV1Api(api), "shop", [GOOD, BAD])
        wait_settled(here, "shop", "rag-api")
        production = snapshot(here, "shop")
        time.sleep(1.1)  # the API server records whole seconds
        alert_started = datetime.now(UTC)

        # the alert's labels: namespace shop, cluster two
        result = guarded_rollback(
            "rag-api", namespace="shop", cluster="two", alert_started_at=alert_started
        )

        assert result.action == "rolled_back", result.message
        assert snapshot(there, "shop").image == f"{REPOSITORY}:{GOOD}"
        assert replicasets_by_revision(there, "shop") == {
            2: f"{REPOSITORY}:{BAD}",
            3: f"{REPOSITORY}:{GOOD}",
        }
        assert snapshot(here, "shop") == production  # the other cluster: untouched, still bad
    finally:
        forget_rollbacks(ledger_name("shop", "rag-api"))
        client.CoreV1Api(kube_api).delete_namespace("shop")
        other.close()


def test_an_alert_on_a_revision_current_for_too_long_is_not_about_the_release(
    apps: client.AppsV1Api, bad_release: str, notifications: WebhookSink
) -> None:
    ns = bad_release
    time.sleep(2.5)  # the bad release has been current "for days"
    wait_settled(apps, ns, "rag-api")
    before = snapshot(apps, ns)

    result = guarded_rollback(
        "rag-api",
        reason="error rate",
        alert_started_at=datetime.now(UTC),
        max_release_age_minutes=1 / 60,
    )

    assert result.action == "not_release", result.message
    assert "longer than 1 s" in result.message and "the cause lies elsewhere" in result.message
    assert snapshot(apps, ns) == before
    sent = notifications.wait_for(lambda d: d.path == "/slack", timeout=10)
    assert f"Automatic rollback of {ns}/rag-api NOT performed" in sent.body["text"]
    assert "longer than 1 s" in sent.body["text"]
    assert read_rollback_ledger.fn(ledger_name(ns, "rag-api")) == ()


def test_a_second_bad_release_soon_after_a_rollback_is_rolled_back_from_its_alert(
    apps: client.AppsV1Api,
    local_stack: StackState,
    simulator_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bad release, rolled back; seconds later the same bad version is released again. The
    stretch before the new release is the good version's few seconds: the errors of the
    release rolled back before it do not make this one look "not the release"."""
    ns = simulator_namespace
    use_services(monkeypatch, tmp_path, ns)
    forget_rollbacks(ledger_name(ns, "rag-api"))
    matrix = yaml.safe_load(DEFAULT_MATRIX_FILE.read_text())
    matrix["indicators"]["error_rate"]["window"] = "30s"  # 5 min in production
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(matrix))
    monkeypatch.setenv(MATRIX_ENV, str(tmp_path / "matrix.yaml"))
    build_history(apps, ns, [GOOD, BAD], serve_seconds=4)
    bad = lambda: (error_ratio(local_stack.prometheus_url) or 0) > 0.1  # noqa: E731
    eventually(bad, 40, "the bad error ratio")
    time.sleep(10)  # the first bad release's errors fill most of a window
    kubernetes_rollback("rag-api")
    eventually(lambda: error_ratio(local_stack.prometheus_url) == 0.0, 40, "a calm error ratio")
    apps.patch_namespaced_deployment(
        "rag-api", ns, {"spec": {"template": {"spec": {"containers": [
            {"name": "rag-api", "image": f"{REPOSITORY}:{BAD}"}
        ]}}}},
    )  # fmt: skip
    wait_rolled_out(apps, ns, "rag-api")
    time.sleep(1.1)
    alert_started = datetime.now(UTC)
    eventually(bad, 40, "the second bad release's error ratio")
    time.sleep(3)

    result = guarded_rollback(
        "rag-api", reason="error rate", alert_started_at=alert_started, indicator="error_rate"
    )

    assert result.action == "rolled_back", result.message
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"
    assert replicasets_by_revision(apps, ns) == {
        4: f"{REPOSITORY}:{BAD}",
        5: f"{REPOSITORY}:{GOOD}",
    }
    forget_rollbacks(ledger_name(ns, "rag-api"))


def test_an_alert_whose_indicator_breached_before_the_release_is_not_rolled_back(
    apps: client.AppsV1Api,
    local_stack: StackState,
    simulator_namespace: str,
    notifications: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = simulator_namespace
    use_services(monkeypatch, tmp_path, ns)
    forget_rollbacks(ledger_name(ns, "rag-api"))
    # the decision matrix as shipped, with a 15 s error-rate window (5 min in production)
    matrix = yaml.safe_load(DEFAULT_MATRIX_FILE.read_text())
    matrix["indicators"]["error_rate"]["window"] = "15s"
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(matrix))
    monkeypatch.setenv(MATRIX_ENV, str(tmp_path / "matrix.yaml"))
    build_history(apps, ns, [GOOD, BAD])
    eventually(
        lambda: (error_ratio(local_stack.prometheus_url) or 0) > 0.1, 40, "the bad error ratio"
    )
    time.sleep(16)  # a whole window of the bad version's errors
    # a new revision of the same bad version (a restart, a config-only release)
    kubectl(local_stack, "rollout", "restart", "deployment/rag-api", "-n", ns)
    wait_rolled_out(apps, ns, "rag-api")
    time.sleep(1.1)
    alert_started = datetime.now(UTC)
    time.sleep(4)
    wait_settled(apps, ns, "rag-api", quiet=1.0)
    before = snapshot(apps, ns)
    assert before.image == f"{REPOSITORY}:{BAD}" and max(before.replicasets) == 3

    result = guarded_rollback(
        "rag-api", reason="error rate", alert_started_at=alert_started, indicator="error_rate"
    )

    assert result.action == "not_release", result.message
    assert "before the current revision became current was already" in result.message
    assert snapshot(apps, ns) == before  # revision 3 stays; nothing undone
    sent = notifications.wait_for(lambda d: d.path == "/slack", timeout=10)
    assert "the release is not what broke it" in sent.body["text"]
