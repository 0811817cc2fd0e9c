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
from stack.errors import StackError


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


def build_all(out: Path | None = None) -> Path:
    """Build every missing binary into the cache, printing progress; return the bin directory.

    The binaries of one module with the same flags (kube-apiserver, kube-controller-manager,
    kube-scheduler, kubectl) are built by one `go build`, which links one while it compiles
    the next.
    """
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
    groups: dict[tuple[str, str], list[Binary]] = {}
    for binary in todo:
        groups.setdefault((binary.module_dir, binary.ldflags), []).append(binary)
    for number, group in enumerate(groups.values(), start=1):
        _build_group(go, group, target, f"[{number}/{len(groups)}]")
    _say(f"all binaries built in {time.monotonic() - started:.0f}s")
    return target


def _build_group(go: str, group: list[Binary], target: Path, step: str) -> None:
    """One `go build` of the group's packages into a scratch directory, then each binary
    moved into `target` (a failed or interrupted build leaves none of them there)."""
    module = STACK_DIR / "build" / group[0].module_dir
    names = ", ".join(b.name for b in group)
    packages = [b.package for b in group]
    estimate = " + ".join(b.estimate for b in group if b.estimate)
    _say(f"{step} building {names} from {' '.join(packages)} ({estimate} cold)")
    partial = target / f".partial-{group[0].name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -trimpath"}
    ldflags = f"-s -w {group[0].ldflags}".strip()
    # With one package, -o names the file; with several, a directory (a trailing slash).
    output = str(partial / group[0].name) if len(group) == 1 else f"{partial}{os.sep}"
    argv = [go, "build", "-ldflags", ldflags, "-o", output, *packages]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=module, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while True:
        try:
            output_text, _ = proc.communicate(timeout=60)
            break
        except subprocess.TimeoutExpired:
            _say(f"{step} still building {names}: {time.monotonic() - started:.0f}s")
    built = {path.name for path in partial.iterdir()}
    if proc.returncode != 0 or any(b.name not in built for b in group):
        shutil.rmtree(partial, ignore_errors=True)
        tail = "\n".join(output_text.splitlines()[-20:])
        raise StackError(
            f"build step {step} '{names}' failed (go build {' '.join(packages)} in {module}, "
            f"exit {proc.returncode}):\n{tail}"
        )
    sizes = []
    for binary in group:
        (partial / binary.name).rename(target / binary.name)
        sizes.append(f"{binary.name} {(target / binary.name).stat().st_size / 2**20:.0f} MiB")
    partial.rmdir()
    _say(f"{step} built {names} in {time.monotonic() - started:.0f}s ({', '.join(sizes)})")


def _say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":  # `python3 -m stack.build`: the system Python, no virtual env needed
    try:
        build_all()
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        sys.exit(1)
