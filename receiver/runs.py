"""What the receiver asks of the Prefect API: deployments, flow runs, the lock, events.

Every call has the client's timeout; Prefect and httpx errors are translated into
`playbook.errors` here, so the app answers 503 (Alertmanager retries) on transient ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound

from playbook.errors import InvalidInputError
from tasks.boundary import translating

ACTIVE_STATES = [
    StateType.SCHEDULED,
    StateType.PENDING,
    StateType.RUNNING,
    StateType.PAUSED,
    StateType.CANCELLING,
]
_EVENT_NAMESPACE = UUID("4f1c2a57-3b0e-4a55-9a8e-5d1f0b7c2e11")


@dataclass(frozen=True)
class RunRef:
    """A flow run as the receiver reports it."""

    id: str
    name: str
    state: str
    idempotency_key: str | None

    @classmethod
    def of(cls, run: FlowRun) -> RunRef:
        state = (run.state.name if run.state else None) or "unknown"
        return cls(str(run.id), run.name, state, run.idempotency_key)


class PrefectRuns:
    """The receiver's view of one Prefect server."""

    def __init__(self, client: PrefectClient) -> None:
        self._client = client
        self._deployments: dict[str, UUID] = {}

    async def deployment_id(self, name: str) -> UUID:
        """The id of deployment `flow-name/deployment-name` (cached once found)."""
        if name not in self._deployments:
            with translating(f"read Prefect deployment {name}"):
                try:
                    deployment = await self._client.read_deployment_by_name(name)
                except ObjectNotFound:
                    raise InvalidInputError(
                        f"the Prefect deployment {name!r} of the alert routes does not exist; "
                        "deploy prefect.yaml (prefect deploy --all)"
                    ) from None
            self._deployments[name] = deployment.id
        return self._deployments[name]

    async def run_with_key(self, deployment_id: UUID, key: str) -> RunRef | None:
        """The run of the deployment created with idempotency key `key`, if any."""
        with translating("read flow runs by idempotency key"):
            runs = await self._client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[key])
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                limit=1,
            )
        return RunRef.of(runs[0]) if runs else None

    async def active_runs(self, tag: str) -> list[RunRef]:
        """Runs carrying `tag` that are scheduled, pending, running or paused."""
        with translating(f"read active flow runs tagged {tag}"):
            runs = await self._client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[tag]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE_STATES)),
                ),
                limit=10,
            )
        return [RunRef.of(run) for run in runs]

    async def lock_in_use(self, name: str) -> bool:
        """Whether the global concurrency limit `name` has a slot taken (False if missing)."""
        with translating(f"read global concurrency limit {name}"):
            try:
                limit = await self._client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                return False
        return limit.active_slots >= max(limit.limit, 1)

    async def create_run(
        self,
        deployment_id: UUID,
        parameters: dict[str, Any],
        key: str,
        name: str,
        tags: list[str],
    ) -> RunRef:
        """Create a run of the deployment; the server returns the existing one for `key`."""
        with translating("create a flow run"):
            run = await self._client.create_flow_run_from_deployment(
                deployment_id, parameters=parameters, idempotency_key=key, name=name, tags=tags
            )
        return RunRef.of(run)

    async def record_event(
        self, event: str, key: str, resource: dict[str, str], payload: dict[str, Any]
    ) -> None:
        """Emit a Prefect event; its id derives from (event, key), so repeats are one event."""
        body = {
            "id": str(uuid.uuid5(_EVENT_NAMESPACE, f"{event}:{key}")),
            "occurred": datetime.now(UTC).isoformat(),
            "event": event,
            "resource": resource,
            "related": [],
            "payload": payload,
        }
        with translating(f"emit Prefect event {event}"):
            response = await self._client._client.post("/events", json=[body])
            response.raise_for_status()
