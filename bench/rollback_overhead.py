"""Benchmark: `kubernetes_rollback` against bare `kubectl rollout undo` + `rollout status`.

Both undo the same Deployment on the same cluster, alternating (and alternating which goes
first in each pair); each undo toggles between the last two revisions, exactly what both do.
Prints the median ratio (flow / kubectl) and the median overhead in seconds.

    eval "$(.venv/bin/python -m stack env)"      # KUBECONFIG and PREFECT_API_URL of the stack
    .venv/bin/python bench/rollback_overhead.py --pairs 5

Without PREFECT_API_URL the flows run against a temporary local Prefect server.
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
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from kubernetes import client, config  # noqa: E402

from stack.config import bin_dir  # noqa: E402
from stack.manifests import deployment_manifest  # noqa: E402

IMAGE = "ghcr.io/acme/rag-api"


def wait_rolled_out(apps: client.AppsV1Api, namespace: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = apps.read_namespaced_deployment("rag-api", namespace)
        s = d.status
        if (s.observed_generation or 0) >= d.metadata.generation and (
            s.updated_replicas,
            s.replicas,
            s.available_replicas,
        ) == (d.spec.replicas,) * 3:
            return
        time.sleep(0.2)
    raise SystemExit(f"rag-api in {namespace} did not roll out")


def setup(apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespace({"metadata": {"name": namespace}})
    apps.create_namespaced_deployment(namespace, deployment_manifest(f"{IMAGE}:v1.0.0"))
    wait_rolled_out(apps, namespace)
    apps.patch_namespaced_deployment(
        "rag-api",
        namespace,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "rag-api", "image": f"{IMAGE}:v1.0.1"}]}
                }
            }
        },
    )
    wait_rolled_out(apps, namespace)


@contextlib.contextmanager
def prefect_server(heartbeat: bool) -> Iterator[None]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with contextlib.ExitStack() as stack:
        if not heartbeat:
            stack.enter_context(temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))
        if not os.environ.get("PREFECT_API_URL"):
            from prefect.testing.utilities import prefect_test_harness

            stack.enter_context(prefect_test_harness())
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG")
        or str(REPO / ".stack" / "rollback-flows" / "kubeconfig"),
    )
    parser.add_argument("--kubectl", default=str(bin_dir() / "kubectl"))
    parser.add_argument(
        "--no-heartbeat",
        action="store_true",
        help="turn Prefect's flow heartbeat off (it costs about 1 s per flow run)",
    )
    args = parser.parse_args()
    if args.pairs < 5:
        parser.error("at least 5 pairs")
    os.environ["KUBECONFIG"] = args.kubeconfig

    namespace = f"it-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        services = Path(tmp) / "services.yaml"
        services.write_text(
            "default_service: rag-api\nservices:\n  rag-api:\n"
            f"    namespace: {namespace}\n    deployment: rag-api\n    container: rag-api\n"
            f"    image_repository: {IMAGE}\n    rollout_timeout_seconds: 120\n"
        )
        os.environ["ROLLBACK_FLOWS_SERVICES"] = str(services)
        # kubectl neither verifies the service nor watches it afterwards: measured without
        # the checklist after the rollout and without the 30-minute follow-up monitor
        shipped = yaml.safe_load((REPO / "deployments" / "post-rollback.yaml").read_text())
        shipped["verification"]["after_rollback"]["enabled"] = False
        shipped["follow_up"]["enabled"] = False
        post_rollback = Path(tmp) / "post-rollback.yaml"
        post_rollback.write_text(yaml.safe_dump(shipped))
        os.environ["ROLLBACK_FLOWS_POST_ROLLBACK"] = str(post_rollback)
        api = config.new_client_from_config(config_file=args.kubeconfig)
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        setup(apps, core, namespace)
        try:
            with prefect_server(heartbeat=not args.no_heartbeat):
                from flows.kubernetes_rollback import kubernetes_rollback

                kubernetes_rollback("rag-api")  # warm-up: imports, first flow-run registration

                def run_kubectl() -> float:
                    started = time.perf_counter()
                    base = [args.kubectl, "--kubeconfig", args.kubeconfig, "-n", namespace]
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
                    started = time.perf_counter()
                    kubernetes_rollback("rag-api")
                    return time.perf_counter() - started

                pairs = []
                for i in range(args.pairs):
                    if i % 2 == 0:
                        k, f = run_kubectl(), run_flow()
                    else:
                        f, k = run_flow(), run_kubectl()
                    pairs.append((k, f))
                    print(f"pair {i + 1}: kubectl {k:.2f}s, flow {f:.2f}s", file=sys.stderr)
        finally:
            core.delete_namespace(namespace)
            api.close()
    ratio = statistics.median(f / k for k, f in pairs)
    overhead = statistics.median(f - k for k, f in pairs)
    heartbeat = "off" if args.no_heartbeat else "on"
    print(
        f"rollback overhead (flow heartbeat {heartbeat}) over {len(pairs)} pairs: median ratio flow/kubectl {ratio:.2f}x, "
        f"median overhead {overhead:.2f}s (kubectl median {statistics.median(k for k, _ in pairs):.2f}s, "
        f"flow median {statistics.median(f for _, f in pairs):.2f}s)"
    )


if __name__ == "__main__":
    main()
