"""`verify_rollback`: the checklist logic, then live against the session's stack (a Deployment
whose image drives the rag-api simulator, Prometheus scraping it, the Prefect server)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from flow_runs import read_flow_run
from kubernetes import client
from prefect.states import State

from flows.verify_rollback import VerificationReport, verify_rollback
from playbook.checks import (
    ProbeResult,
    Status,
    check_health,
    check_indicator,
    check_pods,
    check_version,
    same_version,
    version_from_body,
)
from playbook.errors import InvalidInputError
from playbook.rollout import PodState
from playbook.services import SERVICES_ENV
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix
from stack.local import StackState
from stack.manifests import deployment_manifest

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
CRITICAL = {"pod_count", "pods_ready", "health", "version", "error_rate"}
REPOSITORY = "ghcr.io/acme/rag-api"
WINDOW = "10s"


def pod(name: str, ready: bool = True, phase: str = "Running", *why: str) -> PodState:
    return PodState(name, phase, ready, 0, tuple(why), "abc", (), False)


# --- the checklist, pure -------------------------------------------------------------------


def test_pod_checks_count_running_pods_and_name_the_unready_ones() -> None:
    count, ready = check_pods([pod("a"), pod("b"), pod("c")], 3, CRITICAL)
    assert (count.status, ready.status) == (Status.PASS, Status.PASS)
    assert (count.observed, ready.observed) == ("3 running of 3", "3/3 ready")
    assert (count.expected, count.critical) == (">= 3", True)

    # a Pending pod is not counted as running, and the unready one is named with its reason
    count, ready = check_pods(
        [pod("a"), pod("b"), pod("c", False, "Pending", "ImagePullBackOff")], 3, CRITICAL
    )
    assert (count.status, ready.status) == (Status.FAIL, Status.FAIL)
    assert count.observed == "2 running of 3"
    assert ready.observed == "2/3 ready; not ready: c (ImagePullBackOff)"

    # a Running pod that is not ready counts as running but fails readiness, named by phase
    count, ready = check_pods([pod("a"), pod("b"), pod("c", False)], 3, CRITICAL)
    assert (count.status, ready.status) == (Status.PASS, Status.FAIL)
    assert ready.observed == "2/3 ready; not ready: c (Running)"

    # a pod being deleted is neither counted nor waited for
    deleting = PodState("d", "Running", False, 0, (), "abc", (), True)
    count, ready = check_pods([pod("a"), pod("b"), pod("c"), deleting], 3, CRITICAL)
    assert (count.observed, ready.observed) == ("3 running of 3", "3/3 ready")
    assert (count.status, ready.status) == (Status.PASS, Status.PASS)

    count, ready = check_pods([], 3, CRITICAL)
    assert (count.status, count.observed) == (Status.FAIL, "0 running of 0")
    assert (ready.status, ready.observed) == (Status.FAIL, "no pods")

    count, ready = check_pods("cannot read pods: forbidden", 3, CRITICAL)
    assert (count.status, ready.status) == (Status.NO_DATA, Status.NO_DATA)
    assert count.observed == ready.observed == "cannot read pods: forbidden"

    # below the minimum fails even when every pod is ready; the minimum itself passes
    count, _ = check_pods([pod("a"), pod("b")], 3, CRITICAL)
    assert (count.status, count.observed) == (Status.FAIL, "2 running of 2")
    count, _ = check_pods([pod("a"), pod("b")], 2, set())
    assert (count.status, count.critical) == (Status.PASS, False)


def test_health_and_version_checks() -> None:
    ok = ProbeResult("http://x/health", 200, 0.012, '{"status": "ok"}')
    assert check_health(ok, CRITICAL).status is Status.PASS
    sick = ProbeResult("http://x/health", 503, 0.01, '{"status": "unhealthy"}')
    assert check_health(sick, CRITICAL).observed == '503 in 10 ms: {"status": "unhealthy"}'
    assert check_health("unreachable: refused", CRITICAL).status is Status.NO_DATA
    version = ProbeResult("http://x/version", 200, 0.01, "", "v1.2.3")
    assert check_version(version, "1.2.3", CRITICAL).status is Status.PASS
    assert check_version(version, "v1.2.4", CRITICAL).status is Status.FAIL
    broken = ProbeResult("http://x/version", 500, 0.01, "oops")
    assert check_version(broken, "v1.2.3", CRITICAL).status is Status.NO_DATA
    assert same_version("v1.2.3", "1.2.3") and not same_version("v1.2.3", "v1.2.30")
    assert version_from_body('{"version": "v1.2.3"}') == "v1.2.3"
    assert version_from_body("v1.2.3\n") == "v1.2.3"
    assert version_from_body('{"build": 7}') is None
    assert version_from_body("") is None


def test_indicator_checks_never_pass_without_data() -> None:
    errors, p99 = MATRIX.indicator("error_rate"), MATRIX.indicator("p99_latency")
    assert check_indicator(errors, 0.01, 0.002, CRITICAL).status is Status.PASS
    failed = check_indicator(errors, 0.01, 0.2, CRITICAL)
    assert (failed.status, failed.observed, failed.expected) == (Status.FAIL, "20 %", "<= 1 %")
    assert check_indicator(errors, 0.01, None, CRITICAL).status is Status.NO_DATA
    assert check_indicator(errors, 0.01, float("nan"), CRITICAL).status is Status.NO_DATA
    slow = check_indicator(p99, 0.3, 0.83, CRITICAL)
    assert (slow.status, slow.critical) == (Status.FAIL, False)


# --- live, against the session's stack ------------------------------------------------------


def deploy(apps: client.AppsV1Api, namespace: str, version: str) -> None:
    """Create or update `rag-api` (3 replicas) at `version`."""
    image = f"{REPOSITORY}:{version}"
    body = deployment_manifest(image)
    names = [d.metadata.name for d in apps.list_namespaced_deployment(namespace).items]
    if "rag-api" in names:
        apps.patch_namespaced_deployment("rag-api", namespace, body)
    else:
        apps.create_namespaced_deployment(namespace, body)


def eventually(what: str, check: Callable[[], bool], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout}s")


def error_ratio(stack: StackState) -> float | None:
    query = MATRIX.indicator("error_rate").render("rag-api", WINDOW)
    reply = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": query}, timeout=5)
    result = reply.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def serving(
    stack: StackState, apps: client.AppsV1Api, namespace: str, version: str, errors: float
) -> None:
    """Deploy `version` and wait until all pods are ready, the simulator serves it and
    Prometheus's error ratio over the window is `errors` (within 3 points; 0 means < 0.1 %)."""
    deploy(apps, namespace, version)

    def rolled_out() -> bool:
        s = apps.read_namespaced_deployment("rag-api", namespace).status
        return (s.updated_replicas, s.ready_replicas, s.replicas) == (3, 3, 3)

    eventually("rollout", rolled_out)
    eventually(
        f"simulator at {version}",
        lambda: httpx.get(f"{stack.simulator_url}/version", timeout=2).json()["version"] == version,
    )
    eventually(
        f"error ratio {errors}",
        lambda: (
            (ratio := error_ratio(stack)) is not None
            and abs(ratio - errors) < (0.03 if errors else 0.001)
        ),
    )


