"""What the diagnosis reads from the API's JSON, stated exactly: a pod template's containers,
ports, probes, env names and references; a pod's containers and states; a Service and an
EndpointSlice; and what a bare object reads as."""

from __future__ import annotations

from playbook.diagnosis import (
    ContainerSpec,
    ContainerState,
    Endpoint,
    EndpointSliceFacts,
    ObjectRef,
    PodFacts,
    PodTemplate,
    PortSpec,
    ProbeSpec,
    ServiceFacts,
    ServicePort,
    endpoint_slice_facts,
    pod_facts,
    pod_template,
    service_facts,
)


def test_a_pod_template_reads_every_container_field_and_reference() -> None:
    template = pod_template(
        {
            "metadata": {"labels": {"tier": "api", "app": "rag-api"}},
            "spec": {
                "imagePullSecrets": [{"name": "ghcr"}, {}],
                "containers": [
                    {
                        "name": "api",
                        "image": "r:v1",
                        "ports": [
                            {"name": "http", "containerPort": 8000},
                            {"containerPort": 9090, "protocol": "UDP"},
                            {},
                        ],
                        "livenessProbe": {"httpGet": {"port": "http", "path": "/health"}},
                        "readinessProbe": {"tcpSocket": {"port": 8000, "path": "/ignored"}},
                        "startupProbe": {"grpc": {"port": {"odd": 1}}},
                        "env": [
                            {
                                "name": "A",
                                "valueFrom": {"secretKeyRef": {"name": "s1", "optional": True}},
                            },
                            {"valueFrom": {"configMapKeyRef": {"name": "c1"}}},
                        ],
                        "envFrom": [
                            {"secretRef": {"name": "s2", "optional": True}},
                            {"configMapRef": {}},
                        ],
                    },
                    {"livenessProbe": {"exec": {"command": ["true"]}}, "readinessProbe": {}},
                ],
                "volumes": [
                    {"name": "v1", "secret": {"secretName": "s3", "optional": True}},
                    {"name": "v2", "configMap": {"name": "c2"}},
                    {
                        "name": "v3",
                        "projected": {
                            "sources": [
                                {"secret": {"name": "s4", "optional": True}},
                                {"configMap": {"name": "c3"}},
                            ]
                        },
                    },
                ],
            },
        }
    )
    assert template == PodTemplate(
        labels=(("app", "rag-api"), ("tier", "api")),
        containers=(
            ContainerSpec(
                "api",
                "r:v1",
                (
                    PortSpec("http", 8000, "TCP"),
                    PortSpec(None, 9090, "UDP"),
                    PortSpec(None, 0, "TCP"),
                ),
                (
                    ProbeSpec("liveness", "httpGet", "http", "/health"),
                    ProbeSpec("readiness", "tcpSocket", 8000, None),
                    ProbeSpec("startup", "grpc", None, None),
                ),
                ("A", ""),
                (
                    ObjectRef("Secret", "s1", "env A of api", True),
                    ObjectRef("ConfigMap", "c1", "env None of api", False),
                    ObjectRef("Secret", "s2", "envFrom of api", True),
                ),
            ),
            ContainerSpec(
                "",
                "",
                (),
                (
                    ProbeSpec("liveness", "exec", None, None),
                    ProbeSpec("readiness", "unknown", None, None),
                ),
                (),
                (),
            ),
        ),
        pull_secrets=("ghcr",),
        volume_refs=(
            ObjectRef("Secret", "s3", "volume v1", True),
            ObjectRef("ConfigMap", "c2", "volume v2", False),
            ObjectRef("Secret", "s4", "volume v3", True),
            ObjectRef("ConfigMap", "c3", "volume v3", False),
        ),
    )
    assert [str(p) for p in template.containers[0].probes] == [
        "httpGet port http path /health",
        "tcpSocket port 8000",
        "grpc",
    ]
    assert pod_template({}) == PodTemplate((), (), (), ())


