"""`make demo`: a bad release of rag-api on the local stack, told as the incident it becomes.

v1.2.3 healthy → v1.2.4 released (20 % of requests fail) → the Prometheus rule fires →
Alertmanager posts to the alert receiver → `guarded-rollback` runs on the worker and rolls back
→ the verification checklist → 🚨 and ✅ notices (a local sink prints them) → the post-rollback
monitor, time-compressed to a minute → the post-incident review. It prints a timeline with each
step's time and its Prefect UI link, and exits non-zero when a step did not happen. The stack
keeps running afterwards (`make stack-down` stops it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from stack.config import DEMO_PORTS, REPO_DIR, state_root
from stack.local import KNOWN_GOOD_SECONDS, LocalStack, StackState
from stack.manifests import deployment_manifest
from stack.prometheus import error_ratio_expr
from stack.sink import WebhookSink

NAMESPACE = "production"
IMAGE = "ghcr.io/acme/rag-api"
GOOD, BAD = "v1.2.3", "v1.2.4"
DEFAULT_POST_ROLLBACK = REPO_DIR / "deployments" / "post-rollback.yaml"
T = TypeVar("T")


def compressed_settings() -> dict[str, Any]:
    """The shipped post-rollback settings with the incident compressed into minutes: the
    checklist 5 s after the rollout, a 1-minute monitor every 6 s holding recovery for 15 s
    over 5 s rate windows."""
    settings: dict[str, Any] = yaml.safe_load(DEFAULT_POST_ROLLBACK.read_text())
    settings["verification"]["after_rollback"] = {"enabled": True, "settle_seconds": 5}
    settings["follow_up"].update(enabled=True, duration_minutes=1, interval_minutes=0.1)
    monitor = settings["monitor"]
    monitor.update(window="5s", baseline_minutes=1, evaluation_delay_seconds=2)
    for policy in monitor["indicators"].values():
        policy.update(hold_seconds=15, worse_hold_seconds=15)
    return settings


def main() -> int:
    sink = WebhookSink()
    sink.start()
    root = state_root()
    root.mkdir(parents=True, exist_ok=True)
    settings = root / "demo-post-rollback.yaml"
    settings.write_text(yaml.safe_dump(compressed_settings()))
    # the worker inherits these: notices to the demo's sink, the compressed incident
    os.environ["ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL"] = f"{sink.url}/slack"
    os.environ["ROLLBACK_FLOWS_POST_ROLLBACK"] = str(settings)
    stack = LocalStack(
        "rollback-flows", DEMO_PORTS, simulator_namespace=NAMESPACE, prefect=True,
        prefect_ui=True, receiver=True,
    )  # fmt: skip
    if stack.running() is not None:
        _say("restarting the running stack, so that its worker sends notices to this demo")
        stack.down()
    state = stack.up()
    os.environ.update(state.env())
    with temporary_settings({PREFECT_API_URL: state.prefect_api_url}):
        story = tell(state, sink)
    ui = _ui(state)
    print("\nTimeline")
    for at, what, link in story:
        print(f"  {at:%H:%M:%S}  {what}" + (f"\n            {link}" if link else ""))
    print("\nNotices (as the Slack-compatible sink received them)")
    for delivery in sink.received("/slack"):
        print("  " + "\n  ".join(str(delivery.body["text"]).splitlines()) + "\n")
    print(
        "The local stack is running:\n"
        f"  Prefect UI     {ui}  (flow runs, their artifacts, the Event Feed)\n"
        f"  Prometheus     {state.prometheus_url}\n"
        f"  Alertmanager   {state.alertmanager_url}\n"
        f"  receiver       http://127.0.0.1:{state.ports.receiver}/health\n"
        f"  rag-api        {state.simulator_url}/version\n"
        f"  rag-api canary {state.canary_url}/version  (idle until rag-api-canary has pods)\n"
        f"  kubeconfig     {state.kubeconfig}\n"
        "Point a shell at it with: eval $(.venv/bin/python -m stack env)\n"
        "Stop it with: make stack-down"
    )
    sink.stop()
    return 0


Timeline = list[tuple[datetime, str, str]]


def tell(state: StackState, sink: WebhookSink) -> Timeline:
    """Run the incident on `state`'s stack; the timeline of what happened, each step checked."""
    api = config.new_client_from_config(config_file=state.kubeconfig)
    apps = client.AppsV1Api(api)
    ui = _ui(state)
    story: Timeline = []

    def step(what: str, link: str = "", at: datetime | None = None) -> None:
        story.append((at or datetime.now(UTC), what, link))
        _say(what)

    deployed = time.monotonic()
    _deploy(api, f"{IMAGE}:{GOOD}")
    _wait_rolled_out(apps)
    _wait_error_ratio(state, lambda r: r < 0.01, "be calm")
    # the alert's rollback goes to the last known-good revision: let this one become it
    time.sleep(max(0.0, deployed + KNOWN_GOOD_SECONDS + 1 - time.monotonic()))
    step(f"rag-api {GOOD} serving in {NAMESPACE}, error ratio 0 %")
    tag = f"rollback-target:{NAMESPACE}/rag-api"
    before = {r.id for r in _runs(FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))}
    apps.patch_namespaced_deployment(
        "rag-api", NAMESPACE, _template_patch(f"{IMAGE}:{BAD}", f"release {BAD}")
    )
    step(f"released the bad {BAD}")
    # the peak since the release: the rollback may come before a person could look
    ratio = _wait_error_ratio(state, lambda r: r > 0.15, "reach the bad release's level", peak=True)
    step(f"error ratio {ratio:.0%} in Prometheus (critical > 5 %)")

    [guarded] = _wait(
        lambda: [
            r for r in _runs(FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
            if r.id not in before
        ],
        60,
        "the alert's guarded-rollback run",
    )  # fmt: skip
    # the alert as Alertmanager delivered it (the run's parameter): it may be resolved already
    started_at = guarded.parameters.get("alert_started_at")
    step(
        "Prometheus fired RollbackHighErrorRate; Alertmanager posted it to the receiver",
        f"{state.alertmanager_url}/#/alerts",
        datetime.fromisoformat(str(started_at).replace("Z", "+00:00")) if started_at else None,
    )
    step(
        f"guarded-rollback run {guarded.name} created by the receiver",
        _link(ui, guarded.id),
        guarded.created,
    )
    guarded = _final(guarded.id, 180)
    rollback = _wait(
        lambda: _runs(FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[guarded.id]))),
        10,
        "the rollback run",
    )[0]  # fmt: skip
    step(
        f"kubernetes-rollback run {rollback.name} started",
        _link(ui, rollback.id),
        rollback.start_time,
    )
    if not (guarded.state and guarded.state.is_completed() and rollback.state):
        raise SystemExit(f"the alert's run ended {guarded.state_name}: {_message(guarded)}")
    if not rollback.state.is_completed():
        raise SystemExit(f"the rollback ended {rollback.state_name}: {_message(rollback)}")
    image = apps.read_namespaced_deployment("rag-api", NAMESPACE).spec.template.spec.containers[0]
    verified = _artifact_time(rollback.id, "verify-rollback-rag-api")
    step(f"rolled back: rag-api runs {image.image}; verification checklist passed", "", verified)
    notice = sink.wait_for(lambda d: "Rollback Initiated" in d.body["text"], 30)
    step("🚨 incident start notice received", "", _at(notice.received_at))

    monitor = _wait(
        lambda: [
            r for r in _runs(FlowRunFilter())
            if r.idempotency_key == f"post-rollback-monitor:{rollback.id}"
        ],
        30,
        "the post-rollback monitor run",
    )[0]  # fmt: skip
    step(f"post-rollback monitor {monitor.name} watching (1 minute)", _link(ui, monitor.id))
    monitor = _final(monitor.id, 180)
    if not (monitor.state and monitor.state.is_completed()):
        raise SystemExit(f"the monitor ended {monitor.state_name}: {_message(monitor)}")
    step("monitor verdict: recovered", "", monitor.end_time)
    resolved = sink.wait_for(lambda d: "RESOLVED" in d.body["text"], 30)
    step("✅ resolution notice received", "", _at(resolved.received_at))
    reviewed = _artifact_time(monitor.id, "post-incident-review-rag-api")
    if reviewed is None:
        raise SystemExit("the monitor wrote no post-incident review")
    step(
        "post-incident review written (the monitor run's Artifacts tab)",
        _link(ui, monitor.id),
        reviewed,
    )
    return sorted(story, key=lambda s: s[0])


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _runs(flow_filter: FlowRunFilter) -> list[FlowRun]:
    with get_client(sync_client=True) as c:
        return list(c.read_flow_runs(flow_run_filter=flow_filter))


