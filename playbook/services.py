"""Service descriptions: which Deployment, container, image, canary and routes a rollback acts on.

The services live in `deployments/services.yaml` (or the file named by the
`ROLLBACK_FLOWS_SERVICES` environment variable) and are validated here, so a flow never
hard-codes `rag-api` and a typo fails before anything in the cluster is touched.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

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


PromLabel = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
"""A Prometheus label name."""

_NAMESPACE = "{namespace}"
_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)

VERSION_LABEL = "version"
"""The label of the service's request series that holds the version (image tag) serving them."""


class CanaryConfig(_Frozen):
    """The canary of a service: its Deployment, how the VirtualService routes to it, its own
    `/health` and the labels of its own metrics series."""

    deployment: ObjectName
    virtual_service: ObjectName
    canary_destination: Destination
    stable_destination: Destination
    health_url: str | None = None
    """The canary's own `/health`: a Service selecting the canary pods only (as Argo Rollouts'
    canaryService), never the stable one, which answers for whichever pods it reaches.
    `{namespace}` in it is the environment's namespace."""
    series_labels: dict[PromLabel, str] = Field(default_factory=lambda: {"track": "canary"})
    """The labels only the canary's series carry. The guard's queries select them and
    `version="<the version the canary Deployment runs>"` beside the service."""

    @field_validator("health_url")
    @classmethod
    def _an_http_url(cls, url: str | None) -> str | None:
        if url is not None:
            _HTTP_URL.validate_python(url.replace(_NAMESPACE, "namespace"))
        return url

    @field_validator("series_labels")
    @classmethod
    def _not_the_guards_own(cls, labels: dict[str, str]) -> dict[str, str]:
        taken = sorted({"service", VERSION_LABEL} & labels.keys())
        if taken:
            raise ValueError(f"series_labels must not set {taken}: the guard sets them")
        if not labels:
            raise ValueError(
                "series_labels must name at least one label only the canary's series carry "
                "(e.g. track: canary): the version alone would also select stable pods that "
                "run it"
            )
        return labels

    def health_url_in(self, namespace: str) -> str | None:
        """The canary's `/health` URL in `namespace`."""
        return self.health_url.replace(_NAMESPACE, namespace) if self.health_url else None

    def own_series(self, version: str | None) -> dict[str, str]:
        """The matchers that select the canary's own series while it runs `version` (an
        image without a tag: its series labels alone)."""
        if version is None:
            return dict(self.series_labels)
        return {**self.series_labels, VERSION_LABEL: version}


class RegistryConfig(_Frozen):
    """Where the GitHub packages API lists image tags, and the Secret block with the token."""

    api_url: AnyHttpUrl = AnyHttpUrl("https://api.github.com")
    owner: str = Field(min_length=1)
    owner_type: Literal["org", "user"] = "org"
    package: str = Field(min_length=1)
    token_secret: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "github-token"
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class ActionsConfig(_Frozen):
    """Procedure 1: the GitHub Actions workflow that rolls the service back, and how to follow it."""

    api_url: AnyHttpUrl = AnyHttpUrl("https://api.github.com")
    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    """`owner/repo` holding the workflow."""
    workflow: str = Field(default="rollback.yml", pattern=r"^([A-Za-z0-9_.-]+\.ya?ml|[0-9]+)$")
    """The workflow's file name (or its numeric id)."""
    ref: str = Field(default="main", min_length=1)
    """The branch or tag whose version of the workflow runs."""
    token_secret: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "github-actions-token"
    """The Prefect Secret block with a token allowed to dispatch it (actions: write)."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    """Per request."""
    appear_timeout_seconds: float = Field(default=120.0, gt=0, le=1800)
    """How long the dispatched run may take to show up in the runs list."""
    run_timeout_seconds: float = Field(default=1800.0, gt=0, le=6 * 3600)
    """How long the run may take to complete."""
    poll_seconds: float = Field(default=5.0, gt=0, le=60)


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


class Environment(_Frozen):
    """Where one environment of a service runs: its namespace and, for another cluster, how
    to reach that cluster and its Prometheus."""

    namespace: Label
    context: str | None = Field(default=None, min_length=1)
    """The kubeconfig context of this environment's cluster (the current context when None)."""
    cluster: str | None = Field(default=None, min_length=1)
    """The `cluster` label alerts from this environment carry, where they carry one."""
    prometheus_url: AnyHttpUrl | None = None
    """This environment's Prometheus (`$ROLLBACK_FLOWS_PROMETHEUS_URL` when None)."""
    skip_confirmation: bool = True
    """Whether a person's rollback here goes ahead without asking (False: it publishes the
    plan and waits for an approval first). Automatic rollbacks never ask."""
    approval_timeout_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    """How long a rollback waits for the approval before it ends with nothing changed."""

    def describe(self, name: str) -> str:
        """`staging (namespace staging, cluster eu-2)`."""
        where = [f"namespace {self.namespace}"]
        if self.cluster:
            where.append(f"cluster {self.cluster}")
        if self.context:
            where.append(f"context {self.context}")
        return f"{name} ({', '.join(where)})"


