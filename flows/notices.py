"""Telling people: render a notice with the contacts its facts call for and post it.

A notice never fails or blocks a rollback: a template or contacts error, a webhook that is
down or answers 5xx (retried by `send_notification`) is logged and comes back as the line the
report carries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from playbook.errors import RollbackError
from playbook.incident import StartedBy, manual
from playbook.notices import Cause, load_contacts, mentions, render_notice
from tasks.notify import (
    SECRET_BLOCK_ENV,
    WEBHOOK_URL_ENV,
    Notification,
    configured,
    send_notification,
)
from tasks.prefect_runs import run_link

_started_by: ContextVar[StartedBy | None] = ContextVar("rollback_started_by", default=None)


@contextlib.contextmanager
def started_by(trigger: StartedBy) -> Iterator[None]:
    """Run the block (a rollback procedure called as a subflow) as started by `trigger`."""
    token = _started_by.set(trigger)
    try:
        yield
    finally:
        _started_by.reset(token)


def current_trigger(reason: str | None = None, comment: str = "") -> StartedBy:
    """What started this rollback: the caller's trigger (an alert, through guarded-rollback),
    else a person with `reason` and `comment`."""
    return _started_by.get() or manual(reason, comment)


def run_url() -> str:
    """This flow run in the Prefect UI (its id when no UI URL is known)."""
    return run_link(str(flow_run.get_id()))


class Pending:
    """A notice being sent while the flow goes on."""

    def __init__(self, name: str, future: PrefectFuture[Notification] | None, line: str) -> None:
        self.name, self._future, self._line = name, future, line

    def outcome(self) -> str:
        """Wait for the send to end; the line the report carries."""
        if self._future is None:
            return self._line
        self._future.wait()
        state = self._future.state
        if state.is_completed():
            return f"{self.name} notice sent to {state.result().host}"
        get_run_logger().error("the %s notice was not sent: %s", self.name, state.message)
        return f"{self.name} notice NOT sent: {state.message}"


def tell(
    name: str, values: Mapping[str, Any], cause: Cause, trigger: StartedBy, wait: bool = True
) -> Pending:
    """Render notice `name` and post it (in the background unless `wait`)."""
    logger = get_run_logger()
    if not configured(trigger.notify_secret_block):
        line = (
            f"{name} notice not sent: no notification webhook is configured (set "
            f"{WEBHOOK_URL_ENV}, or name a Secret block with {SECRET_BLOCK_ENV})"
        )
        logger.warning("%s", line)
        return Pending(name, None, line)
    try:
        contacts = load_contacts()
        text = render_notice(
            name,
            {
                **values,
                "lead": contacts.lead_handle,
                "mentions": mentions(contacts, cause),
                "run_url": run_url(),
            },
        )
    except RollbackError as exc:
        logger.error("the %s notice was not sent: %s", name, exc)
        return Pending(name, None, f"{name} notice NOT sent: {exc}")
    future = send_notification.submit(text, trigger.notify_secret_block)
    pending = Pending(name, future, "")
    if wait:
        return Pending(name, None, pending.outcome())
    return pending
