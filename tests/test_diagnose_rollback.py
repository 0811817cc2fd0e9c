"""The playbook's Troubleshooting on the real local cluster: each fault made for real, named.

Each test creates one fault in a fresh namespace (a KWOK ImagePullBackOff, CrashLoopBackOff or
NeverReady pod, a probe on a port the container does not expose, a Service selecting no pod,
EndpointSlices that the cluster's own endpointslice controller fills with pods of the bad
version), runs `diagnose_rollback`, and reads the markdown artifact back from the Prefect
server: the problem is named with its evidence, and nothing in the cluster changed, unless
`remedy=True` restarts a stuck rollout.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from approvals import Background, answer, approval_artifact, asking, paused_run
from cluster import (
    REPOSITORY,
    Snapshot,
    deployment_body,
    snapshot,
    use_services,
    wait_revision,
    wait_rolled_out,
    wait_settled,
)
from fake_github import FakeGitHub
from flow_runs import read_flow_run
from kubernetes import client
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from pydantic import SecretStr

from flows.diagnose_rollback import diagnose_rollback
from playbook.diagnosis import HEALTH, IMAGE_PULL, RESTARTED_AT_ANNOTATION, STUCK, TRAFFIC
from playbook.rollout import REVISION_ANNOTATION
from playbook.services import SERVICES_ENV

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
TOKEN_BLOCK = "it-github-token"
PULL_SECRET_CONTENT = base64.b64encode(b"acme:ghp_pull_secret_password").decode()


@pytest.fixture
def github(local_stack: object) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.add_package("org", "acme", "rag-api", [["v1.2.4"], ["v1.2.3", "latest"]])
    Secret(value=SecretStr(fake.token)).save(TOKEN_BLOCK, overwrite=True)
    yield fake
    fake.stop()


@pytest.fixture
def services(namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The flows pointed at rag-api in the test's namespace (canary configured, no registry)."""
    use_services(monkeypatch, tmp_path, namespace, timeout=30)
    return namespace


# Building the faults --------------------------------------------------------------------


def deploy(
    apps: client.AppsV1Api,
    namespace: str,
    version: str,
    name: str = "rag-api",
    replicas: int = 3,
    labels: dict[str, str] | None = None,
    **pod_spec: Any,
) -> None:
    """A Deployment of rag-api at `version`, with more pod spec (ports, probes, ...)."""
    body = deployment_body(f"{REPOSITORY}:{version}", replicas=replicas, name=name)
    if labels:
        body["metadata"]["labels"] = labels
        body["spec"]["selector"] = {"matchLabels": labels}
        body["spec"]["template"]["metadata"]["labels"] = labels
    container = body["spec"]["template"]["spec"]["containers"][0]
    container.update(pod_spec.pop("container", {}))
    body["spec"]["template"]["spec"].update(pod_spec)
    apps.create_namespaced_deployment(namespace, body)
    wait_rolled_out(apps, namespace, name)


def release(apps: client.AppsV1Api, namespace: str, version: str) -> None:
    """`kubectl set image` to a version whose pods fail; wait until the controllers settle."""
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "rag-api", "image": f"{REPOSITORY}:{version}"}]
                    }
                }
            }
        },
    )
    wait_revision(apps, namespace, "rag-api", 2)
    wait_settled(apps, namespace, "rag-api")


def create_service(core: client.CoreV1Api, namespace: str, selector: dict[str, str]) -> None:
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "rag-api"},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )


HTTP_PORT = {"ports": [{"name": "http", "containerPort": 8000}]}


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout}s")


# Reading the report back ------------------------------------------------------------------


def diagnose(**kwargs: Any) -> tuple[str, Any]:
    """Run the flow; the markdown artifact as the Prefect server stores it, and the result."""
    state = diagnose_rollback("rag-api", return_state=True, **kwargs)
    record = read_flow_run(state)
    assert record.state == "COMPLETED", state
    markdown = str(record.one("markdown").data)
    return markdown, state.result()


def sections(markdown: str) -> dict[str, tuple[bool, str]]:
    """Each problem's section: whether it says FOUND, and its text."""
    found = {}
    for title, verdict, body in re.findall(
        r"^## (.+?): (FOUND|not found)\n(.*?)(?=^## |\Z)", markdown, re.M | re.S
    ):
        found[title] = (verdict == "FOUND", body)
    return found


