"""What the Prefect server knows of a flow run: its times, its artifacts, its link in the UI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_UI_URL

from playbook.errors import InvalidInputError, NotFoundError

_PAGE = 200


_ROOTS: dict[str, str] = {}
"""Each flow run's root, once read: a run's parents never change."""

_CHILDRENS_ROOT: ContextVar[str | None] = ContextVar("rollback_flows_childrens_root", default=None)
"""Inside `subflows_share_root`: the root of the run whose subflows run in the block."""


@contextlib.contextmanager
def subflows_share_root() -> Iterator[None]:
    """The subflows this flow run starts inside the block (in this thread, or in threads
    that copy its context, as the fleet's do) take their root from it, without reading
    their parents from the API: two reads, right before the undo's patch."""
    token = _CHILDRENS_ROOT.set(root_flow_run_id())
    try:
        yield
    finally:
        _CHILDRENS_ROOT.reset(token)


def root_flow_run_id() -> str | None:
    """The flow run at the top of this one's parents (a top-level run's own id); None outside
    a flow run.

    What `prefect.runtime.flow_run.get_root_flow_run_id` answers, read with the run's own API
    client, once per run: Prefect's opens a new client for each parent it reads, and each
    new client builds a TLS context from certifi's bundle (22 ms of CPU here), on the undo's
    path in every subflow: a guarded rollback's procedure, each service of a fleet.
    """
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    run = ctx.flow_run
    own = str(run.id)
    if own in _ROOTS:
        return _ROOTS[own]
    root, parent_task = own, run.parent_task_run_id
    shared = _CHILDRENS_ROOT.get()
    if parent_task is not None and shared is not None:  # a subflow of a run that said so
        return shared
    with run_client() as client:
        while parent_task is not None:
            parent_run = client.read_task_run(parent_task).flow_run_id
            if parent_run is None:
                break
            root = str(parent_run)
            parent_task = client.read_flow_run(parent_run).parent_task_run_id
    if len(_ROOTS) >= 1000:  # a long-lived process: start over
        _ROOTS.clear()
    _ROOTS[own] = root
    return root


def run_client() -> contextlib.AbstractContextManager[SyncPrefectClient]:
    """The flow run's own API client (its connection is open) or, outside one, a new one."""
    client = getattr(FlowRunContext.get(), "client", None)
    if isinstance(client, SyncPrefectClient):
        return contextlib.nullcontext(client)
    return get_client(sync_client=True)


def run_link(run_id: UUID | str) -> str:
    """The flow run's page in the Prefect UI (its id when no UI URL is known)."""
    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}" if base else f"flow run {run_id}"


@dataclass(frozen=True)
class RunRecord:
    """A flow run as the server stores it."""

    id: str
    name: str
    start: datetime | None
    end: datetime | None
    state: str
    artifacts: tuple[tuple[str, datetime], ...]
    """(key, created) of its keyed artifacts."""
    link: str

    def artifact_created(self, key: str) -> datetime | None:
        """When the run created the artifact `key` (the latest, if several)."""
        times = [at for k, at in self.artifacts if k == key]
        return max(times) if times else None


@task(retries=2, retry_delay_seconds=2, timeout_seconds=60, cache_policy=NO_CACHE)
def read_run(run_id: str) -> RunRecord:
    """Read a flow run and its keyed artifacts from the Prefect server.

    Raises:
        InvalidInputError: `run_id` is not a flow run id.
        NotFoundError: the server has no such flow run.
    """
    try:
        uid = UUID(run_id)
    except ValueError:
        raise InvalidInputError(f"{run_id!r} is not a flow run id") from None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(uid)
        except ObjectNotFound:
            raise NotFoundError(f"the Prefect server has no flow run {run_id}") from None
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[uid]))
        )
    return RunRecord(
        str(run.id),
        run.name,
        run.start_time,
        run.end_time,
        run.state.type.value if run.state else "UNKNOWN",
        tuple((a.key, a.created) for a in artifacts if a.key and a.created),
        run_link(run.id),
    )


@dataclass(frozen=True)
class FlowRunFacts:
    """A flow run of one flow, as the server stores it: when it was created, its parameters."""

    id: str
    created: datetime
    parameters: dict[str, Any]
    state: str


@task(retries=2, retry_delay_seconds=2, timeout_seconds=60, cache_policy=NO_CACHE)
def read_recent_flow_runs(flow_name: str, since: datetime) -> tuple[FlowRunFacts, ...]:
    """Every run of flow `flow_name` the server created since `since` (any state), oldest
    first; runs without a creation time are left out."""
    facts = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime.model_validate(
                        {"after_": since}
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=_PAGE,
                offset=offset,
            )
            facts += [
                FlowRunFacts(
                    str(run.id), run.created, dict(run.parameters or {}), run.state_name or ""
                )
                for run in page
                if run.created is not None and run.created >= since
            ]
            if len(page) < _PAGE:
                break
            offset += _PAGE
    return tuple(sorted(facts, key=lambda f: (f.created, f.id)))
