"""Kubernetes tasks: read, undo, set image, scale and wait for Deployments; read pods, events, logs.

The client comes from the kubeconfig named by `KUBECONFIG` (first entry), else the in-cluster
service account, else `~/.kube/config`. Objects are read as the raw JSON the API serves and
interpreted by `playbook.rollout`; every library error is translated into `playbook.errors`
at this boundary, and only transient ones are retried.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from prefect import task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from urllib3.util.retry import Retry

from playbook.config_drift import (
    ConfigObject,
    judge_config,
    last_change,
    referenced_objects,
    target_stopped_at,
)
from playbook.diagnosis import ObjectRef
from playbook.errors import (
    AccessDeniedError,
    InvalidInputError,
    NotFoundError,
    RolloutFailedError,
    TransientError,
)
from playbook.images import set_image_patch
from playbook.provenance import (
    FIELD_MANAGER,
    ROLLBACK_MARK_ANNOTATION,
    RollbackMark,
    check_repeat,
    rollout_origin,
)
from playbook.rollout import (
    PodState,
    Revision,
    RolloutSnapshot,
    RolloutStatus,
    UndoPlan,
    describe_waiting,
    plan_undo,
    pod_state,
    revision_history,
    rollout_status,
)
from playbook.task_results import EventRecord, ImageChange, LogScan, ScaleChange, UndoResult
from tasks.boundary import retry_condition_fn, run_logger, translate_error, translating

REQUEST_TIMEOUT = (5.0, 30.0)
"""Connect and read timeouts of every API call, in seconds."""

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

WAIT_OUT_429 = Retry(
    total=None,  # so no status but 429 is retried, whatever its Retry-After
    connect=0,
    read=0,
    redirect=False,
    other=0,
    status=10,
    status_forcelist=(429,),
    allowed_methods=None,  # a 429 was not executed: repeating a write is safe
    respect_retry_after_header=True,
    backoff_factor=0.5,
    backoff_max=10,
    retry_after_max=10,
    raise_on_status=False,
)
"""A 429 (API Priority and Fairness, or a rate limit) was not executed; it is waited out inside
the call, as long as its Retry-After says (10 s at most), up to 10 times; then it is a
RateLimitedError. Nothing else is repeated
here: Prefect retries the task, and only what is transient."""

_clients: dict[tuple[str, float, str | None], client.ApiClient] = {}
_clients_lock = threading.Lock()


_context: ContextVar[str | None] = ContextVar("kubernetes_context", default=None)


@contextlib.contextmanager
def kubernetes_context(context: str | None) -> Iterator[None]:
    """Every Kubernetes task called inside acts in the kubeconfig context `context`.

    Like `kubectl --context`: a flow enters the context of the environment it acts in (None:
    the kubeconfig's current context) once, and its tasks need not be told again.
    """
    token = _context.set(context)
    try:
        yield
    finally:
        _context.reset(token)


def kube_client(
    kubeconfig: str | Path | None = None, context: str | None = None
) -> client.ApiClient:
    """An ApiClient for the cluster: this kubeconfig, `$KUBECONFIG`, in-cluster, or ~/.kube/config.

    The context is `context`, else the one entered with `kubernetes_context`, else the
    kubeconfig's current one. Clients are cached per kubeconfig file (and its modification
    time) and context.
    """
    context = context or _context.get()
    chosen = kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or None
    in_cluster = chosen is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ
    path = Path(chosen).expanduser() if chosen else Path("~/.kube/config").expanduser()
    key = (
        "<in-cluster>" if in_cluster else str(path),
        0.0 if in_cluster else _mtime(path),
        context,
    )
    with _clients_lock:
        if key not in _clients:
            cfg = client.Configuration()
            try:
                if in_cluster:
                    config.load_incluster_config(client_configuration=cfg)
                else:
                    config.load_kube_config(
                        config_file=str(path), context=context, client_configuration=cfg
                    )
            except (config.ConfigException, OSError) as exc:
                raise AccessDeniedError(
                    f"cannot load Kubernetes credentials from {path}: {exc}"
                ) from exc
            cfg.retries = WAIT_OUT_429
            _clients[key] = client.ApiClient(configuration=cfg)
        return _clients[key]


def _attempt() -> int:
    """Which attempt of the current task run this is (1 outside a task run)."""
    context = TaskRunContext.get()
    return int(context.task_run.run_count) if context is not None else 1


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _raw(response: Any) -> dict[str, Any]:
    """The JSON body of a `_preload_content=False` response."""
    data: dict[str, Any] = json.loads(response.data)
    return data


def get_deployment(namespace: str, name: str) -> dict[str, Any]:
    """The Deployment as the API serves it (JSON)."""
    apps = client.AppsV1Api(kube_client())
    with translating(f"read Deployment {namespace}/{name}"):
        return _raw(
            apps.read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )


METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""Accept header asking the API server for an object's metadata only (no data, no spec)."""

