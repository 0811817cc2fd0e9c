"""The rag-api simulator: a stand-in for the real service in the local stack.

It serves `/health`, `/version` and `/metrics` on loopback and generates its own steady
traffic, recorded as the real service's metrics would be. Its version is the tag of the image
that a Kubernetes Deployment's pod template currently asks for, and its behaviour (error share,
latency, health, RAG quality) follows that version as described in `stack/simulator.yaml`, so a
bad release deployed to the local cluster shows up in Prometheus and a rollback clears it.

Its request counter and latency histogram carry the `version` being served and the `track`
(`stable` unless told, e.g. `canary`), as a real service's own metrics would, so each
version's error rate and P99 can be read from its own series, long after it stopped serving.
The local stack runs a second one as the canary (`--track canary`, following the canary
Deployment, `--idle-without-pods`: no requests while that Deployment is absent or scaled
to 0, and a twentieth of stable's rate, as a canary at about 5 % weight).

The core (`Simulator`) takes any "current image" source, so tests drive it with a variable;
the command line wires it to a Deployment:

    python -m stack.simulator --port 18000 --kubeconfig KUBECONFIG --namespace production \
        --deployment rag-api --container rag-api
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import urllib3
import yaml
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stack.processes import StackError, ensure_port_free
from stack.prometheus import LATENCY_BUCKETS, LATENCY_METRIC, REQUESTS_METRIC

LOG = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path(__file__).with_name("simulator.yaml")
LOOPBACK = "127.0.0.1"
UNKNOWN_VERSION = "unknown"
DEFAULT_TRACK = "stable"
TRAFFIC_TICK_SECONDS = 0.1
KUBERNETES_TIMEOUT_SECONDS = 2.0
_GOLDEN_RATIO_FRACTION = (math.sqrt(5.0) - 1.0) / 2.0

ContainerLog = Callable[[str, str], None]
"""Writes one line of the service's own log, with its level (INFO, ERROR)."""


class CriLogFile:
    """The service's log in the CRI format kubelets keep (`<time> stdout F <line>`).

    KWOK serves this file as the logs of the simulated rag-api pods (a ClusterLogs rule of
    the local cluster), so `kubectl logs -l app=rag-api` shows what the service logs.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def __call__(self, level: str, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock:
            self._file.write(f"{stamp} stdout F {stamp} {level} {message}\n")


ImageSource = Callable[[], str | None]
"""Returns the image the service should run now, or None when there is nothing deployed.

Raises `ImageSourceError` when it cannot tell (the simulator then keeps its version)."""


class SimulatorConfigError(ValueError):
    """The behaviour file is missing, not YAML, or not a valid behaviour configuration."""


class ImageSourceError(RuntimeError):
    """The current image could not be read (API unreachable, container missing, ...)."""


Share = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]


class Behaviour(BaseModel):
    """How the service behaves while it runs one version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_ratio: Share = 0.0
    latency_seconds: tuple[Seconds, Seconds] = (0.02, 0.08)
    slow_share: Share = 0.0
    slow_latency_seconds: tuple[Seconds, Seconds] = (0.5, 1.0)
    healthy: bool = True
    ndcg: Share = 0.82

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> Behaviour:
        for name in ("latency_seconds", "slow_latency_seconds"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low} is above high {high}")
        return self


class VersionRule(BaseModel):
    """A behaviour for the image tags matching a glob; it overrides only the fields it sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(min_length=1)
    behaviour: Behaviour

    def matches(self, tag: str) -> bool:
        """Whether `tag` fits this rule's glob (an exact tag matches only itself)."""
        return fnmatch.fnmatchcase(tag, self.match)

    def apply_to(self, default: Behaviour) -> Behaviour:
        """`default` with the fields this rule sets replaced (each field is valid alone)."""
        overrides = {
            name: getattr(self.behaviour, name) for name in self.behaviour.model_fields_set
        }
        return default.model_copy(update=overrides)


