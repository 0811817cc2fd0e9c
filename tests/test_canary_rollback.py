"""Procedure 4 on the real local cluster: `canary_rollback` takes every path of traffic to the
canary away (its routes, its weights, mirrors to it) and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cluster import REPOSITORY, deployment_body, snapshot, use_services, wait_rolled_out
from kubernetes import client

from flows.canary_rollback import canary_rollback
from playbook.errors import ConflictError, InvalidInputError
from playbook.services import Destination
from playbook.traffic import plan_canary_removal
from tasks.boundary import translate_error
from tasks.istio import remove_canary_routes

pytestmark = [pytest.mark.stack, pytest.mark.timeout(180)]

GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"


def dest(subset: str, weight: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": "rag-api", "subset": subset}}
    if weight is not None:
        d["weight"] = weight
    return d


HEADER_ROUTE = {
    "name": "qa-team",
    "match": [{"headers": {"x-team": {"exact": "qa"}}}],
    "route": [dest("stable")],
}
CANARY_ROUTE = {"name": "canary-split", "route": [dest("stable", 80), dest("canary", 20)]}
STABLE_ROUTE = {"name": "stable", "route": [dest("stable")]}


@pytest.fixture
def custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


def read_vs(custom: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    vs: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "rag-api"
    )
    return vs


@pytest.fixture
def canary(
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """Stable rag-api v1.2.3, canary v1.3.0 with 1 replica, canary route at http[1]."""
    use_services(monkeypatch, tmp_path, namespace)
    apps.create_namespaced_deployment(namespace, deployment_body(f"{REPOSITORY}:v1.2.3"))
    canary_body = deployment_body(f"{REPOSITORY}:v1.3.0", replicas=1, name="rag-api-canary")
    apps.create_namespaced_deployment(namespace, canary_body)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualService",
            "metadata": {"name": "rag-api"},
            "spec": {"hosts": ["rag-api"], "http": [HEADER_ROUTE, CANARY_ROUTE, STABLE_ROUTE]},
        },
    )
    wait_rolled_out(apps, namespace, "rag-api")
    wait_rolled_out(apps, namespace, "rag-api-canary")
    return namespace


def test_canary_rollback_removes_only_the_canary_route(
    apps: client.AppsV1Api, kube_api: client.ApiClient, custom: client.CustomObjectsApi, canary: str
) -> None:
    stable_before = snapshot(apps, canary)
    report = canary_rollback("rag-api")

    vs = read_vs(custom, canary)
    assert vs["spec"]["http"] == [HEADER_ROUTE, STABLE_ROUTE]
    canary_deployment = apps.read_namespaced_deployment("rag-api-canary", canary)
    assert canary_deployment.spec.replicas == 0
    assert not canary_deployment.status.replicas
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        canary, label_selector="app=rag-api-canary"
    )
    assert [p for p in pods.items if not p.metadata.deletion_timestamp] == []
    assert snapshot(apps, canary) == stable_before  # the stable Deployment is untouched
    assert (report.from_version, report.to_version) == ("v1.3.0", "v1.2.3")
    assert report.changed

    # Running it again changes nothing and says so.
    rv = vs["metadata"]["resourceVersion"]
    canary_generation = apps.read_namespaced_deployment(
        "rag-api-canary", canary
    ).metadata.generation
    again = canary_rollback("rag-api")
    assert read_vs(custom, canary)["metadata"]["resourceVersion"] == rv
    assert (
        apps.read_namespaced_deployment("rag-api-canary", canary).metadata.generation
        == canary_generation
    )
    assert not again.changed and "nothing changed" in again.outcome


def test_a_mirror_a_header_route_and_a_split_to_the_canary_all_end_at_stable(
    apps: client.AppsV1Api, kube_api: client.ApiClient, custom: client.CustomObjectsApi, canary: str
) -> None:
    """The issue's VirtualService: the first route mirrors 5 % to the canary, then a header
    route to the canary and a 90/10 split. Mirrors fire and forget, so the mirror is dropped
    with the rest instead of refusing the whole change (as this flow did before)."""
    mirroring = {
        "name": "qa-team",
        "match": [{"headers": {"x-team": {"exact": "qa"}}}],
        "route": [dest("stable")],
        "mirror": {"host": "rag-api", "subset": "canary"},
        "mirrorPercentage": {"value": 5.0},
    }
    testers = {
        "name": "testers",
        "match": [{"headers": {"x-canary": {"exact": "true"}}}],
        "route": [dest("canary")],
    }
    split = {"name": "split", "route": [dest("stable", 90), dest("canary", 10)]}
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        canary,
        PLURAL,
        "rag-api",
        {"spec": {"http": [mirroring, testers, split]}},
        _content_type="application/merge-patch+json",
    )
    generation_before = read_vs(custom, canary)["metadata"]["generation"]

    report = canary_rollback("rag-api")

    vs = read_vs(custom, canary)
    assert vs["spec"]["http"] == [
        {"name": "qa-team", "match": mirroring["match"], "route": [dest("stable")]},
        {"name": "split", "route": [dest("stable", 100)]},
    ]
    assert all("mirror" not in r and "mirrors" not in r for r in vs["spec"]["http"])
    assert vs["metadata"]["generation"] == generation_before + 1  # one patch
    canary_deployment = apps.read_namespaced_deployment("rag-api-canary", canary)
    assert canary_deployment.spec.replicas == 0
    assert not canary_deployment.status.replicas
    assert report.changed
    assert "route http[0] qa-team: drop-canary-mirror" in report.details
    assert "route http[1] testers: remove" in report.details
    assert "route http[2] split: route-all-to-stable" in report.details
    # every request now goes to stable: the report says whether it is known good (current
    # for seconds only here, so it is not) with its row of the revisions table
    assert any(d.startswith("Stable rag-api is NOT known good: revision ") for d in report.details)
    assert len(report.revisions) == 1 and report.revisions[0]["verdict"] != "known good"


def test_dry_run_changes_nothing(
    apps: client.AppsV1Api, custom: client.CustomObjectsApi, canary: str
) -> None:
    vs_before = read_vs(custom, canary)
    canary_before = apps.read_namespaced_deployment("rag-api-canary", canary)
    report = canary_rollback("rag-api", dry_run=True)
    assert read_vs(custom, canary) == vs_before
    canary_after = apps.read_namespaced_deployment("rag-api-canary", canary)
    assert canary_after.metadata.resource_version == canary_before.metadata.resource_version
    assert report.change is not None
    change = json.loads(report.change)
    assert {"op": "remove", "path": "/spec/http/1"} in change[
        f"VirtualService {canary}/rag-api (JSON patch)"
    ]
    assert change[f"Deployment {canary}/rag-api-canary scale"] == {"spec": {"replicas": 0}}


def test_a_concurrent_change_fails_the_guarded_patch(
    custom: client.CustomObjectsApi, canary: str
) -> None:
    """The `test` ops reject a patch planned on a VirtualService that changed since."""
    stale = read_vs(custom, canary)
    plan = plan_canary_removal(
        stale,
        Destination(host="rag-api", subset="canary"),
        Destination(host="rag-api", subset="stable"),
    )
    moved = [HEADER_ROUTE, STABLE_ROUTE, CANARY_ROUTE]  # someone reordered the routes meanwhile
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        canary,
        PLURAL,
        "rag-api",
        {"spec": {"http": moved}},
        _content_type="application/merge-patch+json",
    )
    with pytest.raises(client.ApiException) as info:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            canary,
            PLURAL,
            "rag-api",
            list(plan.patch),
            _content_type="application/json-patch+json",
        )
    assert isinstance(translate_error(info.value, "patch", guarded_patch=True), ConflictError)
    assert read_vs(custom, canary)["spec"]["http"] == moved  # the stable route survived

    # The task re-reads and plans again, so it removes the canary route at its new index.
    result = remove_canary_routes.fn(
        canary,
        "rag-api",
        Destination(host="rag-api", subset="canary"),
        Destination(host="rag-api", subset="stable"),
    )
    assert result.applied
    assert read_vs(custom, canary)["spec"]["http"] == [
        HEADER_ROUTE,
        STABLE_ROUTE,
        {**CANARY_ROUTE, "route": [dest("stable", 100)]},
    ]


def test_service_without_canary_is_a_clear_error(
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    canary: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "no-canary.yaml"
    path.write_text(
        f"default_service: rag-api\nservices:\n  rag-api:\n    namespace: {canary}\n"
        f"    deployment: rag-api\n    container: rag-api\n    image_repository: {REPOSITORY}\n"
    )
    monkeypatch.setenv("ROLLBACK_FLOWS_SERVICES", str(path))
    vs_before = read_vs(custom, canary)
    with pytest.raises(InvalidInputError, match="no canary configured"):
        canary_rollback("rag-api")
    assert read_vs(custom, canary) == vs_before
