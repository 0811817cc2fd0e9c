"""The Deployment's GitOps owner stated exactly: found by Flux labels (both needed), Argo CD's
tracking id or instance label with its field manager, and what each owner's policy means."""

from __future__ import annotations

from typing import Any

from playbook.gitops import OwnerRef, OwnerState, find_owner, owner_state, suspend_patch


def deployment(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    managers: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": labels or {},
            "annotations": annotations or {},
            "managedFields": [{"manager": m} for m in managers] + [{}],
        }
    }


def test_flux_needs_both_its_name_and_namespace_labels() -> None:
    both = {
        "kustomize.toolkit.fluxcd.io/name": "apps",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }
    assert find_owner(deployment(both)) == OwnerRef(
        "Kustomization", "flux-system", "apps", "labels kustomize.toolkit.fluxcd.io/name"
    )
    assert find_owner(deployment({"kustomize.toolkit.fluxcd.io/name": "apps"})) is None
    assert find_owner(deployment({"helm.toolkit.fluxcd.io/namespace": "flux-system"})) is None
    helm = {"helm.toolkit.fluxcd.io/name": "rag", "helm.toolkit.fluxcd.io/namespace": "apps"}
    assert str(find_owner(deployment(helm))) == "Flux HelmRelease apps/rag"
    assert find_owner({}) is None


def test_argo_cds_tracking_id_names_the_application_and_its_namespace() -> None:
    tracking = "argocd.argoproj.io/tracking-id"
    owner = find_owner(
        deployment(annotations={tracking: "team-a_rag-api:apps/Deployment:prod/rag-api"})
    )
    assert owner == OwnerRef("Application", "team-a", "rag-api", f"annotation {tracking}")
    plain = find_owner(
        deployment(annotations={tracking: "rag-api:apps/Deployment:prod/rag-api:x"}), "gitops"
    )
    assert plain == OwnerRef("Application", "gitops", "rag-api", f"annotation {tracking}")
    assert find_owner(deployment(annotations={tracking: "no-colon"})) is None


def test_the_instance_label_counts_only_with_argo_cds_field_manager() -> None:
    labels = {"app.kubernetes.io/instance": "rag-api"}
    assert find_owner(deployment(labels, managers=("kubectl", "helm"))) is None
    owner = find_owner(
        deployment(
            labels, managers=("kubectl", "argocd-controller", "argocd-application-controller")
        )
    )
    assert owner == OwnerRef(
        "Application",
        "argocd",
        "rag-api",
        "label app.kubernetes.io/instance and field manager argocd-application-controller",
    )


APP = OwnerRef("Application", "argocd", "rag-api", "e")
FLUX = OwnerRef("Kustomization", "flux-system", "apps", "e")


def test_each_owner_policy_says_whether_it_reverts_and_why() -> None:
    assert owner_state(APP, None) == OwnerState(
        APP, False, True, "that object cannot be found, so its policy is unknown"
    )
    healing = {"spec": {"syncPolicy": {"automated": {"selfHeal": True}}}}
    assert owner_state(APP, healing) == OwnerState(
        APP, True, True, "its automated sync heals changes made outside Git"
    )
    disabled = {"spec": {"syncPolicy": {"automated": {"selfHeal": True, "enabled": False}}}}
    assert owner_state(APP, disabled) == OwnerState(APP, True, False, "it does not self-heal")
    assert (
        owner_state(APP, {"spec": {"syncPolicy": {"automated": {"prune": True}}}}).reverts is False
    )
    assert owner_state(FLUX, {"spec": {"suspend": True}}) == OwnerState(
        FLUX, True, False, "it is suspended"
    )
    assert owner_state(FLUX, {"spec": {}}) == OwnerState(
        FLUX, True, True, "it is not suspended, so it reapplies Git at its next interval"
    )


def test_the_refusal_names_the_owner_its_evidence_and_both_ways_out() -> None:
    state = owner_state(APP, None)
    assert state.refusal() == (
        "refused: Argo CD Application argocd/rag-api owns this Deployment (e) and that object "
        "cannot be found, so its policy is unknown: it would put the bad version back. Nothing "
        "was changed. Either roll back in Git (revert the release there), or run again with "
        "suspend_gitops=True to suspend Argo CD Application argocd/rag-api first (resume it "
        "once Git holds the fix)"
    )
    assert state.action_item() == (
        "resume Argo CD Application argocd/rag-api once Git holds the fix (this rollback suspended it)"
    )


def test_suspending_an_application_keeps_its_policy_as_sorted_json() -> None:
    app = {"spec": {"syncPolicy": {"automated": {"selfHeal": True, "prune": True}}}}
    patch = suspend_patch(owner_state(APP, app), app)
    assert patch == {
        "metadata": {
            "annotations": {
                "rollback-flows.dev/suspended-sync-policy": '{"automated": {"prune": true, "selfHeal": true}}'
            }
        },
        "spec": {"syncPolicy": {"automated": None}},
    }
    assert suspend_patch(owner_state(FLUX, {"spec": {}}), {"spec": {}}) == {
        "spec": {"suspend": True}
    }