def row(section: str, looked_at: str) -> str:
    """The `found` and verdict cells of the table row whose first cell starts so."""
    for line in section.splitlines():
        if line.startswith(f"| {looked_at}"):
            return line
    raise AssertionError(f"no row {looked_at!r} in:\n{section}")


def unchanged(apps: client.AppsV1Api, namespace: str, before: Snapshot) -> None:
    assert snapshot(apps, namespace) == before  # resourceVersion, generation, image, revisions


# The faults -------------------------------------------------------------------------------


def test_image_pull_backoff_with_a_missing_tag_and_a_missing_pull_secret(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace, registry_url=github.url)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {
                ".dockerconfigjson": base64.b64encode(
                    json.dumps({"auths": {"ghcr.io": {"auth": PULL_SECRET_CONTENT}}}).encode()
                ).decode()
            },
        },
    )
    deploy(
        apps,
        namespace,
        "v1.2.3",
        container=HTTP_PORT,
        imagePullSecrets=[{"name": "regcred"}, {"name": "ghcr-pull"}],
    )
    create_service(core, namespace, {"app": "rag-api"})
    release(apps, namespace, "v1.2.5-pullfail")
    before = snapshot(apps, namespace)

    markdown, diagnosis = diagnose()

    unchanged(apps, namespace, before)
    report = sections(markdown)
    assert [p.title for p in diagnosis.found] == [STUCK, IMAGE_PULL]
    found, pull = report[IMAGE_PULL]
    assert found
    assert (
        "`ghcr.io/acme/rag-api:v1.2.5-pullfail` (repository ghcr.io/acme/rag-api, tag v1.2.5-pullfail)"
        in pull
    )
    assert re.search(r"\| pod rag-api-\w+-\w+ \| ImagePullBackOff: Back-off pulling image", pull)
    assert "| imagePullSecrets regcred | exists (only its existence was checked) | ok |" in pull
    assert f"| imagePullSecrets ghcr-pull | does not exist in {namespace} | problem |" in pull
    assert "tag 'v1.2.5-pullfail' does not exist in container package acme/rag-api" in row(
        pull, "registry tag of"
    )
    assert "create secret docker-registry ghcr-pull" in pull
    assert any(r.path.endswith("/packages/container/rag-api/versions") for r in github.requests)
    # the pull secret's content is never read, let alone printed
    assert PULL_SECRET_CONTENT not in markdown and "dockerconfigjson" not in markdown

    found, stuck = report[STUCK]
    assert found
    assert "desired 3, updated 1, ready 3, available 3" in row(stuck, "replicas")
    assert "waiting ImagePullBackOff" in stuck
    assert "| remedy | not requested (remedy=False): nothing was changed |" in markdown


@pytest.mark.parametrize("version", ["v1.2.5-crashloop", "v1.2.6-neverready"])
def test_crash_looping_and_never_ready_pods_are_named_with_their_reasons(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, services: str, version: str
) -> None:
    deploy(apps, namespace, "v1.2.3", container=HTTP_PORT)
    create_service(core, namespace, {"app": "rag-api"})
    release(apps, namespace, version)
    before = snapshot(apps, namespace)

    markdown, diagnosis = diagnose()

    unchanged(apps, namespace, before)
    report = sections(markdown)
    assert [p.title for p in diagnosis.found] == [STUCK, HEALTH]
    _, stuck = report[STUCK]
    [new_pod] = re.findall(
        r"^\| pod (rag-api-\S+) \| Running, not ready; (.*) \| problem \|$", stuck, re.M
    )
    if "crashloop" in version:
        assert "waiting CrashLoopBackOff (back-off 5m0s restarting failed container" in new_pod[1]
        assert "last terminated Error (exit code 1)" in new_pod[1]
        assert "5 restarts" in new_pod[1]
        # KWOK's nodes keep no log of a previous container: said, not hidden
        assert f"| previous log of {new_pod[0]} (rag-api) | unavailable:" in stuck
        assert "no logs found" in row(stuck, f"previous log of {new_pod[0]}")
    else:
        assert "container rag-api: running, 0 restarts" in new_pod[1]
        assert "| previous-container logs | no container restarted: none to read | ok |" in stuck
    assert re.search(r"\| event ReplicaSet/rag-api-\w+ \| .* Normal SuccessfulCreate", stuck)
    _, health = report[HEALTH]
    assert f"| pod {new_pod[0]} | Running, not ready;" in health