OBJECT_PATHS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps/{name}",
    "Secret": "/api/v1/namespaces/{namespace}/secrets/{name}",
}


def read_metadata(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """The metadata of a ConfigMap or Secret (never its data), or None when it does not exist.

    Raises:
        AccessDeniedError: the Role does not allow the `get`.
        InvalidInputError: a kind other than ConfigMap or Secret.
    """
    if kind not in OBJECT_PATHS:
        raise InvalidInputError(f"cannot read objects of kind {kind!r}")
    try:
        with translating(f"read {kind} {namespace}/{name} (metadata only)"):
            response = kube_client().call_api(
                OBJECT_PATHS[kind],
                "GET",
                path_params={"namespace": namespace, "name": name},
                header_params={"Accept": METADATA_ONLY},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
    except NotFoundError:
        return None
    metadata: dict[str, Any] = _raw(response).get("metadata") or {}
    return metadata


def _config_objects(namespace: str, refs: Sequence[ObjectRef]) -> tuple[ConfigObject, ...]:
    found = []
    for ref in refs:
        try:
            meta = read_metadata(namespace, ref.kind, ref.name)
        except AccessDeniedError:
            found.append(ConfigObject(ref.kind, ref.name, None))
            continue
        exists = meta is not None
        found.append(ConfigObject(ref.kind, ref.name, exists, last_change(meta) if meta else None))
    return tuple(found)


def get_replicasets(namespace: str, deployment: dict[str, Any]) -> list[dict[str, Any]]:
    """The ReplicaSets matching the Deployment's selector (ownership is checked by the caller)."""
    apps = client.AppsV1Api(kube_client())
    labels = (deployment.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    with translating(f"list ReplicaSets in {namespace}"):
        body = _raw(
            apps.list_namespaced_replica_set(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
    return list(body.get("items") or [])


# Every task that calls the Kubernetes API once: retried only when the failure is transient
# (5xx, 429, connection reset, timeout; playbook.errors.retry_condition_fn), a minute at most.
kubernetes_api_task = task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=60,
    cache_policy=NO_CACHE,
)


@kubernetes_api_task
def list_deployment_names(namespace: str, selector: str) -> tuple[str, ...]:
    """`kubectl get deployments -l <selector> -o name`: the names of the matching Deployments."""
    apps = client.AppsV1Api(kube_client())
    with translating(f"list Deployments in {namespace} matching {selector!r}"):
        found = apps.list_namespaced_deployment(
            namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
        )
    return tuple(sorted(d.metadata.name for d in found.items))


@kubernetes_api_task
def read_deployment_status(namespace: str, name: str) -> RolloutStatus:
    """Read a Deployment's replicas, images, conditions and rollout progress."""
    return rollout_status(get_deployment(namespace, name))


@kubernetes_api_task
def read_rollout_history(namespace: str, name: str) -> tuple[Revision, ...]:
    """Read a Deployment's revisions (its ReplicaSets), oldest first, like `rollout history`."""
    deployment = get_deployment(namespace, name)
    return revision_history(deployment, get_replicasets(namespace, deployment))


def _snapshot(namespace: str, name: str) -> RolloutSnapshot:
    deployment = get_deployment(namespace, name)
    return RolloutSnapshot(deployment, tuple(get_replicasets(namespace, deployment)))


@kubernetes_api_task
def read_rollout(namespace: str, name: str) -> RolloutSnapshot:
    """Read a Deployment and its ReplicaSets once: its status, revisions, owner and undo
    plan all come from this read (`kubectl get deploy,rs`)."""
    return _snapshot(namespace, name)


@kubernetes_api_task
def undo_deployment(
    namespace: str,
    name: str,
    to_revision: int | None = None,
    dry_run: bool = False,
    intent_id: str | None = None,
    force: bool = False,
    repeat_guard_minutes: float = 60.0,
    snapshot: RolloutSnapshot | None = None,
) -> UndoResult:
    """`kubectl rollout undo [--to-revision]`: patch the template of that revision back in.

    Reads the Deployment and its ReplicaSets afresh on every attempt; when the template already
    equals the target revision's it writes nothing. The patch also writes this tool's rollback
    mark (flow run `intent_id`, from and to revision), so a later attempt of the same flow run
    finds its change made and writes nothing (`resumed`), and an undo to the previous revision
    soon after this tool's rollback is refused instead of flipping back. With `dry_run` the
    patch is only validated by the API server (`dryRun=All`). A concurrent change fails the
    patch's resourceVersion `test` and is retried from a new read.

    The first attempt may decide from the flow's own read of the Deployment (`snapshot`):
    the patch's `test` of that read's resourceVersion fails if anything changed since, and a
    retry reads afresh.

    Before writing, the ConfigMaps and Secrets the target revision names are checked
    (`playbook.config_drift`): one changed since that revision stopped being current is a
    warning (`config_warnings`).

    Raises:
        RollbackRefusedError: an undo without `to_revision` within `repeat_guard_minutes` of
            this tool's last rollback of the Deployment (unless `force`), or a target revision
            that needs a ConfigMap or Secret that does not exist; nothing changed.
    """
    read = snapshot if snapshot is not None and _attempt() == 1 else _snapshot(namespace, name)
    deployment, replicasets = read.deployment, list(read.replicasets)
    generation = int(deployment["metadata"].get("generation", 0))
    rv = str(deployment["metadata"].get("resourceVersion", ""))
    now = datetime.now(UTC)
    origin = rollout_origin(deployment, replicasets)
    resume = check_repeat(
        origin,
        intent_id,
        now,
        to_revision=to_revision,
        force=force,
        window=timedelta(minutes=repeat_guard_minutes),
    )
    retried = _attempt() > 1
    if resume is not None:
        run_logger().info(
            "this flow run already made the change (%s)%s; not undoing again",
            resume.mark.describe(),
            "; the earlier attempt's patch had landed although it reported a failure"
            if retried
            else "",
        )
        current = revision_history(
            deployment, [rs for rs in replicasets if rs["metadata"]["name"] == origin.replicaset]
        )[0]
        plan = UndoPlan(namespace, name, resume.mark.from_revision, current, False, ())
        return UndoResult(plan, True, dry_run, generation, generation, rv, resumed=True)
    if retried and not dry_run:
        run_logger().info(
            "re-read after a failed attempt: Deployment %s/%s carries no change of this flow "
            "run (a patch it sent did not land); deciding again from the Deployment as it is",
            namespace,
            name,
        )
    plan = plan_undo(deployment, replicasets, to_revision)
    if plan.already_current:
        run_logger().info(plan.summary)
        return UndoResult(plan, False, dry_run, generation, generation, rv)
    target = next(rs for rs in replicasets if rs["metadata"]["name"] == plan.target.replicaset)
    refs = referenced_objects((target.get("spec") or {}).get("template") or {})
    config = judge_config(
        plan.target.number,
        refs,
        _config_objects(namespace, refs),
        target_stopped_at(deployment, replicasets, plan.target.number),
    )
    for warning in config.warnings:
        run_logger().warning("%s", warning)
    mark = RollbackMark(
        flow_run_id=intent_id or "unknown",
        from_revision=plan.current_revision,
        to_revision=plan.target.number,
        replicaset=plan.target.replicaset,
        at=now,
    )
    plan = plan_undo(
        deployment, replicasets, to_revision, {ROLLBACK_MARK_ANNOTATION: mark.to_annotation()}
    )
    apps = client.AppsV1Api(kube_client())
    with translating(
        f"patch Deployment {namespace}/{name} back to revision {plan.target.number}",
        guarded_patch=True,
    ):
        patched = _raw(
            apps.patch_namespaced_deployment(
                name,
                namespace,
                list(plan.patch),
                dry_run="All" if dry_run else None,
                field_manager=FIELD_MANAGER,
                _content_type=JSON_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
    if dry_run:
        return UndoResult(
            plan, False, True, generation, generation, rv, config_warnings=config.warnings
        )
    meta = patched["metadata"]
    run_logger().info("%s: done (generation %s)", plan.summary, meta.get("generation"))
    return UndoResult(
        plan,
        True,
        False,
        generation,
        int(meta.get("generation", 0)),
        str(meta["resourceVersion"]),
        config_warnings=config.warnings,
    )


@kubernetes_api_task
def set_deployment_image(
    namespace: str,
    name: str,
    container: str,
    image: str,
    change_cause: str | None = None,
    dry_run: bool = False,
) -> ImageChange:
    """`kubectl set image deployment/name container=image`; nothing is written when already so."""
    status = rollout_status(get_deployment(namespace, name))
    before = status.image_of(container)
    patch = set_image_patch(container, image, change_cause)
    if before == image:
        run_logger().info("%s/%s container %s already runs %s", namespace, name, container, image)
        return ImageChange(namespace, name, container, before, image, patch, False, dry_run)
    apps = client.AppsV1Api(kube_client())
    with translating(f"set image of Deployment {namespace}/{name} container {container}"):
        apps.patch_namespaced_deployment(
            name,
            namespace,
            patch,
            dry_run="All" if dry_run else None,
            field_manager=FIELD_MANAGER,
            _content_type=STRATEGIC_MERGE_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    return ImageChange(namespace, name, container, before, image, patch, not dry_run, dry_run)


@kubernetes_api_task
def scale_deployment(
    namespace: str, name: str, replicas: int, dry_run: bool = False, missing_ok: bool = False
) -> ScaleChange:
    """`kubectl scale deployment/name --replicas=N`; nothing is written when already so.

    With `missing_ok`, a Deployment that does not exist counts as scaled (to nothing).
    """
    try:
        current = get_deployment(namespace, name)
    except NotFoundError:
        if not missing_ok:
            raise
        run_logger().info("Deployment %s/%s does not exist; nothing to scale", namespace, name)
        return ScaleChange(namespace, name, 0, replicas, False, dry_run, exists=False)
    before = int(current["spec"].get("replicas", 1))
    if before == replicas:
        return ScaleChange(namespace, name, before, replicas, False, dry_run)
    apps = client.AppsV1Api(kube_client())
    with translating(f"scale Deployment {namespace}/{name} to {replicas}"):
        apps.patch_namespaced_deployment_scale(
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            dry_run="All" if dry_run else None,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
    return ScaleChange(namespace, name, before, replicas, not dry_run, dry_run)


def get_pods(namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching a label selector, as the API serves them (JSON)."""
    core = client.CoreV1Api(kube_client())
    with translating(f"list pods {selector} in {namespace}"):
        body = _raw(
            core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
    return list(body.get("items") or [])


def _pods(namespace: str, selector: str) -> tuple[PodState, ...]:
    return tuple(
        sorted((pod_state(p) for p in get_pods(namespace, selector)), key=lambda p: p.name)
    )


@kubernetes_api_task
def list_pods(namespace: str, selector: str) -> tuple[PodState, ...]:
    """`kubectl get pods -l selector`: phase, readiness, restarts and waiting reasons."""
    return _pods(namespace, selector)


_ROLLOUT_PROGRESS: ContextVar[bool] = ContextVar("rollback_flows_rollout_progress", default=True)


@contextlib.contextmanager
def without_rollout_progress() -> Iterator[None]:
    """Rollouts waited for inside the block show no progress artifact of their own (a fleet's
    services: fifty of them, each updated every second, would load the Prefect server while
    it matters, and the fleet shows its own progress)."""
    token = _ROLLOUT_PROGRESS.set(False)
    try:
        yield
    finally:
        _ROLLOUT_PROGRESS.reset(token)


class _Progress:
    """A Prefect progress artifact for a rollout, when running inside a task run.

    It appears once the rollout has lasted `MIN_INTERVAL`: a rollout done sooner (KWOK's,
    a single pod's) gets none, its log lines say it all, and the rollback is not slowed by
    API calls nobody would see. None inside `without_rollout_progress`.
    """

    MIN_INTERVAL = 1.0
    """Seconds before the first update and between updates: each is a call to the Prefect API."""

    def __init__(self) -> None:
        self._id: Any = None
        self._last = -1.0
        self._last_at = time.monotonic()

    def update(self, status: RolloutStatus) -> None:
        desired = max(status.desired_replicas, 1)
        value = 100.0 * (status.updated_replicas + status.available_replicas) / (2 * desired)
        value = 100.0 if status.complete else min(value, 99.0)
        now = time.monotonic()
        if TaskRunContext.get() is None or value == self._last or not _ROLLOUT_PROGRESS.get():
            return
        if self._id is None and now - self._last_at < self.MIN_INTERVAL:
            return
        if not status.complete and now - self._last_at < self.MIN_INTERVAL:
            return
        self._last, self._last_at = value, now
        try:
            if self._id is None:
                self._id = create_progress_artifact(value, description=status.message)
            else:
                update_progress_artifact(self._id, value, description=status.message)
        except Exception as exc:  # progress display must never fail a rollout
            run_logger().debug("progress artifact not updated: %s", exc)


@task(
    retries=3,
    retry_delay_seconds=[1, 2, 5],
    retry_condition_fn=retry_condition_fn,
    cache_policy=NO_CACHE,
)
def wait_for_rollout(namespace: str, name: str, timeout_seconds: float) -> RolloutStatus:
    """Wait like `kubectl rollout status --watch`: check, then watch, until done or the deadline.

    Raises:
        RolloutFailedError: the Deployment reports ProgressDeadlineExceeded, or it is not
            rolled out after `timeout_seconds`; the message names the pods' waiting reasons.
    """
    deadline = time.monotonic() + timeout_seconds
    apps = client.AppsV1Api(kube_client())
    progress = _Progress()
    last_message = ""
    while True:
        try:
            read = get_deployment(namespace, name)
        except TransientError as exc:
            if time.monotonic() > deadline:
                raise
            run_logger().warning("reading the rollout failed, retrying: %s", exc)
            time.sleep(1.0)
            continue
        with contextlib.closing(_changes(apps, namespace, name, read, deadline)) as changes:
            for deployment in itertools.chain([read], changes):
                status = rollout_status(deployment)
                progress.update(status)
                if status.message != last_message:
                    run_logger().info(status.message)
                    last_message = status.message
                if status.complete:
                    return status
                if status.failed:
                    raise RolloutFailedError(
                        f"{status.message}; pods: {_waiting(namespace, status)}"
                    )
                if deadline - time.monotonic() <= 0:
                    raise RolloutFailedError(
                        f"Deployment {namespace}/{name} did not finish rolling out within "
                        f"{timeout_seconds:.0f}s ({status.message}); "
                        f"pods: {_waiting(namespace, status)}"
                    )
        # the watch ended (its timeout, a gap in history, a dropped connection): read again


def _changes(
    apps: client.AppsV1Api, namespace: str, name: str, deployment: dict[str, Any], deadline: float
) -> Generator[dict[str, Any], None, None]:
    """The Deployment as each change after `deployment` left it, from a watch (the event's own
    object: no read per change), until the watch ends, the Deployment is deleted or the
    deadline passes."""
    remaining = deadline - time.monotonic()
    w = watch.Watch()
    try:
        for event in w.stream(
            apps.list_namespaced_deployment,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=deployment["metadata"]["resourceVersion"],
            timeout_seconds=max(1, min(int(remaining) + 1, 60)),
            _request_timeout=(REQUEST_TIMEOUT[0], min(max(remaining, 0.0), 60.0) + 5.0),
            deserialize=False,
        ):
            if event.get("type") not in ("ADDED", "MODIFIED"):
                return  # DELETED, or an ERROR the client passes on: read again
            yield event["object"]  # JSON as served: not deserialized into a model
    except ApiException as exc:
        if exc.status != 410:  # 410 Gone: the resourceVersion is too old; re-read
            err = translate_error(exc, f"watch Deployment {namespace}/{name}")
            if not isinstance(err, TransientError):
                raise err from exc
            time.sleep(1.0)
    except Exception as exc:  # a broken watch is re-established from a new read
        run_logger().warning(
            "watch of Deployment %s/%s broke (%s: %s); reading it again",
            namespace,
            name,
            type(exc).__name__,
            exc,
        )
        time.sleep(0.5)
    finally:
        w.stop()


def _waiting(namespace: str, status: RolloutStatus) -> str:
    try:
        return describe_waiting(_pods(namespace, status.label_selector))
    except TransientError as exc:
        return f"could not list pods ({exc})"


@kubernetes_api_task
def read_recent_events(
    namespace: str,
    name: str,
    selector: str,
    limit: int = 20,
    pods: Sequence[str] | None = None,
) -> tuple[EventRecord, ...]:
    """`kubectl get events --sort-by=.lastTimestamp` for the Deployment, its ReplicaSets, pods
    (`pods`, the names the caller just listed, else those matching `selector` now)."""
    core = client.CoreV1Api(kube_client())
    names = set(pods) if pods is not None else {p.name for p in _pods(namespace, selector)}
    with translating(f"list events in {namespace}"):
        body = _raw(
            core.list_namespaced_event(
                namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
    # a ReplicaSet of this Deployment is `<name>-<pod-template-hash>` (no vowels in the hash)
    own_replicaset = re.compile(rf"^{re.escape(name)}-[{_HASH_ALPHABET}]{{5,10}}$")
    records = []
    for event in body.get("items") or []:
        obj = event.get("involvedObject") or {}
        obj_name = str(obj.get("name", ""))
        ours = (
            (obj.get("kind") == "Deployment" and obj_name == name)
            or (obj.get("kind") == "Pod" and obj_name in names)
            or (obj.get("kind") == "ReplicaSet" and own_replicaset.match(obj_name) is not None)
        )
        if not ours:
            continue
        last = (
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("metadata", {}).get("creationTimestamp")
            or ""
        )
        records.append(
            EventRecord(
                type=str(event.get("type", "")),
                reason=str(event.get("reason", "")),
                object=f"{obj.get('kind', '')}/{obj_name}",
                message=str(event.get("message", "")).strip(),
                count=int(event.get("count") or 1),
                last_seen=str(last),
            )
        )
    records.sort(key=lambda r: r.last_seen)
    return tuple(records[-limit:])


@task(timeout_seconds=120, cache_policy=NO_CACHE)
def read_error_logs(
    namespace: str,
    selector: str,
    container: str,
    pattern: str,
    tail_lines: int = 50,
    since_seconds: int = 300,
    pods: Sequence[str] | None = None,
) -> LogScan:
    """`kubectl logs -l selector --tail=N | grep -iE pattern`, per pod; never fails the flow.

    `pods`: the names of the pods to read (the caller's own listing, not deleting), instead
    of those matching `selector` now.

    Logs are unavailable where the node serves none (e.g. simulated KWOK nodes); that is
    reported in the result instead of raised.
    """
    core = client.CoreV1Api(kube_client())
    regex = re.compile(pattern)
    lines: list[str] = []
    reasons: list[str] = []
    if pods is None:
        pods = [p.name for p in _pods(namespace, selector) if not p.deleting]
    for pod in pods:
        try:
            text = core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                tail_lines=tail_lines,
                since_seconds=since_seconds,
                _request_timeout=(REQUEST_TIMEOUT[0], 10.0),
                # raw bytes: the client would turn a log served as application/octet-stream
                # into the text "b'...'"
                _preload_content=False,
            ).data.decode("utf-8", errors="replace")
        except Exception as exc:  # any failure means: no logs from this pod
            err = translate_error(exc, f"read logs of pod {namespace}/{pod}")
            reasons.append(str(err))
            continue
        lines.extend(f"{pod}: {line}" for line in str(text).splitlines() if regex.search(line))
    if pods and len(reasons) == len(pods):
        return LogScan(False, (), reasons[0])
    return LogScan(True, tuple(lines), None)
