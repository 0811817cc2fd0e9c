"""Command line of the local stack: `python -m stack {build,up,down,status,env,bin-dir}`."""

from __future__ import annotations

import argparse
import os
import sys

from stack.build import build_all
from stack.config import DEMO_PORTS, bin_dir
from stack.local import LocalStack
from stack.processes import StackError

DEFAULT_NAME = "rollback-flows"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("--name", default=DEFAULT_NAME, help="stack name (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the control-plane binaries into the cache")
    up = commands.add_parser("up", help="start the stack, or reuse it if it is running")
    up.add_argument(
        "--prefect-ui",
        action="store_true",
        help="also start a Prefect server with UI, its worker and the alert receiver",
    )
    up.add_argument(
        "--webhook-url",
        default=os.environ.get("ROLLBACK_FLOWS_ALERT_WEBHOOK_URL"),
        help="where Alertmanager sends alerts (default: $ROLLBACK_FLOWS_ALERT_WEBHOOK_URL)",
    )
    commands.add_parser("down", help="stop the stack and delete its cluster")
    commands.add_parser("status", help="say whether the stack is running, and where")
    commands.add_parser("env", help="print shell exports pointing at the running stack")
    commands.add_parser("bin-dir", help="print the directory of the built binaries")
    args = parser.parse_args(argv)

    stack = LocalStack(
        args.name,
        DEMO_PORTS,
        webhook_url=getattr(args, "webhook_url", None),
        prefect=getattr(args, "prefect_ui", False),
        prefect_ui=getattr(args, "prefect_ui", False),
        # with the Prefect server, alerts go to the project's receiver unless sent elsewhere
        receiver=getattr(args, "prefect_ui", False) and not getattr(args, "webhook_url", None),
    )
    try:
        if args.command == "build":
            build_all()
        elif args.command == "bin-dir":
            print(bin_dir())
        elif args.command == "up":
            state = stack.up()
            _describe(state.env(), args.name)
        elif args.command == "down":
            stack.down()
            print(f"stack {args.name!r} is down")
        elif args.command in ("status", "env"):
            found = stack.running()
            if found is None:
                print(f"stack {args.name!r} is not running", file=sys.stderr)
                return 1
            if args.command == "env":
                for key, value in found.env().items():
                    print(f"export {key}={value}")
            else:
                _describe(found.env(), args.name)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _describe(env: dict[str, str], name: str) -> None:
    print(f"stack {name!r} is running:")
    for key, value in env.items():
        print(f"  {key}={value}")


if __name__ == "__main__":
    sys.exit(main())
