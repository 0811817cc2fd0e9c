"""What the flows read of their own runs from the session's Prefect server."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest
from prefect import flow
from prefect.runtime import flow_run

from stack.local import StackState
from tasks.prefect_runs import root_flow_run_id, subflows_share_root

pytestmark = pytest.mark.stack


@flow
def _innermost() -> tuple[str | None, str]:
    return root_flow_run_id(), flow_run.get_root_flow_run_id()


@flow
def _middle() -> tuple[str | None, str]:
    return _innermost()


@flow
def _outer() -> tuple[str, list[tuple[str | None, str]]]:
    """Its own id, and what the subflows two levels down answer, one of them in each of
    three threads as the fleet rollback runs its services."""
    direct = _middle()
    with ThreadPoolExecutor(3) as pool:
        threaded = [pool.submit(contextvars.copy_context().run, _middle).result() for _ in range(3)]
    return str(flow_run.get_id()), [direct, *threaded]


@flow
def _outer_sharing() -> tuple[str, list[tuple[str | None, str]]]:
    """As `_outer`, its subflows started inside `subflows_share_root`, as the guarded and
    the fleet rollbacks start their procedures."""
    with subflows_share_root():
        direct = _middle()
        with ThreadPoolExecutor(2) as pool:
            threaded = [
                pool.submit(contextvars.copy_context().run, _middle).result() for _ in range(2)
            ]
    after = _middle()  # outside the block: read from the API again
    return str(flow_run.get_id()), [direct, *threaded, after]


@flow
def _top() -> tuple[str | None, str]:
    return root_flow_run_id(), str(flow_run.get_id())


def test_a_subflow_names_the_root_run_as_prefect_does(local_stack: StackState) -> None:
    outer_id, answers = _outer()
    assert len(answers) == 4
    for ours, prefects in answers:
        assert ours == prefects == outer_id


def test_subflows_told_their_root_name_the_one_prefect_does(local_stack: StackState) -> None:
    outer_id, answers = _outer_sharing()
    assert len(answers) == 4
    for ours, prefects in answers:
        assert ours == prefects == outer_id


def test_a_top_level_run_is_its_own_root_and_outside_a_run_there_is_none(
    local_stack: StackState,
) -> None:
    ours, own = _top()
    assert ours == own
    assert root_flow_run_id() is None
