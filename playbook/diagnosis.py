"""The playbook's "Troubleshooting" section as pure checks: four known problems, their evidence.

1. Rollout stuck in "Progressing": replicas, the Deployment's conditions, each unready pod's
   waiting/terminated reasons and restarts, recent events, previous-container logs.
2. Image pull errors: the images the pods want, their pull errors, whether each
   `imagePullSecrets` entry exists (by name; never its content), whether the tag exists.
3. Health checks failing: the probes against the container's declared ports, the names (never
   the values) of its environment variables and of the ConfigMaps/Secrets it references and
   whether those exist, pods running but not ready, the `/health` answer.
4. Traffic to the bad version: the Service's selector against the pods' labels, its
   EndpointSlices and which pods (which images) back them, the VirtualService's routes,
   weights and mirrors to the canary.

The facts come typed from `tasks/workloads.py` (parsed here from the JSON the API serves);
each check returns a `ProblemReport`: what was looked at, what was found, what to do. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from playbook.checks import ProbeResult
from playbook.errors import InvalidInputError
from playbook.images import parse_image
from playbook.rollout import (
    POD_TEMPLATE_HASH_LABEL,
    PROGRESS_DEADLINE_EXCEEDED,
    Revision,
    RolloutStatus,
    revision_history,
    rollout_status,
)
from playbook.services import Destination
from playbook.task_results import EventRecord
from playbook.traffic import VirtualServiceState, paths_to

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
"""The pod-template annotation `kubectl rollout restart` sets to the current time."""

PULL_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "RegistryUnavailable",
    }
)

Labels = tuple[tuple[str, str], ...]


# Facts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """A port the container declares."""

    name: str | None
    number: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.number}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class ProbeSpec:
    """A liveness, readiness or startup probe: how it checks and on which port."""

    kind: str
    handler: str
    port: int | str | None
    path: str | None

    def __str__(self) -> str:
        where = f" port {self.port}" if self.port is not None else ""
        return f"{self.handler}{where}{f' path {self.path}' if self.path else ''}"


@dataclass(frozen=True)
class ObjectRef:
    """A ConfigMap or Secret the pod template names, and where it names it."""

    kind: str
    name: str
    used_by: str
    optional: bool


@dataclass(frozen=True)
class ContainerSpec:
    """What a container of the pod template declares (names only, never values)."""

    name: str
    image: str
    ports: tuple[PortSpec, ...]
    probes: tuple[ProbeSpec, ...]
    env_names: tuple[str, ...]
    refs: tuple[ObjectRef, ...]


@dataclass(frozen=True)
class PodTemplate:
    """The parts of a Deployment's pod template the diagnosis reads."""

    labels: Labels
    containers: tuple[ContainerSpec, ...]
    pull_secrets: tuple[str, ...]
    volume_refs: tuple[ObjectRef, ...]

    def container(self, name: str) -> ContainerSpec | None:
        """The container called `name`, if the template has it."""
        return next((c for c in self.containers if c.name == name), None)

    def references(self) -> tuple[ObjectRef, ...]:
        """Every ConfigMap and Secret the containers and volumes name (not the pull secrets)."""
        return tuple(r for c in self.containers for r in c.refs) + self.volume_refs


@dataclass(frozen=True)
class Workload:
    """A Deployment: its rollout status, its pod template and its revisions."""

    status: RolloutStatus
    template: PodTemplate
    revisions: tuple[Revision, ...]

    @property
    def current_replicaset(self) -> str | None:
        """The ReplicaSet of the Deployment's current revision."""
        return next(
            (r.replicaset for r in self.revisions if r.number == self.status.revision), None
        )

    def owns(self, pod: PodFacts) -> bool:
        """Whether one of the Deployment's ReplicaSets made this pod (its controller owner)."""
        return pod.owner in {f"ReplicaSet/{r.replicaset}" for r in self.revisions}


@dataclass(frozen=True)
class ContainerState:
    """One container of a pod as `kubectl describe pod` shows it."""

    name: str
    image: str
    ready: bool
    restarts: int
    state: str
    reason: str | None
    message: str | None
    last_terminated: str | None

    def __str__(self) -> str:
        parts = [f"container {self.name}: {self.state}"]
        if self.reason:
            parts[0] += f" {self.reason}"
        if self.message:
            parts[0] += f" ({self.message})"
        if self.last_terminated:
            parts.append(f"last terminated {self.last_terminated}")
        parts.append(f"{self.restarts} restart{'' if self.restarts == 1 else 's'}")
        return ", ".join(parts)


@dataclass(frozen=True)
class PodFacts:
    """A pod in enough detail to say why it is not ready and which version it serves."""

    name: str
    phase: str
    ready: bool
    deleting: bool
    labels: Labels
    ip: str | None
    owner: str | None
    containers: tuple[ContainerState, ...]
    images: tuple[tuple[str, str], ...]

    def image_of(self, container: str) -> str | None:
        """The image of `container` (else of the first container)."""
        images = dict(self.images)
        return images.get(container) or next(iter(images.values()), None)

    @property
    def restarts(self) -> int:
        """Restarts of all its containers."""
        return sum(c.restarts for c in self.containers)

    @property
    def template_hash(self) -> str | None:
        """Its `pod-template-hash` label (which ReplicaSet made it)."""
        return dict(self.labels).get(POD_TEMPLATE_HASH_LABEL)


