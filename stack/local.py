"""The whole local stack as one unit: start it, find it running, tear it down.

A stack has a name; its state (ports, pids, kubeconfig, logs, data) lives in
`.stack/<name>/`. `up` starts, in order: the Kubernetes cluster (kwokctl), the rag-api
simulator following the `rag-api` Deployment of one namespace and, beside it, the canary's
(`--track canary`, following `rag-api-canary` there, idle while it has no pods),
Alertmanager, Prometheus (after an optional backfill) and, if asked, a Prefect server with
its worker and the alert receiver (Alertmanager then delivers to it, with a bearer token).
PostgreSQL and the Prefect server start beside the cluster; the worker and the receiver
beside the deployment of prefect.yaml (29.8 s for the whole stack with Prefect, was 42.6 s
one step after another). A failure at any step tears down what was started and names the
step. `up` on a running stack reuses it; a stack left half-started by a crash is torn down
and started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from playbook.services import load_services
from playbook.thresholds import load_decision_matrix
from stack import prometheus
from stack.build import build_all
from stack.cluster import Cluster, PodLogs
from stack.config import REPO_DIR, Ports, state_root
from stack.postgres import database_url, start_postgres
from stack.prefect_server import start_prefect_server, start_prefect_services
from stack.prefect_worker import (
    create_work_pool,
    deploy_all,
    plain_http_client_settings,
    start_worker,
)
from stack.processes import (
    StackError,
    alive,
    ensure_port_free,
    free_port,
    http_ok,
    start,
    stop,
    wait_until,
)
from stack.redis import redis_settings, start_redis

# Where Alertmanager sends alerts when no receiver is configured: the discard port, so that
# alerts are still evaluated and visible in Alertmanager's UI.
NO_WEBHOOK = "http://127.0.0.1:9/alerts"
KNOWN_GOOD_SECONDS = 6.0
"""How long a revision must have been current to be known good, in the stack's services."""
# The services the flows know, as shipped; the stack's copy points them at the simulator.
SERVICES_FILE = REPO_DIR / "deployments" / "services.yaml"
# How long an alert condition must hold before it fires, in the local stack, and the window
# of every indicator in its alert rules (the shipped rules: 2m, each indicator's own window).
ALERT_FOR = "3s"
ALERT_WINDOW = prometheus.STACK_WINDOW
# The service the simulators stand in for, and their requests per second: the canary's are
# a twentieth of stable's, as a canary at about 5 % weight.
SIMULATED_SERVICE = "rag-api"
STABLE_RPS = 20.0
CANARY_RPS = 1.0


@dataclass
class StackState:
    """What a running stack is made of; saved as `state.json` while it runs."""

    name: str
    kubeconfig: str
    ports: Ports
    simulator_namespace: str
    webhook_url: str | None
    pids: dict[str, int] = field(default_factory=dict)
    complete: bool = False

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.simulator}"

    @property
    def canary_url(self) -> str:
        """The canary's simulator (the services file's canary health_url is its /health)."""
        return f"http://127.0.0.1:{self.ports.canary}"

    @property
    def prefect_api_url(self) -> str | None:
        if "prefect" not in self.pids:
            return None
        return f"http://127.0.0.1:{self.ports.prefect}/api"

    def env(self) -> dict[str, str]:
        """Environment variables pointing the project's flows at this stack."""
        values = {
            "KUBECONFIG": self.kubeconfig,
            "ROLLBACK_FLOWS_SERVICES": str(Path(self.kubeconfig).with_name("services.yaml")),
            "ROLLBACK_FLOWS_PROMETHEUS_URL": self.prometheus_url,
            "ROLLBACK_FLOWS_ALERTMANAGER_URL": self.alertmanager_url,
            "ROLLBACK_FLOWS_SERVICE_URL": self.simulator_url,
        }
        if self.prefect_api_url:
            values["PREFECT_API_URL"] = self.prefect_api_url
        return values


def server_backends(ports: Ports) -> dict[str, Any]:
    """What both of the Prefect server's processes run on: its database and its broker (the
    keyword arguments of `start_prefect_server` and `start_prefect_services`)."""
    assert ports.redis is not None  # chosen when the stack is made
    return {"database": database_url(ports.postgres), "broker": redis_settings(ports.redis)}


