"""A fleet rollback: many services rolled back in one incident, one row each. Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetRow:
    """One service's rollback in the fleet: where, from what to what, how it ended."""

    service: str
    environment: str
    namespace: str
    outcome: str
    ok: bool
    seconds: float
    from_version: str | None = None
    to_version: str | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class FleetReport:
    """Every service's row, in the order they were asked for."""

    rows: tuple[FleetRow, ...]
    dry_run: bool
    total_seconds: float

    @property
    def failed(self) -> tuple[FleetRow, ...]:
        """The rows whose rollback failed or was refused."""
        return tuple(r for r in self.rows if not r.ok)

    def summary(self) -> str:
        """One line: how many were rolled back (or planned), and which failed."""
        done = len(self.rows) - len(self.failed)
        verb = "planned" if self.dry_run else "rolled back"
        line = f"{done} of {len(self.rows)} services {verb} in {self.total_seconds:.1f} s"
        if self.failed:
            line += "; failed: " + ", ".join(f"{r.service} ({r.environment})" for r in self.failed)
        return line

    def to_markdown(self) -> str:
        """The fleet's summary table, as the run's artifact."""
        title = "Fleet rollback plan" if self.dry_run else "Fleet rollback"
        lines = [
            f"# {title}: {self.summary()}",
            "",
            "| service | environment | from | to | outcome | seconds |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            outcome = _cell(r.outcome if r.ok else f"FAILED: {r.outcome}")
            lines.append(
                f"| {r.service} | {r.environment} (`{r.namespace}`) | `{r.from_version or '?'}` "
                f"| `{r.to_version or '?'}` | {outcome} | {r.seconds:.1f} |"
            )
        return "\n".join(lines)


def _cell(text: str, limit: int = 300) -> str:
    """Text that fits in one markdown table cell."""
    flat = " ".join(text.replace("|", "\\|").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
