"""The troubleshooting checks without a cluster: what a pod template references, probe ports
against declared ports, which endpoints serve another version, the report's markdown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from playbook.diagnosis import (
    Diagnosis,
    Finding,
    PodFacts,
    Presence,
    ProblemReport,
    TagEvidence,
    Verdict,
    diagnose_health,
    diagnose_image_pull,
    diagnose_traffic,
    endpoint_slice_facts,
    pod_facts,
    pod_template,
    selector_matches,
    service_facts,
    workload,
)

IMAGE = "ghcr.io/acme/rag-api:v1.2.3"


def deployment(container: dict[str, Any], complete: bool = True, **pod_spec: Any) -> dict[str, Any]:
    labels = {"app": "rag-api"}
    return {
        "metadata": {
            "name": "rag-api",
            "namespace": "production",
            "uid": "d-1",
            "generation": 2,
            "annotations": {"deployment.kubernetes.io/revision": "2"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "rag-api", "image": IMAGE, **container}],
                    **pod_spec,
                },
            },
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2 if complete else 1,
            "readyReplicas": 2,
            "availableReplicas": 2,
        },
    }


REPLICASET = {
    "metadata": {
        "name": "rag-api-5d9c7",
        "annotations": {"deployment.kubernetes.io/revision": "2"},
        "ownerReferences": [{"controller": True, "uid": "d-1"}],
    },
    "spec": {"template": {"spec": {"containers": [{"name": "rag-api", "image": IMAGE}]}}},
}


def pod(name: str, image: str, owner: str = "rag-api-5d9c7", ready: bool = True) -> PodFacts:
    return pod_facts(
        {
            "metadata": {
                "name": name,
                "labels": {"app": "rag-api"},
                "ownerReferences": [{"controller": True, "kind": "ReplicaSet", "name": owner}],
            },
            "spec": {"containers": [{"name": "rag-api", "image": image}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [
                    {"name": "rag-api", "ready": ready, "restartCount": 0, "state": {"running": {}}}
                ],
            },
        }
    )


def test_a_pod_template_yields_names_and_references_never_values() -> None:
    template = pod_template(
        deployment(
            {
                "env": [
                    {"name": "QDRANT_URL", "value": "http://qdrant:6333"},
                    {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "k"}}},
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "rag-config", "optional": True}}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                "livenessProbe": {"exec": {"command": ["true"]}},
            },
            imagePullSecrets=[{"name": "regcred"}],
            volumes=[
                {"name": "tls", "secret": {"secretName": "rag-tls"}},
                {"name": "all", "projected": {"sources": [{"configMap": {"name": "prompts"}}]}},
            ],
        )["spec"]["template"]
    )
    [container] = template.containers
    assert container.env_names == ("QDRANT_URL", "KEY", "POD_IP")
    assert "http://qdrant:6333" not in repr(template)
    assert [(r.kind, r.name, r.used_by, r.optional) for r in template.references()] == [
        ("Secret", "openai", "env KEY of rag-api", False),
        ("ConfigMap", "rag-config", "envFrom of rag-api", True),
        ("Secret", "rag-tls", "volume tls", False),
        ("ConfigMap", "prompts", "volume all", False),
    ]
    assert template.pull_secrets == ("regcred",)
    assert [(p.kind, p.handler, p.port) for p in container.probes] == [
        ("liveness", "exec", None),
        ("readiness", "httpGet", "http"),
    ]


def health_findings(container: dict[str, Any]) -> dict[str, Finding]:
    work = workload(deployment(container), [REPLICASET])
    report = diagnose_health(work, [], [], "not checked: no URL")
    return {f.looked_at: f for f in report.findings}


def test_probe_ports_are_compared_with_the_declared_ports() -> None:
    ports = {"ports": [{"name": "http", "containerPort": 8000}]}
    named = health_findings({**ports, "readinessProbe": {"httpGet": {"port": "metrics"}}})
    assert named["readiness probe of rag-api"].verdict is Verdict.PROBLEM
    assert "no port named 'metrics'" in named["readiness probe of rag-api"].found
    number = health_findings({**ports, "livenessProbe": {"tcpSocket": {"port": 9090}}})
    assert number["liveness probe of rag-api"].verdict is Verdict.PROBLEM
    good = health_findings({**ports, "startupProbe": {"grpc": {"port": 8000}}})
    assert good["startup probe of rag-api"].verdict is Verdict.OK
    undeclared = health_findings({"readinessProbe": {"httpGet": {"port": 8000}}})
    assert undeclared["readiness probe of rag-api"].verdict is Verdict.NOT_CHECKED


def test_a_missing_optional_reference_is_no_problem_a_missing_required_one_is() -> None:
    work = workload(
        deployment(
            {
                "envFrom": [
                    {"configMapRef": {"name": "extra", "optional": True}},
                    {"secretRef": {"name": "creds"}},
                ]
            }
        ),
        [REPLICASET],
    )
    report = diagnose_health(
        work,
        [],
        [Presence("ConfigMap", "extra", False), Presence("Secret", "creds", False)],
        "not checked",
    )
    assert report.found
    verdicts = {f.looked_at: f.verdict for f in report.findings}
    assert verdicts["ConfigMap extra"] is Verdict.SEEN
    assert verdicts["Secret creds"] is Verdict.PROBLEM
    assert report.what_to_do == (
        "Create Secret creds in production, or roll back to the revision that did not need it.",
    )


def test_a_pull_secret_that_cannot_be_read_is_not_checked_rather_than_missing() -> None:
    work = workload(deployment({}, imagePullSecrets=[{"name": "regcred"}]), [REPLICASET])
    report = diagnose_image_pull(
        work,
        [pod("rag-api-5d9c7-a", IMAGE)],
        [Presence("Secret", "regcred", None, "access denied")],
        TagEvidence(IMAGE, None, "not checked: no registry"),
    )
    assert not report.found
    assert [f.verdict for f in report.findings if "regcred" in f.looked_at] == [Verdict.NOT_CHECKED]


def traffic(complete: bool, pods: list[PodFacts]) -> ProblemReport:
    work = workload(deployment({}, complete=complete), [REPLICASET])
    service = service_facts(
        {"metadata": {"name": "rag-api"}, "spec": {"selector": {"app": "rag-api"}}}
    )
    slice_ = endpoint_slice_facts(
        {
            "metadata": {"name": "rag-api-x"},
            "endpoints": [
                {"addresses": [f"10.0.0.{i}"], "targetRef": {"kind": "Pod", "name": p.name}}
                for i, p in enumerate(pods)
            ],
        }
    )
    ours = [p for p in pods if work.owns(p)]
    return diagnose_traffic(work, "rag-api", "rag-api", service, ours, pods, [slice_], None, "")


def test_other_versions_behind_the_service_count_once_the_rollout_is_done() -> None:
    old = pod("rag-api-4b8f2-a", "ghcr.io/acme/rag-api:v1.2.4", owner="rag-api-4b8f2")
    new = pod("rag-api-5d9c7-b", IMAGE)
    # rag-api-4b8f2 is no ReplicaSet of this Deployment here: a pod of another workload
    assert traffic(complete=False, pods=[old, new]).found
    mine_old = pod("rag-api-5d9c7-c", "ghcr.io/acme/rag-api:v1.2.4")
    assert not traffic(complete=False, pods=[mine_old, new]).found  # the rollout is under way
    assert traffic(complete=True, pods=[mine_old, new]).found


def test_endpoints_without_a_ready_condition_count_as_ready_and_selectors_need_labels() -> None:
    facts = endpoint_slice_facts({"metadata": {"name": "s"}, "endpoints": [{"addresses": ["1"]}]})
    assert facts.endpoints[0].ready
    assert selector_matches((("app", "rag-api"),), (("app", "rag-api"), ("track", "stable")))
    assert not selector_matches((), (("app", "rag-api"),))


def test_the_report_escapes_table_cells_and_says_what_was_checked() -> None:
    problem = ProblemReport(
        "Traffic going to the bad version",
        False,
        "the routes",
        (Finding("route | 1", "a\nb", Verdict.OK),),
        (),
    )
    report = Diagnosis(
        "rag-api",
        "production",
        "rag-api",
        datetime(2025, 1, 1, tzinfo=UTC),
        2,
        IMAGE,
        "done",
        (problem,),
        remedy_requested=True,
    )
    markdown = report.to_markdown()
    assert "| route \\| 1 | a b | ok |" in markdown
    assert "| verdict | none of the playbook's 1 known problems found |" in markdown
    assert (
        "requested, but the rollout is not stuck: nothing to restart, nothing changed" in markdown
    )
    assert "What to do" not in markdown
