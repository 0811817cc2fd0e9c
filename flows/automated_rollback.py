"""Procedure 1, automated rollback (recommended): the rollback workflow of GitHub Actions.

check the inputs → trigger the workflow (`gh workflow run rollback.yml -f environment=...
-f target_version=...`) → monitor its run (`gh run watch`) → verify that the deployed version
equals the target: the Deployment's image in the cluster and the service's /version →
markdown report.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from flows.rollback_steps import container_version, publish_report
from playbook.actions import dispatch_inputs
from playbook.checks import same_version
from playbook.errors import InvalidInputError, RolloutFailedError, VerificationFailedError
from playbook.images import validate_version
from playbook.rollback_report import RollbackReport
from playbook.services import ServiceConfig, load_service
from tasks.github_actions import (
    dispatch_workflow,
    find_workflow_run,
    follow_workflow_run,
    load_actions_token,
)
from tasks.kubernetes import kubernetes_context, read_deployment_status
from tasks.probes import probe_urls, probe_version

VERSION_SETTLE_SECONDS = 30.0
"""How long /version may take to show the target once the workflow has completed."""


@flow(name="automated-rollback", log_prints=True)
def automated_rollback(
    environment: str,
    target_version: str,
    skip_confirmation: bool = False,
    dry_run: bool = False,
    service: str | None = None,
) -> RollbackReport:
    """Roll a service back to `target_version` through its GitHub Actions rollback workflow.

    The workflow's run is found by a marker in its run-name (this flow run's id), followed to
    its conclusion, and the result verified in the cluster and at the service's /version.
    A second attempt of the same flow run follows the run it already dispatched.

    Args:
        environment: The environment to roll back (production, staging, ...: one of the
            service's environments in the services file).
        target_version: The known-good version, e.g. v1.2.3.
        skip_confirmation: Passed to the workflow: the Prefect rollback it starts goes ahead
            without asking for an approval.
        dry_run: Print the dispatch it would send and change nothing (no call to GitHub).
        service: A service of the services file with an `actions` section (the default
            service when None).

    Raises:
        InvalidInputError: malformed version, unknown environment or service, no workflow
            configured, or GitHub refused the inputs (422) (nothing dispatched).
        AccessDeniedError: no token, or GitHub rejected it (401).
        NotFoundError: no such repository or workflow (404), or its run did not appear.
        RolloutFailedError: the workflow run failed, was cancelled or timed out.
        VerificationFailedError: the run succeeded but the Deployment or /version is not at
            the target.
    """
    logger = get_run_logger()
    # check the inputs, before any call
    version = validate_version(target_version)
    cfg = load_service(service, environment=environment)
    if cfg.actions is None:
        raise InvalidInputError(
            f"service {cfg.name!r} has no `actions` section (repository, workflow, ref) in "
            "the services file"
        )
    actions = cfg.actions
    _, version_url = probe_urls(cfg)  # where the result is verified, known before acting
    run_id = flow_run.get_id()
    marker = f"prefect-{run_id or uuid4().hex}"
    inputs = dispatch_inputs(cfg.environment, version, skip_confirmation, marker)
    with kubernetes_context(cfg.kube_context):
        before = read_deployment_status(cfg.namespace, cfg.deployment)
    report = RollbackReport(
        flow="automated_rollback",
        service=cfg.name,
        namespace=cfg.namespace,
        deployment=cfg.deployment,
        from_version=container_version(before.images, cfg.container),
        to_version=version,
        from_revision=before.revision,
        change=f"workflow_dispatch of {actions.workflow} in {actions.repository} at "
        f"{actions.ref} with inputs {inputs}",
        outcome=f"dry run: would dispatch {actions.workflow} of {actions.repository}",
        changed=False,
        dry_run=dry_run,
    )
    if dry_run:
        print(f"dry run: would dispatch {report.change}")
        return publish_report(report)

    # trigger the workflow (unless an earlier attempt of this flow run did)
    token = load_actions_token(actions.token_secret)
    # the runs list filters by GitHub's clock: a minute's margin
    since = min(datetime.now(UTC), flow_run.get_scheduled_start_time()) - timedelta(minutes=1)
    retried = flow_run.get_run_count() > 1
    run = find_workflow_run(actions, token, marker, since, wait=False) if retried else None
    if run is None:
        dispatch_workflow(actions, token, inputs)
        run = find_workflow_run(actions, token, marker, since)
    else:
        logger.info("an earlier attempt of this flow run dispatched %s", run.describe())
    assert run is not None

    # monitor the run
    run = follow_workflow_run(actions, token, run)
    details = (f"GitHub Actions: {run.describe()}",)
    if not run.succeeded:
        failed = RolloutFailedError(
            f"the rollback workflow ended {run.conclusion}: {run.html_url}; nothing verified"
        )
        publish_report(replace(report, outcome=f"FAILED: {failed}", details=details))
        raise failed

    # verify that the deployed version matches the target
    try:
        image_version, served = verify_deployed_version(cfg, version, version_url)
    except VerificationFailedError as exc:
        publish_report(replace(report, outcome=f"FAILED: {exc}", changed=True, details=details))
        raise
    outcome = (
        f"rolled back to {version} by {run.html_url}: the Deployment runs {image_version}, "
        f"/version answers {served}"
    )
    return publish_report(replace(report, outcome=outcome, changed=True, details=details))


def verify_deployed_version(cfg: ServiceConfig, version: str, version_url: str) -> tuple[str, str]:
    """The Deployment's image tag and the service's /version, both equal to `version`.

    Raises:
        VerificationFailedError: either differs (/version is given `VERSION_SETTLE_SECONDS`).
    """
    with kubernetes_context(cfg.kube_context):
        status = read_deployment_status(cfg.namespace, cfg.deployment)
    image_version = container_version(status.images, cfg.container) or "no tag"
    if not same_version(image_version, version):
        raise VerificationFailedError(
            f"the workflow succeeded but Deployment {cfg.namespace}/{cfg.deployment} runs "
            f"{status.image_of(cfg.container)}, not {version}"
        )
    deadline = time.monotonic() + VERSION_SETTLE_SECONDS
    while True:
        probe = probe_version(version_url)
        served = probe.version or f"HTTP {probe.status_code} without a version"
        if probe.version is not None and same_version(probe.version, version):
            return image_version, served
        if time.monotonic() >= deadline:
            raise VerificationFailedError(
                f"the workflow succeeded and the Deployment runs {version}, but {version_url} "
                f"answers {served}"
            )
        time.sleep(2)
