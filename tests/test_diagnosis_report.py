"""The troubleshooting report as a person reads it, for a rollout with every known problem, a
healthy one, and one where nothing could be read: the whole markdown, compared with the
reviewed reports in tests/golden/ (every finding, verdict and step of what to do)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from playbook.checks import ProbeResult
from playbook.diagnosis import (
    Diagnosis,
    PodFacts,
    Presence,
    PreviousLog,
    RemedyOutcome,
    TagEvidence,
    diagnose_health,
    diagnose_image_pull,
    diagnose_stuck,
    diagnose_traffic,
    endpoint_slice_facts,
    pod_facts,
    restart_patch,
    service_facts,
    workload,
)
from playbook.services import Destination
from playbook.task_results import EventRecord
from playbook.traffic import virtual_service_state

GOLDEN = Path(__file__).with_name("golden")
REPO = "ghcr.io/acme/rag-api"
AT = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
CANARY = Destination(host="rag-api", subset="canary")


def container(image: str, **extra: Any) -> dict[str, Any]:
    return {"name": "rag-api", "image": image, **extra}


def deployment(
    image: str,
    *,
    complete: bool,
    paused: bool = False,
    conditions: list[Any] | None = None,
    namespace: str = "production",
    **pod_spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "rag-api",
            "namespace": namespace,
            "uid": "d-1",
            "generation": 5,
            "resourceVersion": "900",
            "annotations": {"deployment.kubernetes.io/revision": "3"},
        },
        "spec": {
            "replicas": 3,
            "paused": paused,
            "selector": {"matchLabels": {"app": "rag-api"}},
            "template": {
                "metadata": {"labels": {"app": "rag-api", "tier": "api"}},
                "spec": {"containers": [container(image, **pod_spec.pop("extra", {}))], **pod_spec},
            },
        },
        "status": {
            "observedGeneration": 5,
            "replicas": 4 if not complete else 3,
            "updatedReplicas": 1 if not complete else 3,
            "readyReplicas": 2 if not complete else 3,
            "availableReplicas": 2 if not complete else 3,
            "conditions": conditions or [],
        },
    }


def replicaset(name: str, revision: int, image: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
            "ownerReferences": [{"controller": True, "uid": "d-1"}],
        },
        "spec": {"template": {"spec": {"containers": [container(image)]}}},
        "status": {"replicas": 1},
    }


REPLICASETS = [
    replicaset("rag-api-new", 3, f"{REPO}:v1.2.4"),
    replicaset("rag-api-old", 2, f"{REPO}:v1.2.3"),
]


def pod(
    name: str,
    image: str,
    owner: str,
    *,
    ready: bool = True,
    phase: str = "Running",
    state: dict[str, Any] | None = None,
    restarts: int = 0,
    last: dict[str, Any] | None = None,
    deleting: bool = False,
) -> PodFacts:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"app": "rag-api", "pod-template-hash": owner.rsplit("-", 1)[-1]},
        "ownerReferences": [{"controller": True, "kind": "ReplicaSet", "name": owner}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-03-01T12:29:00Z"
    return pod_facts(
        {
            "metadata": meta,
            "spec": {"containers": [container(image)]},
            "status": {
                "phase": phase,
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [
                    {
                        "name": "rag-api",
                        "image": image,
                        "ready": ready,
                        "restartCount": restarts,
                        "state": state or {"running": {"startedAt": "2026-03-01T12:00:00Z"}},
                        "lastState": last or {},
                    }
                ],
            },
        }
    )


def slice_(name: str, *endpoints: tuple[str, str | None, dict[str, Any]]) -> Any:
    return endpoint_slice_facts(
        {
            "metadata": {"name": name},
            "ports": [{"name": "http", "port": 8000}, {"port": 9090}],
            "endpoints": [
                {
                    "addresses": [address],
                    "conditions": conditions,
                    **({"targetRef": {"kind": "Pod", "name": pod_name}} if pod_name else {}),
                }
                for address, pod_name, conditions in endpoints
            ],
        }
    )


def sick() -> Diagnosis:
    """v1.2.4 stuck: pull errors, a crash loop, a missing Secret, probes at undeclared ports,
    /health 503, a Service that also selects another workload's pods, and canary routes."""
    conditions = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "rag-api-new" has timed out progressing.',
        },
        {
            "type": "Available",
            "status": "False",
            "reason": "MinimumReplicasUnavailable",
            "message": "Deployment does not have minimum availability.",
        },
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": 'pods "rag-api-new-x" is forbidden: exceeded quota',
        },
    ]
    extra = {
        "ports": [
            {"name": "http", "containerPort": 8000},
            {"containerPort": 9090, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"port": 8080, "path": "/ready"}},
        "livenessProbe": {"httpGet": {"port": "http", "path": "/health"}},
        "startupProbe": {"tcpSocket": {"port": "metrics"}},
        "env": [
            {
                "name": "QDRANT_URL",
                "valueFrom": {"secretKeyRef": {"name": "qdrant-credentials", "key": "url"}},
            },
            {
                "name": "FEATURE_FLAGS",
                "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "f", "optional": True}},
            },
            {"name": "LOG_LEVEL", "value": "debug"},
        ],
        "envFrom": [{"configMapRef": {"name": "rag-config"}}],
    }
    work = workload(
        deployment(
            f"{REPO}:v1.2.4",
            complete=False,
            paused=True,
            conditions=conditions,
            extra=extra,
            imagePullSecrets=[{"name": "ghcr-pull"}, {"name": "old-pull"}, {"name": "sealed-pull"}],
            volumes=[{"name": "tls", "secret": {"secretName": "tls-cert"}}],
        ),
        REPLICASETS,
    )
    pulling = pod(
        "rag-api-new-a",
        f"{REPO}:v1.2.4",
        "rag-api-new",
        ready=False,
        phase="Pending",
        state={
            "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "v1.2.4"'}
        },
    )
    crashing = pod(
        "rag-api-new-b",
        f"{REPO}:v1.2.4",
        "rag-api-new",
        ready=False,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        restarts=4,
        last={
            "terminated": {"reason": "Error", "exitCode": 1, "finishedAt": "2026-03-01T12:29:30Z"}
        },
    )
    old = pod("rag-api-old-a", f"{REPO}:v1.2.3", "rag-api-old")
    gone = pod("rag-api-old-b", f"{REPO}:v1.2.3", "rag-api-old", deleting=True)
    legacy = pod("legacy-x", f"{REPO}:v1.1.0", "legacy-7f")
    pods = (pulling, crashing, old, gone)
    events = (
        EventRecord(
            "Warning", "Failed", "Pod/rag-api-new-a", "Failed to pull image", 6, "12:29:10"
        ),
        EventRecord(
            "Normal", "ScalingReplicaSet", "Deployment/rag-api", "Scaled up to 1", 1, "12:20:00"
        ),
    )
    logs = (
        PreviousLog("rag-api-new-b", "rag-api", True, ("starting", "KeyError: 'QDRANT_URL'")),
        PreviousLog(
            "rag-api-new-c", "rag-api", False, (), "logs are not served by simulated nodes"
        ),
    )
    secrets = (
        Presence("Secret", "ghcr-pull", True),
        Presence("Secret", "old-pull", False),
        Presence("Secret", "sealed-pull", None, "access denied (403)"),
    )
    tag = TagEvidence(f"{REPO}:v1.2.4", False, "tag v1.2.4 not found in acme/rag-api")
    references = (
        Presence("Secret", "qdrant-credentials", False),
        Presence("ConfigMap", "flags", False),
        Presence("ConfigMap", "rag-config", True),
        Presence("Secret", "tls-cert", None, "access denied (403)"),
    )
    health = ProbeResult("http://rag-api/health", 503, 0.0123, '{"status": "unhealthy"}')
    service = service_facts(
        {
            "metadata": {"name": "rag-api"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.96.0.10",
                "selector": {"app": "rag-api"},
                "ports": [
                    {"name": "web", "port": 80, "targetPort": "http"},
                    {"name": "grpc", "port": 81, "targetPort": "grpc"},
                    {"port": 9091, "targetPort": 9091},
                    {"port": 9090},
                ],
            },
        }
    )
    slices = (
        slice_(
            "rag-api-abc",
            ("10.0.0.2", "rag-api-old-a", {"ready": True}),
            ("10.0.0.3", "legacy-x", {}),
            ("10.0.0.4", "rag-api-new-b", {"ready": False, "terminating": True}),
            ("10.0.0.5", None, {"ready": False}),
        ),
    )
    vs = virtual_service_state(
        {
            "metadata": {"name": "rag-api", "namespace": "production"},
            "spec": {
                "http": [
                    {
                        "name": "split",
                        "route": [
                            {"destination": {"host": "rag-api", "subset": "stable"}, "weight": 90},
                            {"destination": {"host": "rag-api", "subset": "canary"}, "weight": 10},
                        ],
                        "mirror": {"host": "rag-api", "subset": "canary"},
                        "mirrorPercentage": {"value": 5},
                    },
                ]
            },
        }
    )
    remedy = RemedyOutcome(
        "rollout restart deployment/rag-api",
        True,
        "restarted at 2026-03-01T12:30:06Z; the rollout completed",
        True,
        patch='{"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-03-01T12:30:06Z"}}}}}',
        new_replicaset="rag-api-7c",
        new_revision=4,
    )
    return Diagnosis(
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        checked_at=AT,
        revision=work.status.revision,
        image=f"{REPO}:v1.2.4",
        rollout=work.status.message,
        problems=(
            diagnose_stuck(work, pods, events, logs),
            diagnose_image_pull(work, pods, secrets, tag),
            diagnose_health(work, pods, references, health),
            diagnose_traffic(
                work,
                "rag-api",
                "rag-api",
                service,
                pods,
                (old, legacy, crashing),
                slices,
                CANARY,
                vs,
            ),
        ),
        remedy_requested=True,
        remedy=remedy,
    )


