"""Faults injected into the real local stack with real tools, for tests/test_faults.py and
bench/faults.py.

- `Toxiproxy`: the toxiproxy-server that `make setup` builds, driven through its HTTP API
  (https://github.com/Shopify/toxiproxy#http-api), with proxies in front of kube-apiserver
  and Prometheus; `kubeconfig_through` points a kubeconfig at a proxy.
- `Starved`: API Priority and Fairness configured so that the real kube-apiserver answers
  one ServiceAccount's requests 429 (its priority level kept full by another account).
- `webhook_down`: a validating admission webhook with `failurePolicy: Fail` whose server does
  not listen, so the real kube-apiserver answers writes 500.
- `restart_apiserver`: the cluster's kube-apiserver process stopped and started again with the
  same command line.
- `kill_worker` / `start_another_worker`: the stack's Prefect worker killed with the flow run
  it executes, and a new one started.
- `stop_prefect_server` / `start_prefect_server_again`: the stack's Prefect server stopped and
  started again on the same port and database (PostgreSQL keeps its deployments and runs).
- `kill_receiver` / `start_receiver`: the stack's alert receiver killed (SIGKILL) and started
  again, optionally reaching the Prefect API through a proxy.
- `alertmanager_metric`: what Alertmanager counts of its deliveries.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from playbook.provenance import ROLLBACK_MARK_ANNOTATION, RollbackMark, parse_mark
from stack.config import bin_dir
from stack.local import StackState, server_backends
from stack.prefect_server import start_prefect_server
from stack.prefect_worker import start_worker
from stack.processes import alive, free_port, http_ok, start, stop, wait_until


@dataclass(frozen=True)
class Proxy:
    """One Toxiproxy proxy: where the flows connect (`listen`) and what it forwards to."""

    api: str
    name: str
    listen: str
    upstream: str

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def add_toxic(
        self, kind: str, stream: str = "downstream", toxicity: float = 1.0, **attributes: Any
    ) -> str:
        """Add a toxic (latency, timeout, reset_peer, limit_data, ...); return its name."""
        name = f"{kind}_{stream}"
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        httpx.post(
            f"{self.api}/proxies/{self.name}/toxics", json=body, timeout=5
        ).raise_for_status()
        return name

    def remove_toxic(self, name: str) -> None:
        httpx.delete(f"{self.api}/proxies/{self.name}/toxics/{name}", timeout=5).raise_for_status()

    def set_enabled(self, enabled: bool) -> None:
        """Disabled, the proxy closes every connection and refuses new ones: the peer is down."""
        httpx.post(
            f"{self.api}/proxies/{self.name}", json={"enabled": enabled}, timeout=5
        ).raise_for_status()

    def cut(self) -> None:
        """Break every open connection now (they see a reset) and accept new ones again."""
        self.set_enabled(False)
        self.set_enabled(True)


class Toxiproxy:
    """A toxiproxy-server on loopback, its API on a port the kernel chose."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.pid: int | None = None

    def start(self) -> None:
        binary = bin_dir() / "toxiproxy-server"
        if not binary.is_file():
            raise FileNotFoundError(f"{binary} is missing: run `make setup`")
        self.pid = start(
            "toxiproxy-server",
            [str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
            self.log_path,
        )
        wait_until(
            "toxiproxy-server",
            lambda: httpx.get(f"{self.api}/version", timeout=1).is_success,
            10,
            self.pid,
            self.log_path,
        )

    def stop(self) -> None:
        if self.pid is not None:
            stop(self.pid)
            self.pid = None

    def proxy(self, name: str, upstream: str) -> Proxy:
        """A new proxy to `upstream` (host:port) listening on a port the kernel chose."""
        body = {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True}
        response = httpx.post(f"{self.api}/proxies", json=body, timeout=5)
        response.raise_for_status()
        return Proxy(self.api, name, str(response.json()["listen"]), upstream)

    def reset(self) -> None:
        """Every proxy enabled again and every toxic removed."""
        httpx.post(f"{self.api}/reset", timeout=5).raise_for_status()


def apiserver_address(kubeconfig: str | Path) -> str:
    """host:port of the kubeconfig's (first) cluster."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    server = str(cfg["clusters"][0]["cluster"]["server"])
    return server.split("://", 1)[1].rstrip("/")


def kubeconfig_through(kubeconfig: str | Path, proxy: Proxy, out: Path) -> Path:
    """A copy of `kubeconfig` whose clusters are reached through `proxy` (TLS passes through)."""
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    for entry in cfg["clusters"]:
        scheme = str(entry["cluster"]["server"]).split("://", 1)[0]
        entry["cluster"]["server"] = f"{scheme}://{proxy.listen}"
    out.write_text(yaml.safe_dump(cfg))
    return out


# Running a flow while a fault is injected ---------------------------------------------------


def in_background(call: Callable[[], Any]) -> Future[Any]:
    """Run `call` (a flow) in a thread, with this test's Prefect settings, while the test
    injects the fault."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(contextvars.copy_context().run, call)
    pool.shutdown(wait=False)
    return future


def wait_for_mark(apps: client.AppsV1Api, namespace: str, timeout: float = 60) -> RollbackMark:
    """Block until the rollback's patch is in the API server (its mark is on the Deployment)."""
    w = watch.Watch()
    for event in w.stream(
        apps.list_namespaced_deployment,
        namespace,
        field_selector="metadata.name=rag-api",
        timeout_seconds=int(timeout),
    ):
        annotations = event["object"].metadata.annotations or {}
        if ROLLBACK_MARK_ANNOTATION in annotations:
            w.stop()
            mark = parse_mark(annotations[ROLLBACK_MARK_ANNOTATION])
            assert mark is not None
            return mark
    raise AssertionError(f"no rollback patch reached the API server within {timeout}s")


# API Priority and Fairness: real 429s ---------------------------------------------------------


class Starved:
    """API Priority and Fairness starving one ServiceAccount, the way a busy cluster does.

    A PriorityLevelConfiguration with no seats of its own, none to borrow and no queues
    (`Reject`), and FlowSchemas putting there the starved ServiceAccount's requests and those
    of a "hog" ServiceAccount. The hog keeps the level's one request slot busy: each of its
    requests creates a ConfigMap (dry run) in its own namespace, which calls a validating
    webhook behind a Toxiproxy proxy that holds every connection (the `timeout` toxic), so the
    request waits there for the webhook's 10 s timeout. Meanwhile the kube-apiserver answers
    every request of the starved account 429 Too Many Requests with Retry-After.
    """

    def __init__(
        self, kube_api: client.ApiClient, toxiproxy: Toxiproxy, account: tuple[str, str], name: str
    ) -> None:
        self.kube_api = kube_api
        self.toxiproxy = toxiproxy
        self.namespace, self.account = account
        self.name = name
        self.hog_namespace = f"{name}-hog"
        self._stop = threading.Event()
        self._hogs: list[threading.Thread] = []
        self._hang: Proxy | None = None

    @property
    def flow_schema(self) -> str:
        """The FlowSchema of the starved account (its rejections are counted under it)."""
        return f"{self.name}-starved"

    def start(self, hogs: int = 2) -> None:
        core = client.CoreV1Api(self.kube_api)
        rbac = client.RbacAuthorizationV1Api(self.kube_api)
        flowcontrol = client.FlowcontrolApiserverV1Api(self.kube_api)
        hog = self.hog_namespace
        core.create_namespace({"metadata": {"name": hog}})
        core.create_namespaced_service_account(hog, {"metadata": {"name": "hog"}})
        rbac.create_namespaced_role(
            hog,
            {
                "metadata": {"name": "hog"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            hog,
            {
                "metadata": {"name": "hog"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hog"},
                "subjects": [{"kind": "ServiceAccount", "name": "hog", "namespace": hog}],
            },
        )
        # Any upstream that accepts: the toxic holds every byte, nothing reaches it.
        upstream = self.toxiproxy.api.split("://", 1)[1]
        self._hang = self.toxiproxy.proxy(f"{self.name}-webhook", upstream)
        self._hang.add_toxic("timeout", stream="upstream", timeout=0)
        _hanging_webhook(self.kube_api, self.name, hog, self._hang)
        flowcontrol.create_priority_level_configuration(
            {
                "metadata": {"name": self.name},
                "spec": {
                    "type": "Limited",
                    "limited": {
                        "nominalConcurrencyShares": 0,
                        "lendablePercent": 0,
                        "borrowingLimitPercent": 0,
                        "limitResponse": {"type": "Reject"},
                    },
                },
            }
        )
        for schema, (namespace, account) in (
            (self.flow_schema, (self.namespace, self.account)),
            (f"{self.name}-hog", (hog, "hog")),
        ):
            flowcontrol.create_flow_schema(_flow_schema(schema, self.name, namespace, account))
        token = core.create_namespaced_service_account_token(
            "hog", hog, {"spec": {"expirationSeconds": 3600}}
        ).status.token
        cfg = client.Configuration()
        cfg.host = self.kube_api.configuration.host
        cfg.ssl_ca_cert = self.kube_api.configuration.ssl_ca_cert
        cfg.api_key = {"authorization": f"Bearer {token}"}
        for _ in range(hogs):
            thread = threading.Thread(target=self._hog, args=(client.ApiClient(cfg),), daemon=True)
            thread.start()
            self._hogs.append(thread)

    def _hog(self, api: client.ApiClient) -> None:
        core = client.CoreV1Api(api)
        while not self._stop.is_set():
            try:
                core.create_namespaced_config_map(
                    self.hog_namespace,
                    {"metadata": {"generateName": "hog-"}},
                    dry_run="All",
                    _request_timeout=30,
                )
            except Exception:
                time.sleep(0.05)  # rejected (429) itself: try again at once
        api.close()

    def lift(self) -> None:
        """The hog stops and its held requests end at once; the starved account is served."""
        self._stop.set()
        if self._hang is not None:
            self._hang.set_enabled(False)  # the webhook call fails, the request completes
        for thread in self._hogs:
            thread.join(timeout=15)
        flowcontrol = client.FlowcontrolApiserverV1Api(self.kube_api)
        admission = client.AdmissionregistrationV1Api(self.kube_api)
        for delete, name in (
            (flowcontrol.delete_flow_schema, self.flow_schema),
            (flowcontrol.delete_flow_schema, f"{self.name}-hog"),
            (flowcontrol.delete_priority_level_configuration, self.name),
            (admission.delete_validating_webhook_configuration, self.name),
            (client.CoreV1Api(self.kube_api).delete_namespace, self.hog_namespace),
        ):
            try:
                delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def _flow_schema(name: str, level: str, namespace: str, account: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": 100,  # before every built-in one but `exempt` and `probes`
            "priorityLevelConfiguration": {"name": level},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {"name": account, "namespace": namespace},
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }


def _hanging_webhook(kube_api: client.ApiClient, name: str, namespace: str, proxy: Proxy) -> None:
    """Creating a ConfigMap in `namespace` waits 10 s for a webhook that never answers."""
    client.AdmissionregistrationV1Api(kube_api).create_validating_webhook_configuration(
        {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"{name}.rollback-flows.dev",
                    "clientConfig": {"url": f"https://{proxy.listen}/validate"},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 10,
                }
            ],
        }
    )


# A validating admission webhook that is down: real 500s on writes -----------------------------


def webhook_down(kube_api: client.ApiClient, name: str, namespace: str) -> None:
    """Deployments in `namespace` can no longer be updated or patched: the API server calls a
    webhook on a loopback port where nothing listens, and `failurePolicy: Fail` makes that a
    500 InternalError."""
    client.AdmissionregistrationV1Api(kube_api).create_validating_webhook_configuration(
        {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": f"{name}.rollback-flows.dev",
                    "clientConfig": {"url": f"https://127.0.0.1:{free_port()}/validate"},
                    "rules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["UPDATE"],
                            "resources": ["deployments"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 2,
                }
            ],
        }
    )


def remove_webhook(kube_api: client.ApiClient, name: str) -> None:
    try:
        client.AdmissionregistrationV1Api(kube_api).delete_validating_webhook_configuration(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


# The kube-apiserver process ------------------------------------------------------------------


def apiserver_metric(kube_api: client.ApiClient, metric: str, **labels: str) -> float:
    """The sum of a kube-apiserver metric's samples whose labels include `labels`."""
    response = kube_api.call_api(
        "/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False
    )
    return metric_sum(response.data.decode(), metric, **labels)


def metric_sum(text: str, metric: str, **labels: str) -> float:
    """The sum of the samples of `metric` in a /metrics text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        body, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', body))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def apiserver_pid(address: str) -> int:
    """The pid of the kube-apiserver process serving on `address` (host:port)."""
    port = address.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"kube-apiserver")
            and f"--secure-port={port}".encode() in argv
        ):
            return int(proc.name)
    raise LookupError(f"no kube-apiserver serving on {address}")


def restart_apiserver(address: str, down_seconds: float) -> int:
    """Stop the kube-apiserver on `address`, wait, start it again with the same command line,
    environment and directory; return the new pid once it answers /readyz again.

    kwokctl keeps the component's pid in `<cluster>/pids/kube-apiserver.pid`; the new pid is
    written there, so `kwokctl delete cluster` still stops it."""
    pid = apiserver_pid(address)
    proc = Path(f"/proc/{pid}")
    argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    cwd = os.readlink(proc / "cwd")
    env = dict(
        entry.decode().split("=", 1)
        for entry in (proc / "environ").read_bytes().split(b"\0")
        if b"=" in entry
    )
    log = os.readlink(proc / "fd" / "1")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2  # its graceful shutdown takes 20 s: then it is killed
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    time.sleep(down_seconds)
    with open(log, "ab") as output:
        new = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ).pid
    for pid_file in Path(cwd).glob("**/pids/kube-apiserver.pid"):
        pid_file.write_text(str(new))
    wait_until(
        "kube-apiserver after its restart",
        lambda: (
            httpx.get(f"https://{address}/readyz", verify=False, timeout=1).status_code
            in (200, 401, 403)
        ),
        60,
        new,
    )
    return new


# The Prefect worker process ------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (its flow runs run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_machine(pid: int) -> None:
    """SIGKILL a worker and every process it started, as when its machine dies: nothing is
    told, nothing is cleaned up, no lock is given back."""
    for victim in [*descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    wait_until("the killed worker to be gone", lambda: not alive(pid), 10)


def kill_worker(state: StackState) -> None:
    """SIGKILL the stack's Prefect worker and the flow runs it executes (every process below
    it: a flow run runs in a session of its own), as when its machine dies: nothing reports
    to the Prefect server."""
    kill_machine(state.pids["worker"])


def start_another_worker(state: StackState) -> int:
    """A new worker for the stack's pool (its pid saved, so `stack down` stops it)."""
    stack_dir = Path(state.kubeconfig).parent
    api_url = state.prefect_api_url
    assert api_url is not None
    env = {k: v for k, v in state.env().items() if k != "PREFECT_API_URL"}
    log = stack_dir / "logs" / f"worker-{time.time_ns()}.log"
    pid = start_worker(api_url, stack_dir / "prefect", env, log)
    state.pids["worker"] = pid
    _save(state)
    return pid


def _save(state: StackState) -> None:
    """The stack's state file with its new pids, so `stack down` stops the new processes."""
    (Path(state.kubeconfig).parent / "state.json").write_text(json.dumps(asdict(state), indent=2))


# The Prefect server process ------------------------------------------------------------------


def stop_prefect_server(state: StackState) -> None:
    """Stop the stack's Prefect server (SIGTERM to its process group), as for an upgrade."""
    stop(state.pids["prefect"])


def start_prefect_server_again(state: StackState) -> int:
    """The stack's Prefect server started again on its port and its PostgreSQL database."""
    stack_dir = Path(state.kubeconfig).parent
    pid = start_prefect_server(
        state.ports.prefect,
        stack_dir / "prefect",
        stack_dir / "logs" / f"prefect-{time.time_ns()}.log",
        ui=False,
        **server_backends(state.ports),
    )
    state.pids["prefect"] = pid
    _save(state)
    return pid


# The alert receiver process ------------------------------------------------------------------


def kill_receiver(state: StackState) -> None:
    """SIGKILL the stack's alert receiver, as when its machine dies: open deliveries get no
    answer."""
    pid = state.pids["receiver"]
    os.killpg(pid, signal.SIGKILL)
    wait_until("the killed receiver to be gone", lambda: not alive(pid), 10)


def start_receiver(state: StackState, prefect_api_url: str | None = None) -> int:
    """The stack's alert receiver started again on its port (its token is in the Prefect
    Secret block already); it reaches the Prefect API at `prefect_api_url` when given."""
    stack_dir = Path(state.kubeconfig).parent
    env = state.env()
    if prefect_api_url is not None:
        env["PREFECT_API_URL"] = prefect_api_url
    log = stack_dir / "logs" / f"receiver-{time.time_ns()}.log"
    argv = [sys.executable, "-m", "receiver", "--port", str(state.ports.receiver)]
    pid = start("alert receiver", argv, log, env=env)
    url = f"http://127.0.0.1:{state.ports.receiver}/health"
    wait_until("the alert receiver", http_ok(url), 30, pid=pid, log_path=log)
    state.pids["receiver"] = pid
    _save(state)
    return pid


def alertmanager_metric(state: StackState, metric: str, **labels: str) -> float:
    """The sum of an Alertmanager metric's samples whose labels include `labels`, e.g.
    `alertmanager_notification_requests_failed_total` with `integration="webhook"`."""
    text = httpx.get(f"{state.alertmanager_url}/metrics", timeout=5).text
    return metric_sum(text, metric, **labels)