class SimulatorConfig(BaseModel):
    """The default behaviour and the per-version rules, first match wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Behaviour = Behaviour()
    versions: tuple[VersionRule, ...] = ()

    def behaviour_for(self, tag: str | None) -> Behaviour:
        """The behaviour of an image tag; the default one for None (nothing deployed)."""
        if tag is not None:
            for rule in self.versions:
                if rule.matches(tag):
                    return rule.apply_to(self.default)
        return self.default


def load_config(path: Path = DEFAULT_CONFIG_PATH) -> SimulatorConfig:
    """Read and validate a behaviour file; `SimulatorConfigError` names what is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SimulatorConfigError(f"cannot read simulator config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SimulatorConfigError(f"simulator config {path} is not valid YAML: {exc}") from exc
    try:
        return SimulatorConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '<top>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise SimulatorConfigError(f"invalid simulator config {path}: {problems}") from exc


def image_tag(image: str) -> str:
    """The tag of an image reference (`ghcr.io/o/rag-api:v1.2.3` → `v1.2.3`).

    A reference by digest only gives the digest; one with neither tag nor digest is `latest`.
    """
    name, _, digest = image.partition("@")
    last_part = name.rsplit("/", 1)[-1]
    if ":" in last_part:
        return last_part.split(":", 1)[1]
    return digest or "latest"


def kubernetes_image_source(
    kubeconfig: Path,
    namespace: str,
    deployment: str,
    container: str,
    *,
    scaled_to_zero_is_undeployed: bool = False,
) -> ImageSource:
    """An image source reading a Deployment's pod template image for one container (None
    while it does not exist, or, if asked, while it is scaled to 0)."""
    configuration = kube_client.Configuration()
    try:
        kube_config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    except (ConfigException, OSError) as exc:
        raise ImageSourceError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc
    configuration.retries = 0  # polling is the retry; urllib3's would only add log noise
    api = kube_client.AppsV1Api(kube_client.ApiClient(configuration))
    where = f"deployment {namespace}/{deployment}"

    def current_image() -> str | None:
        try:
            found = api.read_namespaced_deployment(
                deployment, namespace, _request_timeout=KUBERNETES_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            if exc.status == HTTPStatus.NOT_FOUND:
                return None
            raise ImageSourceError(f"reading {where}: HTTP {exc.status} {exc.reason}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ImageSourceError(f"reading {where}: {exc}") from exc
        if scaled_to_zero_is_undeployed and not found.spec.replicas:
            return None
        containers = found.spec.template.spec.containers
        for candidate in containers:
            if candidate.name == container:
                return str(candidate.image)
        names = ", ".join(c.name for c in containers)
        raise ImageSourceError(f"{where} has no container {container!r} (it has: {names})")

    return current_image


@dataclass(frozen=True)
class RequestOutcome:
    """One simulated request as it was recorded."""

    code: int
    duration_seconds: float


@dataclass(frozen=True)
class _Serving:
    image: str | None
    version: str
    behaviour: Behaviour


class Simulator:
    """The simulated service: its metrics, its version following the image source, its own
    traffic, and (once started) its HTTP endpoints."""

    def __init__(
        self,
        config: SimulatorConfig,
        image_source: ImageSource,
        requests_per_second: float = 20.0,
        poll_interval_seconds: float = 0.5,
        container_log: ContainerLog | None = None,
        track: str = DEFAULT_TRACK,
        idle_while_undeployed: bool = False,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be > 0, got {requests_per_second}")
        self._config = config
        self._image_source = image_source
        self._requests_per_second = requests_per_second
        self._poll_interval_seconds = poll_interval_seconds
        self._log = container_log or (lambda level, message: None)
        self._track = track
        self._idle_while_undeployed = idle_while_undeployed
        self._registry = CollectorRegistry()
        self._requests = Counter(
            REQUESTS_METRIC.removesuffix("_total"),
            "Requests served, by status code, version and track.",
            ["code", "version", "track"],
            registry=self._registry,
        )
        self._duration = Histogram(
            LATENCY_METRIC,
            "Duration of served requests, by version and track.",
            ["version", "track"],
            buckets=LATENCY_BUCKETS,
            registry=self._registry,
        )
        self._ndcg = Gauge("rag_quality_ndcg", "Retrieval quality (NDCG).", registry=self._registry)
        self._healthy = Gauge(
            "rag_healthy", "1 while /health answers healthy, else 0.", registry=self._registry
        )
        self._build_info = Gauge(
            "rag_build_info",
            "The version being served (value 1).",
            ["version"],
            registry=self._registry,
        )
        self._lock = threading.Lock()
        self._served = 0
        self._serving = _Serving(None, UNKNOWN_VERSION, config.default)
        self._followed_once = False
        self._last_source_error = ""
        self._show(self._serving, previous=None)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def version(self) -> str:
        """The version being served: the image tag, or "unknown" when nothing is deployed."""
        return self._serving.version

    def refresh_version(self) -> None:
        """Ask the image source once and switch version if the image changed."""
        try:
            image = self._image_source()
        except ImageSourceError as exc:
            if str(exc) != self._last_source_error:
                LOG.warning("cannot read the current image, keeping %s: %s", self.version, exc)
                self._last_source_error = str(exc)
            return
        self._last_source_error = ""
        if self._followed_once and image == self._serving.image:
            return
        self._followed_once = True
        self._switch(image)

    def serve_request(self) -> RequestOutcome:
        """Simulate one request of the current version and record it in the metrics."""
        with self._lock:
            index = self._served
            self._served += 1
            serving = self._serving
        behaviour = serving.behaviour
        failed = _takes_turn(index, behaviour.error_ratio)
        slow = _takes_turn(index, behaviour.slow_share)
        low, high = behaviour.slow_latency_seconds if slow else behaviour.latency_seconds
        duration = low + (high - low) * _spread(index)
        code = HTTPStatus.INTERNAL_SERVER_ERROR if failed else HTTPStatus.OK
        if failed:
            self._log(
                "ERROR",
                f"POST /v1/query 500 in {duration * 1000:.0f} ms: retriever raised "
                f"TimeoutError (version {serving.version})",
            )
        self._requests.labels(str(code.value), serving.version, self._track).inc()
        self._duration.labels(serving.version, self._track).observe(duration)
        return RequestOutcome(code.value, duration)

    def health(self) -> tuple[HTTPStatus, dict[str, str]]:
        """The answer of GET /health."""
        serving = self._serving
        if serving.behaviour.healthy:
            return HTTPStatus.OK, {"status": "healthy", "version": serving.version}
        return HTTPStatus.SERVICE_UNAVAILABLE, {
            "status": "unhealthy",
            "version": serving.version,
            "reason": f"version {serving.version} is configured unhealthy",
        }

    def metrics(self) -> bytes:
        """The answer of GET /metrics (Prometheus text format)."""
        return generate_latest(self._registry)

    def start(self, port: int = 0) -> int:
        """Serve HTTP on 127.0.0.1:`port` (0: any free port), follow the image, generate
        traffic; return the port."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self.refresh_version()
        self._stop.clear()
        self._server = ThreadingHTTPServer((LOOPBACK, port), _handler_for(self))
        self._server.daemon_threads = True
        workers: list[tuple[str, Callable[[], None]]] = [
            ("http", self._server.serve_forever),
            ("follow-image", self._follow_image),
            ("traffic", self._generate_traffic),
        ]
        self._threads = [
            threading.Thread(target=target, name=f"simulator-{name}", daemon=True)
            for name, target in workers
        ]
        for thread in self._threads:
            thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Stop serving and the background threads; a stopped simulator can start again."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=KUBERNETES_TIMEOUT_SECONDS + 1.0)
        self._threads = []

    def _switch(self, image: str | None) -> None:
        version = UNKNOWN_VERSION if image is None else image_tag(image)
        serving = _Serving(
            image, version, self._config.behaviour_for(None if image is None else version)
        )
        with self._lock:
            previous, self._serving = self._serving, serving
        self._show(serving, previous)
        if image is None:
            LOG.warning(
                "no deployment found: serving version %s with the default behaviour", version
            )
        else:
            self._log("INFO", f"rag-api {version} started (image {image})")
            LOG.info(
                "version %s -> %s (image %s): %s",
                previous.version,
                version,
                image,
                serving.behaviour.model_dump(),
            )

    def _show(self, serving: _Serving, previous: _Serving | None) -> None:
        self._ndcg.set(serving.behaviour.ndcg)
        self._healthy.set(1 if serving.behaviour.healthy else 0)
        if previous is not None and previous.version != serving.version:
            self._build_info.remove(previous.version)
        self._build_info.labels(version=serving.version).set(1)
        # so that error-ratio queries of this version never meet an empty vector
        for code in ("200", "500"):
            self._requests.labels(code, serving.version, self._track)
        self._duration.labels(serving.version, self._track)

    def _follow_image(self) -> None:
        while not self._stop.wait(self._poll_interval_seconds):
            self.refresh_version()

    def _generate_traffic(self) -> None:
        started = time.monotonic()
        served = 0
        while not self._stop.wait(TRAFFIC_TICK_SECONDS):
            due = int((time.monotonic() - started) * self._requests_per_second)
            if not (self._idle_while_undeployed and self._serving.image is None):
                for _ in range(due - served):
                    self.serve_request()
            served = due


def _takes_turn(index: int, share: float) -> bool:
    """Whether request `index` is one of an evenly spread `share` of all requests."""
    return math.floor((index + 1) * share) > math.floor(index * share)


def _spread(index: int) -> float:
    """A well-spread value in [0, 1) for request `index` (golden-ratio sequence)."""
    return (index * _GOLDEN_RATIO_FRACTION) % 1.0


def _handler_for(simulator: Simulator) -> type[BaseHTTPRequestHandler]:
    def metrics() -> tuple[HTTPStatus, str, bytes]:
        return HTTPStatus.OK, CONTENT_TYPE_LATEST, simulator.metrics()

    def health() -> tuple[HTTPStatus, str, bytes]:
        status, body = simulator.health()
        return status, "application/json", _json(body)

    def version() -> tuple[HTTPStatus, str, bytes]:
        return HTTPStatus.OK, "application/json", _json({"version": simulator.version})

    routes: dict[str, Callable[[], tuple[HTTPStatus, str, bytes]]] = {
        "/metrics": metrics,
        "/health": health,
        "/version": version,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                status, content_type, body = (
                    HTTPStatus.NOT_FOUND,
                    "application/json",
                    _json({"error": "not found"}),
                )
            else:
                status, content_type, body = route()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            LOG.debug("%s " + format, self.address_string(), *args)

    return Handler


def _json(body: dict[str, str]) -> bytes:
    return json.dumps(body).encode()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stack.simulator",
        description="The rag-api simulator; its version follows a Deployment's image.",
    )
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--deployment", default="rag-api")
    parser.add_argument("--container", default="rag-api")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    parser.add_argument("--rps", type=float, default=20.0, help="simulated requests per second")
    parser.add_argument(
        "--track",
        default=DEFAULT_TRACK,
        help="the `track` label of its request metrics (stable, canary)",
    )
    parser.add_argument(
        "--idle-without-pods",
        action="store_true",
        help="serve no requests while the Deployment is absent or scaled to 0 (a canary)",
    )
    parser.add_argument(
        "--container-log",
        type=Path,
        help="write the service's own log here in CRI format (served by KWOK as pod logs)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
        source = kubernetes_image_source(
            args.kubeconfig,
            args.namespace,
            args.deployment,
            args.container,
            scaled_to_zero_is_undeployed=args.idle_without_pods,
        )
        ensure_port_free(args.port, "the rag-api simulator")
    except (SimulatorConfigError, ImageSourceError, StackError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    container_log = CriLogFile(args.container_log) if args.container_log else None
    simulator = Simulator(
        config,
        source,
        requests_per_second=args.rps,
        container_log=container_log,
        track=args.track,
        idle_while_undeployed=args.idle_without_pods,
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    port = simulator.start(args.port)
    LOG.info(
        "rag-api simulator on http://%s:%d following %s/%s container %s, version %s",
        LOOPBACK,
        port,
        args.namespace,
        args.deployment,
        args.container,
        simulator.version,
    )
    while not stopping.wait(1.0):
        pass
    simulator.stop()
    LOG.info("rag-api simulator stopped")


if __name__ == "__main__":
    main()
