"""Alertmanager webhook payloads (version 4), validated, and the idempotency key of an alert.

Pure: no I/O. The shapes follow what Alertmanager 0.25 posts (samples in the shared
`reference/` directory): a group of alerts, each with `status`, `labels`, `annotations`,
`startsAt`, `endsAt`, `generatorURL` and `fingerprint`. Fields Alertmanager may add later are
ignored; the fields the receiver acts on are required and checked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=256)]
LabelValue = Annotated[str, Field(max_length=4096)]
Fingerprint = Annotated[str, Field(pattern=r"^[0-9a-f]{1,64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=False)


class Alert(_Model):
    """One alert of a webhook."""

    status: Literal["firing", "resolved"]
    labels: dict[LabelName, LabelValue] = Field(min_length=1)
    annotations: dict[LabelName, LabelValue] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL", max_length=8192)
    fingerprint: Fingerprint

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must carry a time zone (RFC 3339)")
        return value

    @property
    def alertname(self) -> str:
        """The alert's `alertname` label ('' when it has none)."""
        return self.labels.get("alertname", "")


class WebhookPayload(_Model):
    """The body Alertmanager POSTs to a webhook receiver (payload version 4)."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = Field(max_length=1024)
    group_key: str = Field(alias="groupKey", max_length=8192)
    alerts: tuple[Alert, ...] = Field(min_length=1, max_length=1000)
    group_labels: dict[LabelName, LabelValue] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[LabelName, LabelValue] = Field(default_factory=dict, alias="commonLabels")
    external_url: str = Field(default="", alias="externalURL", max_length=8192)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)


class InvalidPayload(ValueError):
    """The body is not an Alertmanager version-4 webhook; the message says why."""


def parse_payload(data: object) -> WebhookPayload:
    """Validate a decoded JSON body as a webhook payload.

    Raises:
        InvalidPayload: with a short reason naming each offending field.
    """
    if not isinstance(data, dict):
        raise InvalidPayload(f"the body must be a JSON object, not {type(data).__name__}")
    try:
        json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except RecursionError:
        raise InvalidPayload("the body is nested too deeply") from None
    except UnicodeEncodeError:
        raise InvalidPayload("the body contains unpaired UTF-16 surrogates") from None
    except ValueError:
        raise InvalidPayload(
            "the body contains NaN or Infinity, which JSON does not allow"
        ) from None
    try:
        return WebhookPayload.model_validate(data)
    except ValidationError as exc:
        raise InvalidPayload(describe_errors(exc)) from None


def describe_errors(exc: ValidationError, limit: int = 5) -> str:
    """A one-line summary of pydantic errors: `field.path: message; ...`."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def idempotency_key(alert: Alert) -> str:
    """The key of one firing of one alert: its fingerprint and its start, normalised to UTC.

    Alertmanager re-sends the same alert (same fingerprint and `startsAt`) on every group
    interval and after restarts; each re-delivery maps to this same key, so it starts one
    flow run. A new firing of the same alert has a new `startsAt`, hence a new key.
    """
    started = alert.starts_at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"alertmanager:{alert.fingerprint}:{started}"
