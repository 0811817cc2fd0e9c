"""GitHub container registry facts: where a package's versions are listed and which tags they carry.

Pure functions over the JSON of GitHub's "List package versions" endpoints
(`GET /orgs/{org}/packages/container/{name}/versions`, or `/users/{user}/...`): a list of
versions, each with `metadata.container.tags`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from playbook.services import RegistryConfig


@dataclass(frozen=True)
class TagCheck:
    """The package version that carries a tag, as the registry reported it."""

    package: str
    tag: str
    version_id: int
    digest: str
    pages_read: int


def versions_url(registry: RegistryConfig) -> str:
    """The URL of the package's version list (a nested package name is URL-encoded)."""
    owners = "orgs" if registry.owner_type == "org" else "users"
    base = str(registry.api_url).rstrip("/")
    return (
        f"{base}/{owners}/{quote(registry.owner, safe='')}/packages/container/"
        f"{quote(registry.package, safe='')}/versions"
    )


def tags_of(version: Mapping[str, Any]) -> tuple[str, ...]:
    """The container tags of one package version (none for an untagged one)."""
    container = (version.get("metadata") or {}).get("container") or {}
    return tuple(str(t) for t in container.get("tags") or [])


def find_tag(versions: Iterable[Mapping[str, Any]], tag: str) -> Mapping[str, Any] | None:
    """The package version carrying `tag`, or None."""
    return next((v for v in versions if tag in tags_of(v)), None)
