"""Service descriptions: the shipped services file, and clear errors for bad configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbook.errors import InvalidInputError
from playbook.services import (
    DEFAULT_SERVICES_FILE,
    SERVICES_ENV,
    load_service,
    load_services,
    parse_services,
)

MINIMAL = """
default_service: rag-api
services:
  rag-api:
    namespace: production
    deployment: rag-api
    container: rag-api
    image_repository: ghcr.io/acme/rag-api
"""


def test_shipped_file_describes_rag_api_as_default() -> None:
    services = load_services(DEFAULT_SERVICES_FILE)
    rag = services.get(None)
    assert rag.name == "rag-api"
    assert rag.canary is not None and rag.canary.canary_destination.subset == "canary"
    assert rag.registry is not None and rag.registry.token_secret == "github-token"


def test_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown service 'rag'.*rag-api"):
        parse_services(MINIMAL).get("rag")


def test_namespace_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(MINIMAL)
    monkeypatch.setenv(SERVICES_ENV, str(path))
    assert load_service("rag-api", "it-abc").namespace == "it-abc"
    with pytest.raises(InvalidInputError, match="invalid namespace"):
        load_service("rag-api", "Not_A_Namespace")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("deployment: rag-api", "deployment: Rag_Api"), "deployment"),
        (("container: rag-api", "container: rag-api\n    replicas: 3"), "replicas"),
        (("default_service: rag-api", "default_service: other"), "default_service 'other'"),
        (("image_repository: ghcr.io/acme/rag-api", "image_repository: 'bad repo'"), "image"),
    ],
)
def test_invalid_configuration_is_rejected(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_services(MINIMAL.replace(*edit))


def test_bad_error_pattern_is_rejected() -> None:
    text = MINIMAL + "    logs: {error_pattern: '(unclosed'}\n"
    with pytest.raises(InvalidInputError, match="not a valid regular expression"):
        parse_services(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read the services file"):
        load_services(tmp_path / "absent.yaml")
