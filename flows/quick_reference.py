"""The playbook's Quick Reference: `make rollback-prod VERSION=v1.2.3` (and rollback-staging).

check the version and the environment (the services file's rules, before anything runs) →
start the image-rollback deployment on the Prefect server of PREFECT_API_URL and follow the
run to its end (`prefect deployment run ... --watch`, which prints the run's URL and exits
non-zero when the run does not complete). Where the environment asks for an approval
(production), the run waits for it in the Prefect UI.

    python -m flows.quick_reference ENVIRONMENT VERSION [SERVICE]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from playbook.errors import InvalidInputError
from playbook.images import validate_version
from playbook.services import load_service

DEPLOYMENT = "image-rollback/default"


def prefect_command(environment: str, version: str, service: str | None) -> list[str]:
    """The `prefect deployment run` command line, after checking its inputs.

    Raises:
        InvalidInputError: a malformed version, an unknown service or environment.
    """
    validate_version(version)
    cfg = load_service(service, environment=environment)
    params = {"service": cfg.name, "environment": cfg.environment, "target_version": version}
    prefect = Path(sys.executable).with_name("prefect")
    return [
        str(prefect),
        "deployment",
        "run",
        DEPLOYMENT,
        *(
            arg
            for name, value in params.items()
            for arg in ("--param", f"{name}={json.dumps(value)}")
        ),
        "--watch",
    ]


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    if not argv[1]:
        print("refused, nothing started: VERSION is missing (VERSION=v1.2.3)", file=sys.stderr)
        return 2
    try:
        command = prefect_command(argv[0], argv[1], argv[2] if len(argv) == 3 else None)
    except InvalidInputError as exc:
        print(f"refused, nothing started: {exc}", file=sys.stderr)
        return 2
    os.execv(command[0], command)  # its exit status is the run's outcome


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
