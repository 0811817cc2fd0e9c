"""Service descriptions: which Deployment, container, image, canary and routes a rollback acts on.

The services live in `deployments/services.yaml` (or the file named by the
`ROLLBACK_FLOWS_SERVICES` environment variable) and are validated here, so a flow never
hard-codes `rag-api` and a typo fails before anything in the cluster is touched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator

from playbook.config_files import parse_yaml, read_config_text, validated
from playbook.errors import InvalidInputError

SERVICES_ENV = "ROLLBACK_FLOWS_SERVICES"
DEFAULT_SERVICES_FILE = Path(__file__).resolve().parent.parent / "deployments" / "services.yaml"

_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Label = Annotated[str, Field(pattern=_DNS1123_LABEL, max_length=63)]
ObjectName = Annotated[str, Field(pattern=_DNS1123_SUBDOMAIN, max_length=253)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Destination(_Frozen):
    """An Istio route destination: a host and, optionally, a subset of its DestinationRule."""

    host: str = Field(min_length=1)
    subset: str | None = None

    def matches(self, destination: dict[str, object]) -> bool:
        """Whether a VirtualService `destination` points here: same host and same subset.

        A short host (`rag-api`) also matches its qualified form (`rag-api.ns.svc.cluster.local`).
        """
        host = destination.get("host")
        if not isinstance(host, str) or destination.get("subset") != self.subset:
            return False
        short, long_ = sorted((host, self.host), key=len)
        return host == self.host or long_.startswith(short + ".")

    def __str__(self) -> str:
        return f"{self.host}/{self.subset}" if self.subset else self.host


class CanaryConfig(_Frozen):
    """The canary of a service: its Deployment and how the VirtualService routes to it."""

    deployment: ObjectName
    virtual_service: ObjectName
    canary_destination: Destination
    stable_destination: Destination


class RegistryConfig(_Frozen):
    """Where the GitHub packages API lists image tags, and the Secret block with the token."""

    api_url: AnyHttpUrl = AnyHttpUrl("https://api.github.com")
    owner: str = Field(min_length=1)
    owner_type: Literal["org", "user"] = "org"
    package: str = Field(min_length=1)
    token_secret: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "github-token"
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class LogsConfig(_Frozen):
    """Which recent log lines count as errors after a rollback."""

    error_pattern: str = r"(?i)\b(error|exception|fatal|panic|traceback)\b"
    tail_lines: int = Field(default=50, ge=1, le=5000)

    @field_validator("error_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"error_pattern is not a valid regular expression: {exc}") from exc
        return value


class ServiceConfig(_Frozen):
    """One service the playbook can roll back."""

    name: Label
    namespace: Label
    deployment: ObjectName
    container: Label
    image_repository: str = Field(pattern=r"^[a-z0-9.:/_-]+$")
    canary: CanaryConfig | None = None
    registry: RegistryConfig | None = None
    logs: LogsConfig = LogsConfig()
    health_url: AnyHttpUrl | None = None
    version_url: AnyHttpUrl | None = None
    rollout_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    repeat_guard_minutes: float = Field(default=60.0, ge=0, le=24 * 60)
    """After this tool rolls the Deployment back, an undo to "the previous revision" within
    this time is refused (it would restore the version just removed) unless a revision is
    named or forced; 0 turns the guard off."""


class ServicesFile(_Frozen):
    """The whole services file: every service by name, and the default one."""

    default_service: Label
    services: dict[str, ServiceConfig]

    def get(self, name: str | None) -> ServiceConfig:
        """The service called `name` (the default one when None); unknown names fail clearly."""
        wanted = name or self.default_service
        try:
            return self.services[wanted]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise InvalidInputError(
                f"unknown service {wanted!r}; the configured services are: {known}"
            ) from None


def parse_services(text: str, source: str = "services file") -> ServicesFile:
    """Validate the YAML text of a services file; invalid content raises InvalidInputError."""
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise InvalidInputError(f"{source} must be a mapping with a `services` mapping")
    services = {name: {"name": name, **(body or {})} for name, body in raw["services"].items()}
    parsed = validated(ServicesFile, {**raw, "services": services}, source)
    if parsed.default_service not in parsed.services:
        raise InvalidInputError(
            f"{source}: default_service {parsed.default_service!r} is not among its services"
        )
    return parsed


def load_services(path: Path | None = None) -> ServicesFile:
    """Read and validate the services file (`ROLLBACK_FLOWS_SERVICES` or the default one)."""
    text, source = read_config_text(path, SERVICES_ENV, DEFAULT_SERVICES_FILE, "services file")
    return parse_services(text, source)


def load_service(name: str | None, namespace: str | None = None) -> ServiceConfig:
    """The configured service `name`, with its namespace overridden when one is given."""
    service = load_services().get(name)
    if namespace is None:
        return service
    try:
        return ServiceConfig.model_validate({**service.model_dump(), "namespace": namespace})
    except ValidationError as exc:
        raise InvalidInputError(f"invalid namespace {namespace!r}: {exc}") from exc
