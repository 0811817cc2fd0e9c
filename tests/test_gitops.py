"""GitOps owners: a rollback never fights the reconciler that owns the Deployment.

Pure: who owns a Deployment and whether it would revert a change. On the real local cluster
(Argo CD's Application and Flux's Kustomization and HelmRelease served through CRDs, no
controller running): a self-healing owner refuses the rollback and nothing changes; with
`suspend_gitops=True` the owner is suspended and then the rollback is made; a suspended or
non-healing owner does not stand in the way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from accounts import RBAC, RBAC_GITOPS, apply_manifest, service_account_kubeconfig
from cluster import (
    REPOSITORY,
    eventually,
    snapshot,
    wait_settled,
)
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from flows.kubernetes_rollback import kubernetes_rollback
from playbook.errors import AccessDeniedError, RollbackRefusedError
from playbook.gitops import (
    SUSPENDED_POLICY_ANNOTATION,
    OwnerRef,
    find_owner,
    owner_state,
    suspend_patch,
)
from stack.local import StackState

GOOD, BAD = "v1.2.3", "v1.2.4"
SELF_HEAL = {"syncPolicy": {"automated": {"prune": True, "selfHeal": True}}}


def deployment(labels: dict[str, str] | None = None, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "rag-api", "labels": labels or {}, "annotations": annotations}}


def test_the_owner_is_read_from_the_deployments_own_metadata() -> None:
    tracked = deployment(
        **{"argocd.argoproj.io/tracking-id": "rag-api:apps/Deployment:prod/rag-api"}
    )
    assert find_owner(tracked) == OwnerRef(
        "Application", "argocd", "rag-api", "annotation argocd.argoproj.io/tracking-id"
    )
    anywhere = deployment(**{"argocd.argoproj.io/tracking-id": "team-a_rag:apps/Deployment:p/r"})
    owner = find_owner(anywhere)
    assert owner is not None and (owner.namespace, owner.name) == ("team-a", "rag")
    flux = deployment(
        {
            "kustomize.toolkit.fluxcd.io/name": "apps",
            "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
        }
    )
    assert str(find_owner(flux)) == "Flux Kustomization flux-system/apps"
    helm = deployment(
        {"helm.toolkit.fluxcd.io/name": "rag", "helm.toolkit.fluxcd.io/namespace": "prod"}
    )
    assert str(find_owner(helm)) == "Flux HelmRelease prod/rag"
    # the instance label alone is any Helm chart's; with Argo CD's field manager it is Argo CD's
    labelled = deployment({"app.kubernetes.io/instance": "rag-api"})
    assert find_owner(labelled) is None
    labelled["metadata"]["managedFields"] = [{"manager": "argocd-controller", "operation": "Apply"}]
    assert str(find_owner(labelled, "gitops")) == "Argo CD Application gitops/rag-api"
    assert find_owner(deployment()) is None


def test_only_a_self_healing_or_unsuspended_owner_reverts() -> None:
    app = OwnerRef("Application", "argocd", "rag-api", "e")
    assert owner_state(app, {"spec": SELF_HEAL}).reverts
    assert not owner_state(app, {"spec": {"syncPolicy": {"automated": {"prune": True}}}}).reverts
    assert not owner_state(app, {"spec": {}}).reverts
    ks = OwnerRef("Kustomization", "flux-system", "apps", "e")
    assert owner_state(ks, {"spec": {"interval": "5m"}}).reverts
    assert not owner_state(ks, {"spec": {"suspend": True}}).reverts
    missing = owner_state(ks, None)
    assert missing.reverts and "cannot be found" in missing.why
    refusal = owner_state(app, {"spec": SELF_HEAL}).refusal()
    assert "Argo CD Application argocd/rag-api owns this Deployment" in refusal
    assert "roll back in Git" in refusal and "suspend_gitops=True" in refusal


def test_suspending_keeps_what_argo_cd_had_and_sets_flux_suspend() -> None:
    app = OwnerRef("Application", "argocd", "rag-api", "e")
    patch = suspend_patch(owner_state(app, {"spec": SELF_HEAL}), {"spec": SELF_HEAL})
    assert patch["spec"] == {"syncPolicy": {"automated": None}}
    kept = json.loads(patch["metadata"]["annotations"][SUSPENDED_POLICY_ANNOTATION])
    assert kept == {"automated": {"prune": True, "selfHeal": True}}
    ks = OwnerRef("Kustomization", "flux-system", "apps", "e")
    assert suspend_patch(owner_state(ks, {"spec": {}}), {"spec": {}}) == {"spec": {"suspend": True}}


# --- on the real local cluster ----------------------------------------------------------------

KINDS = {
    "Application": ("argoproj.io", "v1alpha1", "applications"),
    "Kustomization": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "HelmRelease": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
}


@pytest.fixture
def custom(kube_api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api)


@pytest.fixture
def owner(
    custom: client.CustomObjectsApi, apps: client.AppsV1Api, bad_release: str
) -> Iterator[Any]:
    """make(kind, spec): the GitOps object, in the test's namespace, that labels rag-api its own."""
    made: list[tuple[str, str]] = []

    def make(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        group, version, plural = KINDS[kind]
        name = f"{kind.lower()}-{bad_release}"
        body = {
            "apiVersion": f"{group}/{version}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        custom.create_namespaced_custom_object(group, version, bad_release, plural, body)
        made.append((kind, name))
        if kind == "Application":
            marks = {
                "annotations": {
                    "argocd.argoproj.io/tracking-id": f"{bad_release}_{name}:apps/Deployment:{bad_release}/rag-api"
                }
            }
        else:
            tool = "kustomize" if kind == "Kustomization" else "helm"
            marks = {
                "labels": {
                    f"{tool}.toolkit.fluxcd.io/name": name,
                    f"{tool}.toolkit.fluxcd.io/namespace": bad_release,
                }
            }
        apps.patch_namespaced_deployment("rag-api", bad_release, {"metadata": marks})
        wait_settled(apps, bad_release, "rag-api")  # the controller copies the marks
        return body

    yield make
    for kind, name in made:
        group, version, plural = KINDS[kind]
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(group, version, bad_release, plural, name)


def read(custom: client.CustomObjectsApi, namespace: str, kind: str) -> dict[str, Any]:
    group, version, plural = KINDS[kind]
    found: dict[str, Any] = custom.get_namespaced_custom_object(
        group, version, namespace, plural, f"{kind.lower()}-{namespace}"
    )
    return found


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_self_healing_application_refuses_the_rollback_and_nothing_changes(
    apps: client.AppsV1Api, custom: client.CustomObjectsApi, bad_release: str, owner: Any
) -> None:
    ns = bad_release
    owner("Application", SELF_HEAL)
    before, app_before = snapshot(apps, ns), read(custom, ns, "Application")

    with pytest.raises(RollbackRefusedError, match=f"Argo CD Application {ns}/application-{ns}"):
        kubernetes_rollback("rag-api")

    assert snapshot(apps, ns) == before
    assert (
        read(custom, ns, "Application")["metadata"]["resourceVersion"]
        == app_before["metadata"]["resourceVersion"]
    )


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_suspend_gitops_turns_off_self_heal_then_rolls_back(
    apps: client.AppsV1Api, custom: client.CustomObjectsApi, bad_release: str, owner: Any
) -> None:
    ns = bad_release
    owner("Application", SELF_HEAL)

    report = kubernetes_rollback("rag-api", suspend_gitops=True)

    app = read(custom, ns, "Application")
    assert "automated" not in app["spec"]["syncPolicy"]
    kept = json.loads(app["metadata"]["annotations"][SUSPENDED_POLICY_ANNOTATION])
    assert kept == {"automated": {"prune": True, "selfHeal": True}}
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"
    assert any(
        f"Action item: resume Argo CD Application {ns}/application-{ns}" in d
        for d in report.details
    )
    assert "Action item: resume" in report.to_markdown()


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_flux_kustomization_is_suspended_then_the_rollback_made(
    apps: client.AppsV1Api, custom: client.CustomObjectsApi, bad_release: str, owner: Any
) -> None:
    ns = bad_release
    owner("Kustomization", {"interval": "5m", "path": "./apps", "prune": True})
    before = snapshot(apps, ns)
    with pytest.raises(RollbackRefusedError, match="is not suspended"):
        kubernetes_rollback("rag-api", dry_run=True)  # even a dry run says so first
    assert snapshot(apps, ns) == before

    kubernetes_rollback("rag-api", suspend_gitops=True)

    assert read(custom, ns, "Kustomization")["spec"]["suspend"] is True
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_suspended_owner_does_not_stand_in_the_way(
    apps: client.AppsV1Api, custom: client.CustomObjectsApi, bad_release: str, owner: Any
) -> None:
    ns = bad_release
    owner("HelmRelease", {"interval": "5m", "suspend": True})
    release_before = read(custom, ns, "HelmRelease")

    report = kubernetes_rollback("rag-api")

    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"
    assert any("it is suspended, so it does not revert this" in d for d in report.details)
    assert read(custom, ns, "HelmRelease") == release_before  # not touched


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_as_its_service_account_a_gitops_owner_needs_the_gitops_role(
    local_stack: StackState,
    kube_api: client.ApiClient,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    bad_release: str,
    owner: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rbac.yaml alone cannot read the Application: the rollback stops with the 403 before it
    changes anything; with rbac-gitops.yaml in the owner's namespace it suspends the owner and
    rolls back, as the flows' ServiceAccount."""
    ns = bad_release
    owner("Application", SELF_HEAL)
    apply_manifest(kube_api, RBAC, ns)
    kubeconfig = service_account_kubeconfig(local_stack, kube_api, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    before, app_before = snapshot(apps, ns), read(custom, ns, "Application")

    with pytest.raises(AccessDeniedError, match=f"application-{ns}.*403"):
        kubernetes_rollback("rag-api", suspend_gitops=True)
    assert snapshot(apps, ns) == before
    assert read(custom, ns, "Application") == app_before

    apply_manifest(kube_api, RBAC_GITOPS, ns)
    as_sa = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))
    group, version, plural = KINDS["Application"]

    def readable() -> bool:
        try:
            as_sa.get_namespaced_custom_object(group, version, ns, plural, f"application-{ns}")
        except ApiException as exc:
            if exc.status != 403:
                raise
            return False
        return True

    # the API server's authorizer sees the new Role within a moment
    eventually(readable, 10, "the Application readable as the ServiceAccount")
    report = kubernetes_rollback("rag-api", suspend_gitops=True)

    assert "automated" not in read(custom, ns, "Application")["spec"]["syncPolicy"]
    assert snapshot(apps, ns).image == f"{REPOSITORY}:{GOOD}"
    assert report.changed