@dataclass(frozen=True)
class ServicePort:
    """A port of a Service and the pod port it targets."""

    name: str | None
    port: int
    target_port: int | str

    def __str__(self) -> str:
        return f"{self.port}→{self.target_port}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class ServiceFacts:
    """A Service: its selector and ports."""

    name: str
    type: str
    cluster_ip: str | None
    selector: Labels
    ports: tuple[ServicePort, ...]

    @property
    def label_selector(self) -> str:
        """The selector as a label selector string."""
        return ",".join(f"{k}={v}" for k, v in self.selector)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of an EndpointSlice: its addresses, its conditions and the pod behind it."""

    addresses: tuple[str, ...]
    ready: bool
    serving: bool
    terminating: bool
    pod: str | None


@dataclass(frozen=True)
class EndpointSliceFacts:
    """An EndpointSlice of a Service."""

    name: str
    ports: tuple[tuple[str | None, int], ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Presence:
    """Whether a named ConfigMap or Secret exists (None: could not tell); never its content."""

    kind: str
    name: str
    exists: bool | None
    detail: str = ""


@dataclass(frozen=True)
class PreviousLog:
    """The last lines of a restarted container's previous instance, or why there are none."""

    pod: str
    container: str
    available: bool
    lines: tuple[str, ...]
    reason: str | None = None


@dataclass(frozen=True)
class TagEvidence:
    """Whether the image tag exists in the registry, or why that was not checked."""

    image: str
    exists: bool | None
    detail: str


@dataclass(frozen=True)
class RestartResult:
    """What `rollout restart` wrote, or would write."""

    namespace: str
    name: str
    restarted_at: str
    patch: dict[str, Any]
    applied: bool
    dry_run: bool
    generation_before: int
    generation_after: int
    already_done: bool = False
    """An earlier attempt of this run wrote the same restart; nothing was written again."""


# Parsing the API's JSON -------------------------------------------------------------------


def _labels(value: Any) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (value or {}).items()))


def _probe(kind: str, probe: Mapping[str, Any]) -> ProbeSpec:
    for handler in ("httpGet", "tcpSocket", "grpc"):
        if isinstance(probe.get(handler), Mapping):
            spec = probe[handler]
            port = spec.get("port")
            return ProbeSpec(
                kind,
                handler,
                port if isinstance(port, int | str) else None,
                spec.get("path") if handler == "httpGet" else None,
            )
    return ProbeSpec(kind, "exec" if probe.get("exec") else "unknown", None, None)


def _container(container: Mapping[str, Any]) -> ContainerSpec:
    name = str(container.get("name", ""))
    refs: list[ObjectRef] = []
    env_names: list[str] = []
    for var in container.get("env") or []:
        env_names.append(str(var.get("name", "")))
        source = var.get("valueFrom") or {}
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = source.get(key)
            if isinstance(ref, Mapping) and ref.get("name"):
                refs.append(
                    ObjectRef(
                        kind,
                        str(ref["name"]),
                        f"env {var.get('name')} of {name}",
                        bool(ref.get("optional")),
                    )
                )
    for source in container.get("envFrom") or []:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(key)
            if isinstance(ref, Mapping) and ref.get("name"):
                refs.append(
                    ObjectRef(
                        kind, str(ref["name"]), f"envFrom of {name}", bool(ref.get("optional"))
                    )
                )
    ports = tuple(
        PortSpec(p.get("name"), int(p.get("containerPort", 0)), str(p.get("protocol", "TCP")))
        for p in container.get("ports") or []
    )
    probes = tuple(
        _probe(kind, container[f"{kind}Probe"])
        for kind in ("liveness", "readiness", "startup")
        if isinstance(container.get(f"{kind}Probe"), Mapping)
    )
    return ContainerSpec(
        name, str(container.get("image", "")), ports, probes, tuple(env_names), tuple(refs)
    )


def _volume_refs(volumes: Iterable[Mapping[str, Any]]) -> tuple[ObjectRef, ...]:
    refs: list[ObjectRef] = []
    for volume in volumes:
        used_by = f"volume {volume.get('name')}"
        config_map = volume.get("configMap")
        if isinstance(config_map, Mapping) and config_map.get("name"):
            refs.append(
                ObjectRef(
                    "ConfigMap", str(config_map["name"]), used_by, bool(config_map.get("optional"))
                )
            )
        secret = volume.get("secret")
        if isinstance(secret, Mapping) and secret.get("secretName"):
            refs.append(
                ObjectRef(
                    "Secret", str(secret["secretName"]), used_by, bool(secret.get("optional"))
                )
            )
        for source in (volume.get("projected") or {}).get("sources") or []:
            for key, kind in (("configMap", "ConfigMap"), ("secret", "Secret")):
                ref = source.get(key)
                if isinstance(ref, Mapping) and ref.get("name"):
                    refs.append(
                        ObjectRef(kind, str(ref["name"]), used_by, bool(ref.get("optional")))
                    )
    return tuple(refs)


def pod_template(template: Mapping[str, Any]) -> PodTemplate:
    """The containers, ports, probes, env names and object references of a pod template."""
    spec = template.get("spec") or {}
    return PodTemplate(
        labels=_labels((template.get("metadata") or {}).get("labels")),
        containers=tuple(_container(c) for c in spec.get("containers") or []),
        pull_secrets=tuple(
            str(s["name"]) for s in spec.get("imagePullSecrets") or [] if s.get("name")
        ),
        volume_refs=_volume_refs(spec.get("volumes") or []),
    )


