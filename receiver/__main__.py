"""Run the alert receiver: `python -m receiver [--host 127.0.0.1] [--port 18080]`.

The routes come from `deployments/alert-routes.yaml` (or `ROLLBACK_FLOWS_ALERT_ROUTES`), the
services from `deployments/services.yaml` (or `ROLLBACK_FLOWS_SERVICES`), the Prefect API from
`PREFECT_API_URL`, and the bearer token from the Prefect Secret block named by the routes
file's `token_secret`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import SecretStr

from playbook.errors import RollbackError
from playbook.services import load_services
from receiver.app import create_app
from receiver.config import load_config, load_token
from receiver.server import ReceiverServer


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the configuration and the token, serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config()
        services = load_services()
        token: SecretStr = load_token(config.token_secret)
    except RollbackError as exc:
        print(f"receiver: {exc}", file=sys.stderr)
        return 2
    server = ReceiverServer(create_app(config, token, services), args.host, args.port)
    print(f"receiver: serving on http://{args.host}:{args.port}/alerts", file=sys.stderr)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
