"""Who or what started a rollback, and why: carried into the notices, the audit events and the
post-incident review."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

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
