"""Who reconciles a Deployment from Git, and whether it would put a rollback back. Pure.

A rollback made with the Kubernetes API lasts only until the Deployment's GitOps owner
reconciles it again: Argo CD's self-heal undoes it within seconds (argoproj/argo-cd#15588),
Flux reapplies Git at its next interval. So before any change the flows find the owner:

- Argo CD: the `argocd.argoproj.io/tracking-id` annotation (`<app>:<group>/<kind>:<ns>/<name>`,
  the app as `<namespace>_<name>` when Applications live outside Argo CD's namespace), else
  the `app.kubernetes.io/instance` label Argo CD tracks by default, when `argocd-controller`
  (or `argocd-application-controller`) is among the Deployment's field managers;
- Flux: the `kustomize.toolkit.fluxcd.io/name` + `/namespace` labels (a Kustomization) or the
  `helm.toolkit.fluxcd.io/name` + `/namespace` labels (a HelmRelease).

It reverts the rollback when it is an Application with automated sync and self-heal, or a
Kustomization or HelmRelease that is not suspended. Suspending it is a patch this module
plans; it never resumes the owner: a person does, once Git holds the fix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TRACKING_ID_ANNOTATION = "argocd.argoproj.io/tracking-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"
ARGOCD_MANAGERS = frozenset({"argocd-controller", "argocd-application-controller"})
SUSPENDED_POLICY_ANNOTATION = "rollback-flows.dev/suspended-sync-policy"
"""Where suspending an Application keeps its automated sync policy, to restore it by hand."""

Kind = Literal["Application", "Kustomization", "HelmRelease"]


@dataclass(frozen=True)
class OwnerRef:
    """The GitOps object that reconciles a Deployment."""

    kind: Kind
    namespace: str
    name: str
    evidence: str

    @property
    def group(self) -> str:
        return {
            "Application": "argoproj.io",
            "Kustomization": "kustomize.toolkit.fluxcd.io",
            "HelmRelease": "helm.toolkit.fluxcd.io",
        }[self.kind]

    @property
    def version(self) -> str:
        return {"Application": "v1alpha1", "Kustomization": "v1", "HelmRelease": "v2"}[self.kind]

    @property
    def plural(self) -> str:
        return f"{self.kind.lower()}s"

    def __str__(self) -> str:
        tool = "Argo CD" if self.kind == "Application" else "Flux"
        return f"{tool} {self.kind} {self.namespace}/{self.name}"


def find_owner(deployment: Mapping[str, Any], argocd_namespace: str = "argocd") -> OwnerRef | None:
    """The GitOps owner the Deployment's own metadata names, if any."""
    meta = deployment.get("metadata", {})
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    for tool, kind in (("kustomize", "Kustomization"), ("helm", "HelmRelease")):
        name = labels.get(f"{tool}.toolkit.fluxcd.io/name")
        namespace = labels.get(f"{tool}.toolkit.fluxcd.io/namespace")
        if name and namespace:
            return OwnerRef(kind, namespace, name, f"labels {tool}.toolkit.fluxcd.io/name")  # type: ignore[arg-type]
    tracking = annotations.get(TRACKING_ID_ANNOTATION)
    if isinstance(tracking, str) and ":" in tracking:
        app = tracking.split(":", 1)[0]
        namespace, _, name = app.rpartition("_")
        return OwnerRef(
            "Application",
            namespace or argocd_namespace,
            name,
            f"annotation {TRACKING_ID_ANNOTATION}",
        )
    managers = {str(e.get("manager", "")) for e in meta.get("managedFields") or []}
    instance = labels.get(INSTANCE_LABEL)
    if instance and managers & ARGOCD_MANAGERS:
        return OwnerRef(
            "Application",
            argocd_namespace,
            str(instance),
            f"label {INSTANCE_LABEL} and field manager {sorted(managers & ARGOCD_MANAGERS)[0]}",
        )
    return None


@dataclass(frozen=True)
class OwnerState:
    """The owner as the cluster holds it, and what that means for a rollback."""

    owner: OwnerRef
    found: bool
    reverts: bool
    why: str

    def refusal(self) -> str:
        """The refusal a person reads: who owns it, and the two ways out."""
        return (
            f"refused: {self.owner} owns this Deployment ({self.owner.evidence}) and {self.why}: "
            "it would put the bad version back. Nothing was changed. Either roll back in Git "
            "(revert the release there), or run again with suspend_gitops=True to suspend "
            f"{self.owner} first (resume it once Git holds the fix)"
        )

    def action_item(self) -> str:
        """What the review and the notices ask a person to do afterwards."""
        return f"resume {self.owner} once Git holds the fix (this rollback suspended it)"


def owner_state(owner: OwnerRef, obj: Mapping[str, Any] | None) -> OwnerState:
    """Whether the owner object would revert a change made outside Git.

    An owner that the Deployment names but that cannot be found is taken as reverting: what
    it would do cannot be shown.
    """
    if obj is None:
        return OwnerState(
            owner, False, True, "that object cannot be found, so its policy is unknown"
        )
    spec = obj.get("spec") or {}
    if owner.kind == "Application":
        automated = (spec.get("syncPolicy") or {}).get("automated")
        if (
            isinstance(automated, Mapping)
            and automated.get("selfHeal")
            and automated.get("enabled", True)
        ):
            return OwnerState(
                owner, True, True, "its automated sync heals changes made outside Git"
            )
        return OwnerState(owner, True, False, "it does not self-heal")
    if spec.get("suspend") is True:
        return OwnerState(owner, True, False, "it is suspended")
    return OwnerState(
        owner, True, True, "it is not suspended, so it reapplies Git at its next interval"
    )


def suspend_patch(state: OwnerState, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that stops the owner from reverting: Flux `spec.suspend: true`; Argo CD's
    automated sync (and with it self-heal) removed, kept in an annotation to restore by hand."""
    if state.owner.kind != "Application":
        return {"spec": {"suspend": True}}
    automated = ((obj.get("spec") or {}).get("syncPolicy") or {}).get("automated")
    return {
        "metadata": {
            "annotations": {
                SUSPENDED_POLICY_ANNOTATION: json.dumps({"automated": automated}, sort_keys=True)
            }
        },
        "spec": {"syncPolicy": {"automated": None}},
    }
