"""The playbook's verification checklist, as pure checks over observed facts.

| Check | Expected |  pod count >= 3, all pods ready, /health 200, /version equals the expected
version, error rate and P99 within their limits. Each check gives PASS, FAIL or NO DATA (a
fact that could not be observed, which never passes); a failing critical check fails the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from playbook.rollout import PodState
from playbook.thresholds import Indicator


@dataclass(frozen=True)
class ProbeResult:
    """One HTTP probe: what was asked, the status, how long it took, the start of the body."""

    url: str
    status_code: int
    latency_seconds: float
    body_excerpt: str
    version: str | None = None

    @property
    def ok(self) -> bool:
        """True for 200."""
        return self.status_code == 200


class Status(StrEnum):
    """The outcome of one check."""

    PASS = "PASS"
    FAIL = "FAIL"
    NO_DATA = "NO DATA"


@dataclass(frozen=True)
class CheckResult:
    """One row of the verification checklist."""

    name: str
    check: str
    expected: str
    observed: str
    status: Status
    critical: bool

    @property
    def passed(self) -> bool:
        """Only PASS passes; NO DATA does not."""
        return self.status is Status.PASS

    def row(self) -> dict[str, str]:
        """A table-artifact row."""
        return {
            "check": self.check,
            "expected": self.expected,
            "observed": self.observed,
            "result": self.status.value,
            "critical": "yes" if self.critical else "no",
        }


@dataclass(frozen=True)
class Checklist:
    """All checks of one verification."""

    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no critical check failed or lacked data."""
        return not self.critical_failures

    @property
    def critical_failures(self) -> tuple[CheckResult, ...]:
        """The critical checks that did not pass."""
        return tuple(r for r in self.results if r.critical and not r.passed)

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        """The non-critical checks that did not pass."""
        return tuple(r for r in self.results if not r.critical and not r.passed)

    def rows(self) -> list[dict[str, str]]:
        """Table-artifact rows."""
        return [r.row() for r in self.results]

    def summary(self) -> str:
        """One line: passed, or which checks failed and what was observed."""
        failed = self.critical_failures
        if not failed:
            extra = f" ({len(self.warnings)} non-critical failed)" if self.warnings else ""
            return f"all critical checks passed{extra}"
        return "failed: " + "; ".join(
            f"{r.check} {r.observed} (expected {r.expected})" for r in failed
        )


def _result(
    name: str, check: str, expected: str, observed: str, ok: bool | None, critical: set[str]
) -> CheckResult:
    status = Status.NO_DATA if ok is None else Status.PASS if ok else Status.FAIL
    return CheckResult(name, check, expected, observed, status, name in critical)


def check_pods(
    pods: Iterable[PodState] | str, min_pods: int, critical: set[str]
) -> tuple[CheckResult, CheckResult]:
    """Pod count >= `min_pods` and every pod ready; a string is why pods could not be read."""
    if isinstance(pods, str):
        return (
            _result("pod_count", "Pod Count", f">= {min_pods}", pods, None, critical),
            _result("pods_ready", "Ready Status", "All Ready", pods, None, critical),
        )
    live = [p for p in pods if not p.deleting]
    running = [p for p in live if p.phase == "Running"]
    ready = [p for p in live if p.ready]
    unready = [p for p in live if not p.ready]
    count = _result(
        "pod_count",
        "Pod Count",
        f">= {min_pods}",
        f"{len(running)} running of {len(live)}",
        len(running) >= min_pods,
        critical,
    )
    if not live:
        observed = "no pods"
    elif unready:
        observed = f"{len(ready)}/{len(live)} ready; not ready: " + ", ".join(
            f"{p.name} ({', '.join(p.waiting_reasons) or p.phase})" for p in unready
        )
    else:
        observed = f"{len(ready)}/{len(live)} ready"
    ready_check = _result(
        "pods_ready", "Ready Status", "All Ready", observed, bool(live) and not unready, critical
    )
    return count, ready_check


def check_health(probe: ProbeResult | str, critical: set[str]) -> CheckResult:
    """/health answers 200; a string is why it could not be probed."""
    if isinstance(probe, str):
        return _result("health", "Health Check", "200 OK", probe, None, critical)
    observed = f"{probe.status_code} in {probe.latency_seconds * 1000:.0f} ms"
    if not probe.ok and probe.body_excerpt:
        observed += f": {probe.body_excerpt[:80]}"
    return _result("health", "Health Check", "200 OK", observed, probe.ok, critical)


def same_version(observed: str, expected: str) -> bool:
    """Versions are equal, a leading `v` aside (`v1.2.3` equals `1.2.3`)."""
    return observed.strip().removeprefix("v") == expected.strip().removeprefix("v")


def check_version(probe: ProbeResult | str, expected: str, critical: set[str]) -> CheckResult:
    """/version shows the expected version; a string is why it could not be probed."""
    if isinstance(probe, str):
        return _result("version", "Version", expected, probe, None, critical)
    if not probe.ok or probe.version is None:
        observed = f"HTTP {probe.status_code}, no version: {probe.body_excerpt[:80]}"
        return _result("version", "Version", expected, observed, None, critical)
    ok = same_version(probe.version, expected)
    return _result("version", "Version", expected, probe.version, ok, critical)


def check_indicator(
    indicator: Indicator, limit: float, value: float | str | None, critical: set[str]
) -> CheckResult:
    """The indicator does not breach `limit`; None, NaN or an error text is NO DATA."""
    expected = indicator.passing_condition(limit)
    if isinstance(value, str):
        return _result(indicator.name, indicator.title, expected, value, None, critical)
    if value is None or math.isnan(value):
        return _result(indicator.name, indicator.title, expected, "no data", None, critical)
    ok = not indicator.breaches(value, limit)
    return _result(indicator.name, indicator.title, expected, indicator.format(value), ok, critical)


def version_from_body(body: str, field: str = "version") -> str | None:
    """The version in a /version body: JSON `{"version": ...}` or the plain text itself."""
    text = body.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        first = text.splitlines()[0].strip()
        return first if len(first) <= 128 and " " not in first else None
    if isinstance(data, Mapping) and isinstance(data.get(field), str):
        return str(data[field])
    if isinstance(data, str):
        return data
    return None
