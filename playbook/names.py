"""The names this tool gives the Prefect server's objects of one service. Pure.

The receiver, the flows and the tests all find a service's lock, its ledger of automatic
rollbacks and its runs by these names, so they are written once, here.
"""

from __future__ import annotations


def lock_name(namespace: str, service: str) -> str:
    """The global concurrency limit guarding rollbacks of one service."""
    return f"rollback-lock__{namespace}__{service}"


def ledger_name(namespace: str, service: str) -> str:
    """The Prefect Variable holding one service's recent automatic rollbacks."""
    return f"rollback-cap__{namespace}__{service}"


def target_tag(namespace: str, service: str) -> str:
    """The tag carried by every guarded rollback run of one service."""
    return f"rollback-target:{namespace}/{service}"