def workload(deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]) -> Workload:
    """A Deployment object (and its ReplicaSets) as the diagnosis reads it."""
    return Workload(
        status=rollout_status(deployment),
        template=pod_template((deployment.get("spec") or {}).get("template") or {}),
        revisions=revision_history(deployment, replicasets),
    )


def _terminated(state: Mapping[str, Any]) -> str | None:
    terminated = state.get("terminated")
    if not isinstance(terminated, Mapping):
        return None
    text = str(terminated.get("reason") or "Terminated")
    if terminated.get("exitCode") is not None:
        text += f" (exit code {terminated['exitCode']})"
    if terminated.get("finishedAt"):
        text += f" at {terminated['finishedAt']}"
    return text


def _container_state(status: Mapping[str, Any]) -> ContainerState:
    state = status.get("state") or {}
    kind = next((k for k in ("waiting", "running", "terminated") if k in state), "unknown")
    detail: Mapping[str, Any] = state[kind] if isinstance(state.get(kind), Mapping) else {}
    return ContainerState(
        name=str(status.get("name", "")),
        image=str(status.get("image", "")),
        ready=bool(status.get("ready")),
        restarts=int(status.get("restartCount") or 0),
        state=kind,
        reason=detail.get("reason"),
        message=detail.get("message") if kind != "running" else None,
        last_terminated=_terminated(status.get("lastState") or {}),
    )


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    """A Pod object as the diagnosis reads it."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    owner = next(
        (
            f"{ref.get('kind')}/{ref.get('name')}"
            for ref in meta.get("ownerReferences") or []
            if ref.get("controller")
        ),
        None,
    )
    statuses = list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )
    return PodFacts(
        name=str(meta.get("name", "")),
        phase=str(status.get("phase", "Unknown")),
        ready=any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ),
        deleting=meta.get("deletionTimestamp") is not None,
        labels=_labels(meta.get("labels")),
        ip=status.get("podIP"),
        owner=owner,
        containers=tuple(_container_state(s) for s in statuses),
        images=tuple(
            (str(c.get("name", "")), str(c.get("image", "")))
            for c in (pod.get("spec") or {}).get("containers") or []
        ),
    )


def service_facts(service: Mapping[str, Any]) -> ServiceFacts:
    """A Service object as the diagnosis reads it."""
    spec = service.get("spec") or {}
    return ServiceFacts(
        name=str((service.get("metadata") or {}).get("name", "")),
        type=str(spec.get("type", "ClusterIP")),
        cluster_ip=spec.get("clusterIP"),
        selector=_labels(spec.get("selector")),
        ports=tuple(
            ServicePort(p.get("name"), int(p.get("port", 0)), p.get("targetPort", p.get("port")))
            for p in spec.get("ports") or []
        ),
    )


def endpoint_slice_facts(slice_: Mapping[str, Any]) -> EndpointSliceFacts:
    """An EndpointSlice object as the diagnosis reads it."""
    endpoints = []
    for endpoint in slice_.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        ref = endpoint.get("targetRef") or {}
        ready = conditions.get("ready")
        endpoints.append(
            Endpoint(
                addresses=tuple(str(a) for a in endpoint.get("addresses") or []),
                # the API documents an unset `ready` as ready
                ready=ready is None or bool(ready),
                serving=bool(conditions.get("serving", ready is None or ready)),
                terminating=bool(conditions.get("terminating")),
                pod=str(ref["name"]) if ref.get("kind") == "Pod" and ref.get("name") else None,
            )
        )
    return EndpointSliceFacts(
        name=str((slice_.get("metadata") or {}).get("name", "")),
        ports=tuple(
            (p.get("name") or None, int(p.get("port") or 0)) for p in slice_.get("ports") or []
        ),
        endpoints=tuple(endpoints),
    )


def selector_matches(selector: Labels, labels: Labels) -> bool:
    """Whether an equality selector (a Service's) selects these labels; empty selects nothing."""
    have = dict(labels)
    return bool(selector) and all(have.get(k) == v for k, v in selector)


# The report -------------------------------------------------------------------------------


class Verdict(StrEnum):
    """What one finding says."""

    OK = "ok"
    PROBLEM = "problem"
    NOT_CHECKED = "not checked"
    SEEN = "seen"


@dataclass(frozen=True)
class Finding:
    """One thing looked at and what was found there."""

    looked_at: str
    found: str
    verdict: Verdict


@dataclass(frozen=True)
class ProblemReport:
    """One known problem of the playbook: what was looked at, what was found, what to do."""

    title: str
    found: bool
    looked_at: str
    findings: tuple[Finding, ...]
    what_to_do: tuple[str, ...]

    @property
    def not_checked(self) -> tuple[Finding, ...]:
        """The findings that could not be checked."""
        return tuple(f for f in self.findings if f.verdict is Verdict.NOT_CHECKED)


@dataclass(frozen=True)
class RemedyOutcome:
    """What the remedy did: the restart, and how the rollout it started ended."""

    action: str
    applied: bool
    detail: str
    succeeded: bool
    patch: str | None = None
    new_replicaset: str | None = None
    new_revision: int | None = None


@dataclass(frozen=True)
class Diagnosis:
    """The whole diagnosis of one service: the four problems, and the remedy if one was asked."""

    service: str
    namespace: str
    deployment: str
    checked_at: datetime
    revision: int | None
    image: str | None
    rollout: str
    problems: tuple[ProblemReport, ...]
    remedy_requested: bool
    remedy: RemedyOutcome | None = None

    @property
    def found(self) -> tuple[ProblemReport, ...]:
        """The problems found."""
        return tuple(p for p in self.problems if p.found)

    @property
    def stuck(self) -> bool:
        """Whether the rollout is stuck (the one problem the remedy restarts)."""
        return any(p.found and p.title == STUCK for p in self.problems)

    def summary(self) -> str:
        """One line: which known problems were found, or that none was."""
        total = len(self.problems)
        if not self.found:
            return f"none of the playbook's {total} known problems found"
        names = ", ".join(p.title for p in self.found)
        return f"{len(self.found)} of the playbook's {total} known problems found: {names}"

    def to_markdown(self) -> str:
        """The report a person reads: per problem, what was looked at, found, and what to do."""
        image = f", `{self.image}`" if self.image else ""
        revision = f", revision {self.revision}" if self.revision is not None else ""
        if self.remedy is not None:
            remedy = f"{self.remedy.action}: {self.remedy.detail}"
        elif self.remedy_requested:
            remedy = "requested, but the rollout is not stuck: nothing to restart, nothing changed"
        else:
            remedy = "not requested (remedy=False): nothing was changed"
        lines = [
            f"# diagnose-rollback: {self.service} in {self.namespace}",
            "",
            "| | |",
            "|---|---|",
            f"| verdict | {_cell(self.summary())} |",
            f"| Deployment | `{self.namespace}/{self.deployment}`{revision}{image} |",
            f"| rollout | {_cell(self.rollout)} |",
            f"| checked at | {self.checked_at.isoformat(timespec='seconds')} |",
            f"| remedy | {_cell(remedy)} |",
        ]
        for problem in self.problems:
            lines += [
                "",
                f"## {problem.title}: {'FOUND' if problem.found else 'not found'}",
                "",
                f"**Looked at:** {problem.looked_at}",
                "",
                "| looked at | found | |",
                "|---|---|---|",
            ]
            lines += [
                f"| {_cell(f.looked_at)} | {_cell(f.found)} | {f.verdict.value} |"
                for f in problem.findings
            ]
            if problem.found:
                lines += ["", "**What to do:**", ""] + [f"- {step}" for step in problem.what_to_do]
        if self.remedy is not None:
            lines += [
                "",
                "## Remedy",
                "",
                "The checks above were made before it.",
                "",
                f"- {self.remedy.action}",
                f"- {self.remedy.detail}",
            ]
            if self.remedy.new_replicaset:
                lines.append(
                    f"- new ReplicaSet `{self.remedy.new_replicaset}` "
                    f"(revision {self.remedy.new_revision})"
                )
            if self.remedy.patch:
                title = "Patch" if self.remedy.applied else "Patch that would be made"
                lines += ["", f"{title}:", "", "```json", self.remedy.patch, "```"]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _live(pods: Iterable[PodFacts]) -> list[PodFacts]:
    return [p for p in pods if not p.deleting]


def _pod_text(pod: PodFacts) -> str:
    state = "ready" if pod.ready else "not ready"
    containers = "; ".join(str(c) for c in pod.containers) or "no container status yet"
    return f"{pod.phase}, {state}; {containers}"


# 1. Rollout stuck in "Progressing" --------------------------------------------------------

STUCK = 'Rollout stuck in "Progressing"'
IMAGE_PULL = "Image pull errors"
HEALTH = "Health checks failing"
TRAFFIC = "Traffic going to the bad version"


def diagnose_stuck(
    work: Workload,
    pods: Sequence[PodFacts],
    events: Sequence[EventRecord],
    previous_logs: Sequence[PreviousLog],
) -> ProblemReport:
    """Is the rollout stuck? Replicas, conditions, unready pods, events, previous logs."""
    status = work.status
    ns, name = status.namespace, status.name
    live = _live(pods)
    restarted = [p for p in live if p.restarts]
    found = not status.complete or status.paused
    findings = [
        Finding(
            "replicas",
            f"desired {status.desired_replicas}, updated {status.updated_replicas}, "
            f"ready {status.ready_replicas}, available {status.available_replicas} "
            f"({status.replicas} in all): {status.message}",
            Verdict.PROBLEM if not status.complete else Verdict.OK,
        )
    ]
    if status.paused:
        findings.append(Finding("spec.paused", "the rollout is paused", Verdict.PROBLEM))
    for cond in status.conditions:
        bad = (
            (cond.type == "Progressing" and cond.reason == PROGRESS_DEADLINE_EXCEEDED)
            or (cond.type == "Available" and cond.status == "False")
            or (cond.type == "ReplicaFailure" and cond.status == "True")
        )
        findings.append(
            Finding(
                f"condition {cond.type}",
                f"{cond.status}, {cond.reason}: {cond.message}",
                Verdict.PROBLEM if bad else Verdict.OK,
            )
        )
    unready = [p for p in live if not p.ready]
    for pod in unready:
        findings.append(Finding(f"pod {pod.name}", _pod_text(pod), Verdict.PROBLEM))
    if not unready:
        findings.append(
            Finding(
                "pods",
                f"{len(live)} of {len(live)} ready" if live else "no pods",
                Verdict.OK if live or status.desired_replicas == 0 else Verdict.PROBLEM,
            )
        )
    for event in events:
        findings.append(
            Finding(
                f"event {event.object}",
                f"{event.last_seen} {event.type} {event.reason}: {event.message}"
                + (f" ({event.count} times)" if event.count > 1 else ""),
                Verdict.SEEN,
            )
        )
    if not events:
        findings.append(
            Finding(
                "events", "no recent event of the Deployment, its ReplicaSets or pods", Verdict.SEEN
            )
        )
    for log in previous_logs:
        if log.available:
            text = " / ".join(log.lines[-10:]) or "empty"
            findings.append(
                Finding(f"previous log of {log.pod} ({log.container})", text, Verdict.SEEN)
            )
        else:
            findings.append(
                Finding(
                    f"previous log of {log.pod} ({log.container})",
                    f"unavailable: {log.reason}",
                    Verdict.NOT_CHECKED,
                )
            )
    if not restarted:
        findings.append(
            Finding("previous-container logs", "no container restarted: none to read", Verdict.OK)
        )
    what_to_do = []
    if found:
        reasons = sorted({c.reason for p in unready for c in p.containers if c.reason})
        what_to_do.append(
            "Read each unready pod's reason above"
            + (f" ({', '.join(reasons)})" if reasons else "")
            + f": image pull errors → see {IMAGE_PULL!r}; CrashLoopBackOff → the previous logs "
            f"and the container's command; running but never ready → see {HEALTH!r}."
        )
        if status.paused:
            what_to_do.append(f"`kubectl -n {ns} rollout resume deployment/{name}`.")
        what_to_do.append(
            "If the cause has passed (a dependency is back, a node recovered): "
            f"`kubectl -n {ns} rollout restart deployment/{name}` (this flow with remedy=True "
            "restarts and waits for the rollout)."
        )
        what_to_do.append(
            "If the release itself is bad: roll back (kubernetes-rollback/default, or "
            "image-rollback/default to a known-good tag)."
        )
    return ProblemReport(
        STUCK,
        found,
        f"Deployment {ns}/{name}: replicas and conditions; its {_plural(len(live), 'pod')} "
        f"({status.label_selector}): waiting/terminated reasons and restarts; "
        f"{_plural(len(events), 'recent event')} of the Deployment, its ReplicaSets and pods; "
        f"previous-container logs of {_plural(len(restarted), 'restarted pod')}",
        tuple(findings),
        tuple(what_to_do),
    )


# 2. Image pull errors ---------------------------------------------------------------------


def diagnose_image_pull(
    work: Workload,
    pods: Sequence[PodFacts],
    pull_secrets: Sequence[Presence],
    tag: TagEvidence,
) -> ProblemReport:
    """Do pods fail to pull their image? The images, pull errors, pull secrets, the tag."""
    ns = work.status.namespace
    live = _live(pods)
    findings = []
    for container in work.template.containers:
        try:
            ref = parse_image(container.image)
            text = f"`{container.image}` (repository {ref.repository}, tag {ref.tag or 'none'})"
            verdict = Verdict.SEEN
        except InvalidInputError as exc:
            text, verdict = str(exc), Verdict.PROBLEM
        findings.append(Finding(f"image of container {container.name}", text, verdict))
    wanted: dict[str, int] = {}
    for pod in live:
        for _, image in pod.images:
            wanted[image] = wanted.get(image, 0) + 1
    if wanted:
        findings.append(
            Finding(
                "images the pods want",
                ", ".join(f"`{i}` ({_plural(n, 'pod')})" for i, n in sorted(wanted.items())),
                Verdict.SEEN,
            )
        )
    pulling = [
        (pod, c)
        for pod in live
        for c in pod.containers
        if c.state == "waiting" and c.reason in PULL_ERRORS
    ]
    for pod, c in pulling:
        findings.append(
            Finding(f"pod {pod.name}", f"{c.reason}: {c.message or 'no message'}", Verdict.PROBLEM)
        )
    if not pulling:
        findings.append(Finding("pods' image pulls", "no pod waits on an image pull", Verdict.OK))
    missing = [s for s in pull_secrets if s.exists is False]
    for secret in pull_secrets:
        if secret.exists:
            text, verdict = "exists (only its existence was checked)", Verdict.OK
        elif secret.exists is False:
            text, verdict = f"does not exist in {ns}", Verdict.PROBLEM
        else:
            text, verdict = f"cannot tell: {secret.detail}", Verdict.NOT_CHECKED
        findings.append(Finding(f"imagePullSecrets {secret.name}", text, verdict))
    if not pull_secrets:
        findings.append(
            Finding(
                "imagePullSecrets",
                "none: the registry must allow anonymous pulls or the nodes their own credentials",
                Verdict.SEEN,
            )
        )
    findings.append(
        Finding(
            f"registry tag of `{tag.image}`",
            tag.detail,
            Verdict.NOT_CHECKED
            if tag.exists is None
            else Verdict.OK
            if tag.exists
            else Verdict.PROBLEM,
        )
    )
    malformed = [
        f for f in findings if f.verdict is Verdict.PROBLEM and f.looked_at.startswith("image")
    ]
    found = bool(pulling or missing or malformed or tag.exists is False)
    what_to_do = []
    if tag.exists is False:
        what_to_do.append(
            f"The tag of `{tag.image}` does not exist: push it, or roll back to a tag that "
            "exists (image-rollback/default confirms the tag in the registry first)."
        )
    for secret in missing:
        what_to_do.append(
            f"Recreate the pull secret {secret.name} as the playbook says: "
            f"`kubectl -n {ns} create secret docker-registry {secret.name} "
            "--docker-server=ghcr.io --docker-username=$GITHUB_USER "
            "--docker-password=$GITHUB_TOKEN` (this flow never reads, creates or deletes Secrets)."
        )
    if pulling and not missing and tag.exists is not False:
        what_to_do.append(
            "The tag and the pull secrets are there: check the secret's credentials (a person "
            f"allowed to: `kubectl -n {ns} get secret NAME -o yaml`) and that the nodes reach "
            "the registry."
        )
    return ProblemReport(
        IMAGE_PULL,
        found,
        "the image and tag of each container and of the pods; the pods' pull errors; each "
        "imagePullSecrets entry by name (whether it exists, never its content); the tag in "
        "the registry",
        tuple(findings),
        tuple(what_to_do),
    )


# 3. Health checks failing -----------------------------------------------------------------


def _probe_finding(container: ContainerSpec, probe: ProbeSpec) -> Finding:
    looked_at = f"{probe.kind} probe of {container.name}"
    if probe.port is None:
        return Finding(looked_at, f"{probe}: no port to compare", Verdict.SEEN)
    declared = ", ".join(str(p) for p in container.ports)
    if isinstance(probe.port, str) and not probe.port.isdigit():
        match = next((p for p in container.ports if p.name == probe.port), None)
        if match is None:
            return Finding(
                looked_at,
                f"{probe}: the container declares no port named {probe.port!r} "
                f"(its ports: {declared or 'none'})",
                Verdict.PROBLEM,
            )
        return Finding(looked_at, f"{probe} = {match.number}, declared", Verdict.OK)
    number = int(probe.port)
    if not container.ports:
        return Finding(
            looked_at,
            f"{probe}: the container declares no ports to compare with",
            Verdict.NOT_CHECKED,
        )
    if all(p.number != number for p in container.ports):
        return Finding(
            looked_at,
            f"{probe}: port {number} is not among the container's declared ports ({declared})",
            Verdict.PROBLEM,
        )
    return Finding(looked_at, f"{probe}, declared", Verdict.OK)


def diagnose_health(
    work: Workload,
    pods: Sequence[PodFacts],
    references: Sequence[Presence],
    health: ProbeResult | str,
) -> ProblemReport:
    """Do health checks fail? Probes against ports, env names, referenced objects, /health."""
    template = work.template
    findings: list[Finding] = []
    for container in template.containers:
        if not container.probes:
            findings.append(Finding(f"probes of {container.name}", "none configured", Verdict.SEEN))
        findings += [_probe_finding(container, probe) for probe in container.probes]
        findings.append(
            Finding(
                f"ports of {container.name}",
                ", ".join(str(p) for p in container.ports) or "none declared",
                Verdict.SEEN,
            )
        )
        findings.append(
            Finding(
                f"environment of {container.name}",
                ("names: " + ", ".join(container.env_names) + " (values not read)")
                if container.env_names
                else "no environment variables",
                Verdict.SEEN,
            )
        )
    uses: dict[tuple[str, str], list[ObjectRef]] = {}
    for ref in template.references():
        uses.setdefault((ref.kind, ref.name), []).append(ref)
    missing_required = []
    for presence in references:
        refs = uses.get((presence.kind, presence.name), [])
        where = "; ".join(r.used_by + (" (optional)" if r.optional else "") for r in refs)
        optional = bool(refs) and all(r.optional for r in refs)
        if presence.exists:
            text, verdict = "exists", Verdict.OK
        elif presence.exists is False and optional:
            text, verdict = "does not exist; every use is optional", Verdict.SEEN
        elif presence.exists is False:
            text, verdict = "does not exist", Verdict.PROBLEM
            missing_required.append(presence)
        else:
            text, verdict = f"cannot tell: {presence.detail}", Verdict.NOT_CHECKED
        findings.append(
            Finding(f"{presence.kind} {presence.name}", f"{text} (used by {where})", verdict)
        )
    if not uses:
        findings.append(
            Finding("ConfigMaps and Secrets", "the pod template references none", Verdict.SEEN)
        )
    live = _live(pods)
    unready = [p for p in live if p.phase == "Running" and not p.ready]
    for pod in unready:
        findings.append(Finding(f"pod {pod.name}", _pod_text(pod), Verdict.PROBLEM))
    running = [p for p in live if p.phase == "Running"]
    if not unready:
        findings.append(
            Finding("running pods", f"{len(running)} of {len(running)} ready", Verdict.OK)
        )
    if isinstance(health, str):
        findings.append(Finding("/health", health, Verdict.NOT_CHECKED))
        health_failed = False
    else:
        observed = f"{health.url}: {health.status_code} in {health.latency_seconds * 1000:.0f} ms"
        if health.body_excerpt and not health.ok:
            observed += f": {health.body_excerpt[:120]}"
        health_failed = not health.ok
        findings.append(
            Finding("/health", observed, Verdict.PROBLEM if health_failed else Verdict.OK)
        )
    bad_probes = [
        f for f in findings if f.verdict is Verdict.PROBLEM and " probe of " in f.looked_at
    ]
    found = bool(bad_probes or missing_required or unready or health_failed)
    ns = work.status.namespace
    what_to_do = []
    if bad_probes:
        what_to_do.append(
            "Point each probe above at a port the container declares (or declare the port), "
            "then roll out; until then kubelet probes a port nothing listens on."
        )
    for presence in missing_required:
        what_to_do.append(
            f"Create {presence.kind} {presence.name} in {ns}, or roll back to the revision "
            "that did not need it."
        )
    if unready or health_failed:
        what_to_do.append(
            "Check the dependencies and the environment from inside a pod, as the playbook "
            f"says: `kubectl -n {ns} exec -it POD -- curl localhost:8000/health` and "
            f'`kubectl -n {ns} exec -it POD -- env | grep -E "QDRANT|REDIS|OPENAI"` (this '
            "flow reads no values and never execs into pods)."
        )
    return ProblemReport(
        HEALTH,
        found,
        "the liveness, readiness and startup probes against each container's declared ports; "
        "the names of its environment variables and of the ConfigMaps and Secrets it "
        "references (env valueFrom, envFrom, volumes) and whether they exist; pods running "
        "but not ready; the /health answer",
        tuple(findings),
        tuple(what_to_do),
    )


# 4. Traffic going to the bad version ------------------------------------------------------


def _version_text(image: str | None) -> str:
    """The tag of an image (its version), or the image itself when it has none."""
    if not image:
        return "unknown image"
    try:
        return parse_image(image).tag or image
    except InvalidInputError:
        return image


def diagnose_traffic(
    work: Workload,
    container: str,
    service_name: str,
    service: ServiceFacts | None,
    deployment_pods: Sequence[PodFacts],
    service_pods: Sequence[PodFacts],
    slices: Sequence[EndpointSliceFacts],
    canary: Destination | None,
    virtual_service: VirtualServiceState | str,
) -> ProblemReport:
    """Does traffic reach the bad version? Selector vs labels, endpoints, routes and mirrors.

    The good version is the Deployment's template image of `container`; a ready endpoint
    backed by a pod of any other image serves the bad (or an old) version.
    """
    status = work.status
    ns, name = status.namespace, status.name
    wanted = dict(status.images).get(container)
    findings: list[Finding] = []
    problems: list[str] = []
    by_name = {p.name: p for p in [*deployment_pods, *service_pods]}
    ours = {name for name, pod in by_name.items() if work.owns(pod)}
    if service is None:
        findings.append(
            Finding(f"Service {service_name}", f"does not exist in {ns}", Verdict.PROBLEM)
        )
        problems.append("no-service")
    else:
        findings.append(
            Finding(
                f"Service {service.name}",
                f"{service.type} {service.cluster_ip or ''}, selector "
                f"{service.label_selector or 'none'}, ports "
                + (", ".join(str(p) for p in service.ports) or "none"),
                Verdict.SEEN,
            )
        )
        template_labels = ", ".join(f"{k}={v}" for k, v in work.template.labels)
        if not service.selector:
            findings.append(
                Finding(
                    "selector against the pods' labels",
                    "the Service has no selector: its endpoints are managed by hand",
                    Verdict.NOT_CHECKED,
                )
            )
        else:
            matched = _live(service_pods)
            mine = [p for p in matched if p.name in ours]
            others = [p for p in matched if p.name not in ours]
            if not matched:
                findings.append(
                    Finding(
                        "selector against the pods' labels",
                        f"{service.label_selector} matches no pod; the Deployment's pods are "
                        f"labelled {template_labels}",
                        Verdict.PROBLEM,
                    )
                )
                problems.append("selector")
            else:
                text = f"{service.label_selector} matches {_plural(len(matched), 'pod')}: "
                text += f"{len(mine)} of Deployment {name}"
                if others:
                    text += ", " + ", ".join(
                        f"{p.name} ({p.owner or 'no owner'}, {_version_text(p.image_of(container))})"
                        for p in others
                    )
                verdict = Verdict.OK if mine else Verdict.PROBLEM
                if not mine:
                    text += f"; none of Deployment {name} (labelled {template_labels})"
                    problems.append("selector")
                findings.append(Finding("selector against the pods' labels", text, verdict))
            spec = work.template.container(container)
            for port in service.ports:
                target = port.target_port
                if spec is None or not spec.ports:
                    continue
                if isinstance(target, str) and not target.isdigit():
                    if all(p.name != target for p in spec.ports):
                        findings.append(
                            Finding(
                                f"Service port {port}",
                                f"targetPort {target!r} is no port name of container "
                                f"{container} ({', '.join(str(p) for p in spec.ports)})",
                                Verdict.PROBLEM,
                            )
                        )
                        problems.append("target-port")
                elif all(p.number != int(target) for p in spec.ports):
                    findings.append(
                        Finding(
                            f"Service port {port}",
                            f"targetPort {target} is not among the ports of container "
                            f"{container} ({', '.join(str(p) for p in spec.ports)})",
                            Verdict.PROBLEM,
                        )
                    )
                    problems.append("target-port")
        ready_by_version: dict[str, list[str]] = {}
        for slice_ in slices:
            parts = []
            for endpoint in slice_.endpoints:
                pod = by_name.get(endpoint.pod or "")
                image = pod.image_of(container) if pod else None
                owner = (
                    f"Deployment {name}"
                    if endpoint.pod in ours
                    else (pod.owner if pod and pod.owner else "not of the Deployment")
                )
                state = "ready" if endpoint.ready else "not ready"
                if endpoint.terminating:
                    state += ", terminating"
                parts.append(
                    f"{', '.join(endpoint.addresses)} → {endpoint.pod or 'no pod'} "
                    f"({_version_text(image)}, {owner}) {state}"
                )
                if endpoint.ready:
                    key = image or "unknown image"
                    ready_by_version.setdefault(key, []).append(endpoint.pod or "?")
            ports = ", ".join(f"{n or '-'}:{p}" for n, p in slice_.ports) or "no ports"
            findings.append(
                Finding(
                    f"EndpointSlice {slice_.name}",
                    f"ports {ports}; " + ("; ".join(parts) or "no endpoints"),
                    Verdict.SEEN,
                )
            )
        if service.selector and not slices:
            findings.append(
                Finding("EndpointSlices", f"none for Service {service.name}", Verdict.PROBLEM)
            )
            problems.append("no-endpoints")
        elif service.selector and not ready_by_version:
            findings.append(
                Finding(
                    "ready endpoints", "none: every request to the Service fails", Verdict.PROBLEM
                )
            )
            problems.append("no-endpoints")
        if ready_by_version:
            # While a rollout runs, the old pods serve until it is done; once it is done (or
            # for pods of another workload) another version behind the Service is the problem
            # the playbook names: "rollback complete but errors continue".
            bad = {
                image: names
                for image, names in ready_by_version.items()
                if image != wanted and (status.complete or any(n not in ours for n in names))
            }
            text = "; ".join(
                f"{_version_text(i)}: {_plural(len(p), 'ready endpoint')} ({', '.join(sorted(p))})"
                for i, p in sorted(ready_by_version.items())
            )
            if len(ready_by_version) > 1 or wanted not in ready_by_version:
                text += f" — the Deployment's version is {_version_text(wanted)}"
                if not status.complete:
                    text += ", its rollout is not complete"
            if bad:
                problems.append("other-version")
            findings.append(
                Finding(
                    "versions behind the Service",
                    text,
                    Verdict.PROBLEM if bad else Verdict.OK,
                )
            )
    if canary is None:
        findings.append(
            Finding(
                "VirtualService", "no canary configured: no routes to read", Verdict.NOT_CHECKED
            )
        )
    elif isinstance(virtual_service, str):
        findings.append(Finding("VirtualService", virtual_service, Verdict.NOT_CHECKED))
    else:
        for route in virtual_service.routes:
            findings.append(
                Finding(f"VirtualService {virtual_service.name}", str(route), Verdict.SEEN)
            )
        paths = paths_to(virtual_service, canary)
        if paths:
            findings.append(
                Finding(f"traffic to the canary {canary}", "; ".join(paths), Verdict.PROBLEM)
            )
            problems.append("canary")
        else:
            findings.append(
                Finding(
                    f"traffic to the canary {canary}",
                    "no route, weight or mirror reaches it",
                    Verdict.OK,
                )
            )
    what_to_do = []
    if "no-service" in problems:
        what_to_do.append(
            f"Nothing routes to the pods by a Service named {service_name}: create it, or run "
            "this flow with `kubernetes_service` set to the Service's name."
        )
    if "selector" in problems:
        what_to_do.append(
            "Make the Service's selector match the pod template's labels (compare "
            f"`kubectl -n {ns} get svc {service_name} -o yaml | grep selector -A5` with "
            f"`kubectl -n {ns} get pods --show-labels`)."
        )
    if "target-port" in problems:
        what_to_do.append("Point the Service's targetPort at a port the container declares.")
    if "no-endpoints" in problems:
        what_to_do.append(
            f"No pod is ready behind the Service: see {STUCK!r} and {HEALTH!r} above."
        )
    if "other-version" in problems:
        what_to_do.append(
            "Pods of another version are ready behind the Service. Old pods of the Deployment: "
            f"`kubectl -n {ns} rollout restart deployment/{name}` (the playbook's force endpoint "
            "update). Pods of another workload: scale it down or change its labels so the "
            "selector no longer matches them."
        )
    if "canary" in problems:
        what_to_do.append(
            "The VirtualService still sends or mirrors traffic to the canary: run "
            "canary-rollback/default (it takes every route, weight and mirror to the canary "
            "away and scales the canary to 0)."
        )
    return ProblemReport(
        TRAFFIC,
        bool(problems),
        f"Service {service_name}: its selector against the pods' labels, its ports, its "
        "EndpointSlices and which pods (which images) back them; "
        + (
            f"VirtualService routes, weights and mirrors to the canary {canary}"
            if canary is not None
            else "no VirtualService (no canary configured)"
        ),
        tuple(findings),
        tuple(what_to_do),
    )


def restart_patch(at: str) -> dict[str, Any]:
    """The strategic-merge patch of `kubectl rollout restart`: the template's restartedAt."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: at}}}}}


def restart_plan_markdown(
    diagnosis: Diagnosis,
    plan: RemedyOutcome,
    pods: Sequence[PodFacts],
    environment: str,
    timeout_minutes: float,
) -> str:
    """The remedy a person approves: why, the exact patch, and the pods it replaces."""
    live = _live(pods)
    lines = [
        f"# Approve `rollout restart` of {diagnosis.service} in {environment}?",
        "",
        f"**Found:** {diagnosis.summary()}. The rollout: {diagnosis.rollout}",
        "",
        "| | |",
        "|---|---|",
        f"| Deployment | `{diagnosis.namespace}/{diagnosis.deployment}` |",
        f"| revision | {diagnosis.revision} |",
        f"| image | `{diagnosis.image}` |",
        f"| pods replaced | {len(live)} |",
        "",
        f"**Plan:** {plan.action}: the Deployment replaces every pod with a new ReplicaSet of the "
        "same template; nothing is deleted.",
        "",
        "## The exact change (validated by the API server)",
        "",
        "```",
        plan.patch or "",
        "```",
        "",
        "## Pods replaced",
        "",
        *(f"- `{pod.name}`: {_pod_text(pod)}" for pod in live),
        *([] if live else ["- none"]),
        "",
        f"Resume this run with approve yes or no within {timeout_minutes:g} min; "
        "no answer ends it with nothing changed.",
    ]
    return "\n".join(lines)
