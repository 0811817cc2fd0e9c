"""Helpers for the receiver tests: Alertmanager-shaped payloads, the receiver on loopback,
and reading flow runs and events back from the Prefect server."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from pydantic import SecretStr

from playbook.services import load_services
from receiver.app import create_app
from receiver.config import ReceiverConfig, load_token
from receiver.server import ReceiverServer

# What Alertmanager 0.25 posted for one alert (shared reference sample, firing).
FIRING_SAMPLE: dict[str, Any] = {
    "receiver": "webhook",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "RollbackHighErrorRate",
                "service": "rag-api",
                "severity": "critical",
            },
            "annotations": {"summary": "rag-api error rate 6.25% > 5%"},
            "startsAt": "2026-11-26T23:21:31.906Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://vm:19094/graph?g0.expr=...&g0.tab=1",
            "fingerprint": "926f50232b87fee0",
        }
    ],
    "groupLabels": {"alertname": "RollbackHighErrorRate", "service": "rag-api"},
    "commonLabels": {
        "alertname": "RollbackHighErrorRate",
        "service": "rag-api",
        "severity": "critical",
    },
    "commonAnnotations": {"summary": "rag-api error rate 6.25% > 5%"},
    "externalURL": "http://vm:19393",
    "version": "4",
    "groupKey": '{}:{alertname="RollbackHighErrorRate", service="rag-api"}',
    "truncatedAlerts": 0,
}


def payload(
    fingerprint: str | None = None,
    status: str = "firing",
    starts_at: str = "2026-11-26T23:21:31.906Z",
    **labels: str,
) -> dict[str, Any]:
    """The sample with one alert of this fingerprint (a random one by default) and labels."""
    body = copy.deepcopy(FIRING_SAMPLE)
    alert = body["alerts"][0]
    alert["fingerprint"] = fingerprint or uuid.uuid4().hex[:16]
    alert["status"] = body["status"] = status
    alert["startsAt"] = starts_at
    if status == "resolved":
        alert["endsAt"] = "2026-11-26T23:21:37.906Z"
    alert["labels"].update(labels)
    body["commonLabels"] = dict(alert["labels"])
    return body


def save_token(block: str) -> str:
    """Store a fresh bearer token in the Prefect Secret block `block`; return it."""
    token = uuid.uuid4().hex
    Secret(value=SecretStr(token)).save(block, overwrite=True)
    return token


@contextmanager
def running_receiver(config: ReceiverConfig) -> Iterator[str]:
    """The receiver app, its token loaded from the config's Secret block, on a loopback port."""
    app = create_app(config, load_token(config.token_secret), load_services())
    server = ReceiverServer(app)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def runs_with_key(key: str) -> list[FlowRun]:
    """Every flow run created with idempotency key `key`."""
    with get_client(sync_client=True) as c:
        return c.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=[key]))
        )


def runs_tagged(tag: str) -> list[FlowRun]:
    """Every flow run carrying `tag`."""
    with get_client(sync_client=True) as c:
        return c.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


def count_flow_runs(deployment: str = "guarded-rollback/alert") -> int:
    """How many flow runs of `deployment` (the alert routes' deployment) the server holds."""
    with get_client(sync_client=True) as c:
        deployment_id = c.read_deployment_by_name(deployment).id
        return c.count_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def wait_final(run_id: str | UUID, timeout: float = 120) -> FlowRun:
    """The flow run once it is in a final state (completed, failed, crashed, cancelled)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as c:
        while True:
            run = c.read_flow_run(UUID(str(run_id)))
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {run.name} still {run.state_name} after {timeout}s")
            time.sleep(0.5)


def alert_events(name: str, fingerprint: str, timeout: float = 15) -> list[Any]:
    """Events `name` about the alert with `fingerprint`, waiting until at least one arrives."""
    deadline = time.monotonic() + timeout
    wanted = EventFilter(
        event=EventNameFilter(name=[name]),
        resource=EventResourceFilter(id=[f"prometheus.alert.{fingerprint}"]),
    )
    with get_client(sync_client=True) as c:
        while True:
            events = c.read_events(filter=wanted, limit=50).events
            if events or time.monotonic() > deadline:
                return list(events)
            time.sleep(0.3)