def test_a_readiness_probe_on_a_port_the_container_does_not_expose(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, services: str
) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "rag-config"}, "data": {"QDRANT_HOST": "qdrant-7"}}
    )
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "redis"}, "stringData": {"password": "r3d1s-pw"}}
    )
    deploy(
        apps,
        namespace,
        "v1.2.3",
        container={
            **HTTP_PORT,
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 9090}},
            "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}},
            "env": [
                {"name": "QDRANT_URL", "value": "http://qdrant.internal:6333"},
                {
                    "name": "REDIS_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}},
                },
                {
                    "name": "OPENAI_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": "openai", "key": "key"}},
                },
            ],
            "envFrom": [{"configMapRef": {"name": "rag-config"}}],
            "volumeMounts": [{"name": "prompts", "mountPath": "/prompts"}],
        },
        volumes=[{"name": "prompts", "configMap": {"name": "prompts", "optional": True}}],
    )
    create_service(core, namespace, {"app": "rag-api"})
    before = snapshot(apps, namespace)

    markdown, diagnosis = diagnose()

    unchanged(apps, namespace, before)
    assert [p.title for p in diagnosis.found] == [HEALTH]
    _, health = sections(markdown)[HEALTH]
    assert (
        "| readiness probe of rag-api | httpGet port 9090 path /ready: port 9090 is not among "
        "the container's declared ports (8000 (http)) | problem |"
    ) in health
    assert (
        "| liveness probe of rag-api | httpGet port http path /health = 8000, declared | ok |"
        in health
    )
    assert (
        "| environment of rag-api | names: QDRANT_URL, REDIS_PASSWORD, OPENAI_API_KEY "
        "(values not read) | seen |"
    ) in health
    assert "| Secret redis | exists (used by env REDIS_PASSWORD of rag-api) | ok |" in health
    assert (
        "| Secret openai | does not exist (used by env OPENAI_API_KEY of rag-api) | problem |"
        in health
    )
    assert "| ConfigMap rag-config | exists (used by envFrom of rag-api) | ok |" in health
    assert "| ConfigMap prompts | does not exist; every use is optional" in health
    assert "Create Secret openai in" in health
    for value in ("qdrant.internal", "r3d1s-pw", "qdrant-7"):
        assert value not in markdown


def test_a_service_whose_selector_matches_no_pod(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, services: str
) -> None:
    deploy(apps, namespace, "v1.2.3", container=HTTP_PORT)
    create_service(core, namespace, {"app": "rag-api-v2"})
    before = snapshot(apps, namespace)

    markdown, diagnosis = diagnose()

    unchanged(apps, namespace, before)
    assert [p.title for p in diagnosis.found] == [TRAFFIC]
    _, traffic = sections(markdown)[TRAFFIC]
    assert (
        "| selector against the pods' labels | app=rag-api-v2 matches no pod; the Deployment's "
        "pods are labelled app=rag-api | problem |"
    ) in traffic
    assert "get svc rag-api -o yaml | grep selector -A5" in traffic


