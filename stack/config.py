"""Versions, paths and ports of the local stack, each overridable by an environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STACK_DIR = Path(__file__).resolve().parent
REPO_DIR = STACK_DIR.parent

KUBERNETES_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"


def cache_dir() -> Path:
    """Where built binaries are cached by version, outside the repository."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rollback-flows"
    return Path(os.environ.get("ROLLBACK_FLOWS_CACHE", default))


def bin_dir() -> Path:
    """The binaries of one pinned set of versions."""
    return cache_dir() / f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}" / "bin"


def state_root() -> Path:
    """Where running stacks keep their state, logs and data directories."""
    return Path(os.environ.get("ROLLBACK_FLOWS_STATE", REPO_DIR / ".stack"))


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the services the stack starts itself."""

    prometheus: int = 19090
    alertmanager: int = 19093
    simulator: int = 18000
    prefect: int = 14200
    postgres: int = 15432
    receiver: int = 18080
    canary: int | None = None
    """The canary's simulator; a free port when None (chosen when the stack is made)."""
    redis: int | None = None
    """Redis, the Prefect server's message broker; a free port when None (chosen likewise)."""


DEMO_PORTS = Ports(
    prometheus=int(os.environ.get("ROLLBACK_FLOWS_PROMETHEUS_PORT", 19090)),
    alertmanager=int(os.environ.get("ROLLBACK_FLOWS_ALERTMANAGER_PORT", 19093)),
    simulator=int(os.environ.get("ROLLBACK_FLOWS_SIMULATOR_PORT", 18000)),
    prefect=int(os.environ.get("ROLLBACK_FLOWS_PREFECT_PORT", 14200)),
    postgres=int(os.environ.get("ROLLBACK_FLOWS_POSTGRES_PORT", 15432)),
    receiver=int(os.environ.get("ROLLBACK_FLOWS_RECEIVER_PORT", 18080)),
    canary=int(os.environ.get("ROLLBACK_FLOWS_CANARY_PORT", 18001)),
    redis=int(os.environ.get("ROLLBACK_FLOWS_REDIS_PORT", 16379)),
)
