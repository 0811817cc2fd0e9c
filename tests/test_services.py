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


ENVIRONMENTS = """
default_service: rag-api
services:
  rag-api:
    default_environment: production
    environments:
      production: {namespace: shop, cluster: eu-1, context: prod}
      staging: {namespace: shop, cluster: eu-2, context: stage, prometheus_url: "http://p:9090/"}
      qa: {namespace: qa}
    deployment: rag-api
    container: rag-api
    image_repository: ghcr.io/acme/rag-api
"""


def test_a_single_namespace_is_the_only_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(MINIMAL)
    monkeypatch.setenv(SERVICES_ENV, str(path))
    rag = load_service("rag-api")
    assert (rag.environment, rag.namespace, rag.kube_context) == ("production", "production", None)
    assert load_service("rag-api", "production").environment == "production"
    with pytest.raises(InvalidInputError, match="no environment with namespace 'it-abc'"):
        load_service("rag-api", "it-abc")


def test_the_environment_is_chosen_by_name_or_by_the_alerts_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(ENVIRONMENTS)
    monkeypatch.setenv(SERVICES_ENV, str(path))
    assert load_service("rag-api").environment == "production"
    staging = load_service("rag-api", environment="staging")
    assert (staging.namespace, staging.kube_context) == ("shop", "stage")
    assert staging.prometheus_url == "http://p:9090"
    assert load_service("rag-api", "shop", cluster="eu-2").environment == "staging"
    assert load_service("rag-api", "qa").environment == "qa"
    # never a guess: one namespace in two clusters needs the cluster; unknown ones fail
    with pytest.raises(InvalidInputError, match="matches several environments"):
        load_service("rag-api", "shop")
    with pytest.raises(
        InvalidInputError, match="no environment with namespace 'shop' and cluster 'us-1'"
    ):
        load_service("rag-api", "shop", cluster="us-1")
    with pytest.raises(InvalidInputError, match="no environment 'prod'"):
        load_service("rag-api", environment="prod")
    with pytest.raises(InvalidInputError, match="is namespace 'qa', not 'shop'"):
        load_service("rag-api", "shop", environment="qa")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("default_environment: production", "default_environment: prod"),
            "default_environment 'prod'",
        ),
        (("      qa: {namespace: qa}", "      qa: {namespace: Q_A}"), "namespace"),
        (("      qa: {namespace: qa}", "      qa: {namespace: qa, colour: red}"), "colour"),
        (
            (
                "    default_environment: production",
                "    namespace: other\n    default_environment: production",
            ),
            "disagrees",
        ),
    ],
)
def test_invalid_environments_are_rejected(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_services(ENVIRONMENTS.replace(*edit))


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
