"""The registry check against a loopback server shaped as GitHub's packages API documents it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_github import FakeGitHub
from pydantic import AnyHttpUrl

from playbook.errors import AccessDeniedError, NetworkError, NotFoundError
from playbook.registry import versions_url
from playbook.services import RegistryConfig
from tasks.registry import find_image_tag


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.add_package("org", "acme", "rag-api", [["v1.2.4", "latest"], [], ["v1.2.3"], ["v1.2.2"]])
    # 250 versions: the wanted tag is on the third page of 100
    fake.add_package("user", "octocat", "big", [[f"v0.0.{i}"] for i in range(250, 0, -1)])
    yield fake
    fake.stop()


def registry(fake: FakeGitHub, **changes: str) -> RegistryConfig:
    values = {"api_url": fake.url, "owner": "acme", "package": "rag-api", **changes}
    return RegistryConfig.model_validate(values)


def test_tag_on_the_first_page(github: FakeGitHub) -> None:
    check = find_image_tag(registry(github), "v1.2.3", github.token)
    assert check.tag == "v1.2.3" and check.pages_read == 1
    assert check.digest.startswith("sha256:")
    request = github.requests[-1]
    assert request.path == "/orgs/acme/packages/container/rag-api/versions"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.query["per_page"] == ["100"]


def test_pagination_follows_the_link_header(github: FakeGitHub) -> None:
    reg = registry(github, owner="octocat", owner_type="user", package="big")
    check = find_image_tag(reg, "v0.0.3", github.token)
    assert check.pages_read == 3
    assert [r.query.get("page") for r in github.requests] == [None, ["2"], ["3"]]
    assert github.requests[0].path == "/users/octocat/packages/container/big/versions"


def test_missing_tag_names_recent_tags(github: FakeGitHub) -> None:
    with pytest.raises(
        NotFoundError, match=r"tag 'v9.9.9' does not exist .*v1.2.4, latest, v1.2.3"
    ):
        find_image_tag(registry(github), "v9.9.9", github.token)


def test_bad_token_is_access_denied(github: FakeGitHub) -> None:
    with pytest.raises(AccessDeniedError, match="401: Bad credentials"):
        find_image_tag(registry(github), "v1.2.3", "wrong")


def test_unknown_package_is_not_found(github: FakeGitHub) -> None:
    with pytest.raises(NotFoundError, match="Package not found"):
        find_image_tag(registry(github, package="nope"), "v1.2.3", github.token)


def test_unreachable_registry_is_transient() -> None:
    fake = FakeGitHub().start()
    reg = registry(fake)
    fake.stop()
    with pytest.raises(NetworkError):
        find_image_tag(reg, "v1.2.3", "t")


def test_nested_package_names_are_url_encoded() -> None:
    reg = RegistryConfig(
        api_url=AnyHttpUrl("https://api.github.com"), owner="acme", package="team/rag-api"
    )
    assert (
        versions_url(reg)
        == "https://api.github.com/orgs/acme/packages/container/team%2Frag-api/versions"
    )
