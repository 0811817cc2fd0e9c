"""The approval gate: a person approves the exact plan before a rollback changes anything.

plan (the procedure's own dry run: the patch validated by the API server, from which version
and revision to which) → the pods it affects → a markdown artifact → pause the run with a
typed form (approve yes/no, comment) → approved: go on, the answer in the report; rejected,
or no answer within the environment's `approval_timeout_minutes`: the run ends with nothing
changed and a message that says which.

Whether a run asks is `skip_confirmation`, by default its environment's (production asks);
automatic rollbacks (guarded_rollback) never ask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import NoReturn

from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from flows.rollback_steps import publish_report
from playbook.errors import NotFoundError, RollbackRefusedError
from playbook.rollback_report import RollbackReport
from playbook.services import ServiceConfig
from tasks.kubernetes import list_pods, read_deployment_status

POLL_SECONDS = 2


class Approval(RunInput):
    """The approver's answer."""

    approve: bool = Field(default=False, description="Roll back as planned?")
    comment: str = Field(default="", max_length=1000, description="Why (goes into the report)")


def asks_approval(cfg: ServiceConfig, skip_confirmation: bool | None, dry_run: bool) -> bool:
    """Whether this run waits for a person: never for a dry run, else unless
    `skip_confirmation` (by default the environment's) says to go ahead."""
    skip = cfg.env.skip_confirmation if skip_confirmation is None else skip_confirmation
    return not dry_run and not skip


def approve_the_plan(
    cfg: ServiceConfig,
    skip_confirmation: bool | None,
    dry_run: bool,
    plan: Callable[[], RollbackReport],
) -> tuple[str, ...]:
    """Ask a person to approve `plan()` (the procedure's dry run) before anything changes.

    Returns the lines the run's report carries (empty when it did not ask).

    Raises:
        RollbackRefusedError: rejected, or not answered in time; nothing was changed.
    """
    if not asks_approval(cfg, skip_confirmation, dry_run):
        return ()
    planned = plan()
    if planned.change is None:
        get_run_logger().info("nothing to change, so nothing to approve: %s", planned.outcome)
        return ()
    timeout = cfg.env.approval_timeout_minutes
    text = plan_markdown(planned, affected_pods(planned), cfg.environment, timeout)
    try:
        what = planned.outcome.removeprefix("dry run: ")
        return (ask_a_person(approval_key(cfg.name), timeout, text, what),)
    except RollbackRefusedError as exc:
        stop(planned, str(exc))


def approval_key(subject: str) -> str:
    """The key of the approval artifact of a service (or of a fleet)."""
    return f"approval-{subject}".lower()


def ask_a_person(key: str, timeout: float, plan: str, what: str) -> str:
    """Publish `plan` (markdown) as the approval artifact `key` and pause the run with the
    typed form until a person answers or `timeout` minutes pass.

    Returns the report's line saying it was approved (with the approver's comment).

    Raises:
        RollbackRefusedError: rejected, or not answered in time (the message says which).
    """
    logger = get_run_logger()
    create_markdown_artifact(plan, key=key, description="Waiting for approval")
    logger.warning(
        "waiting up to %g min for an approval of: %s (resume this run in the Prefect UI)",
        timeout,
        what,
    )
    try:
        answer = pause_flow_run(
            wait_for_input=Approval.with_initial_data(description=plan),
            timeout=max(1, round(timeout * 60)),
            poll_interval=POLL_SECONDS,
        )
    except FlowPauseTimeout:
        raise RollbackRefusedError(
            f"not approved: no answer within {timeout:g} min (timed out); nothing changed"
        ) from None
    comment = answer.comment.strip()
    said = f" ({comment})" if comment else ""
    if not answer.approve:
        raise RollbackRefusedError(
            f"not approved: the approver rejected the plan{said}; nothing changed"
        )
    logger.info("approved%s", said)
    return f"Approved by a person{said}"


def stop(planned: RollbackReport, message: str) -> NoReturn:
    """End the run with nothing changed: its report says why, and it fails with that message."""
    publish_report(replace(planned, outcome=message, dry_run=False, changed=False))
    raise RollbackRefusedError(message)


def affected_pods(planned: RollbackReport) -> tuple[str, ...]:
    """The pods the plan replaces or removes: those of the Deployment it changes."""
    try:
        status = read_deployment_status(planned.namespace, planned.deployment)
    except NotFoundError:
        return ()
    return tuple(
        f"{pod.name} ({'ready' if pod.ready else pod.phase})"
        for pod in list_pods(planned.namespace, status.label_selector)
    )


def plan_markdown(
    planned: RollbackReport, pods: tuple[str, ...], environment: str, timeout_minutes: float
) -> str:
    """The plan a person approves: what changes, from what to what, the patch, the pods."""
    rev = f" (revision {planned.from_revision})" if planned.from_revision is not None else ""
    to_rev = f" (revision {planned.to_revision})" if planned.to_revision is not None else ""
    lines = [
        f"# Approve {planned.flow} of {planned.service} in {environment}?",
        "",
        f"**Plan:** {planned.outcome.removeprefix('dry run: ')}",
        "",
        "| | |",
        "|---|---|",
        f"| Deployment | `{planned.namespace}/{planned.deployment}` |",
        f"| from | `{planned.from_version or '?'}`{rev} |",
        f"| to | `{planned.to_version or '?'}`{to_rev} |",
        f"| pods affected | {len(pods)} |",
        "",
        "## The exact change (validated by the API server)",
        "",
        "```",
        planned.change or "",
        "```",
        "",
        "## Pods affected",
        "",
        *(f"- `{pod}`" for pod in pods),
        *([] if pods else ["- none"]),
        *([""] + [f"- {d}" for d in planned.details] if planned.details else []),
        "",
        f"Resume this run with approve yes or no within {timeout_minutes:g} min; "
        "no answer ends it with nothing changed.",
    ]
    return "\n".join(lines)
