"""Registry task: confirm an image tag exists through GitHub's packages API (Procedure 3, step 1).

The token comes from a Prefect `Secret` block named in the service's registry configuration;
the API's base URL is configurable so tests and GitHub Enterprise can point elsewhere.
"""

from __future__ import annotations

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from playbook.errors import NotFoundError
from playbook.registry import TagCheck, find_tag, tags_of, versions_url
from playbook.services import RegistryConfig
from tasks.boundary import retry_condition_fn, run_logger, translating
from tasks.secrets import load_secret

MAX_PAGES = 50
GITHUB_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "rollback-flows",
}


def load_registry_token(block_name: str) -> str:
    """The token stored in the Prefect Secret block `block_name`.

    Raises:
        AccessDeniedError: the block does not exist or is empty.
    """
    return load_secret(
        block_name,
        "no registry token",
        f" (create it with `prefect block create secret` or Secret(value=...).save"
        f"({block_name!r}))",
    )


def find_image_tag(registry: RegistryConfig, tag: str, token: str) -> TagCheck:
    """The package version tagged `tag`, reading the version list page by page (Link header).

    Raises:
        NotFoundError: the package has no such tag, or the package itself is not visible.
        AccessDeniedError: the token is invalid (401) or lacks read:packages (403).
    """
    url: str | None = versions_url(registry)
    params: dict[str, str | int] | None = {"per_page": 100, "state": "active"}
    pages = 0
    seen: list[str] = []
    headers = {**GITHUB_HEADERS, "Authorization": f"Bearer {token}"}
    what = f"list versions of container package {registry.owner}/{registry.package}"
    with httpx.Client(headers=headers, timeout=registry.timeout_seconds) as http:
        while url and pages < MAX_PAGES:
            with translating(what):
                response = http.get(url, params=params)
                response.raise_for_status()
            pages += 1
            versions = response.json()
            match = find_tag(versions, tag)
            if match is not None:
                run_logger().info(
                    "registry has %s:%s (version %s)", registry.package, tag, match["id"]
                )
                return TagCheck(registry.package, tag, int(match["id"]), str(match["name"]), pages)
            seen.extend(t for v in versions for t in tags_of(v))
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries its own query
    recent = ", ".join(seen[:10]) or "none"
    raise NotFoundError(
        f"tag {tag!r} does not exist in container package {registry.owner}/{registry.package} "
        f"({pages} page(s) read; most recent tags: {recent})"
    )


@task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=120,
    cache_policy=NO_CACHE,
)
def confirm_image_tag(registry: RegistryConfig, tag: str) -> TagCheck:
    """Confirm that the container package has a version tagged `tag` (token from the Secret block).

    Raises:
        NotFoundError: the package has no such tag, or the package itself is not visible.
        AccessDeniedError: the token is missing, invalid (401) or lacks read:packages (403).
    """
    return find_image_tag(registry, tag, load_registry_token(registry.token_secret))
