"""Build the local control plane's binaries from Go modules, once, cached by version.

kube-apiserver, kube-controller-manager, kube-scheduler and kubectl come from the
`k8s.io/kubernetes` module, etcd from `go.etcd.io/etcd/server/v3`, kwok and kwokctl from
`sigs.k8s.io/kwok`, each built inside the small tools module under `stack/build/` whose go.mod
pins the exact versions. Nothing is downloaded but Go modules. The first build takes 10-30
minutes on 2 cores; later calls find the binaries in the cache and return at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from stack.config import ETCD_VERSION, KUBERNETES_VERSION, KWOK_VERSION, STACK_DIR, bin_dir
from stack.processes import StackError


@dataclass(frozen=True)
class Binary:
    """One binary of the stack and the Go package it is built from."""

    name: str
    module_dir: str
    package: str
    ldflags: str = ""
    estimate: str = ""


def _kubernetes_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    fields = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
    }
    flags = [
        f"-X {pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in fields.items()
    ]
    return " ".join(flags)


BINARIES = (
    Binary("etcd", "etcd", "go.etcd.io/etcd/server/v3", estimate="about 1 min"),
    Binary("kwok", "kwok", "sigs.k8s.io/kwok/cmd/kwok", estimate="about 2 min"),
    Binary("kwokctl", "kwok", "sigs.k8s.io/kwok/cmd/kwokctl", estimate="about 1 min"),
    Binary(
        "kube-apiserver",
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        _kubernetes_ldflags(),
        "about 5 min",
    ),
    Binary(
        "kube-controller-manager",
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        _kubernetes_ldflags(),
        "about 3 min",
    ),
    Binary(
        "kube-scheduler",
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        _kubernetes_ldflags(),
        "about 1 min",
    ),
    Binary(
        "kubectl",
        "kubernetes",
        "k8s.io/kubernetes/cmd/kubectl",
        _kubernetes_ldflags(),
        "about 2 min",
    ),
    # Only the fault tests use it: Toxiproxy between the flows and kube-apiserver / Prometheus.
    Binary(
        "toxiproxy-server",
        "toxiproxy",
        "github.com/Shopify/toxiproxy/v2/cmd/server",
        estimate="about 1 min",
    ),
    # `make lint` and a test: the linter of .github/workflows/.
    Binary(
        "actionlint",
        "actionlint",
        "github.com/rhysd/actionlint/cmd/actionlint",
        estimate="about 1 min",
    ),
)


def missing() -> list[Binary]:
    """The binaries not yet in the cache."""
    return [b for b in BINARIES if not (bin_dir() / b.name).is_file()]


def build_all(out: Path | None = None) -> Path:
    """Build every missing binary into the cache, printing progress; return the bin directory."""
    target = out or bin_dir()
    todo = [b for b in BINARIES if not (target / b.name).is_file()]
    if not todo:
        return target
    go = shutil.which("go")
    if go is None:
        raise StackError("build step 'find go' failed: the go command is not on PATH")
    target.mkdir(parents=True, exist_ok=True)
    _say(
        f"building {len(todo)} binaries into {target} (Kubernetes {KUBERNETES_VERSION}, "
        f"etcd {ETCD_VERSION}, KWOK {KWOK_VERSION}); the first build takes 10-30 minutes"
    )
    started = time.monotonic()
    for number, binary in enumerate(todo, start=1):
        _build_one(go, binary, target, f"[{number}/{len(todo)}]")
    _say(f"all binaries built in {time.monotonic() - started:.0f}s")
    return target


def _build_one(go: str, binary: Binary, target: Path, step: str) -> None:
    module = STACK_DIR / "build" / binary.module_dir
    _say(f"{step} building {binary.name} from {binary.package} ({binary.estimate} cold)")
    partial = target / f".{binary.name}.partial"
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -trimpath"}
    argv = [go, "build", "-ldflags", f"-s -w {binary.ldflags}".strip(), "-o", str(partial)]
    started = time.monotonic()
    proc = subprocess.Popen(
        [*argv, binary.package],
        cwd=module,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while True:
        try:
            output, _ = proc.communicate(timeout=60)
            break
        except subprocess.TimeoutExpired:
            _say(f"{step} still building {binary.name}: {time.monotonic() - started:.0f}s")
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join(output.splitlines()[-20:])
        raise StackError(
            f"build step {step} '{binary.name}' failed (go build {binary.package} in {module}, "
            f"exit {proc.returncode}):\n{tail}"
        )
    partial.rename(target / binary.name)
    size = (target / binary.name).stat().st_size / 2**20
    _say(f"{step} built {binary.name} in {time.monotonic() - started:.0f}s ({size:.0f} MiB)")


def _say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)