class ServiceConfig(_Frozen):
    """One service the playbook can roll back, in one of its environments.

    In the file a service lists its `environments` (production, staging, ...), or gives a
    single `namespace`, which is then its only environment. Loaded, it is resolved to one
    environment (`environment`, the default one unless chosen): `namespace` is that
    environment's namespace.
    """

    name: Label
    namespace: Label
    environments: dict[Label, Environment]
    default_environment: Label
    environment: Label
    deployment: ObjectName
    container: Label
    image_repository: str = Field(pattern=r"^[a-z0-9.:/_-]+$")
    canary: CanaryConfig | None = None
    registry: RegistryConfig | None = None
    actions: ActionsConfig | None = None
    logs: LogsConfig = LogsConfig()
    health_url: AnyHttpUrl | None = None
    version_url: AnyHttpUrl | None = None
    rollout_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    argocd_namespace: Label = "argocd"
    """Where Argo CD keeps its Applications (for a Deployment Argo CD tracks by label)."""
    repeat_guard_minutes: float = Field(default=60.0, ge=0, le=24 * 60)
    """After this tool rolls the Deployment back, an undo to "the previous revision" within
    this time is refused (it would restore the version just removed) unless a revision is
    named or forced; 0 turns the guard off."""
    known_good_minutes: float = Field(default=30.0, gt=0, le=30 * 24 * 60)
    """How long a revision must have been current (with its version's error rate and P99
    under critical all along) to be known good: where alert-started rollbacks go."""

    @model_validator(mode="before")
    @classmethod
    def _one_environment(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        environments = raw.get("environments")
        namespace = raw.get("namespace")
        if not environments:
            if namespace is None:
                raise ValueError("a service needs `environments` (or a single `namespace`)")
            environments = {str(namespace): {"namespace": namespace}}
        if not isinstance(environments, dict):
            raise ValueError("`environments` must map names to {namespace, context, ...}")
        default = raw.get("default_environment") or next(iter(environments))
        if default not in environments:
            raise ValueError(
                f"default_environment {default!r} is not among the environments "
                f"({', '.join(environments)})"
            )
        chosen = raw.get("environment") or default
        if chosen not in environments:
            raise ValueError(f"environment {chosen!r} is not among {', '.join(environments)}")
        body = environments[chosen]
        expected = (
            body.namespace if isinstance(body, Environment) else (body or {}).get("namespace")
        )
        if namespace is not None and raw.get("environments") and namespace != expected:
            raise ValueError(
                f"namespace {namespace!r} disagrees with environment {chosen!r} "
                f"(namespace {expected!r}); give the namespaces in `environments` only"
            )
        return {
            **raw,
            "environments": environments,
            "default_environment": default,
            "environment": chosen,
            "namespace": expected,
        }

    @property
    def env(self) -> Environment:
        """The environment this configuration acts in."""
        return self.environments[self.environment]

    @property
    def kube_context(self) -> str | None:
        """The kubeconfig context of this environment (the current one when None)."""
        return self.env.context

    @property
    def prometheus_url(self) -> str | None:
        """This environment's Prometheus, if it has its own."""
        return str(self.env.prometheus_url).rstrip("/") if self.env.prometheus_url else None

    def in_environment(self, name: str) -> ServiceConfig:
        """This service in environment `name`; unknown names fail clearly."""
        if name not in self.environments:
            raise InvalidInputError(
                f"service {self.name} has no environment {name!r}; its environments: "
                f"{self.known_environments()}"
            )
        env = self.environments[name]
        return self.model_copy(update={"environment": name, "namespace": env.namespace})

    def environment_for(self, namespace: str | None, cluster: str | None = None) -> str:
        """The one environment with this namespace (and `cluster` label, when given).

        Raises:
            InvalidInputError: no environment, or several, match; nothing is chosen by default.
        """
        matches = [
            name
            for name, env in self.environments.items()
            if (namespace is None or env.namespace == namespace)
            and (cluster is None or env.cluster == cluster)
        ]
        wanted = " and ".join(
            part
            for part in (
                f"namespace {namespace!r}" if namespace is not None else "",
                f"cluster {cluster!r}" if cluster is not None else "",
            )
            if part
        )
        if not matches:
            raise InvalidInputError(
                f"service {self.name} has no environment with {wanted or 'no namespace'}; "
                f"its environments: {self.known_environments()}"
            )
        if len(matches) > 1:
            raise InvalidInputError(
                f"{wanted} matches several environments of service {self.name} "
                f"({', '.join(matches)}); name the environment (or the cluster)"
            )
        return matches[0]

    def known_environments(self) -> str:
        """Every environment with its namespace and cluster, for messages."""
        return ", ".join(env.describe(name) for name, env in self.environments.items())


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


def load_service(
    name: str | None,
    namespace: str | None = None,
    environment: str | None = None,
    cluster: str | None = None,
) -> ServiceConfig:
    """The configured service `name` in one of its environments.

    The environment is `environment`, else the one whose namespace (and `cluster` label) is
    given, else the service's default one. A namespace or cluster that is no environment of
    the service fails: a run acts only where the services file says the service runs.

    Raises:
        InvalidInputError: unknown service or environment, or no single environment matches.
    """
    service = load_services().get(name)
    if environment is not None:
        chosen = service.in_environment(environment)
        if namespace is not None and chosen.namespace != namespace:
            raise InvalidInputError(
                f"environment {environment!r} of {service.name} is namespace "
                f"{chosen.namespace!r}, not {namespace!r}"
            )
        if cluster is not None and chosen.env.cluster != cluster:
            raise InvalidInputError(
                f"environment {environment!r} of {service.name} is not cluster {cluster!r}"
            )
        return chosen
    if namespace is None and cluster is None:
        return service
    return service.in_environment(service.environment_for(namespace, cluster))
