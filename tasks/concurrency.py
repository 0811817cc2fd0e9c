"""Prefect-side guards of automatic rollbacks: the per-service lock and the hourly-cap ledger.

The lock is a Prefect global concurrency limit with one slot per service (`rollback-lock__
<namespace>__<service>`), taken without waiting: a second rollback of the same service is
refused (`RollbackRefusedError`) instead of queueing behind the first. The slot is leased, in
the flow run's name, and renewed while held, so a crashed worker frees it when the lease ends.

The hourly cap counts automatic rollbacks in a Prefect Variable per service (`rollback-cap__
<namespace>__<service>`): a JSON list of the rollbacks started in the last hour. It is read
and written only while the service's lock is held, so the count cannot race; an operator
sees it (and may reset it) in the Prefect UI. Flow-run history was the alternative: it would
need every refused, capped and dry run told apart by state names, and it ages out with the
server's retention; the ledger records exactly the rollbacks that acted.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from uuid import UUID

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    VariableCreate,
    VariableUpdate,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.concurrency._events import (
    emit_concurrency_acquisition_events,
    emit_concurrency_release_events,
)
from prefect.concurrency.context import ConcurrencyContext
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound
from prefect.variables import Variable

from playbook.errors import NotFoundError, RollbackRefusedError
from playbook.guard import LedgerEntry, parse_ledger, record
from tasks.boundary import retry_condition_fn, translating
from tasks.prefect_runs import run_client

LEASE_SECONDS = 60.0
"""Lease of a held lock; renewed while the holder runs, expires if it dies."""


# The service locks this flow run (and the subflows it runs inline) holds right now.
_HELD: ContextVar[frozenset[str]] = ContextVar("rollback_flows_held_locks", default=frozenset())


@contextlib.contextmanager
def hold_service_lock(
    name: str, what: str, create: bool = False, renew_every: float = LEASE_SECONDS * 0.75
) -> Iterator[None]:
    """Hold the service's lock for the block, or refuse at once if someone else holds it.

    With `create`, a lock that does not exist yet is created and taken; the first try goes
    straight to taking it, so a lock that exists costs one call, and a new one three.
    The slot is leased (`LEASE_SECONDS`) and the lease renewed every `renew_every` seconds
    while the block runs, so a worker that dies frees the lock when its lease ends.

    It takes, renews and releases the slot itself, with the flow run's own API client, as
    `prefect.concurrency.sync.concurrency(strict=True)` would: Prefect's opens three new
    clients to do it (each builds a TLS context: 22 ms of CPU here), on the undo's path.

    Raises:
        RollbackRefusedError: the lock is held (another rollback of the service runs).
        NotFoundError: the limit does not exist (without `create`).
        PermanentError, TransientError: the API refused or could not be reached.
    """
    if name in _HELD.get():
        yield  # a rollback flow run inside a guarded one: the lock is already ours
        return
    with run_client() as client:
        lease = _take_lock(client, name, what, create)
        cleanup = getattr(ConcurrencyContext.get(), "cleanup_lease_ids", None)
        if cleanup is not None:  # the run's end releases it if this block cannot
            cleanup.append(lease.lease_id)
        events = emit_concurrency_acquisition_events(lease.limits, 1)
        renewal = _LeaseRenewal(name, lease.lease_id, renew_every)
        token = _HELD.set(_HELD.get() | {name})
        try:
            yield
        finally:
            _HELD.reset(token)
            renewal.stop()
            if _release_lock(client, name, lease.lease_id) and cleanup is not None:
                cleanup.remove(lease.lease_id)  # else the run's end tries again
            emit_concurrency_release_events(lease.limits, 1, events)


def _take_lock(
    client: SyncPrefectClient, name: str, what: str, create: bool
) -> ConcurrencyLimitWithLeaseResponse:
    """One slot of the limit `name` with a lease, or a refusal if its slot is taken."""
    run = getattr(FlowRunContext.get(), "flow_run", None)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run.id) if run is not None else None
    for first in (True, False):
        with translating(f"take the concurrency limit {name}"):
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[name],
                    slots=1,
                    mode="concurrency",
                    lease_duration=LEASE_SECONDS,
                    holder=holder,
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 423:
                    raise RollbackRefusedError(
                        f"{what} refused: another rollback of this service is in progress "
                        f"(it holds the concurrency limit {name!r}); nothing was changed. "
                        "Wait for that run to finish, or cancel it, and start again."
                    ) from None
                raise
        lease = ConcurrencyLimitWithLeaseResponse.model_validate(response.json())
        if lease.limits:
            return lease
        if not (create and first):
            break
        create_service_lock(name)  # no such limit: create it, then take it
    raise NotFoundError(
        f"take the concurrency limit {name} failed: it does not exist; nothing was changed"
    )


def create_service_lock(name: str) -> None:
    """Create the one-slot limit `name` with the run's own client; one that exists already
    (another rollback of the service created it meanwhile) is success. One call: a read first
    would add one to every first rollback of a service."""
    with (
        translating(f"create the concurrency limit {name}"),
        run_client() as api,
        contextlib.suppress(ObjectAlreadyExists),
    ):
        api.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _release_lock(client: SyncPrefectClient, name: str, lease_id: UUID) -> bool:
    """Give the slot back (True); if the server cannot be told, its lease ends it (False)."""
    try:
        client.release_concurrency_slots_with_lease(lease_id)
        return True
    except (httpx.HTTPError, OSError) as exc:
        _logger().warning(
            "Could not release the lock %s (%s); it frees itself when its lease ends, "
            "within %.0f s.",
            name,
            exc,
            LEASE_SECONDS,
        )
        return False


class _LeaseRenewal:
    """Renews a held lock's lease every `every` seconds until stopped, in a thread with its
    own client, opened at the first renewal (a rollback on a fast cluster ends before it)."""

    def __init__(self, name: str, lease_id: UUID, every: float) -> None:
        self._name, self._lease_id, self._every = name, lease_id, every
        self._stop = threading.Event()
        run_context = contextvars.copy_context()  # the run's logger
        self._thread = threading.Thread(
            target=run_context.run, args=(self._renew,), name=f"lease {name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        if self._stop.wait(self._every):
            return
        with get_client(sync_client=True) as client:
            while True:
                try:
                    client.renew_concurrency_lease(self._lease_id, lease_duration=LEASE_SECONDS)
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code in (404, 410):
                        _logger().error(
                            "The lock %s was lost: its lease ended (the Prefect server could "
                            "not be reached to renew it in time). Another rollback of this "
                            "service can start while this one runs.",
                            self._name,
                        )
                        return
                    self._warn(exc)
                except (httpx.HTTPError, OSError) as exc:
                    self._warn(exc)
                if self._stop.wait(self._every):
                    return

    def _warn(self, exc: Exception) -> None:
        _logger().warning(
            "Could not renew the lease of the lock %s (%s); trying again in %.0f s.",
            self._name,
            exc,
            self._every,
        )


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("rollback_flows.lock")


@task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=30,
    cache_policy=NO_CACHE,
)
def read_rollback_ledger(name: str) -> tuple[LedgerEntry, ...]:
    """The recent automatic rollbacks recorded in the Variable `name` (empty if none)."""
    with translating(f"read Prefect Variable {name}"), run_client() as client:
        variable = client.read_variable_by_name(name)
    value: Any = variable.value if variable is not None else None
    return parse_ledger(value, source=f"Prefect Variable {name}")


@task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=30,
    cache_policy=NO_CACHE,
)
def record_automatic_rollback(
    name: str, entries: tuple[LedgerEntry, ...], entry: LedgerEntry
) -> tuple[LedgerEntry, ...]:
    """Append `entry` to the ledger (dropping entries older than an hour) and store it: one
    call. An empty ledger (the hour's first rollback) is most often a Variable that does not
    exist yet, so it is created first, and updated if it exists after all; else updated, and
    created if an operator deleted it meanwhile."""
    value = record(entries, entry)
    with translating(f"write Prefect Variable {name}"), run_client() as client:
        if entries:  # the Variable exists, unless an operator deleted it meanwhile
            try:
                client.update_variable(VariableUpdate(name=name, value=value))
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                client.create_variable(VariableCreate(name=name, value=value))
        else:  # most often no Variable yet; or one whose entries all aged out
            try:
                client.create_variable(VariableCreate(name=name, value=value))
            except ObjectAlreadyExists:
                client.update_variable(VariableUpdate(name=name, value=value))
    return parse_ledger(value)


def forget_rollbacks(name: str) -> None:
    """Delete a service's ledger (an operator's reset of the hourly cap)."""
    with translating(f"delete Prefect Variable {name}"), contextlib.suppress(ObjectNotFound):
        Variable.unset(name)