def test_endpoint_slices_backed_by_pods_of_the_bad_version(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    kube_api: client.ApiClient,
    namespace: str,
    services: str,
) -> None:
    """Stable v1.2.3 and a canary v1.2.4 share `app: rag-api`, so the Service's endpoints
    include the canary's pod; the VirtualService still splits 90/10 and mirrors 5 %."""
    deploy(
        apps,
        namespace,
        "v1.2.3",
        labels={"app": "rag-api", "track": "stable"},
        container=HTTP_PORT,
    )
    deploy(
        apps,
        namespace,
        "v1.2.4",
        name="rag-api-canary",
        replicas=1,
        labels={"app": "rag-api", "track": "canary"},
        container=HTTP_PORT,
    )
    create_service(core, namespace, {"app": "rag-api"})
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualService",
            "metadata": {"name": "rag-api"},
            "spec": {
                "hosts": ["rag-api"],
                "http": [
                    {
                        "name": "split",
                        "route": [
                            {"destination": {"host": "rag-api", "subset": "stable"}, "weight": 90},
                            {"destination": {"host": "rag-api", "subset": "canary"}, "weight": 10},
                        ],
                        "mirror": {"host": "rag-api", "subset": "canary"},
                        "mirrorPercentage": {"value": 5.0},
                    }
                ],
            },
        },
    )
    # The cluster's own endpointslice controller (kube-controller-manager) fills the slices.
    discovery = client.DiscoveryV1Api(kube_api)

    def filled() -> list[Any]:
        slices = discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=rag-api"
        ).items
        ready = [e for s in slices for e in s.endpoints or [] if e.conditions.ready]
        return slices if len(ready) == 4 else []

    [endpoint_slice] = wait_for("4 ready endpoints", filled)
    assert (
        endpoint_slice.metadata.labels["endpointslice.kubernetes.io/managed-by"]
        == "endpointslice-controller.k8s.io"
    )
    canary_pod = next(
        e.target_ref.name
        for e in endpoint_slice.endpoints
        if e.target_ref.name.startswith("rag-api-canary-")
    )
    before = snapshot(apps, namespace)

    markdown, diagnosis = diagnose()

    unchanged(apps, namespace, before)
    assert [p.title for p in diagnosis.found] == [TRAFFIC]
    _, traffic = sections(markdown)[TRAFFIC]
    slice_row = row(traffic, f"EndpointSlice {endpoint_slice.metadata.name}")
    assert re.search(
        rf"→ {canary_pod} \(v1\.2\.4, ReplicaSet/rag-api-canary-\w+\) ready", slice_row
    )
    assert len(re.findall(r"\(v1\.2\.3, Deployment rag-api\) ready", slice_row)) == 3
    versions = row(traffic, "versions behind the Service")
    assert f"v1.2.4: 1 ready endpoint ({canary_pod})" in versions
    assert "v1.2.3: 3 ready endpoints" in versions
    assert versions.endswith("| problem |")
    assert (
        "| traffic to the canary rag-api/canary | http[0] (split) sends 10% of its requests to "
        "rag-api/canary; http[0] (split) mirrors 5% of its requests to rag-api/canary | problem |"
    ) in traffic
    assert "run canary-rollback/default" in traffic


def test_a_healthy_service_gets_a_clean_report_of_what_was_checked(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    kube_api: client.ApiClient,
    namespace: str,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_services(monkeypatch, tmp_path, namespace, registry_url=github.url)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "regcred"}, "stringData": {"token": "t0k3n"}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "rag-config"}})
    deploy(
        apps,
        namespace,
        "v1.2.3",
        container={
            **HTTP_PORT,
            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
            "livenessProbe": {"tcpSocket": {"port": 8000}},
            "envFrom": [{"configMapRef": {"name": "rag-config"}}],
        },
        imagePullSecrets=[{"name": "regcred"}],
    )
    create_service(core, namespace, {"app": "rag-api"})
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualService",
            "metadata": {"name": "rag-api"},
            "spec": {
                "hosts": ["rag-api"],
                "http": [{"route": [{"destination": {"host": "rag-api", "subset": "stable"}}]}],
            },
        },
    )
    wait_for(
        "3 ready endpoints",
        lambda: (
            sum(
                1
                for s in client.DiscoveryV1Api(kube_api)
                .list_namespaced_endpoint_slice(namespace)
                .items
                for e in s.endpoints or []
                if e.conditions.ready
            )
            == 3
        ),
    )
    before = snapshot(apps, namespace)

    markdown, diagnosis = diagnose()

    unchanged(apps, namespace, before)
    assert diagnosis.found == ()
    assert "| verdict | none of the playbook's 4 known problems found |" in markdown
    report = sections(markdown)
    assert list(report) == [STUCK, IMAGE_PULL, HEALTH, TRAFFIC]
    assert not any(found for found, _ in report.values())
    assert "| problem |" not in markdown and "What to do" not in markdown
    # ... and it says what was checked
    assert "desired 3, updated 3, ready 3, available 3" in row(report[STUCK][1], "replicas")
    assert "| imagePullSecrets regcred | exists" in report[IMAGE_PULL][1]
    assert "tag v1.2.3 exists in container package acme/rag-api" in report[IMAGE_PULL][1]
    health = report[HEALTH][1]
    assert (
        "| readiness probe of rag-api | httpGet port http path /health = 8000, declared | ok |"
        in health
    )
    assert "| liveness probe of rag-api | tcpSocket port 8000, declared | ok |" in health
    assert re.search(
        r"\| /health \| http://127\.0\.0\.1:\d+/health: 200 in \d+ ms \| ok \|", health
    )
    traffic = report[TRAFFIC][1]
    assert "| versions behind the Service | v1.2.3: 3 ready endpoints" in traffic
    assert (
        "| traffic to the canary rag-api/canary | no route, weight or mirror reaches it | ok |"
    ) in traffic
    assert "t0k3n" not in markdown


