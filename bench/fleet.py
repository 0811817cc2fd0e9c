"""Benchmark: one incident's fleet rollback of N services, N = 1, 10, 50 (and the ratio 50/1).

Each round creates N services (a Deployment each, in its own namespace, released v1.0.0 →
v1.0.1), rolls all of them back with `fleet_rollback(max_parallel=N)` against the stack's
Prefect server, checks that every Deployment is back on v1.0.0, and deletes them. The
checklist after the rollback and the follow-up monitor are off: they are the same for one
service or fifty. Beside each round, the baseline: the same N services released again and
undone by N `kubectl rollout undo` + `rollout status` side by side, which is what the cluster
itself takes for N rollbacks at once (on KWOK, its controllers share the 2 cores). One N=1
round of each warms up first. Prints the median seconds per N over `--runs` rounds, for both,
and the ratios of N=50 to N=1. `--on-worker` runs each fleet as a run of the
`fleet-rollback/default` deployment on the stack's warm worker (as an SRE starts it from the
UI), timed from the run's creation to the end the server records.

    .venv/bin/python bench/fleet.py --runs 3

Measures the environment's stack (`make stack-up`, then `eval "$(.venv/bin/python -m stack
env)"`) or, without one, a private stack on free ports (see bench/common.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from common import IMAGE, environment, measured_stack
from kubernetes import client, config

from stack.config import bin_dir
from stack.manifests import deployment_manifest

GOOD, BAD = "v1.0.0", "v1.0.1"


def wait_rolled_out(apps: client.AppsV1Api, namespace: str, name: str) -> None:
    from cluster import wait_rolled_out as rolled_out

    rolled_out(apps, namespace, name, timeout=180)


def release(
    apps: client.AppsV1Api, core: client.CoreV1Api, names: list[str], ready_delay: float
) -> None:
    """Each service at GOOD, then released BAD (revision 2), all rolled out. GOOD's pods
    become ready `ready_delay` seconds after they start (a KWOK stage), so the rollback's
    rollout lasts that long, as a real one does."""
    for name in names:
        core.create_namespace({"metadata": {"name": name}})
        body = deployment_manifest(f"{IMAGE}:{GOOD}", name=name)
        if ready_delay:
            body["spec"]["template"]["metadata"]["annotations"] = {
                "rollback-flows.dev/ready-delay": f"{ready_delay:g}s"
            }
        apps.create_namespaced_deployment(name, body)
    for name in names:
        wait_rolled_out(apps, name, name)
        apps.patch_namespaced_deployment(
            name,
            name,
            {"spec": {"template": {"spec": {"containers": [
                {"name": "rag-api", "image": f"{IMAGE}:{BAD}"}
            ]}}}},
        )  # fmt: skip
    for name in names:
        wait_rolled_out(apps, name, name)


def kubectl_round(
    apps: client.AppsV1Api, core: client.CoreV1Api, n: int, kubectl: str, ready_delay: float
) -> float:
    """The same N services released, then undone by N `kubectl rollout undo && kubectl rollout
    status` side by side: what the cluster itself takes for N rollbacks at once."""
    names = [f"fleet-{uuid.uuid4().hex[:6]}" for _ in range(n)]
    release(apps, core, names, ready_delay)
    kubeconfig = os.environ["KUBECONFIG"]
    try:
        started = time.perf_counter()
        shells = [
            subprocess.Popen(
                [
                    "sh",
                    "-c",
                    f'"$0" --kubeconfig "$1" -n {name} rollout undo deployment/{name} && '
                    f'"$0" --kubeconfig "$1" -n {name} rollout status deployment/{name} '
                    "--timeout=180s",
                    kubectl,
                    kubeconfig,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for name in names
        ]
        for name, shell in zip(names, shells, strict=True):
            _, err = shell.communicate()
            if shell.returncode != 0:
                raise SystemExit(f"kubectl N={n}: {name}: {err.decode()[-500:]}")
        return time.perf_counter() - started
    finally:
        for name in names:
            core.delete_namespace(name)


def run_on_worker(names: list[str], n: int, services: Path) -> float:
    """The fleet as an SRE starts it from the UI: a run of `fleet-rollback/default` on the
    stack's worker, timed from its creation to the end the server records."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        deployment = prefect.read_deployment_by_name("fleet-rollback/default")
        started = time.time()
        run = prefect.create_flow_run_from_deployment(
            deployment.id,
            parameters={"services": names, "max_parallel": n},
            job_variables={"env": {"ROLLBACK_FLOWS_SERVICES": str(services)}},
        )
        while not (run.state is not None and run.state.is_final()):
            time.sleep(0.1)
            run = prefect.read_flow_run(run.id)
    if not run.state.is_completed() or run.end_time is None:
        raise SystemExit(f"N={n}: the fleet run ended {run.state.name}: {run.state.message}")
    return run.end_time.timestamp() - started


