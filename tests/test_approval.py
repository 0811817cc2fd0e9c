"""The approval gate on the real local stack: a production rollback publishes its plan, pauses,
and is resumed through the Prefect API: approved, it changes the cluster and the report says
so; rejected or not answered in time, nothing changes and the message says which."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from approvals import Background, answer, approval_artifact, asking, paused_run
from cluster import (
    REPOSITORY,
    build_history,
    deployment_body,
    snapshot,
    use_services,
    wait_rolled_out,
)
from flow_runs import read_flow_run
from kubernetes import client

from flows.approval import asks_approval, plan_markdown
from flows.canary_rollback import canary_rollback
from flows.guarded_rollback import guarded_rollback
from flows.image_rollback import image_rollback
from flows.kubernetes_rollback import kubernetes_rollback
from playbook.rollback_report import RollbackReport
from playbook.services import parse_services

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"


# --- pure ------------------------------------------------------------------------------------

SERVICES = parse_services(
    """
default_service: rag-api
services:
  rag-api:
    environments:
      production: {namespace: production, skip_confirmation: false}
      staging: {namespace: staging}
    deployment: rag-api
    container: rag-api
    image_repository: ghcr.io/acme/rag-api
"""
)


def test_production_asks_unless_told_not_to_and_a_dry_run_never_asks() -> None:
    production = SERVICES.get("rag-api").in_environment("production")
    staging = SERVICES.get("rag-api").in_environment("staging")
    assert asks_approval(production, None, dry_run=False)
    assert not asks_approval(production, True, dry_run=False)
    assert not asks_approval(production, None, dry_run=True)
    assert not asks_approval(staging, None, dry_run=False)
    assert asks_approval(staging, False, dry_run=False)


def test_the_plan_names_versions_revisions_patch_and_pods() -> None:
    planned = RollbackReport(
        flow="kubernetes_rollback",
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        outcome="dry run: undo from revision 2 to revision 1",
        changed=False,
        dry_run=True,
        from_version="v1.2.4",
        to_version="v1.2.3",
        from_revision=2,
        to_revision=1,
        change='[{"op": "replace", "path": "/spec/template"}]',
    )
    text = plan_markdown(planned, ("rag-api-1 (ready)",), "production", 30)
    assert text.startswith("# Approve kubernetes_rollback of rag-api in production?")
    assert "**Plan:** undo from revision 2 to revision 1" in text
    assert "| from | `v1.2.4` (revision 2) |" in text
    assert "| to | `v1.2.3` (revision 1) |" in text
    assert '[{"op": "replace", "path": "/spec/template"}]' in text
    assert "- `rag-api-1 (ready)`" in text
    assert "within 30 min" in text


# --- on the stack ----------------------------------------------------------------------------


@pytest.fixture
def at_v124(
    apps: client.AppsV1Api, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    use_services(monkeypatch, tmp_path, namespace, timeout=60)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    return namespace


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_approved_the_rollback_goes_on_and_the_report_carries_the_answer(
    apps: client.AppsV1Api, at_v124: str
) -> None:
    asking(at_v124)
    before = snapshot(apps, at_v124)
    since = datetime.now(UTC)
    run = Background(lambda: kubernetes_rollback("rag-api", return_state=True))

    run_id = paused_run("kubernetes-rollback", since)
    plan = approval_artifact(run_id)
    assert snapshot(apps, at_v124) == before  # nothing changed while it waits
    assert "| from | `v1.2.4` (revision 2) |" in plan
    assert "| to | `v1.2.3` (revision 1) |" in plan
    assert f"{REPOSITORY}:v1.2.3" in plan  # the patch
    assert "| pods affected | 3 |" in plan
    answer(run_id, True, "error rate 20 %, go")

    state = run.result()
    assert state.is_completed(), state.message
    report: RollbackReport = state.result()
    assert "Approved by a person (error rate 20 %, go)" in report.details
    after = snapshot(apps, at_v124)
    assert after.image == f"{REPOSITORY}:v1.2.3"
    assert after.replicasets == {2: f"{REPOSITORY}:v1.2.4", 3: f"{REPOSITORY}:v1.2.3"}
    final = read_flow_run(state).of_type("markdown")
    assert any("Approved by a person (error rate 20 %, go)" in str(a.data) for a in final)


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_rejected_nothing_changes_and_the_message_says_so(
    apps: client.AppsV1Api, at_v124: str
) -> None:
    asking(at_v124)
    before = snapshot(apps, at_v124)
    since = datetime.now(UTC)
    run = Background(lambda: image_rollback("rag-api", "v1.2.3", return_state=True))

    answer(paused_run("image-rollback", since), False, "v1.2.3 has the same bug")

    state = run.result()
    assert state.is_failed()
    message = (
        "not approved: the approver rejected the plan (v1.2.3 has the same bug); nothing changed"
    )
    assert message in str(state.message)
    assert snapshot(apps, at_v124) == before
    markdown = [str(a.data) for a in read_flow_run(state).of_type("markdown")]
    assert any(f"| outcome | {message} |" in m for m in markdown)


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_no_answer_in_time_nothing_changes_and_the_message_says_so(
    apps: client.AppsV1Api, at_v124: str
) -> None:
    asking(at_v124, timeout_minutes=0.05)  # 3 s
    before = snapshot(apps, at_v124)

    state = kubernetes_rollback("rag-api", return_state=True)

    # The server fails a pause that timed out ("... never resumed"); the run's report says why.
    assert state.is_failed()
    message = "not approved: no answer within 0.05 min (timed out); nothing changed"
    markdown = [str(a.data) for a in read_flow_run(state).of_type("markdown")]
    assert any(f"| outcome | {message} |" in m for m in markdown), markdown
    assert snapshot(apps, at_v124) == before


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_skip_confirmation_goes_ahead_without_asking(apps: client.AppsV1Api, at_v124: str) -> None:
    asking(at_v124, timeout_minutes=0.05)

    state = kubernetes_rollback("rag-api", skip_confirmation=True, return_state=True)

    assert state.is_completed(), state.message
    assert snapshot(apps, at_v124).image == f"{REPOSITORY}:v1.2.3"
    assert not [a for a in read_flow_run(state).artifacts if a.key == "approval-rag-api"]


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_a_rejected_canary_rollback_leaves_the_virtual_service_and_both_deployments(
    apps: client.AppsV1Api,
    kube_api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    use_services(monkeypatch, tmp_path, namespace)
    asking(namespace)
    apps.create_namespaced_deployment(namespace, deployment_body(f"{REPOSITORY}:v1.2.3"))
    apps.create_namespaced_deployment(
        namespace, deployment_body(f"{REPOSITORY}:v1.3.0", replicas=1, name="rag-api-canary")
    )
    route: dict[str, Any] = {
        "name": "split",
        "route": [
            {"destination": {"host": "rag-api", "subset": "stable"}, "weight": 80},
            {"destination": {"host": "rag-api", "subset": "canary"}, "weight": 20},
        ],
    }
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualService",
            "metadata": {"name": "rag-api"},
            "spec": {"hosts": ["rag-api"], "http": [route]},
        },
    )
    wait_rolled_out(apps, namespace, "rag-api")
    wait_rolled_out(apps, namespace, "rag-api-canary")
    stable, canary = snapshot(apps, namespace), snapshot(apps, namespace, "rag-api-canary")
    vs = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rag-api")
    since = datetime.now(UTC)
    run = Background(lambda: canary_rollback("rag-api", return_state=True))

    run_id = paused_run("canary-rollback", since)
    plan = approval_artifact(run_id)
    assert "| Deployment | `" + namespace + "/rag-api-canary` |" in plan
    assert "| pods affected | 1 |" in plan
    answer(run_id, False, "")

    state = run.result()
    assert "not approved: the approver rejected the plan; nothing changed" in str(state.message)
    after = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "rag-api")
    assert after["metadata"]["generation"] == vs["metadata"]["generation"]
    assert after["spec"] == vs["spec"]
    assert snapshot(apps, namespace) == stable
    assert snapshot(apps, namespace, "rag-api-canary") == canary


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_the_alert_path_never_asks(apps: client.AppsV1Api, at_v124: str) -> None:
    asking(at_v124, timeout_minutes=0.05)  # were it to ask, it would end unapproved in 3 s

    state = guarded_rollback("rag-api", reason="RagApiHighErrorRate", return_state=True)

    assert state.is_completed(), state.message
    assert state.result().action == "rolled_back"
    assert snapshot(apps, at_v124).image == f"{REPOSITORY}:v1.2.3"
