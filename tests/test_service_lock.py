"""The per-service rollback lock on the session's real Prefect server: taken in the flow run's
name, refused to a second holder, renewed while held, given back at the end; and the hourly
cap's ledger written beside it."""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.concurrency.context import ConcurrencyContext
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from playbook.errors import NotFoundError, RollbackRefusedError
from playbook.guard import LedgerEntry
from stack.local import StackState
from tasks import concurrency as concurrency_module
from tasks.concurrency import (
    create_service_lock,
    forget_rollbacks,
    hold_service_lock,
    read_rollback_ledger,
    record_automatic_rollback,
)
from tests.flow_runs import flow_run_id, logs_of

pytestmark = pytest.mark.stack


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def fresh_name() -> str:
    return f"rollback-lock__test__{uuid.uuid4().hex[:12]}"


@flow
def _hold_and_try_again(name: str) -> tuple[int, str, str]:
    """Holds the lock; meanwhile another holder (Prefect's own `concurrency`, as another
    worker's run would take it) and a second rollback elsewhere both try to take it."""
    with hold_service_lock(name, "rollback of test/svc", create=True):
        held = active_slots(name)
        with (
            pytest.raises(Exception) as prefects,
            concurrency(name, occupy=1, strict=True, max_retries=0),
        ):
            pass
        with ThreadPoolExecutor(1) as elsewhere:
            ours = elsewhere.submit(contextvars.copy_context().run, _second_rollback, name)
        return held, str(prefects.value.__cause__), ours.result()


def _second_rollback(name: str) -> str:
    """A rollback of the same service in another process: the server's lock, not this
    process's memory of what it holds, refuses it."""
    concurrency_module._HELD.set(frozenset())
    with (
        pytest.raises(RollbackRefusedError) as refused,
        hold_service_lock(name, "rollback of test/svc"),
    ):
        pass
    return str(refused.value)


def test_the_lock_is_created_held_once_and_given_back(local_stack: StackState) -> None:
    name = fresh_name()
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_global_concurrency_limit_by_name(name)
    held, prefects, ours = _hold_and_try_again(name)
    assert held == 1
    assert "423" in prefects  # the server said Locked to the other holder
    assert "another rollback of this service is in progress" in ours
    assert name in ours and "nothing was changed" in ours
    assert active_slots(name) == 0  # given back at the end of the block


def test_a_lock_that_does_not_exist_is_not_created_without_create(
    local_stack: StackState,
) -> None:
    name = fresh_name()
    with (
        pytest.raises(NotFoundError, match="does not exist; nothing was changed"),
        hold_service_lock(name, "rollback of test/svc"),
    ):
        pytest.fail("the block ran without the lock")
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_global_concurrency_limit_by_name(name)


@flow
def _hold_while_the_lease_ends(name: str) -> None:
    """Holds the lock with a renewal every 0.3 s; the server ends its lease meanwhile (as
    when it could not be reached for longer than the lease)."""
    with hold_service_lock(name, "rollback of test/svc", renew_every=0.3):
        ctx = ConcurrencyContext.get()
        assert ctx is not None
        [lease] = ctx.cleanup_lease_ids  # recorded for the run's end, should the block die
        time.sleep(0.5)  # renewed at least once while the lease stands
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease)
        time.sleep(1.0)  # the next renewal finds it gone
    assert ConcurrencyContext.get().cleanup_lease_ids == []  # type: ignore[union-attr]


def test_a_lease_that_ended_while_held_is_reported_and_the_run_goes_on(
    local_stack: StackState,
) -> None:
    name = fresh_name()
    create_service_lock(name)
    state = _hold_while_the_lease_ends(name, return_state=True)
    assert state.is_completed()
    assert active_slots(name) == 0
    deadline = time.monotonic() + 10
    while "was lost" not in (logs := logs_of(flow_run_id(state))):
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    assert f"The lock {name} was lost: its lease ended" in logs
    assert "Another rollback of this service can start while this one runs." in logs
    assert "Could not renew" not in logs  # the renewals before it succeeded


def test_the_ledger_is_written_whether_or_not_its_variable_exists(
    local_stack: StackState,
) -> None:
    """The hour's first rollback creates the Variable; an empty ledger whose Variable exists
    (its entries aged out) is updated; a ledger an operator deleted meanwhile is created."""
    name = f"rollback-cap__test__{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    first, second, third = (
        LedgerEntry(now + timedelta(seconds=s), f"run-{s}", f"reason {s}") for s in (0, 1, 2)
    )
    try:
        assert record_automatic_rollback.fn(name, (), first) == (first,)
        assert read_rollback_ledger.fn(name) == (first,)
        # read as empty (say, every entry older than the hour): create meets 409, then update
        assert record_automatic_rollback.fn(name, (), second) == (second,)
        assert read_rollback_ledger.fn(name) == (second,)
        forget_rollbacks(name)  # an operator resets the cap between the read and the write
        assert record_automatic_rollback.fn(name, (second,), third) == (second, third)
        assert read_rollback_ledger.fn(name) == (second, third)
    finally:
        forget_rollbacks(name)


def test_two_first_rollbacks_of_a_new_service_at_once_one_holds_the_other_is_refused(
    local_stack: StackState,
) -> None:
    """Both find no lock, both create it (one of them meets 409), both take it: one holds it,
    the other is refused; neither fails otherwise."""
    name = fresh_name()
    start, holding, release = threading.Barrier(2), threading.Event(), threading.Event()

    def rollback() -> str:
        start.wait()
        try:
            with hold_service_lock(name, "rollback of test/svc", create=True):
                holding.set()
                release.wait(30)
                return "held"
        except RollbackRefusedError as exc:
            return str(exc)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(contextvars.copy_context().run, rollback) for _ in range(2)]
        done, _ = wait(futures, timeout=30, return_when=FIRST_COMPLETED)
        [refused] = done  # while the other holds the lock, waiting to be released
        assert holding.wait(30) and active_slots(name) == 1
        release.set()
        [holder] = [f for f in futures if f is not refused]
    assert holder.result() == "held"
    assert "another rollback of this service is in progress" in refused.result()
    assert active_slots(name) == 0
