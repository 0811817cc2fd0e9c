"""The local Kubernetes cluster: a real control plane on loopback, nodes and pods by KWOK.

`kwokctl --runtime binary` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and the kwok controller from the binaries built by `stack.build`. The project's
stages (KWOK's defaults plus failure modes) replace the built-in ones. Nodes are created here
with the address 127.0.0.1, and the Istio VirtualService CRD is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from stack.config import KUBERNETES_VERSION, STACK_DIR
from stack.processes import StackError, free_port

STAGES_DIR = STACK_DIR / "kwok" / "stages"
CRDS_DIR = STACK_DIR / "crds"
NODE_COUNT = 3


def runtime() -> str:
    """`binary` (the default: the control plane built here) or `kind` (needs Docker and kind)."""
    chosen = os.environ.get("ROLLBACK_FLOWS_RUNTIME", "binary")
    if chosen not in ("binary", "kind"):
        raise StackError(f"ROLLBACK_FLOWS_RUNTIME must be 'binary' or 'kind', not {chosen!r}")
    return chosen


@dataclass(frozen=True)
class PodLogs:
    """Which simulated pods' containers show which log file (KWOK ClusterLogs, CRI format)."""

    namespace: str
    container: str
    path: Path

    def cluster_logs(self) -> dict[str, Any]:
        return {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": f"{self.namespace}-{self.container}"},
            "spec": {
                "selector": {"matchNamespaces": [self.namespace]},
                "logs": [
                    {"containers": [self.container], "logsFile": str(self.path), "follow": True}
                ],
            },
        }


