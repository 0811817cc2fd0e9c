"""What a rollback did, as a typed report and as the markdown artifact a person reads afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from playbook.checks import Checklist
from playbook.rollout import PodState
from playbook.task_results import EventRecord, LogScan


class Stopwatch:
    """Wall-clock durations of the named steps of a flow (check, act, wait, verify)."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step `name` (recorded even when it raises)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.steps.append((name, time.monotonic() - started))

    def total(self) -> float:
        """Seconds since the stopwatch started."""
        return time.monotonic() - self._start


@dataclass(frozen=True)
class RollbackReport:
    """The facts of one rollback run, for the artifact, notifications and reviews."""

    flow: str
    service: str
    namespace: str
    deployment: str
    outcome: str
    changed: bool
    dry_run: bool
    from_version: str | None
    to_version: str | None
    from_revision: int | None = None
    to_revision: int | None = None
    new_revision: int | None = None
    change: str | None = None
    durations: tuple[tuple[str, float], ...] = ()
    total_seconds: float = 0.0
    pods: tuple[PodState, ...] = ()
    events: tuple[EventRecord, ...] = ()
    logs: LogScan | None = None
    details: tuple[str, ...] = field(default_factory=tuple)
    verification: Checklist | None = None
    """The playbook's checklist, run once the change settled (None: not run)."""
    revisions: tuple[dict[str, str], ...] = ()
    """Each revision: version, when it was current, its error rate and P99, the verdict."""

    def to_markdown(self) -> str:
        """The report as markdown: summary table, durations, the exact change, pods, events."""
        rev = f" (revision {self.from_revision})" if self.from_revision is not None else ""
        to_rev = ""
        if self.to_revision is not None:
            to_rev = f" (revision {self.to_revision}"
            if self.new_revision is not None and self.new_revision != self.to_revision:
                to_rev += f", now revision {self.new_revision}"
            to_rev += ")"
        lines = [
            f"# {self.flow}: {self.service} in {self.namespace}",
            "",
            "| | |",
            "|---|---|",
            f"| outcome | {self.outcome} |",
            f"| changed | {'no (dry run)' if self.dry_run else 'yes' if self.changed else 'no'} |",
            f"| Deployment | `{self.namespace}/{self.deployment}` |",
            f"| from | `{self.from_version or '?'}`{rev} |",
            f"| to | `{self.to_version or '?'}`{to_rev} |",
            f"| total duration | {self.total_seconds:.1f} s |",
        ]
        lines += ["", "## Steps", "", "| step | seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.2f} |" for name, seconds in self.durations]
        if self.details:
            lines += ["", "## Details", ""] + [f"- {d}" for d in self.details]
        if self.revisions:
            header = list(self.revisions[0])
            lines += ["", "## Revisions: which is known good", ""]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += [
                "| " + " | ".join(_cell(row.get(h, "")) for h in header) + " |"
                for row in self.revisions
            ]
        if self.verification is not None:
            summary = " ".join(self.verification.summary().splitlines())  # one heading line
            lines += [
                "",
                f"## Verification: {summary}",
                "",
                "| check | expected | observed | result | critical |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.check} | {_cell(r.expected)} | {_cell(r.observed)} | {r.status.value} "
                f"| {'yes' if r.critical else 'no'} |"
                for r in self.verification.results
            ]
        if self.change:
            title = "Change that would be made" if self.dry_run else "Change made"
            lines += ["", f"## {title}", "", "```json", self.change, "```"]
        if self.pods:
            lines += [
                "",
                "## Pods",
                "",
                "| pod | phase | ready | restarts | waiting |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {p.name} | {p.phase} | {'yes' if p.ready else 'no'} | {p.restarts} "
                f"| {', '.join(p.waiting_reasons) or '-'} |"
                for p in self.pods
            ]
        warnings = [e for e in self.events if e.type == "Warning"]
        if warnings:
            lines += ["", "## Warning events", ""]
            lines += [f"- {e.last_seen} {e.object} {e.reason}: {e.message}" for e in warnings]
        if self.logs is not None:
            lines += ["", "## Error lines in recent logs", ""]
            if not self.logs.available:
                lines.append(f"Logs unavailable: {self.logs.unavailable_reason}")
            elif not self.logs.lines:
                lines.append("None.")
            else:
                lines += ["```", *self.logs.lines[-30:], "```"]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def unready_pods(pods: tuple[PodState, ...], desired: int) -> list[str]:
    """Why the pods are not healthy after a rollout; empty when all expected pods are ready."""
    live = [p for p in pods if not p.deleting]
    problems = [
        f"{p.name} not ready ({', '.join(p.waiting_reasons) or p.phase})"
        for p in live
        if not p.ready
    ]
    ready = sum(1 for p in live if p.ready)
    if ready < desired:
        problems.append(f"{ready} of {desired} desired pods are ready")
    return problems
