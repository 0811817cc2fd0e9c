"""Configuration problems name their file, stated exactly; the registry URL quotes owner and
package whole; counts read as whole numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from playbook.config_files import read_config_text
from playbook.errors import InvalidInputError
from playbook.post_rollback import POST_ROLLBACK_ENV, load_post_rollback, parse_post_rollback
from playbook.registry import versions_url
from playbook.services import RegistryConfig
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
MONITOR = "monitor:\n  indicators:\n    error_rate: {}\n"


def test_post_rollback_problems_name_the_settings_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidInputError, match=r"^post-rollback settings must be a mapping$"):
        parse_post_rollback("[]", MATRIX)
    with pytest.raises(InvalidInputError, match=r"^post-rollback settings is not valid YAML: "):
        parse_post_rollback("a: [", MATRIX)
    with pytest.raises(InvalidInputError, match=r"^post-rollback settings is invalid:\n"):
        parse_post_rollback("monitor: 3", MATRIX)
    with pytest.raises(
        InvalidInputError, match=r"^post-rollback settings: unknown indicator 'errors'"
    ):
        parse_post_rollback("monitor:\n  indicators:\n    errors: {}\n", MATRIX)
    path = tmp_path / "post.yaml"
    path.write_text("monitor:\n  indicators:\n    nope: {}\n")
    monkeypatch.setenv(POST_ROLLBACK_ENV, str(path))
    with pytest.raises(InvalidInputError, match=rf"^{path}: unknown indicator 'nope'"):
        load_post_rollback(MATRIX)
    with pytest.raises(InvalidInputError, match=rf"^{path}: unknown indicator 'nope'"):
        load_post_rollback(MATRIX, path)
    path.write_text("[]")
    with pytest.raises(InvalidInputError, match=rf"^{path} must be a mapping$"):
        load_post_rollback(MATRIX)
    path.write_text("monitor: 3")
    with pytest.raises(InvalidInputError, match=rf"^{path} is invalid:\n"):
        load_post_rollback(MATRIX)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(
        InvalidInputError, match=rf"^cannot read the post-rollback settings {missing}: "
    ):
        load_post_rollback(MATRIX, missing)
    path.write_text(MONITOR)
    assert load_post_rollback(MATRIX).monitor.indicators.keys() == {"error_rate"}


def test_the_config_text_comes_with_the_name_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("a: 1")
    assert read_config_text(path, "UNSET_ENV_FOR_TEST", Path("/nonexistent"), "x") == (
        "a: 1",
        str(path),
    )


def test_the_registry_url_quotes_owner_and_package_whole() -> None:
    registry = RegistryConfig.model_validate(
        {"api_url": "https://ghe.example.com/api/v3/", "owner": "acme/labs", "package": "rag/api"}
    )
    assert versions_url(registry) == (
        "https://ghe.example.com/api/v3/orgs/acme%2Flabs/packages/container/rag%2Fapi/versions"
    )
    user = RegistryConfig(owner="me", owner_type="user", package="p")
    assert versions_url(user) == "https://api.github.com/users/me/packages/container/p/versions"


def test_counts_read_as_whole_numbers_and_scores_with_three_digits() -> None:
    assert MATRIX.indicator("user_complaints").format(12345) == "12345"
    assert MATRIX.indicator("rag_quality_ndcg").format(0.71234) == "0.712"