def healthy() -> Diagnosis:
    """v1.2.3 rolled out, every pod ready behind the Service, no canary configured."""
    extra = {
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"port": 8000, "path": "/ready"}},
        "livenessProbe": {"exec": {"command": ["true"]}},
    }
    work = workload(deployment(f"{REPO}:v1.2.3", complete=True, extra=extra), REPLICASETS[:1])
    pods = tuple(pod(f"rag-api-new-{i}", f"{REPO}:v1.2.3", "rag-api-new") for i in "abc")
    service = service_facts(
        {
            "metadata": {"name": "rag-api"},
            "spec": {
                "clusterIP": "10.96.0.10",
                "selector": {"app": "rag-api"},
                "ports": [{"port": 80, "targetPort": 8000}],
            },
        }
    )
    slices = (
        slice_(
            "rag-api-1", *((f"10.0.0.{i}", p.name, {"ready": True}) for i, p in enumerate(pods))
        ),
    )
    return Diagnosis(
        service="rag-api",
        namespace="production",
        deployment="rag-api",
        checked_at=AT,
        revision=work.status.revision,
        image=f"{REPO}:v1.2.3",
        rollout=work.status.message,
        problems=(
            diagnose_stuck(work, pods, (), ()),
            diagnose_image_pull(
                work, pods, (), TagEvidence(f"{REPO}:v1.2.3", True, "tag v1.2.3 exists")
            ),
            diagnose_health(work, pods, (), ProbeResult("http://rag-api/health", 200, 0.004, "ok")),
            diagnose_traffic(
                work, "rag-api", "rag-api", service, pods, pods, slices, None, "unused"
            ),
        ),
        remedy_requested=True,
    )


