"""Which environment a run acts in, stated exactly: each refusal names what was asked and
every environment the service has; nothing is chosen by default for a namespace or cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbook.errors import InvalidInputError
from playbook.services import SERVICES_ENV, Destination, load_service, parse_services

TWO_CLUSTERS = """
default_service: rag-api
services:
  rag-api:
    deployment: rag-api
    container: rag-api
    image_repository: ghcr.io/acme/rag-api
    environments:
      production: {namespace: prod, cluster: eu-1, context: eu-1-admin}
      production-us: {namespace: prod, cluster: us-1}
      staging: {namespace: staging}
  search:
    namespace: search
    deployment: search
    container: search
    image_repository: ghcr.io/acme/search
"""

KNOWN = (
    "production (namespace prod, cluster eu-1, context eu-1-admin), "
    "production-us (namespace prod, cluster us-1), staging (namespace staging)"
)


@pytest.fixture
def services_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(TWO_CLUSTERS)
    monkeypatch.setenv(SERVICES_ENV, str(path))
    return path


def test_a_namespace_in_two_clusters_needs_the_cluster_and_the_refusal_says_so() -> None:
    service = parse_services(TWO_CLUSTERS).get("rag-api")
    with pytest.raises(InvalidInputError) as several:
        service.environment_for("prod")
    assert str(several.value) == (
        "namespace 'prod' matches several environments of service rag-api "
        "(production, production-us); name the environment (or the cluster)"
    )
    assert service.environment_for("prod", "us-1") == "production-us"
    assert service.environment_for(None, "eu-1") == "production"
    with pytest.raises(InvalidInputError) as none:
        service.environment_for("prod", "ap-1")
    assert str(none.value) == (
        "service rag-api has no environment with namespace 'prod' and cluster 'ap-1'; "
        f"its environments: {KNOWN}"
    )
    with pytest.raises(
        InvalidInputError, match=r"^service rag-api has no environment with cluster 'ap-1'; "
    ):
        service.environment_for(None, "ap-1")
    with pytest.raises(InvalidInputError) as unknown:
        service.in_environment("qa")
    assert (
        str(unknown.value) == f"service rag-api has no environment 'qa'; its environments: {KNOWN}"
    )


def test_a_chosen_environment_must_agree_with_the_namespace_and_cluster_given(
    services_file: Path,
) -> None:
    assert (
        load_service("rag-api", environment="production", cluster="eu-1").kube_context
        == "eu-1-admin"
    )
    with pytest.raises(InvalidInputError) as wrong_cluster:
        load_service("rag-api", environment="production", cluster="us-1")
    assert str(wrong_cluster.value) == "environment 'production' of rag-api is not cluster 'us-1'"
    with pytest.raises(InvalidInputError) as wrong_namespace:
        load_service("rag-api", environment="staging", namespace="prod")
    assert str(wrong_namespace.value) == (
        "environment 'staging' of rag-api is namespace 'staging', not 'prod'"
    )
    assert load_service("search").namespace == "search"
    assert load_service("rag-api", namespace="staging").environment == "staging"
    assert load_service(None).name == "rag-api"


def test_an_unknown_service_lists_the_configured_ones() -> None:
    with pytest.raises(InvalidInputError) as unknown:
        parse_services(TWO_CLUSTERS).get("rag")
    assert (
        str(unknown.value) == "unknown service 'rag'; the configured services are: rag-api, search"
    )


def test_a_services_file_without_services_is_refused_naming_the_file() -> None:
    with pytest.raises(
        InvalidInputError, match=r"^services file must be a mapping with a `services` mapping$"
    ):
        parse_services("services: []")
    with pytest.raises(
        InvalidInputError, match=r"^services file must be a mapping with a `services` mapping$"
    ):
        parse_services("[]")
    with pytest.raises(
        InvalidInputError, match=r"^services file: default_service 'x' is not among its services$"
    ):
        parse_services(TWO_CLUSTERS.replace("default_service: rag-api", "default_service: x"))
    with pytest.raises(
        InvalidInputError, match=r"(?s)^services file is invalid:\n.*services\.search\.container"
    ):
        parse_services(TWO_CLUSTERS.replace("container: search", "container: 'Search Me'"))


def test_a_destination_without_a_subset_prints_as_its_host() -> None:
    assert str(Destination(host="rag-api")) == "rag-api"
    assert str(Destination(host="rag-api", subset="canary")) == "rag-api/canary"
    assert Destination(host="rag-api.prod.svc.cluster.local").matches({"host": "rag-api"})
    assert not Destination(host="rag-api").matches({"host": "rag-api", "subset": "canary"})
    assert not Destination(host="rag-api").matches({"host": 7})