def test_a_pod_reads_its_owner_containers_and_their_states() -> None:
    facts = pod_facts(
        {
            "metadata": {
                "name": "p",
                "labels": {"pod-template-hash": "abc", "app": "a"},
                "ownerReferences": [
                    {"kind": "Node", "name": "n"},
                    {"controller": True, "kind": "ReplicaSet", "name": "rs"},
                ],
            },
            "spec": {
                "containers": [{"name": "api", "image": "r:v1"}, {"name": "side", "image": "s:v1"}]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.9",
                "conditions": [{"type": "Ready", "status": "False"}],
                "initContainerStatuses": [
                    {
                        "name": "init",
                        "image": "i:1",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "api",
                        "image": "r:v1",
                        "restartCount": 2,
                        "state": {"running": {"startedAt": "t"}},
                        "lastState": {
                            "terminated": {"exitCode": 137, "finishedAt": "2026-03-01T12:00:00Z"}
                        },
                    },
                    {
                        "name": "side",
                        "image": "s:v1",
                        "ready": True,
                        "state": {"waiting": {"reason": "ContainerCreating", "message": "m"}},
                    },
                    {"name": "odd", "state": {"what": {}}},
                ],
            },
        }
    )
    assert facts == PodFacts(
        name="p",
        phase="Running",
        ready=False,
        deleting=False,
        labels=(("app", "a"), ("pod-template-hash", "abc")),
        ip="10.0.0.9",
        owner="ReplicaSet/rs",
        containers=(
            ContainerState("init", "i:1", True, 0, "terminated", "Completed", None, None),
            ContainerState(
                "api",
                "r:v1",
                False,
                2,
                "running",
                None,
                None,
                "Terminated (exit code 137) at 2026-03-01T12:00:00Z",
            ),
            ContainerState("side", "s:v1", True, 0, "waiting", "ContainerCreating", "m", None),
            ContainerState("odd", "", False, 0, "unknown", None, None, None),
        ),
        images=(("api", "r:v1"), ("side", "s:v1")),
    )
    assert facts.restarts == 2 and facts.template_hash == "abc"
    assert facts.image_of("side") == "s:v1" and facts.image_of("missing") == "r:v1"
    assert pod_facts({}).image_of("api") is None
    assert str(facts.containers[1]) == (
        "container api: running, last terminated Terminated (exit code 137) at 2026-03-01T12:00:00Z, 2 restarts"
    )
    assert str(facts.containers[0]) == "container init: terminated Completed, 0 restarts"
    assert (
        str(ContainerState("x", "", False, 1, "waiting", None, None, None))
        == "container x: waiting, 1 restart"
    )
    bare = pod_facts({})
    assert bare == PodFacts("", "Unknown", False, False, (), None, None, (), ())


def test_a_service_and_an_endpoint_slice_read_as_the_api_documents_them() -> None:
    service = service_facts(
        {
            "metadata": {"name": "rag-api"},
            "spec": {
                "selector": {"app": "a"},
                "ports": [{"name": "web", "port": 80, "targetPort": "http"}, {"port": 9090}, {}],
            },
        }
    )
    assert service == ServiceFacts(
        "rag-api",
        "ClusterIP",
        None,
        (("app", "a"),),
        (ServicePort("web", 80, "http"), ServicePort(None, 9090, 9090), ServicePort(None, 0, None)),  # type: ignore[arg-type]
    )
    assert service_facts({}) == ServiceFacts("", "ClusterIP", None, (), ())
    slice_ = endpoint_slice_facts(
        {
            "metadata": {"name": "s"},
            "ports": [{"name": "", "port": 8000}, {}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "p"}},
                {
                    "addresses": ["10.0.0.2", 5],
                    "conditions": {"ready": False, "terminating": True},
                    "targetRef": {"kind": "Node", "name": "n"},
                },
                {"conditions": {"ready": True, "serving": False}, "targetRef": {"kind": "Pod"}},
            ],
        }
    )
    assert slice_ == EndpointSliceFacts(
        "s",
        ((None, 8000), (None, 0)),
        (
            Endpoint(("10.0.0.1",), True, True, False, "p"),
            Endpoint(("10.0.0.2", "5"), False, False, True, None),
            Endpoint((), True, False, False, None),
        ),
    )
    assert endpoint_slice_facts({}) == EndpointSliceFacts("", (), ())
