"""Every rollback ends with the playbook's verification checklist, live: the rag-api simulator
serves the version the Deployment runs, Prometheus scrapes it, the flows publish to the Prefect
server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cluster import REPOSITORY, build_history, snapshot, use_services
from conftest import write_post_rollback_settings
from flow_runs import read_flow_run
from kubernetes import client
from prefect.client.orchestration import get_client

from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import InvalidInputError, VerificationFailedError
from playbook.post_rollback import POST_ROLLBACK_ENV
from stack.sink import WebhookSink
from tasks.probes import SERVICE_URL_ENV

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

SETTLE_SECONDS = 3


@pytest.fixture
def checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped checklist after every rollback, with a short settle time."""
    settings = write_post_rollback_settings(
        tmp_path, after_rollback={"enabled": True, "settle_seconds": SETTLE_SECONDS}, enabled=False
    )
    monkeypatch.setenv(POST_ROLLBACK_ENV, str(settings))


def _table(record: object, key: str) -> list[dict[str, str]]:
    tables = [a for a in record.artifacts if a.type == "table" and a.key == key]  # type: ignore[attr-defined]
    assert len(tables) == 1, [a.key for a in record.artifacts]  # type: ignore[attr-defined]
    data = tables[0].data
    return json.loads(data) if isinstance(data, str) else data


def test_a_rollback_ends_with_the_checklist_table_of_the_version_it_went_to(
    local_stack: object,
    kube_api: client.ApiClient,
    simulator_namespace: str,
    checked: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, simulator_namespace)
    apps = client.AppsV1Api(kube_api)
    build_history(apps, simulator_namespace, ["v1.2.3", "v1.2.4"])

    state = kubernetes_rollback("rag-api", return_state=True)

    assert state.is_completed(), state.message
    report = state.result()
    assert snapshot(apps, simulator_namespace).image == f"{REPOSITORY}:v1.2.3"
    assert report.verification is not None and report.verification.passed
    rows = {r["check"]: r for r in _table(read_flow_run(state), "verify-rollback-rag-api")}
    assert rows["Version"]["observed"] == "v1.2.3" and rows["Version"]["result"] == "PASS"
    assert rows["Health Check"]["result"] == "PASS"
    assert rows["Pod Count"]["observed"] == "3 running of 3"
    # the bad release's 20 % of failed requests are outside the window the check looks at
    assert rows["Error Rate"]["result"] == "PASS", rows["Error Rate"]
    assert rows["Error Rate"]["observed"] == "0 %"
    assert ("verify service", pytest.approx(SETTLE_SECONDS, abs=2.5)) in [
        (name, seconds) for name, seconds in report.durations if name == "verify service"
    ]
    # the bad release's error lines, one log line each (not the whole log as one bytes repr)
    assert report.logs.lines
    for line in report.logs.lines:
        assert re.fullmatch(r"rag-api-\S+: \S+Z ERROR .*\(version v1\.2\.4\)", line), line
    markdown = report.to_markdown()
    assert "## Verification: all critical checks passed" in markdown
    assert "| Version | v1.2.3 | v1.2.3 | PASS | yes |" in markdown


def test_a_rollback_into_a_version_that_fails_health_fails_its_run_and_is_still_watched(
    local_stack: object,
    kube_api: client.ApiClient,
    simulator_namespace: str,
    notifications: WebhookSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = write_post_rollback_settings(
        tmp_path,
        after_rollback={"enabled": True, "settle_seconds": SETTLE_SECONDS},
        enabled=True,
        duration_minutes=1,
    )
    monkeypatch.setenv(POST_ROLLBACK_ENV, str(settings))
    use_services(monkeypatch, tmp_path, simulator_namespace)
    apps = client.AppsV1Api(kube_api)
    build_history(apps, simulator_namespace, ["v1.2.3-unhealthy", "v1.2.4"])

    state = kubernetes_rollback("rag-api", return_state=True)

    assert state.is_failed()
    with pytest.raises(VerificationFailedError, match=r"Health Check 503"):
        state.result()
    # the change stays (it is the playbook's step; a person decides what next) ...
    after = snapshot(apps, simulator_namespace)
    assert after.image == f"{REPOSITORY}:v1.2.3-unhealthy" and max(after.replicasets) == 3
    record = read_flow_run(state)
    assert record.state == "FAILED"
    rows = {r["check"]: r for r in _table(record, "verify-rollback-rag-api")}
    assert rows["Health Check"]["result"] == "FAIL"
    assert rows["Version"]["result"] == "PASS"
    report = record.keyed("kubernetes-rollback-rag-api")
    assert report.description.startswith("FAILED: rolled back from revision 2 to revision 1")
    # the failure is told, with what failed and the run's link
    texts = [d.body["text"] for d in notifications.received("/slack")]
    [failed] = [t for t in texts if t.startswith("🚨 ROLLBACK FAILED")]
    assert "What failed: rolled back from revision 2 to revision 1" in failed
    assert "Health Check 503" in failed
    assert "Cluster changed: yes, the change is in place" in failed
    assert f"/runs/flow-run/{state.state_details.flow_run_id}" in failed
    # ... and the post-rollback monitor watches it
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs()
    monitors = [r for r in runs if r.idempotency_key == f"post-rollback-monitor:{run_id}"]
    assert len(monitors) == 1
    params = monitors[0].parameters
    assert params["namespace"] == simulator_namespace
    assert (params["from_version"], params["to_version"], params["bad_revision"]) == (
        "v1.2.4",
        "v1.2.3-unhealthy",
        2,
    )
    assert params["rollback_run_id"] == str(run_id)
    # the rollback run links to the monitor run, which writes the review
    link = record.keyed("post-incident-review-rag-api")
    assert f"/runs/flow-run/{monitors[0].id})" in str(link.data), link.data


def test_a_service_the_checklist_cannot_probe_is_refused_before_anything_changes(
    local_stack: object,
    kube_api: client.ApiClient,
    namespace: str,
    checked: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace)  # no health_url / version_url
    monkeypatch.delenv(SERVICE_URL_ENV, raising=False)
    apps = client.AppsV1Api(kube_api)
    build_history(apps, namespace, ["v1.2.3", "v1.2.4"])
    before = snapshot(apps, namespace)

    with pytest.raises(InvalidInputError, match="has no health_url/version_url"):
        kubernetes_rollback("rag-api")

    assert snapshot(apps, namespace) == before
    assert kubernetes_rollback("rag-api", dry_run=True).dry_run  # a dry run probes nothing