@dataclass(frozen=True)
class Cluster:
    """A kwokctl cluster: its name, working directory and kubeconfig."""

    name: str
    workdir: Path
    kubeconfig: Path
    bin_dir: Path
    pod_logs: PodLogs | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KWOK_WORKDIR": str(self.workdir),
            "KWOK_KUBE_VERSION": KUBERNETES_VERSION,
            "KWOK_KUBECTL_BINARY": str(self.bin_dir / "kubectl"),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _kwokctl(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "kwokctl"), "--name", self.name, *args]
        try:
            return subprocess.run(
                argv, env=self._env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"kwokctl {args[0]} {args[1]} timed out after {timeout:.0f}s") from exc

    def create(self, attempts: int = 3) -> None:
        """Create the cluster, its nodes and the CRDs; wait until the nodes are Ready.

        Each component's port is chosen free a few seconds before the component binds it, and
        another process on the machine (a second stack, a test's server) can take it in
        between: a component that fails with "address already in use" makes the cluster be
        deleted and created again on newly chosen ports.
        """
        for attempt in range(1, attempts + 1):
            try:
                self._create()
                return
            except StackError as exc:
                taken = self._port_taken()
                if taken is None or attempt == attempts:
                    raise
                print(
                    f"stack: {taken} (another process took its port after it was chosen); "
                    f"creating cluster {self.name} again on other ports",
                    file=sys.stderr,
                )
                try:
                    self.delete()
                except StackError:
                    raise exc from None
                shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def ca_file(self) -> Path:
        """The cluster's certificate authority (kwokctl's), which signed its API server's."""
        return self._dir / "pki" / "ca.crt"

    @property
    def _dir(self) -> Path:
        """kwokctl's directory of this cluster: its configuration, pids and logs."""
        return self.workdir / "clusters" / self.name

    def _port_taken(self, component: str = "*") -> str | None:
        """Which component of this cluster (or only `component`) could not bind its port, as
        its log says."""
        for log in sorted((self._dir / "logs").glob(f"{component}.log")):
            for line in log.read_text(errors="replace").splitlines():
                if "address already in use" in line:
                    return f"{log.stem}: {line.strip()[-160:]}"
        return None

    def _fail_if_port_taken(self, component: str = "*") -> None:
        taken = self._port_taken(component)
        if taken is not None:
            raise StackError(f"the control plane did not start: {taken}")

    def _create(self) -> None:
        b = self.bin_dir
        stage_configs = [f"--config={path}" for path in sorted(STAGES_DIR.glob("*.yaml"))]
        if runtime() == "kind":
            runtime_flags = ["--runtime=kind"]
        else:
            runtime_flags = [
                "--runtime=binary",
                f"--kube-apiserver-binary={b / 'kube-apiserver'}",
                f"--kube-controller-manager-binary={b / 'kube-controller-manager'}",
                f"--kube-scheduler-binary={b / 'kube-scheduler'}",
                f"--etcd-binary={b / 'etcd'}",
                f"--kwok-controller-binary={b / 'kwok'}",
            ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        options = self.workdir / "kwokctl.yaml"
        documents = [_kwokctl_configuration()]
        if self.pod_logs is not None:
            documents.append(self.pod_logs.cluster_logs())
        options.write_text(yaml.safe_dump_all(documents))
        result = self._kwokctl(
            f"--config={options}",
            *stage_configs,
            "create",
            "cluster",
            *runtime_flags,
            f"--kubeconfig={self.kubeconfig}",
            # Reach "kubelets" (KWOK) by their 127.0.0.1 address, never by resolving node names.
            "--extra-args=kube-apiserver=kubelet-preferred-address-types=InternalIP",
            "--disable-qps-limits",
            # ... but keep API Priority and Fairness on, as in every real cluster (it answers
            # 429 when a flow's priority level is full; tests/test_faults.py starves one);
            # --disable-qps-limits turns it off and lifts the in-flight limits to 0 (none).
            "--extra-args=kube-apiserver=enable-priority-and-fairness=true",
            "--extra-args=kube-apiserver=max-requests-inflight=400",
            "--extra-args=kube-apiserver=max-mutating-requests-inflight=200",
            # One controller manager and one scheduler, nobody to restart them: without leader
            # election they outlive an API server outage (with it, a lease they cannot renew
            # for 10 s makes them exit, "leaderelection lost", and every rollout stalls).
            "--extra-args=kube-controller-manager=leader-elect=false",
            "--extra-args=kube-scheduler=leader-elect=false",
            "--wait=120s",
        )
        if result.returncode != 0:
            raise StackError(f"kwokctl create cluster {self.name} failed:\n{result.stderr[-3000:]}")
        api = self.api_client()
        try:
            self._create_nodes(api)
            self._install_crds(api)
            self._wait_nodes_ready(api)
            self._wait_controllers(api)
        finally:
            api.close()
        self._fail_if_port_taken()  # the scheduler, say, which nothing above waits for

    def delete(self) -> None:
        """Delete the cluster and stop its processes; a cluster already gone is fine."""
        result = self._kwokctl("delete", "cluster", f"--kubeconfig={self.kubeconfig}")
        if result.returncode != 0 and "not exist" not in result.stderr:
            raise StackError(f"kwokctl delete cluster {self.name} failed:\n{result.stderr}")

    def running(self) -> bool:
        """Whether the cluster's API server answers."""
        if not self.kubeconfig.exists():
            return False
        try:
            api = self.api_client()
            try:
                client.VersionApi(api).get_code(_request_timeout=3)
            finally:
                api.close()
        except Exception:
            return False
        return True

    def api_client(self) -> client.ApiClient:
        """An API client for this cluster."""
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def _create_nodes(self, api: client.ApiClient) -> None:
        core = client.CoreV1Api(api)
        for index in range(NODE_COUNT):
            name = f"kwok-node-{index}"
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        "kwok.x-k8s.io/node": "fake",
                        "node.alpha.kubernetes.io/ttl": "0",
                    },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "spec": {"podCIDR": f"10.0.{index}.0/24", "podCIDRs": [f"10.0.{index}.0/24"]},
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": "127.0.0.1"},
                        {"type": "Hostname", "address": name},
                    ],
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
                },
            }
            try:
                core.create_node(node)
            except ApiException as exc:
                if exc.status != 409:
                    raise StackError(f"creating node {name} failed: {exc.reason}") from exc

    def _install_crds(self, api: client.ApiClient) -> None:
        ext = client.ApiextensionsV1Api(api)
        for path in sorted(CRDS_DIR.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            try:
                ext.create_custom_resource_definition(crd)
            except ApiException as exc:
                if exc.status != 409:
                    raise StackError(f"installing CRD {path.name} failed: {exc.reason}") from exc
        deadline = time.monotonic() + 60
        for path in sorted(CRDS_DIR.glob("*.yaml")):
            name = yaml.safe_load(path.read_text())["metadata"]["name"]
            while not _crd_established(ext, name):
                if time.monotonic() > deadline:
                    raise StackError(f"CRD {name} was not Established after 60s")
                time.sleep(0.2)

    def _wait_nodes_ready(self, api: client.ApiClient, timeout: float = 60) -> None:
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        while True:
            nodes = core.list_node().items
            ready = [n for n in nodes if _condition(n.status.conditions, "Ready") == "True"]
            if len(ready) >= NODE_COUNT:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"only {len(ready)}/{NODE_COUNT} KWOK nodes Ready after {timeout}s"
                    + self._log_tail("kwok-controller")
                )
            time.sleep(0.2)

    def _wait_controllers(self, api: client.ApiClient, timeout: float = 120) -> None:
        """Wait until kube-controller-manager runs its controllers: its ServiceAccount
        controller has made the `default` ServiceAccount (on a loaded machine it starts well
        after the API server, and a Deployment created before is not rolled out for a while)."""
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        while True:
            try:
                core.read_namespaced_service_account("default", "default")
                return
            except ApiException as exc:
                if exc.status != 404:
                    raise StackError(
                        f"reading ServiceAccount default/default: {exc.reason}"
                    ) from exc
            self._fail_if_port_taken("kube-controller-manager")  # dead: no need to wait
            if time.monotonic() > deadline:
                raise StackError(
                    f"kube-controller-manager made no default ServiceAccount in {timeout}s"
                    + self._log_tail("kube-controller-manager")
                )
            time.sleep(0.2)

    def _log_tail(self, component: str, lines: int = 20) -> str:
        log = self._dir / "logs" / f"{component}.log"
        if not log.exists():
            return f"; {log} does not exist"
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {log}:\n" + "\n".join(tail)


def _kwokctl_configuration() -> dict[str, Any]:
    """Every component on 127.0.0.1 and on a port the kernel just gave us.

    kwokctl's defaults bind 0.0.0.0 and count ports down from 32767, so two clusters created
    at nearly the same time (a test session's and a spare one) pick the same ports.
    """
    ports = [
        "etcdPort",
        "etcdPeerPort",
        "kubeApiserverPort",
        "kwokControllerPort",
        "kubeControllerManagerPort",
        "kubeSchedulerPort",
    ]
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {"bindAddress": "127.0.0.1", **{name: free_port() for name in ports}},
    }


def _crd_established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conditions = crd.status.conditions if crd.status else None
    return _condition(conditions, "Established") == "True"


def _condition(conditions: list | None, kind: str) -> str | None:  # type: ignore[type-arg]
    for condition in conditions or []:
        if condition.type == kind:
            return str(condition.status)
    return None
