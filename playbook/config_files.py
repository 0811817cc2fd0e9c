"""Reading the project's YAML configuration files: which file, its YAML, its validation.

Every configuration (services, decision matrix, post-rollback settings, alert routes) is a
file named by an environment variable or shipped under deployments/; any problem with it is
an InvalidInputError that names the file, raised before anything is changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from playbook.errors import InvalidInputError

Model = TypeVar("Model", bound=BaseModel)

# libyaml's safe loader where PyYAML was built with it (ten times faster; a run reads each
# of its configuration files afresh), else the pure-Python one: the same documents, the same
# errors
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_config_text(path: Path | None, env: str, default: Path, what: str) -> tuple[str, str]:
    """The text of `path`, else of the file named by `$env`, else of `default`, and its name."""
    chosen = path or Path(os.environ.get(env) or default)
    try:
        return chosen.read_text(), str(chosen)
    except OSError as exc:
        raise InvalidInputError(f"cannot read the {what} {chosen}: {exc}") from exc


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document in `text`; invalid YAML raises InvalidInputError naming `source`."""
    try:
        return yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{source} is not valid YAML: {exc}") from exc


def validated(model: type[Model], raw: Any, source: str) -> Model:
    """`raw` validated as `model`; what is wrong is reported with `source`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"{source} is invalid:\n{exc}") from exc
