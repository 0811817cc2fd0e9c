"""Read a flow run's final state, artifacts, logs and subflow runs back from the Prefect API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.states import State


@dataclass(frozen=True)
class FlowRunRecord:
    """A flow run as the API stores it: its final state type and its artifacts by type."""

    state: str
    artifacts: list[Any]

    def of_type(self, type_: str) -> list[Any]:
        return [a for a in self.artifacts if a.type == type_]

    def keyed(self, key: str) -> Any:
        found = [a for a in self.artifacts if a.key == key]
        assert len(found) == 1, (
            f"expected one artifact {key}, got {[a.key for a in self.artifacts]}"
        )
        return found[0]

    def one(self, type_: str) -> Any:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_} artifact, got {len(found)}"
        return found[0]


def flow_run_id(state: State) -> UUID:
    flow_run = state.state_details.flow_run_id
    assert flow_run is not None
    return flow_run


def read_flow_run(state: State) -> FlowRunRecord:
    """The stored flow run of `state` (returned by a flow called with `return_state=True`)."""
    return read_flow_run_id(flow_run_id(state))


def read_flow_run_id(run_id: UUID) -> FlowRunRecord:
    """The stored flow run `run_id` and its artifacts."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert run.state is not None
    return FlowRunRecord(run.state.type.value, list(artifacts))


def logs_of(*run_ids: UUID) -> str:
    """Every log line of the flow runs (and their task runs) as the Prefect server stored them."""
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)))
    return "\n".join(log.message for log in logs)


def flow_finished_logged(run_id: UUID) -> bool:
    """Whether the run's own last line (the flow's "Finished in state ...", not a task's)
    has reached the server."""
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return any(
        log.task_run_id is None and log.message.startswith("Finished in state") for log in logs
    )


def child_run_ids(parent: UUID) -> list[UUID]:
    """The subflow runs of flow run `parent`."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
            )
        )
    return [run.id for run in runs]
