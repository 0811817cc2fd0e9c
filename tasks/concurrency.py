"""Prefect-side guards of automatic rollbacks: the per-service lock and the hourly-cap ledger.

The lock is a Prefect global concurrency limit with one slot per service (`rollback-lock__
<namespace>__<service>`), taken with `strict=True` and without waiting: a second rollback of
the same service is refused (`RollbackRefusedError`) instead of queueing behind the first.
The slot is leased and renewed while held, so a crashed worker frees it when the lease ends.

The hourly cap counts automatic rollbacks in a Prefect Variable per service (`rollback-cap__
<namespace>__<service>`): a JSON list of the rollbacks started in the last hour. It is read
and written only while the service's lock is held, so the count cannot race; an operator
sees it (and may reset it) in the Prefect UI. Flow-run history was the alternative: it would
need every refused, capped and dry run told apart by state names, and it ages out with the
server's retention; the ledger records exactly the rollbacks that acted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    VariableCreate,
    VariableUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.variables import Variable

from playbook.errors import RollbackRefusedError
from playbook.guard import LedgerEntry, parse_ledger, record
from tasks.boundary import retry_condition_fn, translating

LEASE_SECONDS = 60.0
"""Lease of a held lock; renewed while the holder runs, expires if it dies."""
ACQUIRE_TIMEOUT_SECONDS = 15.0
"""How long one attempt to take the lock may take (an API call, never a wait in line)."""


@dataclass(frozen=True)
class ServiceLock:
    """A service's rollback lock as the Prefect server holds it."""

    name: str
    limit: int
    active_slots: int
    created: bool


@task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=30,
    cache_policy=NO_CACHE,
)
def ensure_service_lock(name: str) -> ServiceLock:
    """Create the one-slot concurrency limit `name` unless it exists ("already so" is success).

    Reads first: creating a limit that exists makes the Prefect server fail the request
    (a unique-constraint error) and its SQLite session answer 503 to the next ones.
    """
    with translating(f"ensure global concurrency limit {name}"), get_client(sync_client=True) as c:
        created = False
        try:
            limit = c.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                c.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                created = True
            except ObjectAlreadyExists:
                pass
            except httpx.HTTPStatusError as exc:  # 409 on a race with another creator
                if exc.response.status_code != 409:
                    raise
            limit = c.read_global_concurrency_limit_by_name(name)
    return ServiceLock(name, limit.limit, limit.active_slots, created)


# The service locks this flow run (and the subflows it runs inline) holds right now.
_HELD: ContextVar[frozenset[str]] = ContextVar("rollback_flows_held_locks", default=frozenset())


@contextlib.contextmanager
def hold_service_lock(name: str, what: str, create: bool = False) -> Iterator[None]:
    """Hold the service's lock for the block, or refuse at once if someone else holds it.

    With `create`, a lock that does not exist yet is created (`ensure_service_lock`) and
    taken; the first try goes straight to taking it, so a lock that exists costs one call.

    Raises:
        RollbackRefusedError: the lock is held (another rollback of the service runs).
        PermanentError: the limit does not exist (strict, without `create`), or the API
            refused.
    """
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    if name in _HELD.get():
        yield  # a rollback flow run inside a guarded one: the lock is already ours
        return
    with contextlib.ExitStack() as stack:
        for first in (True, False):
            try:
                stack.enter_context(
                    concurrency(
                        name,
                        occupy=1,
                        strict=True,
                        max_retries=0,
                        timeout_seconds=ACQUIRE_TIMEOUT_SECONDS,
                        lease_duration=LEASE_SECONDS,
                    )
                )
                break
            except ConcurrencySlotAcquisitionError as exc:
                cause = exc.__cause__
                if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423:
                    raise RollbackRefusedError(
                        f"{what} refused: another rollback of this service is in progress "
                        f"(it holds the concurrency limit {name!r}); nothing was changed. "
                        "Wait for that run to finish, or cancel it, and start again."
                    ) from None
                if create and first and cause is None:  # no such limit (strict): create it
                    ensure_service_lock(name)
                    continue
                with translating(f"take the concurrency limit {name}"):
                    raise
        token = _HELD.set(_HELD.get() | {name})
        try:
            yield
        finally:
            _HELD.reset(token)


@task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=30,
    cache_policy=NO_CACHE,
)
def read_rollback_ledger(name: str) -> tuple[LedgerEntry, ...]:
    """The recent automatic rollbacks recorded in the Variable `name` (empty if none)."""
    with translating(f"read Prefect Variable {name}"), _api() as client:
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
    update of the Variable, created when it does not exist yet."""
    value = record(entries, entry)
    with translating(f"write Prefect Variable {name}"), _api() as client:
        try:
            client.update_variable(VariableUpdate(name=name, value=value))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            client.create_variable(VariableCreate(name=name, value=value))
    return parse_ledger(value)


def _api() -> contextlib.AbstractContextManager[SyncPrefectClient]:
    """The flow run's own API client (its connection is open) or, outside one, a new one."""
    client = getattr(FlowRunContext.get(), "client", None)
    if isinstance(client, SyncPrefectClient):
        return contextlib.nullcontext(client)
    return get_client(sync_client=True)


def forget_rollbacks(name: str) -> None:
    """Delete a service's ledger (an operator's reset of the hourly cap)."""
    with translating(f"delete Prefect Variable {name}"), contextlib.suppress(ObjectNotFound):
        Variable.unset(name)
