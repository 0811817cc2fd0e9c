"""Schedule the post-rollback monitor as a follow-up run of its deployment.

One follow-up per rollback: the idempotency key is derived from the rollback's id, so
scheduling it again (a retried task, a re-run rollback flow) returns the same flow run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from pydantic import TypeAdapter

from playbook.errors import InvalidInputError
from tasks.boundary import retry_condition_fn

MONITOR_FLOW = "post-rollback-monitor"


@dataclass(frozen=True)
class FollowUp:
    """The scheduled monitor run."""

    flow_run_id: UUID
    flow_run_name: str
    deployment: str
    scheduled_time: datetime
    idempotency_key: str


def _iso(value: timedelta) -> str:
    """An ISO 8601 duration (`PT30M`), the form the deployment's parameter schema accepts."""
    return str(TypeAdapter(timedelta).dump_python(value, mode="json"))


@task(
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=60,
    cache_policy=NO_CACHE,
)
def schedule_post_rollback_monitor(
    service: str,
    since: datetime,
    rollback_id: str,
    namespace: str | None = None,
    environment: str | None = None,
    duration: timedelta = timedelta(minutes=30),
    interval: timedelta = timedelta(minutes=1),
    incident_start: datetime | None = None,
    start_at: datetime | None = None,
    deployment: str = "default",
    about: dict[str, str | int | None] | None = None,
) -> FollowUp:
    """Schedule `post-rollback-monitor/<deployment>` for the service, starting at `start_at`
    (now by default), watching from `since` (when the rollback finished) for `duration`.

    Args:
        service: The service of the services file.
        since: When the rollback completed (timezone-aware).
        rollback_id: Identifies the rollback, e.g. its flow run id; one follow-up per id.
        namespace: The namespace of the service's environment.
        environment: The service's environment in the services file.
        duration: How long to watch.
        interval: How often to evaluate.
        incident_start: When the incident began, for the baseline; estimated when None.
        start_at: When the monitor run starts; now when None.
        deployment: The monitor's deployment name in prefect.yaml.
        about: What the notices and the review say of the rollback, as the monitor's
            parameters (`rollback_run_id`, `from_version`, `to_version`, `bad_revision`,
            `reason`, `indicator`, `notify_secret_block`); None values are left out.
    """
    if since.tzinfo is None or (incident_start is not None and incident_start.tzinfo is None):
        raise InvalidInputError("since and incident_start must be timezone-aware datetimes")
    if not rollback_id.strip():
        raise InvalidInputError("rollback_id must not be empty")
    key = f"{MONITOR_FLOW}:{rollback_id}"
    when = start_at or datetime.now(UTC)
    parameters: dict[str, object] = {
        "service": service,
        "since": since.isoformat(),
        "duration": _iso(duration),
        "interval": _iso(interval),
    }
    if namespace is not None:
        parameters["namespace"] = namespace
    if environment is not None:
        parameters["environment"] = environment
    if incident_start is not None:
        parameters["incident_start"] = incident_start.isoformat()
    parameters.update({k: v for k, v in (about or {}).items() if v is not None})
    run = cast(
        FlowRun,
        run_deployment(
            name=f"{MONITOR_FLOW}/{deployment}",
            parameters=parameters,
            scheduled_time=when,
            timeout=0,
            idempotency_key=key,
            as_subflow=False,
            tags=["post-rollback", f"rollback:{rollback_id}"[:100]],
        ),
    )
    return FollowUp(
        flow_run_id=run.id,
        flow_run_name=run.name,
        deployment=f"{MONITOR_FLOW}/{deployment}",
        scheduled_time=run.expected_start_time or when,
        idempotency_key=key,
    )
