"""Who or what started a rollback, and why: carried into the notices, the audit events and the
post-incident review."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

# The playbook's Manual Rollback Indicators, as the choice a person makes in the run form.
ManualReason = Literal[
    "Users report degraded experience",
    "Monitoring shows elevated errors",
    "New feature causes unexpected behavior",
    "Security vulnerability discovered",
    "Data integrity concerns identified",
    "Downstream service failures",
]

Starter = Literal["person", "alert", "schedule", "automation"]


@dataclass(frozen=True)
class StartedBy:
    """The trigger of one rollback."""

    kind: Starter
    reason: str
    """The alert's summary, the canary trigger, or the person's chosen indicator."""
    comment: str = ""
    indicator: str | None = None
    """The decision-matrix indicator the alert is about, when one is."""
    alert_fingerprint: str | None = None
    alert_started_at: datetime | None = None
    notify_secret_block: str | None = None

    def text(self) -> str:
        """The reason as one line: the reason, and the comment when there is one."""
        reason = self.reason.strip() or "not given"
        return f"{reason} ({self.comment.strip()})" if self.comment.strip() else reason

    def who(self) -> str:
        """Who or what started it, for the audit trail."""
        if self.kind == "alert":
            fingerprint = f" {self.alert_fingerprint}" if self.alert_fingerprint else ""
            return f"alert{fingerprint}"
        return {"person": "a person", "schedule": "a schedule", "automation": "automation"}[
            self.kind
        ]


def manual(reason: str | None, comment: str = "") -> StartedBy:
    """A person's rollback, from the UI or the API."""
    return StartedBy("person", reason or "manual rollback (no reason chosen)", comment)


def deployment_resource(cluster: str | None, namespace: str, deployment: str) -> dict[str, str]:
    """The Deployment a change was made to, as a Prefect event resource."""
    where = f"{cluster}." if cluster else ""
    return {
        "prefect.resource.id": f"kubernetes.deployment.{where}{namespace}.{deployment}",
        "prefect.resource.name": f"{namespace}/{deployment}",
        "kubernetes.namespace": namespace,
        **({"kubernetes.cluster": cluster} if cluster else {}),
    }


def audit_payload(
    trigger: StartedBy,
    parameters: Mapping[str, Any],
    before: Mapping[str, Any],
    after: Mapping[str, Any] | None,
    times: Mapping[str, datetime | None],
    outcome: str,
) -> dict[str, Any]:
    """Who or what started a change, with what parameters, the state before and after it,
    and when; JSON-ready."""
    return {
        "started_by": {
            "kind": trigger.kind,
            "who": trigger.who(),
            "reason": trigger.reason,
            "comment": trigger.comment,
            "alert_fingerprint": trigger.alert_fingerprint,
            "alert_started_at": trigger.alert_started_at.isoformat()
            if trigger.alert_started_at
            else None,
        },
        "parameters": {k: v for k, v in parameters.items() if "secret" not in k.lower()},
        "before": dict(before),
        "after": dict(after) if after is not None else None,
        "times": {k: v.isoformat() if v else None for k, v in times.items()},
        "outcome": outcome,
    }
