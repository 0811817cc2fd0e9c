"""Benchmark: `kubernetes_rollback` against bare `kubectl rollout undo` + `rollout status`.

Each measured undo follows a release (unmeasured): CI sets a new version, it rolls out, and
then either kubectl or the flow undoes it, alternating (and alternating which goes first in
each pair). The flow runs in this process against the stack's Prefect server, with the
checklist after the rollout and the follow-up monitor off (kubectl does neither) and Prefect's
flow heartbeat off unless `--heartbeat`. The first pair warms up both sides and is not
counted. Prints the median of the paired differences (flow - kubectl), the median ratio and
both medians; and, as the floor of any flow run, the median of a flow that does nothing, run
after each pair on the same server.

    .venv/bin/python bench/rollback_overhead.py --pairs 10

Measures the environment's stack (`make stack-up`, then `eval "$(.venv/bin/python -m stack
env)"`) or, without one, a private stack on free ports (see bench/common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import IMAGE, environment, follow_ups_since, measured_stack, release
from kubernetes import client, config

from stack.config import bin_dir
from stack.manifests import deployment_manifest


@contextlib.contextmanager
def heartbeat(on: bool) -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if on:
        yield
        return
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def empty_flow() -> Callable[[], None]:
    """A flow that does nothing: what any flow run costs in Prefect's engine and server."""
    from prefect import flow

    @flow(name="bench-empty-flow")
    def empty() -> None:
        """Nothing."""

    return empty


def timed(call: Callable[[], object]) -> float:
    """Seconds `call` took."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--kubectl", default=str(bin_dir() / "kubectl"))
    parser.add_argument("--heartbeat", action="store_true", help="keep Prefect's flow heartbeat on")
    args = parser.parse_args()
    if args.pairs < 5:
        parser.error("at least 5 pairs")

    with measured_stack("overhead") as kind, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = os.environ["KUBECONFIG"]
        namespace = f"bench-{uuid.uuid4().hex[:6]}"
        services = Path(tmp) / "services.yaml"
        services.write_text(
            "default_service: rag-api\nservices:\n  rag-api:\n"
            f"    namespace: {namespace}\n    deployment: rag-api\n    container: rag-api\n"
            f"    image_repository: {IMAGE}\n    rollout_timeout_seconds: 120\n"
        )
        os.environ["ROLLBACK_FLOWS_SERVICES"] = str(services)
        api = config.new_client_from_config(config_file=kubeconfig)
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        began = datetime.now(UTC)
        versions = iter(f"v1.0.{n}" for n in range(1, 10_000))
        try:
            apps.create_namespaced_deployment(namespace, deployment_manifest(f"{IMAGE}:v1.0.0"))
            release(apps, namespace, next(versions))
            with heartbeat(args.heartbeat):
                from flows.kubernetes_rollback import kubernetes_rollback

                def run_kubectl() -> float:
                    release(apps, namespace, next(versions))
                    started = time.perf_counter()
                    base = [args.kubectl, "--kubeconfig", kubeconfig, "-n", namespace]
                    subprocess.run(
                        [*base, "rollout", "undo", "deployment/rag-api"],
                        check=True,
                        capture_output=True,
                    )
                    subprocess.run(
                        [*base, "rollout", "status", "deployment/rag-api", "--timeout=120s"],
                        check=True,
                        capture_output=True,
                    )
                    return time.perf_counter() - started

                def run_flow() -> float:
                    release(apps, namespace, next(versions))
                    started = time.perf_counter()
                    kubernetes_rollback("rag-api", skip_confirmation=True)
                    return time.perf_counter() - started

                empty = empty_flow()
                pairs, floor = [], []
                for i in range(args.pairs + 1):
                    if i % 2 == 0:
                        k, f = run_kubectl(), run_flow()
                    else:
                        f, k = run_flow(), run_kubectl()
                    e = timed(empty)
                    print(
                        f"pair {i}: kubectl {k:.3f}s, flow {f:.3f}s (an empty flow {e:.3f}s)",
                        file=sys.stderr,
                    )
                    if i:  # the first pair warms up both sides
                        pairs.append((k, f))
                        floor.append(e)
            follow_ups = follow_ups_since(began)
            print(environment(kind))
        finally:
            core.delete_namespace(namespace)
            api.close()
    ratio = statistics.median(f / k for k, f in pairs)
    overhead = statistics.median(f - k for k, f in pairs)
    beat = "on" if args.heartbeat else "off"
    print(
        f"rollback overhead (flow heartbeat {beat}), {len(pairs)} pairs after one warm-up:"
        f" median overhead (flow - kubectl) {overhead:.3f} s, median ratio {ratio:.2f}x"
        f" (kubectl median {statistics.median(k for k, _ in pairs):.3f} s,"
        f" flow median {statistics.median(f for _, f in pairs):.3f} s)"
    )
    print(
        f"  Prefect's own cost of any flow run here (a flow that does nothing, run in this"
        f" process after each pair: created, Running, Completed) median"
        f" {statistics.median(floor):.3f} s; the rollback's own steps (its lock, reads, undo,"
        f" verification and report) add {overhead - statistics.median(floor):.3f} s to"
        f" kubectl's"
    )
    print(f"  follow-up monitor runs created while measuring: {follow_ups}")


if __name__ == "__main__":
    main()