def one_round(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    n: int,
    tmp: Path,
    ready_delay: float,
    on_worker: bool = False,
) -> float:
    from flows.fleet_rollback import fleet_rollback

    names = [f"fleet-{uuid.uuid4().hex[:6]}" for _ in range(n)]
    services = tmp / f"services-{n}.yaml"
    services.write_text(
        yaml.safe_dump(
            {
                "default_service": names[0],
                "services": {
                    name: {
                        "namespace": name,
                        "deployment": name,
                        "container": "rag-api",
                        "image_repository": IMAGE,
                        "rollout_timeout_seconds": 180,
                    }
                    for name in names
                },
            }
        )
    )
    os.environ["ROLLBACK_FLOWS_SERVICES"] = str(services)
    release(apps, core, names, ready_delay)
    try:
        if on_worker:
            seconds = run_on_worker(names, n, services)
        else:
            started = time.perf_counter()
            report = fleet_rollback(services=names, max_parallel=n)
            seconds = time.perf_counter() - started
            if report.failed:
                raise SystemExit(f"N={n}: {report.summary()}")
        for name in names:
            image = apps.read_namespaced_deployment(name, name).spec.template.spec.containers[0]
            if image.image != f"{IMAGE}:{GOOD}":
                raise SystemExit(f"N={n}: {name} is on {image.image}")
        return seconds
    finally:
        for name in names:
            core.delete_namespace(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument(
        "--ready-delay",
        type=float,
        default=0.0,
        help="seconds the good version's pods take to become ready (a real rollout's wait)",
    )
    parser.add_argument(
        "--kubectl",
        default=str(bin_dir() / "kubectl"),
        help="the kubectl of the baseline (N kubectl undos side by side)",
    )
    parser.add_argument(
        "--on-worker",
        action="store_true",
        help="run each fleet on the stack's worker (as from the UI), not in this process",
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    with measured_stack("fleet") as kind, tempfile.TemporaryDirectory() as tmp:
        api = config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        one_round(apps, core, 1, Path(tmp), args.ready_delay, args.on_worker)  # warm-up
        kubectl_round(apps, core, 1, args.kubectl, args.ready_delay)
        medians: dict[int, float] = {}
        baseline: dict[int, float] = {}
        for n in sizes:
            times, bare = [], []
            for _ in range(args.runs):  # alternating: the machine's load hits both alike
                times.append(one_round(apps, core, n, Path(tmp), args.ready_delay, args.on_worker))
                bare.append(kubectl_round(apps, core, n, args.kubectl, args.ready_delay))
            medians[n], baseline[n] = statistics.median(times), statistics.median(bare)
            print(
                f"N={n:>3}: fleet_rollback median {medians[n]:6.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in times)}); "
                f"{n} kubectl undos side by side median {baseline[n]:6.2f} s "
                f"(runs: {', '.join(f'{t:.2f}' for t in bare)})"
            )
        where = "on the stack's worker" if args.on_worker else "in this process"
        print(
            f"{environment(kind)}; pods ready {args.ready_delay:g} s after they start;"
            f" fleet_rollback {where}"
        )
        if 1 in medians and max(sizes) > 1:
            top = max(sizes)
            print(
                f"ratio N={top} / N=1: fleet_rollback {medians[top] / medians[1]:.2f}, "
                f"kubectl {baseline[top] / baseline[1]:.2f}"
            )


if __name__ == "__main__":
    main()