def set_ready(core: client.CoreV1Api, namespace: str, ready: bool) -> None:
    """Every rag-api pod stops (or starts again) being ready, its readiness probe failing after
    a dependency outage (or passing once it is back), written to the pods' status as the
    kubelet would."""
    state = "True" if ready else "False"
    for pod in core.list_namespaced_pod(namespace, label_selector="app=rag-api").items:
        core.patch_namespaced_pod_status(
            pod.metadata.name,
            namespace,
            [
                {
                    "op": "replace",
                    "path": "/status/conditions",
                    "value": [
                        {"type": "Initialized", "status": "True"},
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "ContainersReady", "status": state},
                        {"type": "Ready", "status": state}
                        | ({} if ready else {"reason": "ContainersNotReady"}),
                    ],
                },
                {"op": "replace", "path": "/status/containerStatuses/0/ready", "value": ready},
            ],
        )


def make_unready(core: client.CoreV1Api, namespace: str) -> None:
    set_ready(core, namespace, False)


def test_remedy_restarts_a_stuck_rollout_and_without_it_nothing_changes(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, services: str
) -> None:
    deploy(apps, namespace, "v1.2.3")
    make_unready(core, namespace)
    wait_for(
        "0 available replicas",
        lambda: not apps.read_namespaced_deployment("rag-api", namespace).status.available_replicas,
    )
    wait_settled(apps, namespace, "rag-api")
    before = snapshot(apps, namespace)

    # without remedy, and with a dry-run remedy: found, and nothing changes
    markdown, diagnosis = diagnose()
    assert diagnosis.stuck
    assert "0 of 3 updated replicas are available" in row(sections(markdown)[STUCK][1], "replicas")
    unchanged(apps, namespace, before)
    markdown, _ = diagnose(remedy=True, dry_run=True)
    unchanged(apps, namespace, before)
    assert "would patch the pod template (validated by the API server); changed nothing" in markdown
    assert f'"{RESTARTED_AT_ANNOTATION}": "' in markdown.split("Patch that would be made:")[1]

    markdown, diagnosis = diagnose(remedy=True)

    deployment = apps.read_namespaced_deployment("rag-api", namespace)
    annotations = deployment.spec.template.metadata.annotations or {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", annotations[RESTARTED_AT_ANNOTATION])
    assert any(
        f.manager == "rollback-flows" and RESTARTED_AT_ANNOTATION in json.dumps(f.fields_v1 or {})
        for f in deployment.metadata.managed_fields
    )
    replicasets = {
        int(rs.metadata.annotations[REVISION_ANNOTATION]): rs
        for rs in apps.list_namespaced_replica_set(namespace).items
    }
    assert sorted(replicasets) == [1, 2]
    new = replicasets[2]
    assert (new.status.ready_replicas, replicasets[1].status.replicas) == (3, 0)
    s = deployment.status
    assert (s.updated_replicas, s.ready_replicas, s.available_replicas) == (3, 3, 3)
    assert diagnosis.remedy is not None and diagnosis.remedy.succeeded
    assert (diagnosis.remedy.new_replicaset, diagnosis.remedy.new_revision) == (
        new.metadata.name,
        2,
    )
    assert f"- new ReplicaSet `{new.metadata.name}` (revision 2)" in markdown
    assert 'deployment "rag-api" successfully rolled out' in markdown
    assert f"`kubectl -n {namespace} rollout restart deployment/rag-api`" in markdown


def remedy_in_the_background() -> tuple[Background, UUID]:
    since = datetime.now(UTC)
    run = Background(lambda: diagnose_rollback("rag-api", remedy=True, return_state=True))
    return run, paused_run("diagnose-rollback", since)


def test_in_production_the_remedy_waits_for_a_person_and_acts_on_what_is_true_then(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, services: str
) -> None:
    """Production asks before the restart: rejected, nothing changes; approved after the
    rollout recovered by itself, nothing is restarted; approved while still stuck, restarted."""
    asking(namespace)
    deploy(apps, namespace, "v1.2.3")
    make_unready(core, namespace)

    def no_pod_available() -> bool:
        status = apps.read_namespaced_deployment("rag-api", namespace).status
        return not status.available_replicas

    wait_for("0 available replicas", no_pod_available)
    wait_settled(apps, namespace, "rag-api")
    before = snapshot(apps, namespace)

    # the plan, then a rejection: nothing changes, the run fails saying so
    run, run_id = remedy_in_the_background()
    plan = approval_artifact(run_id)
    assert plan.startswith("# Approve `rollout restart` of rag-api in production?")
    assert "Rollout stuck" in plan and f"`{namespace}/rag-api`" in plan
    assert f'"{RESTARTED_AT_ANNOTATION}": "' in plan.split("## The exact change")[1]
    pods = [p.metadata.name for p in core.list_namespaced_pod(namespace).items]
    assert len(pods) == 3 and all(f"- `{pod}`: Running, not ready" in plan for pod in pods)
    unchanged(apps, namespace, before)
    answer(run_id, False, "the database is still down")
    state = run.result()
    assert state.is_failed()
    message = "not approved: the approver rejected the plan (the database is still down)"
    assert message in str(state.message)
    unchanged(apps, namespace, before)
    report = str(read_flow_run(state).keyed("diagnose-rollback-rag-api").data)
    assert f"{message}; nothing changed" in report

    # approved only after the pods recovered by themselves: nothing is restarted
    run, run_id = remedy_in_the_background()
    set_ready(core, namespace, True)
    wait_for(
        "3 available replicas",
        lambda: (
            apps.read_namespaced_deployment("rag-api", namespace).status.available_replicas == 3
        ),
    )
    wait_settled(apps, namespace, "rag-api")
    recovered = snapshot(apps, namespace)
    answer(run_id, True, "go")
    state = run.result()
    assert state.is_completed(), state
    assert "Approved by a person (go), but the rollout completed while waiting" in str(
        read_flow_run(state).keyed("diagnose-rollback-rag-api").data
    )
    unchanged(apps, namespace, recovered)

    # stuck again, approved: the restart, a new ReplicaSet and a completed rollout
    make_unready(core, namespace)
    wait_for("0 available replicas", no_pod_available)
    run, run_id = remedy_in_the_background()
    answer(run_id, True, "restart it")
    state = run.result()
    assert state.is_completed(), state
    diagnosis = state.result()
    assert diagnosis.remedy is not None and diagnosis.remedy.succeeded
    assert diagnosis.remedy.new_revision == 2
    assert diagnosis.remedy.detail.startswith("Approved by a person (restart it); restarted at ")
    deployment = apps.read_namespaced_deployment("rag-api", namespace)
    assert RESTARTED_AT_ANNOTATION in (deployment.spec.template.metadata.annotations or {})
    assert deployment.status.available_replicas == 3


def test_the_deployment_runs_on_the_worker(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, services: str
) -> None:
    """prefect.yaml's `diagnose-rollback/default`, executed by the stack's worker (the test's
    services file goes with the run as a job variable)."""
    deploy(apps, namespace, "v1.2.3", container=HTTP_PORT)
    create_service(core, namespace, {"app": "rag-api"})
    before = snapshot(apps, namespace)

    run: FlowRun = run_deployment(  # type: ignore[call-arg, assignment]
        "diagnose-rollback/default",
        parameters={"service": "rag-api"},
        job_variables={"env": {SERVICES_ENV: os.environ[SERVICES_ENV]}},
        timeout=120,
        poll_interval=1,
        _sync=True,
    )

    assert run.state is not None
    record = read_flow_run(run.state)
    assert record.state == "COMPLETED", run.state
    assert run.parameters == {"service": "rag-api", "remedy": False}
    markdown = str(record.one("markdown").data)
    assert markdown.startswith(f"# diagnose-rollback: rag-api in {namespace}\n")
    assert list(sections(markdown)) == [STUCK, IMAGE_PULL, HEALTH, TRAFFIC]
    unchanged(apps, namespace, before)