def unreadable() -> Diagnosis:
    """No Service, the VirtualService and /health unreadable, an image without a tag."""
    work = workload(deployment("rag-api", complete=True, namespace="staging"), [])
    return Diagnosis(
        service="rag-api",
        namespace="staging",
        deployment="rag-api",
        checked_at=AT,
        revision=None,
        image=None,
        rollout=work.status.message,
        problems=(
            diagnose_stuck(work, (), (), ()),
            diagnose_image_pull(
                work, (), (), TagEvidence("rag-api", None, "not checked: the image has no tag")
            ),
            diagnose_health(work, (), (), "not checked, unreachable: connection refused"),
            diagnose_traffic(
                work,
                "rag-api",
                "rag-api-svc",
                None,
                (),
                (),
                (),
                CANARY,
                "cannot read VirtualService rag-api: 403",
            ),
        ),
        remedy_requested=False,
    )


def test_a_rollout_with_every_known_problem_reads_as_the_reviewed_report() -> None:
    diagnosis = sick()
    assert [p.found for p in diagnosis.problems] == [True, True, True, True]
    assert diagnosis.stuck
    assert diagnosis.to_markdown() == (GOLDEN / "diagnosis-every-problem.md").read_text()


def test_a_healthy_rollout_reads_as_the_reviewed_report_with_nothing_to_restart() -> None:
    diagnosis = healthy()
    assert diagnosis.found == () and not diagnosis.stuck
    assert diagnosis.summary() == "none of the playbook's 4 known problems found"
    assert diagnosis.to_markdown() == (GOLDEN / "diagnosis-healthy.md").read_text()


