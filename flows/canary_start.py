"""`make canary-start SERVICE=rag-api NAMESPACE=production VERSION=v1.3.0`: the event a release
pipeline emits when a canary begins, which starts `canary-guard` (prefect.yaml's trigger).

check the service, its environment and the version (the services file's rules, before anything
is sent) → `prefect event emit rollback-flows.canary.started` with the service, namespace and
canary version in the event's resource, on the Prefect server of PREFECT_API_URL. A pipeline
may run the same `prefect event emit` command (printed here) or POST the event to the API.

    python -m flows.canary_start SERVICE NAMESPACE VERSION
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from playbook.errors import InvalidInputError
from playbook.images import validate_version
from playbook.services import load_service

EVENT = "rollback-flows.canary.started"
"""The event prefect.yaml's canary-guard trigger expects."""
SERVICE_LABEL = "rollback-flows.service"
NAMESPACE_LABEL = "rollback-flows.namespace"
VERSION_LABEL = "rollback-flows.canary-version"


def canary_resource(service: str, namespace: str, version: str) -> dict[str, str]:
    """The event's resource: the canary of `service` in `namespace` at `version`.

    Raises:
        InvalidInputError: a malformed version, an unknown service, a namespace that is none
            of its environments, or a service without a canary.
    """
    validate_version(version)
    cfg = load_service(service, namespace=namespace)
    if cfg.canary is None:
        raise InvalidInputError(f"service {cfg.name!r} has no canary configured")
    return {
        "prefect.resource.id": f"rollback-flows.canary.{cfg.namespace}.{cfg.name}",
        "prefect.resource.name": f"{cfg.namespace}/{cfg.name} canary {version}",
        SERVICE_LABEL: cfg.name,
        NAMESPACE_LABEL: cfg.namespace,
        VERSION_LABEL: version,
    }


def emit_command(service: str, namespace: str, version: str) -> list[str]:
    """The `prefect event emit` command line, after checking its inputs."""
    resource = canary_resource(service, namespace, version)
    prefect = Path(sys.executable).with_name("prefect")
    return [str(prefect), "event", "emit", EVENT, "--resource", json.dumps(resource)]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not all(argv):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        command = emit_command(*argv)
    except InvalidInputError as exc:
        print(f"refused, nothing emitted: {exc}", file=sys.stderr)
        return 2
    print(" ".join(["prefect", *command[1:4], f"--resource '{command[-1]}'"]), file=sys.stderr)
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
