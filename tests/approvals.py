"""Flows paused for their approval: run one in the background, find it paused, answer it,
all through the Prefect API."""

from __future__ import annotations

import contextvars
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from uuid import UUID

from flow_runs import read_flow_run
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import State

from playbook.services import SERVICES_ENV


class Background:
    """A flow called in a thread (with this thread's Prefect settings); its final state."""

    def __init__(self, call: Callable[[], State]) -> None:
        self.state: State | None = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()

        def run() -> None:
            try:
                self.state = context.run(call)
            except BaseException as exc:  # reported to the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 120) -> State:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the flow did not end"
        assert self.error is None, self.error
        assert self.state is not None
        return self.state


def paused_run(flow_name: str, since: datetime, timeout: float = 60) -> UUID:
    """The run of `flow_name` created since `since` once it is paused for its approval."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as prefect:
        while time.monotonic() < deadline:
            runs = prefect.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
            )
            mine = [r for r in runs if r.created is not None and r.created >= since]
            if mine:
                return mine[0].id
            time.sleep(0.3)
    raise AssertionError(f"no {flow_name} run paused within {timeout}s")


def answer(run_id: UUID, approve: bool, comment: str) -> None:
    with get_client(sync_client=True) as prefect:
        result = prefect.resume_flow_run(run_id, run_input={"approve": approve, "comment": comment})
    assert result.status.value == "ACCEPT", result


def approval_artifact(run_id: UUID) -> str:
    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(run_id)
    assert run.state is not None
    record = read_flow_run(run.state)
    [plan] = [a for a in record.of_type("markdown") if a.key == "approval-rag-api"]
    return str(plan.data)


def asking(namespace: str, timeout_minutes: float = 5) -> None:
    """The test's services file: its one namespace is `production`, which asks."""
    path = Path(os.environ[SERVICES_ENV])
    path.write_text(
        re.sub(
            r"\n    namespace: (\S+)\n",
            "\n    environments:\n      production:\n        namespace: \\1\n"
            "        skip_confirmation: false\n"
            f"        approval_timeout_minutes: {timeout_minutes}\n",
            path.read_text(),
            count=1,
        )
    )
