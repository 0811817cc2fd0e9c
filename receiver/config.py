"""The receiver's configuration: which alerts start which deployment, with which parameters.

Loaded from `deployments/alert-routes.yaml` (or the file named by `ROLLBACK_FLOWS_ALERT_ROUTES`)
and validated here. Routes are tried in order and the first whose `match` fits an alert's
labels wins, as in Alertmanager. A parameter whose value is exactly `{{ labels.NAME }}`,
`{{ annotations.NAME }}` or `{{ alert.starts_at }}` / `{{ alert.fingerprint }}` /
`{{ alert.status }}` takes that value from the alert; an alert without that label does not
match the route, unless the placeholder ends in `| optional` (`{{ labels.cluster | optional }}`):
then the parameter is left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from playbook.config_files import parse_yaml, read_config_text, validated
from playbook.errors import AccessDeniedError
from receiver.alerts import Alert

ROUTES_ENV = "ROLLBACK_FLOWS_ALERT_ROUTES"
DEFAULT_ROUTES_FILE = Path(__file__).resolve().parent.parent / "deployments" / "alert-routes.yaml"

_PLACEHOLDER = re.compile(
    r"^\{\{\s*(labels|annotations|alert)\.([a-zA-Z_][a-zA-Z0-9_]*)\s*(\|\s*optional\s*)?\}\}$"
)
DeploymentName = Annotated[str, Field(pattern=r"^[^/%&<>]+/[^/%&<>]+$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Route(_Frozen):
    """Alerts whose labels equal every `match` entry start `deployment` with `parameters`."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)]
    match: dict[str, str] = Field(min_length=1)
    deployment: DeploymentName
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _names_a_service(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "service" not in value:
            raise ValueError("parameters must name the `service` (a value or a placeholder)")
        return value

    def matches(self, alert: Alert) -> bool:
        """Whether every `match` label equals the alert's and every placeholder resolves."""
        if any(alert.labels.get(k) != v for k, v in self.match.items()):
            return False
        return all(_resolve(value, alert) is not _MISSING for value in self.parameters.values())

    def parameters_for(self, alert: Alert) -> dict[str, Any]:
        """The flow-run parameters for `alert` (call only when `matches(alert)`)."""
        resolved = {name: _resolve(value, alert) for name, value in self.parameters.items()}
        return {name: value for name, value in resolved.items() if value is not _LEFT_OUT}


class ReceiverConfig(_Frozen):
    """The whole routes file."""

    token_secret: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "alert-receiver-token"
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    prefect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Alertmanager gives a delivery at least 10 s (more with a longer group_interval) and
    # retries one that is not answered 2xx; the Prefect client retries a lost connection for
    # up to a minute. Answering 503 before Alertmanager gives up keeps its retry ours.
    answer_within_seconds: float = Field(default=8.0, gt=0, le=120)
    routes: tuple[Route, ...] = Field(min_length=1)

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, value: tuple[Route, ...]) -> tuple[Route, ...]:
        names = [route.name for route in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"route names must be unique; repeated: {', '.join(duplicates)}")
        return value

    def route_for(self, alert: Alert) -> Route | None:
        """The first route that matches `alert`, or None."""
        return next((route for route in self.routes if route.matches(alert)), None)


_MISSING = object()
_LEFT_OUT = object()


def _resolve(value: Any, alert: Alert) -> Any:
    if not isinstance(value, str):
        return value
    found = _PLACEHOLDER.match(value)
    if not found:
        return value
    kind, name, optional = found.groups()
    missing = _LEFT_OUT if optional else _MISSING
    if kind == "alert":
        facts = {
            "starts_at": alert.starts_at.isoformat(),
            "fingerprint": alert.fingerprint,
            "status": alert.status,
        }
        return facts.get(name, missing)
    return (alert.labels if kind == "labels" else alert.annotations).get(name, missing)


def parse_config(text: str, source: str = "alert routes file") -> ReceiverConfig:
    """Validate the YAML text of a routes file; invalid content raises InvalidInputError."""
    return validated(ReceiverConfig, parse_yaml(text, source), source)


def load_config(path: Path | None = None) -> ReceiverConfig:
    """Read and validate the routes file (`ROLLBACK_FLOWS_ALERT_ROUTES` or the default one)."""
    text, source = read_config_text(path, ROUTES_ENV, DEFAULT_ROUTES_FILE, "alert routes file")
    return parse_config(text, source)


def load_token(block_name: str) -> SecretStr:
    """The bearer token stored in the Prefect Secret block `block_name`.

    Raises:
        AccessDeniedError: the block does not exist or is empty.
    """
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block_name).get()  # type: ignore[union-attr]
    except ValueError as exc:
        raise AccessDeniedError(
            f"no receiver token: the Prefect Secret block {block_name!r} does not exist "
            f"(create it with `prefect block create secret` or Secret(value=...).save"
            f"({block_name!r}))"
        ) from exc
    if not isinstance(value, str) or not value.strip():
        raise AccessDeniedError(f"no receiver token: the Secret block {block_name!r} is empty")
    return SecretStr(value.strip())
