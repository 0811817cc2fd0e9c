"""The audit trail: Prefect events about changes made to a cluster (the UI's Event Feed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect.events import emit_event
from prefect.logging import get_run_logger

AUDIT_EVENT_PREFIX = "rollback-flows.rollback"


def record_change(phase: str, resource: Mapping[str, str], payload: Mapping[str, Any]) -> str:
    """Emit `rollback-flows.rollback.<phase>` about `resource` (best effort: a change stands
    without its event, and the failure to record it is logged). Returns the event's id or
    why there is none. Inside a flow run the event is related to that run."""
    name = f"{AUDIT_EVENT_PREFIX}.{phase}"
    try:
        event = emit_event(name, resource=dict(resource), payload=dict(payload))
    except Exception as exc:  # never let the audit trail fail a rollback
        get_run_logger().error("could not record %s: %s", name, exc)
        return f"{name} not recorded: {exc}"
    if event is None:
        get_run_logger().warning("%s not recorded: events are not being sent", name)
        return f"{name} not recorded: events are not being sent"
    return str(event.id)