def _final(run_id: UUID, timeout: float) -> FlowRun:
    def done() -> FlowRun | None:
        with get_client(sync_client=True) as c:
            run = c.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None

    return _wait(done, timeout, f"flow run {run_id} to end")


def _artifact_time(run_id: UUID, key: str) -> datetime | None:
    with get_client(sync_client=True) as c:
        artifacts = c.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    times = [a.created for a in artifacts if a.key == key and a.created]
    return max(times) if times else None


def _message(run: FlowRun) -> str:
    return run.state.message or "" if run.state else ""


def _wait(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"demo: waited {timeout:.0f}s for {what}; it did not happen")


def _ui(state: StackState) -> str:
    return state.prefect_api_url.removesuffix("/api") if state.prefect_api_url else ""


def _link(ui: str, run_id: UUID) -> str:
    return f"{ui}/runs/flow-run/{run_id}"


def _deploy(api: client.ApiClient, image: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    body = deployment_manifest(image, annotations={"kubernetes.io/change-cause": "initial release"})
    try:
        apps.create_namespaced_deployment(NAMESPACE, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        apps.patch_namespaced_deployment("rag-api", NAMESPACE, _template_patch(image, "reset"))


def _template_patch(image: str, cause: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
        "spec": {"template": {"spec": {"containers": [{"name": "rag-api", "image": image}]}}},
    }


def _wait_rolled_out(apps: client.AppsV1Api, timeout: float = 120) -> None:
    def done() -> bool:
        dep = apps.read_namespaced_deployment("rag-api", NAMESPACE)
        s = dep.status
        return bool(
            (s.observed_generation or 0) >= dep.metadata.generation
            and s.updated_replicas == dep.spec.replicas
            and s.available_replicas == dep.spec.replicas
            and (s.replicas or 0) == dep.spec.replicas
        )

    _wait(done, timeout, "rag-api to roll out")


def _wait_error_ratio(
    state: StackState, done: Any, what: str, timeout: float = 90, peak: bool = False
) -> float:
    """The error ratio over 15 s now, or (`peak`) its highest over 5 s in the last 2 minutes."""
    _say(f"waiting for the error ratio in Prometheus to {what}")
    query = f"max_over_time(({error_ratio_expr('5s')})[2m:1s])" if peak else error_ratio_expr("15s")

    def check() -> float | None:
        body = httpx.get(f"{state.prometheus_url}/api/v1/query", params={"query": query}).json()
        result = body["data"]["result"]
        ratio = float(result[0]["value"][1]) if result else None
        return ratio if ratio is not None and done(ratio) else None

    value = _wait(lambda: (v,) if (v := check()) is not None else None, timeout, what)
    return value[0]


def _say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
