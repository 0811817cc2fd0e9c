"""Command line of the local stack: `python -m stack {build,up,down,status,env,bin-dir}`, and
`python -m stack rules`, the alert rules generated from the decision matrix."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from playbook.errors import InvalidInputError
from playbook.thresholds import DEFAULT_MATRIX_FILE, MATRIX_ENV, load_decision_matrix
from stack.build import build_all
from stack.config import DEMO_PORTS, REPO_DIR, bin_dir
from stack.local import LocalStack
from stack.processes import StackError
from stack.prometheus import PRODUCTION_FOR, RULES_FILE, alert_rules_text

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
    rules = commands.add_parser(
        "rules", help="print the playbook's alert rules, generated from the decision matrix"
    )
    rules.add_argument(
        "--for", dest="for_duration", default=PRODUCTION_FOR, help="default %(default)s"
    )
    rules.add_argument(
        "--window", help="one window for every indicator (default: each indicator's own)"
    )
    rules.add_argument(
        "--matrix",
        type=Path,
        help=f"the decision matrix (default: ${MATRIX_ENV}, else the shipped file)",
    )
    rules.add_argument(
        "--output", type=Path, help=f"write the rules there (e.g. {_shown(RULES_FILE)})"
    )
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
        elif args.command == "rules":
            text = alert_rules(args.for_duration, args.window, args.matrix)
            if args.output:
                _write(args.output, text)
                print(f"wrote {args.output}", file=sys.stderr)
            else:
                print(text, end="")
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
    except (StackError, InvalidInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def alert_rules(
    for_duration: str = PRODUCTION_FOR, window: str | None = None, matrix: Path | None = None
) -> str:
    """The alert rules the receiver's routes expect, for a production Prometheus: generated
    from the decision matrix `matrix` (`$ROLLBACK_FLOWS_DECISION_MATRIX`, else the shipped
    file), each indicator over `window` (else its own), each alert firing after
    `for_duration`. With the defaults and the shipped matrix, this is `RULES_FILE`."""
    path = matrix or Path(os.environ.get(MATRIX_ENV) or DEFAULT_MATRIX_FILE)
    source = _shown(path)
    command = f"python -m stack rules --matrix {source} --for {for_duration}"
    if window:
        command += f" --window {window}"
    return alert_rules_text(
        load_decision_matrix(path),
        for_duration=for_duration,
        window=window,
        preamble=[
            f"The rollback playbook's alert rules for Prometheus, GENERATED from {source}: "
            "do not edit. This file is the output of",
            f"  {command}",
            (
                "Each indicator's window is the matrix's own (its `window`)"
                if not window
                else f"Every indicator is read over {window}, not over the matrix's windows"
            )
            + (
                f"; for: {for_duration}, as the playbook states no duration: one bad scrape or "
                "evaluation does not start a rollback."
                if for_duration == PRODUCTION_FOR
                else f"; for: {for_duration}."
            ),
            f"`make rules` regenerates {_shown(RULES_FILE)} this way, and "
            "tests/test_alert_rules.py fails while that file and the matrix disagree. Install "
            "it as one of prometheus.yml's `rule_files`, or give its `groups` to a "
            "PrometheusRule's `spec` (deployments/README.md, step 7).",
        ],
    )


def _shown(path: Path) -> str:
    """`path` as the header names it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(path)


def _write(path: Path, text: str) -> None:
    """Replace `path` with `text` at once: a failed run leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def _describe(env: dict[str, str], name: str) -> None:
    print(f"stack {name!r} is running:")
    for key, value in env.items():
        print(f"  {key}={value}")


if __name__ == "__main__":
    sys.exit(main())
