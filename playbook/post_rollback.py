"""Settings of post-rollback verification and monitoring, loaded from YAML and validated.

The file is `deployments/post-rollback.yaml` (or the one named by
`ROLLBACK_FLOWS_POST_ROLLBACK`); indicator names in it must exist in the decision matrix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from playbook.config_files import parse_yaml, read_config_text, validated
from playbook.errors import InvalidInputError
from playbook.recovery import RecoveryPolicy
from playbook.thresholds import DecisionMatrix, PromDuration

POST_ROLLBACK_ENV = "ROLLBACK_FLOWS_POST_ROLLBACK"
DEFAULT_POST_ROLLBACK_FILE = (
    Path(__file__).resolve().parent.parent / "deployments" / "post-rollback.yaml"
)

CheckName = Literal["pod_count", "pods_ready", "health", "version", "error_rate", "p99_latency"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProbeSettings(_Frozen):
    """How /health and /version are probed."""

    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    body_excerpt_chars: int = Field(default=200, ge=0, le=4000)


class AfterRollbackSettings(_Frozen):
    """The checklist every rollback flow runs once its change has settled."""

    enabled: bool = True
    settle_seconds: float = Field(default=30.0, ge=1, le=600)
    """Wait this long after the rollout before checking; the error-rate and P99 queries then
    look back over this time only (at most `window`), so the bad release's requests are not
    counted against the version rolled back to."""


class VerificationSettings(_Frozen):
    """The verification checklist: minimum pods, indicator limits, which checks are critical."""

    window: PromDuration = "1m"
    min_pods: int = Field(default=3, ge=1)
    indicators: dict[str, float] = Field(
        default_factory=lambda: {"error_rate": 0.01, "p99_latency": 0.3}
    )
    critical: frozenset[str] = frozenset({"pod_count", "pods_ready", "health", "version"})
    after_rollback: AfterRollbackSettings = AfterRollbackSettings()


class MonitorSettings(_Frozen):
    """The short-term monitoring: which indicators, their recovery policies, the baseline."""

    window: PromDuration = "1m"
    baseline_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    incident_lead_minutes: float = Field(default=15.0, ge=0, le=24 * 60)
    evaluation_delay_seconds: float = Field(default=10.0, ge=0, le=600)
    indicators: dict[str, RecoveryPolicy] = Field(min_length=1)


class FollowUpSettings(_Frozen):
    """The monitor run every successful rollback schedules (post-rollback-monitor/<deployment>)."""

    enabled: bool = True
    duration_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    interval_minutes: float = Field(default=1.0, gt=0, le=60)
    deployment: str = Field(default="default", min_length=1)


class PostRollbackSettings(_Frozen):
    """The whole post-rollback file."""

    probes: ProbeSettings = ProbeSettings()
    verification: VerificationSettings = VerificationSettings()
    monitor: MonitorSettings
    follow_up: FollowUpSettings = FollowUpSettings()

    def check_against(self, matrix: DecisionMatrix, source: str) -> PostRollbackSettings:
        """Fail clearly when an indicator name is not in the decision matrix."""
        names = set(self.verification.indicators) | set(self.monitor.indicators)
        for name in sorted(names):
            try:
                matrix.indicator(name)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{source}: {exc}") from None
        known = {"pod_count", "pods_ready", "health", "version", *self.verification.indicators}
        unknown = set(self.verification.critical) - known
        if unknown:
            raise InvalidInputError(
                f"{source}: verification.critical names unknown checks {sorted(unknown)}; "
                f"known: {sorted(known)}"
            )
        return self


def parse_post_rollback(
    text: str, matrix: DecisionMatrix, source: str = "post-rollback settings"
) -> PostRollbackSettings:
    """Validate the YAML text of the post-rollback settings against the decision matrix."""
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{source} must be a mapping")
    return validated(PostRollbackSettings, raw, source).check_against(matrix, source)


def load_post_rollback(matrix: DecisionMatrix, path: Path | None = None) -> PostRollbackSettings:
    """Read and validate the post-rollback settings (`ROLLBACK_FLOWS_POST_ROLLBACK` or default)."""
    text, source = read_config_text(
        path, POST_ROLLBACK_ENV, DEFAULT_POST_ROLLBACK_FILE, "post-rollback settings"
    )
    return parse_post_rollback(text, matrix, source)