class LocalStack:
    """One named local stack."""

    def __init__(
        self,
        name: str,
        ports: Ports,
        *,
        simulator_namespace: str = "production",
        webhook_url: str | None = None,
        prefect: bool = False,
        prefect_ui: bool = False,
        backfill: str | None = None,
        receiver: bool = False,
    ) -> None:
        if receiver and (not prefect or webhook_url):
            raise StackError("the alert receiver needs the Prefect server and no other webhook")
        self.receiver = receiver
        if receiver:
            webhook_url = f"http://127.0.0.1:{ports.receiver}/alerts"
        self.name = name
        self.ports = dataclasses.replace(
            ports,
            canary=free_port() if ports.canary is None else ports.canary,
            redis=free_port() if ports.redis is None else ports.redis,
        )
        self.simulator_namespace = simulator_namespace
        self.webhook_url = webhook_url
        self.prefect = prefect
        self.prefect_ui = prefect_ui
        self.backfill = backfill
        self.dir = state_root() / name
        self.state_file = self.dir / "state.json"
        self._saving = threading.Lock()
        # The simulated rag-api pods' own log (written by the simulator, served by KWOK).
        self.container_log = self.dir / "logs" / "rag-api.container.log"
        # PostgreSQL runs as the postgres user, who may not be able to enter the checkout
        # (under /root, say): its data lives in the temporary directory, one per stack.
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        self.postgres_dir = Path(tempfile.gettempdir()) / f"rollback-flows-postgres-{digest}"

    @property
    def _canary_port(self) -> int:
        assert self.ports.canary is not None  # chosen in __init__
        return self.ports.canary

    @property
    def cluster(self) -> Cluster:
        from stack.config import bin_dir

        logs = PodLogs(self.simulator_namespace, "rag-api", self.container_log)
        return Cluster(self.name, self.dir / "kwok", self.dir / "kubeconfig", bin_dir(), logs)

    def read_state(self) -> StackState | None:
        """The saved state of this stack, if any."""
        if not self.state_file.exists():
            return None
        raw = json.loads(self.state_file.read_text())
        raw["ports"] = Ports(**raw["ports"])
        return StackState(**raw)

    def running(self) -> StackState | None:
        """The state of this stack if it is fully up: every process alive, the API answering."""
        state = self.read_state()
        if state is None or not state.complete:
            return None
        if not all(alive(pid) for pid in state.pids.values()):
            return None
        return state if self.cluster.running() else None

    def up(self) -> StackState:
        """Start the stack, or return it when it is already running."""
        existing = self.running()
        if existing is not None:
            _say(f"stack {self.name!r} is already running; reusing it")
            return existing
        if self.read_state() is not None or self.dir.exists():
            _say(f"stack {self.name!r} was left half-started; tearing it down first")
            self.down()
        build_all()
        self._check_ports()
        state = StackState(
            name=self.name,
            kubeconfig=str(self.dir / "kubeconfig"),
            ports=self.ports,
            simulator_namespace=self.simulator_namespace,
            webhook_url=self.webhook_url,
        )
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._save(state)
            self._write_services(state)
            with ThreadPoolExecutor(max_workers=1) as beside:
                # PostgreSQL and the Prefect server (the slowest to start) come up while the
                # cluster, the simulators, Alertmanager and Prometheus do
                database = beside.submit(self._start_database, state) if self.prefect else None
                self._step("Kubernetes cluster (kwokctl)", self.cluster.create)
                simulator, canary = self._step(
                    "rag-api simulators (stable, canary)", self._start_simulators
                )
                self._record(state, simulator=simulator, canary=canary)
                self._start_part(state, "alertmanager", "Alertmanager", self._start_alertmanager)
                self._start_part(state, "prometheus", "Prometheus", self._start_prometheus)
                if database is not None:
                    database.result()
            if self.prefect:
                api_url, home = self._prefect_at(state)
                self._step("work pool", lambda: create_work_pool(api_url, home))
                with ThreadPoolExecutor(max_workers=2) as beside:
                    # the worker and the receiver start while prefect.yaml is deployed
                    worker = partial(self._start_worker, state)
                    started = [
                        beside.submit(self._start_part, state, "worker", "Prefect worker", worker)
                    ]
                    if self.receiver:
                        receiver = partial(self._start_receiver, state)
                        started.append(
                            beside.submit(
                                self._start_part, state, "receiver", "alert receiver", receiver
                            )
                        )
                    self._step("deployments of prefect.yaml", lambda: deploy_all(api_url, home))
                    for future in started:
                        future.result()
            state.complete = True
            self._save(state)
        except BaseException:
            _say(f"stack {self.name!r} failed to start; tearing down what was started")
            self.down()
            raise
        return state

    def down(self) -> None:
        """Stop every process of the stack and delete its cluster and state; safe to repeat."""
        state = self.read_state()
        for pid in (state.pids if state else {}).values():
            stop(pid)
        if self.dir.exists():
            with contextlib.suppress(StackError):
                self.cluster.delete()
            shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.postgres_dir, ignore_errors=True)

    def _write_services(self, state: StackState) -> None:
        """The project's services file, with the service URLs pointing at the simulator."""
        services = yaml.safe_load(SERVICES_FILE.read_text())
        for service in services["services"].values():
            service["health_url"] = f"{state.simulator_url}/health"
            service["version_url"] = f"{state.simulator_url}/version"
            if "canary" in service:
                service["canary"]["health_url"] = f"{state.canary_url}/health"
            # GitHub is out of reach here: image_rollback skips the registry check.
            service.pop("registry", None)
            # The demo's and the tests' good releases serve for seconds, not half an hour.
            service["known_good_minutes"] = KNOWN_GOOD_SECONDS / 60
        Path(state.env()["ROLLBACK_FLOWS_SERVICES"]).write_text(yaml.safe_dump(services))

    def _check_ports(self) -> None:
        wanted = {
            "Prometheus": self.ports.prometheus,
            "Alertmanager": self.ports.alertmanager,
            "the rag-api simulator": self.ports.simulator,
            "the canary's rag-api simulator": self._canary_port,
        }
        if self.prefect:
            wanted["the Prefect server"] = self.ports.prefect
            wanted["PostgreSQL"] = self.ports.postgres
            wanted["Redis"] = self._redis_port
        if self.receiver:
            wanted["the alert receiver"] = self.ports.receiver
        for what, port in wanted.items():
            ensure_port_free(port, what)

    def _step(self, what: str, action):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        try:
            result = action()
        except StackError as exc:
            raise StackError(f"starting {what} failed: {exc}") from exc
        _say(f"{what} up in {time.monotonic() - started:.1f}s")
        return result

    def _start_simulators(self) -> tuple[int, int]:
        """The stable simulator and the canary's, started side by side (the time of one)."""
        service = load_services(SERVICES_FILE).get(SIMULATED_SERVICE)
        assert service.canary is not None
        logs = self.dir / "logs"
        common = [
            sys.executable,
            "-m",
            "stack.simulator",
            "--kubeconfig",
            str(self.dir / "kubeconfig"),
            "--namespace",
            self.simulator_namespace,
            "--container",
            service.container,
        ]
        stable = [
            *common,
            *("--port", str(self.ports.simulator), "--deployment", service.deployment),
            *("--rps", str(STABLE_RPS), "--container-log", str(self.container_log)),
        ]
        canary = [
            *common,
            *("--port", str(self._canary_port), "--deployment", service.canary.deployment),
            *("--rps", str(CANARY_RPS), "--track", "canary", "--idle-without-pods"),
        ]
        started = []
        for what, argv, port, log in (
            ("rag-api simulator", stable, self.ports.simulator, logs / "simulator.log"),
            ("the canary's simulator", canary, self._canary_port, logs / "canary.log"),
        ):
            started.append((what, start(what, argv, log), port, log))
        for what, pid, port, log in started:
            url = f"http://127.0.0.1:{port}/version"
            wait_until(what, http_ok(url), 30, pid=pid, log_path=log)
        return started[0][1], started[1][1]

    def _start_alertmanager(self) -> int:
        config_dir = self.dir / "alertmanager"
        config = prometheus.render_alertmanager_config(
            config_dir,
            webhook_url=self.webhook_url or NO_WEBHOOK,
            bearer_token_file=self._receiver_token() if self.receiver else None,
        )
        return prometheus.start_alertmanager(
            config,
            config_dir / "data",
            self.ports.alertmanager,
            self.dir / "logs" / "alertmanager.log",
        )

    def _start_prometheus(self) -> int:
        config_dir = self.dir / "prometheus"
        data_dir = config_dir / "data"
        if self.backfill:
            prometheus.backfill(self.backfill, data_dir)
        # The shipped rules' alerts (deployments/prometheus/rollback-rules.yml, the same
        # renderer and matrix), with the stack's short `for` and window: alerts within seconds.
        rules = prometheus.render_rules(
            config_dir,
            for_duration=ALERT_FOR,
            rate_window=ALERT_WINDOW,
            matrix=load_decision_matrix(),
        )
        config = prometheus.render_prometheus_config(
            config_dir,
            simulator_port=self.ports.simulator,
            canary_port=self._canary_port,
            alertmanager_port=self.ports.alertmanager,
            rules_path=rules,
            namespace=self.simulator_namespace,
        )
        return prometheus.start_prometheus(
            config, data_dir, self.ports.prometheus, self.dir / "logs" / "prometheus.log"
        )

    def _start_part(
        self, state: StackState, part: str, what: str, action: Callable[[], int]
    ) -> None:
        """Start one process of the stack; its pid saved in the state as soon as it is up."""
        self._record(state, **{part: self._step(what, action)})

    def _start_database(self, state: StackState) -> None:
        """Redis and PostgreSQL, then the Prefect server's API on them, then its services."""
        self._start_part(state, "redis", "Redis", self._start_redis)
        self._start_part(state, "postgres", "PostgreSQL", self._start_postgres)
        self._start_part(state, "prefect", "Prefect server (API)", self._start_prefect)
        self._start_part(
            state, "prefect_services", "Prefect server (services)", self._start_prefect_services
        )

    def _start_postgres(self) -> int:
        shutil.rmtree(self.postgres_dir, ignore_errors=True)
        return start_postgres(
            self.postgres_dir, self.ports.postgres, self.dir / "logs" / "postgres.log"
        )

    @property
    def _redis_port(self) -> int:
        assert self.ports.redis is not None  # chosen in __init__
        return self.ports.redis

    def _start_redis(self) -> int:
        return start_redis(self._redis_port, self.dir / "logs" / "redis.log")

    def _start_prefect(self) -> int:
        log = self.dir / "logs" / "prefect.log"
        home = self.dir / "prefect"
        return start_prefect_server(
            self.ports.prefect, home, log, ui=self.prefect_ui, **server_backends(self.ports)
        )

    def _start_prefect_services(self) -> int:
        log = self.dir / "logs" / "prefect-services.log"
        home = self.dir / "prefect"
        return start_prefect_services(self.ports.prefect, home, log, **server_backends(self.ports))

    def _prefect_at(self, state: StackState) -> tuple[str, Path]:
        assert state.prefect_api_url is not None
        return state.prefect_api_url, self.dir / "prefect"

    def _start_worker(self, state: StackState) -> int:
        api_url, home = self._prefect_at(state)
        env = {k: v for k, v in state.env().items() if k != "PREFECT_API_URL"}
        env.update(plain_http_client_settings(api_url, self.cluster.ca_file))
        return start_worker(api_url, home, env, self.dir / "logs" / "worker.log")

    def _receiver_token(self) -> Path:
        """The bearer token Alertmanager sends the receiver, in a file only its owner reads."""
        path = self.dir / "alertmanager" / "receiver-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path

    def _start_receiver(self, state: StackState) -> int:
        """Save the token as the Secret block the routes name, then serve the receiver."""
        from prefect.blocks.system import Secret
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from pydantic import SecretStr

        from receiver.config import load_config

        api_url, _ = self._prefect_at(state)
        with temporary_settings({PREFECT_API_URL: api_url}):
            Secret(value=SecretStr(self._receiver_token().read_text())).save(
                load_config().token_secret, overwrite=True
            )
        log = self.dir / "logs" / "receiver.log"
        argv = [sys.executable, "-m", "receiver", "--port", str(self.ports.receiver)]
        pid = start("alert receiver", argv, log, env=state.env())
        url = f"http://127.0.0.1:{self.ports.receiver}/health"
        wait_until("the alert receiver", http_ok(url), 30, pid=pid, log_path=log)
        return pid

    def _save(self, state: StackState) -> None:
        self._record(state)

    def _record(self, state: StackState, **pids: int) -> None:
        """Add `pids` to the state and save it (steps that run side by side share the one
        state: a pid is added and the file written under one lock)."""
        with self._saving:
            state.pids.update(pids)
            self.state_file.write_text(json.dumps(asdict(state), indent=2))


@contextlib.contextmanager
def running_stack(stack: LocalStack) -> Iterator[StackState]:
    """Start `stack` and always tear it down afterwards, also after a failure."""
    try:
        yield stack.up()
    finally:
        stack.down()


def _say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)