def rows_of(state: State[VerificationReport]) -> dict[str, dict[str, str]]:
    run = read_flow_run(state)
    return {row["check"]: row for row in json.loads(run.one("table").data)}


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_good_version_passes_every_check(
    local_stack: StackState, apps: client.AppsV1Api, simulator_namespace: str
) -> None:
    serving(local_stack, apps, simulator_namespace, "v1.2.3", 0.0)
    state = verify_rollback("rag-api", "v1.2.3", window=WINDOW, return_state=True)

    run = read_flow_run(state)
    assert run.state == "COMPLETED"
    rows = rows_of(state)
    assert list(rows) == [
        "Pod Count",
        "Ready Status",
        "Health Check",
        "Version",
        "Error Rate",
        "P99 Latency",
    ]
    assert {row["result"] for row in rows.values()} == {"PASS"}
    assert rows["Pod Count"]["observed"] == "3 running of 3"
    assert rows["Version"]["observed"] == "v1.2.3"
    assert rows["Error Rate"]["observed"] == "0 %"
    report: VerificationReport = state.result()
    assert report.passed and report.namespace == simulator_namespace


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_bad_version_fails_on_its_error_rate(
    local_stack: StackState, apps: client.AppsV1Api, simulator_namespace: str
) -> None:
    serving(local_stack, apps, simulator_namespace, "v1.2.4", 0.2)  # 20 % errors
    state = verify_rollback("rag-api", "v1.2.4", window=WINDOW, return_state=True)

    assert read_flow_run(state).state == "FAILED"
    assert "Error Rate" in str(state.message)
    rows = rows_of(state)
    assert rows["Error Rate"]["result"] == "FAIL"
    assert 15 <= float(rows["Error Rate"]["observed"].removesuffix(" %")) <= 25
    assert rows["Error Rate"]["expected"] == "<= 1 %"
    failed = [name for name, row in rows.items() if row["result"] != "PASS"]
    assert failed == ["Error Rate"]  # pods, health, version and P99 are fine


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_wrong_version_and_unhealthy_fail_their_checks(
    local_stack: StackState, apps: client.AppsV1Api, simulator_namespace: str
) -> None:
    serving(local_stack, apps, simulator_namespace, "v1.2.6-unhealthy", 0.0)
    state = verify_rollback("rag-api", "v1.2.3", window=WINDOW, return_state=True)

    assert read_flow_run(state).state == "FAILED"
    rows = rows_of(state)
    assert rows["Health Check"]["result"] == "FAIL"
    assert rows["Health Check"]["observed"].startswith("503 in ")
    assert (rows["Version"]["result"], rows["Version"]["observed"]) == ("FAIL", "v1.2.6-unhealthy")
    assert rows["Error Rate"]["result"] == "PASS"


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_missing_metrics_are_no_data_not_a_pass(
    local_stack: StackState,
    apps: client.AppsV1Api,
    simulator_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A service Prometheus has never seen: its error rate and P99 are NO DATA, and fail."""
    serving(local_stack, apps, simulator_namespace, "v1.2.3", 0.0)
    path = tmp_path / "services.yaml"
    path.write_text(
        "default_service: ghost\nservices:\n  ghost:\n    namespace: production\n"
        "    deployment: rag-api\n    container: rag-api\n    image_repository: ghcr.io/acme/ghost\n"
    )
    monkeypatch.setenv(SERVICES_ENV, str(path))
    state = verify_rollback("ghost", "v1.2.3", window=WINDOW, return_state=True)

    assert read_flow_run(state).state == "FAILED"
    rows = rows_of(state)
    assert (rows["Error Rate"]["result"], rows["Error Rate"]["observed"]) == ("NO DATA", "no data")
    assert rows["P99 Latency"]["result"] == "NO DATA"
    assert rows["Health Check"]["result"] == "PASS"


@pytest.mark.stack
@pytest.mark.parametrize(
    ("service", "version", "message"),
    [
        ("rag-api", "1.2", "malformed version '1.2'"),
        ("rag-api", "v1.2.3; rm -rf /", "malformed version"),
        ("nope", "v1.2.3", "unknown service 'nope'"),
    ],
)
def test_bad_input_fails_before_anything_is_probed(
    local_stack: StackState, service: str, version: str, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        verify_rollback(service, version)