def test_what_could_not_be_read_is_reported_as_not_checked_never_as_ok() -> None:
    diagnosis = unreadable()
    assert diagnosis.to_markdown() == (GOLDEN / "diagnosis-unreadable.md").read_text()


def test_the_remedy_patch_is_kubectl_rollout_restart() -> None:
    assert restart_patch("2026-03-01T12:30:06Z") == {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-03-01T12:30:06Z"}
                }
            }
        }
    }


def misrouted() -> str:
    """The traffic check alone, for Services that route nowhere or elsewhere: no selector, a
    selector matching only another workload's pods, no EndpointSlice, no ready endpoint, and a
    canary the VirtualService no longer reaches."""
    work = workload(deployment(f"{REPO}:v1.2.3", complete=True), REPLICASETS[:1])
    ours = pod("rag-api-new-a", f"{REPO}:v1.2.3", "rag-api-new")
    legacy = pod("legacy-x", f"{REPO}:v1.1.0", "legacy-7f")

    def service(selector: dict[str, str] | None) -> Any:
        spec: dict[str, Any] = {"clusterIP": "10.96.0.10", "ports": []}
        if selector is not None:
            spec["selector"] = selector
        return service_facts({"metadata": {"name": "rag-api"}, "spec": spec})

    stable_only = virtual_service_state(
        {
            "metadata": {"name": "rag-api"},
            "spec": {
                "http": [{"route": [{"destination": {"host": "rag-api", "subset": "stable"}}]}]
            },
        }
    )
    not_ready = slice_("rag-api-x", ("10.0.0.4", "rag-api-new-a", {"ready": False}))
    cases = {
        "no selector": diagnose_traffic(
            work, "rag-api", "rag-api", service(None), (ours,), (), (), CANARY, stable_only
        ),
        "another workload's pods only": diagnose_traffic(
            work,
            "rag-api",
            "rag-api",
            service({"app": "rag-api"}),
            (ours,),
            (legacy,),
            (),
            None,
            "",
        ),
        "no pod at all": diagnose_traffic(
            work,
            "rag-api",
            "rag-api",
            service({"app": "other"}),
            (ours,),
            (),
            (not_ready,),
            None,
            "",
        ),
    }
    parts = []
    for name, report in cases.items():
        lines = [f"## {name}: {'FOUND' if report.found else 'not found'}", ""]
        lines += [f"- {f.looked_at} | {f.found} | {f.verdict.value}" for f in report.findings]
        lines += [f"* {step}" for step in report.what_to_do]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def test_services_that_route_nowhere_or_elsewhere_read_as_the_reviewed_findings() -> None:
    assert misrouted() == (GOLDEN / "diagnosis-traffic-misrouted.md").read_text()
