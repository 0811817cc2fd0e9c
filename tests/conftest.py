"""Fixtures for tests against the real local stack.

One stack per test session (a KWOK cluster, the rag-api simulator, Prometheus, Alertmanager
and a Prefect server on PostgreSQL with its UI, all on free loopback ports), always torn down
at the end, also after a failure or Ctrl-C. Each test that touches the cluster gets a fresh
namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Prefect reads its home when first imported: keep test runs out of the user's ~/.prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rollback-flows-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from playbook.post_rollback import DEFAULT_POST_ROLLBACK_FILE, POST_ROLLBACK_ENV
from stack.config import Ports
from stack.local import LocalStack, StackState
from stack.processes import free_port
from stack.sink import WebhookSink

SIMULATOR_NAMESPACE = "production"
NOTICES_PATH = "/notices"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A CI timeout or `kill` sends SIGTERM: end like Ctrl-C, so the stack is still torn down.
signal.signal(signal.SIGTERM, _interrupt)


def write_post_rollback_settings(
    directory: Path, after_rollback: dict[str, object] | None = None, **follow_up: object
) -> Path:
    """The shipped post-rollback settings with `follow_up` (and the checklist every rollback
    runs, `after_rollback`) changed, written to `directory`."""
    settings = yaml.safe_load(DEFAULT_POST_ROLLBACK_FILE.read_text())
    settings["follow_up"] = {**settings.get("follow_up", {}), **follow_up}
    verification = settings["verification"]
    verification["after_rollback"] = {
        **verification.get("after_rollback", {}),
        **(after_rollback or {}),
    }
    path = directory / "post-rollback.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="session")
def alert_sink() -> Iterator[WebhookSink]:
    """The loopback webhook the session's Alertmanager delivers to (path /alerts)."""
    sink = WebhookSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def notifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[WebhookSink]:
    """A Slack-compatible webhook the flows notify, on loopback."""
    sink = WebhookSink()
    sink.start()
    monkeypatch.setenv("ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL", f"{sink.url}/slack")
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def local_stack(
    alert_sink: WebhookSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackState]:
    """The session's local stack; its environment (KUBECONFIG, PREFECT_API_URL, ...) is set."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    ports = Ports(
        prometheus=free_port(),
        alertmanager=free_port(),
        simulator=free_port(),
        prefect=free_port(),
        postgres=free_port(),
    )
    stack = LocalStack(
        f"test-{os.getpid()}",
        ports,
        simulator_namespace=SIMULATOR_NAMESPACE,
        webhook_url=f"{alert_sink.url}/alerts",
        prefect=True,
        # test_ui.py drives the UI in a browser; serving it costs no measurable start-up time
        # (server up in 9.0 s with it, 8.7 s without, 3 runs each).
        prefect_ui=True,
    )
    saved = dict(os.environ)
    # Rollbacks in tests do not each start a 30-minute monitor run on the worker;
    # test_follow_up.py turns it on where it is the subject. Most tests roll back Deployments
    # no service answers for (only the simulator's namespace has /health and metrics), so
    # the checklist after each rollback is on only where it is the subject
    # (test_verification_after_rollback.py).
    os.environ[POST_ROLLBACK_ENV] = str(
        write_post_rollback_settings(
            tmp_path_factory.mktemp("settings"), after_rollback={"enabled": False}, enabled=False
        )
    )
    # Notices of every flow, in-process or on the worker, go to the session's sink (path
    # /notices) unless a test gives its own (the `notifications` fixture).
    os.environ["ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL"] = f"{alert_sink.url}{NOTICES_PATH}"
    try:
        state = stack.up()
        os.environ.update(state.env())
        # A flow heartbeat costs about 1 s per run; the tests need none.
        with temporary_settings(
            {PREFECT_API_URL: state.prefect_api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        ):
            yield state
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stack.down()


@pytest.fixture(scope="session")
def kube_api(local_stack: StackState) -> Iterator[client.ApiClient]:
    """An API client for the session's cluster."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=local_stack.kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def simulator_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """The namespace whose `rag-api` Deployment the simulator follows, emptied after the test."""
    core = client.CoreV1Api(kube_api)
    try:
        core.create_namespace({"metadata": {"name": SIMULATOR_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield SIMULATOR_NAMESPACE
    apps = client.AppsV1Api(kube_api)
    for deployment in apps.list_namespaced_deployment(SIMULATOR_NAMESPACE).items:
        apps.delete_namespaced_deployment(deployment.metadata.name, SIMULATOR_NAMESPACE)


@pytest.fixture
def apps(kube_api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube_api)


@pytest.fixture
def core(kube_api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api)


@pytest.fixture
def bad_release(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """rag-api at revision 2 (v1.2.4, which the simulator fails 20 % of) over revision 1
    (v1.2.3) in the test's namespace, the flows pointed at it; the guards' state (the hourly
    ledger, the service's lock) removed after. A module may give its own `bad_release`."""
    from cluster import build_history, use_services
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from playbook.names import ledger_name, lock_name
    from tasks.concurrency import forget_rollbacks

    use_services(monkeypatch, tmp_path, namespace)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    yield namespace
    forget_rollbacks(ledger_name(namespace, "rag-api"))
    with get_client(sync_client=True) as prefect, contextlib.suppress(ObjectNotFound):
        prefect.delete_global_concurrency_limit_by_name(lock_name(namespace, "rag-api"))


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is Asia/Tokyo (UTC+9) for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
