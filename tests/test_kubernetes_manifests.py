"""The image, the work pool's base job template and the worker's manifests agree with each
other: one image, one non-root user, one home for the code, no credentials baked in."""

from __future__ import annotations

import json
import re
import tomllib

import yaml

from stack.config import REPO_DIR

DOCKERFILE = (REPO_DIR / "Dockerfile").read_text()
TEMPLATE = json.loads((REPO_DIR / "deployments/kubernetes/base-job-template.json").read_text())
WORKER = list(yaml.safe_load_all((REPO_DIR / "deployments/kubernetes/worker.yaml").read_text()))


def instructions(name: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in DOCKERFILE.splitlines()
        if line.split(None, 1)[:1] == [name] and len(line.split(None, 1)) == 2
    ]


def default(variable: str) -> object:
    return TEMPLATE["variables"]["properties"][variable]["default"]


def test_the_image_has_a_pinned_base_runs_as_non_root_and_installs_the_project() -> None:
    [base] = instructions("FROM")
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    [user] = instructions("USER")
    pod = TEMPLATE["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [workdir] = instructions("WORKDIR")
    assert workdir == "/opt/rollback-flows"
    assert any("pip install" in run and "-e ." in run for run in instructions("RUN"))
    assert not instructions("ARG")
    code = "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#"))
    for secretive in ("TOKEN", "PASSWORD", "SECRET", "API_KEY", "AUTH"):
        assert secretive not in code.upper()


def test_the_worker_and_the_flow_runs_use_the_same_image_and_their_own_accounts() -> None:
    [deployment] = [d for d in WORKER if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == default("image")
    assert pod["serviceAccountName"] == "prefect-worker"
    assert default("service_account_name") == "rollback-flows"
    assert default("namespace") == deployment["metadata"]["namespace"] == "rollback-flows"
    pool = container["args"][container["args"].index("--pool") + 1]
    assert pool == "rollback-flows"
    assert container["args"][container["args"].index("--type") + 1] == "kubernetes"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "rollback-flows"


def test_the_job_template_sets_resources_and_settings_but_no_credentials() -> None:
    for variable in ("cpu_request", "cpu_limit", "memory_request", "memory_limit"):
        assert default(variable)
    env = default("env")
    assert isinstance(env, dict)
    assert "ROLLBACK_FLOWS_PROMETHEUS_URL" in env
    for name, value in env.items():
        assert not re.search(r"TOKEN|PASSWORD|API_KEY|WEBHOOK_URL", name), name
        assert "://" not in value or "@" not in value, value  # no user:password@host


def test_setup_installs_the_kubernetes_worker() -> None:
    project = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("prefect-kubernetes") for dep in project["dependencies"])


def test_alertmanager_reaches_the_receiver_the_manifests_run() -> None:
    receiver = list(
        yaml.safe_load_all((REPO_DIR / "deployments/kubernetes/receiver.yaml").read_text())
    )
    [deployment] = [d for d in receiver if d["kind"] == "Deployment"]
    [service] = [d for d in receiver if d["kind"] == "Service"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == default("image")
    assert container["args"][:3] == ["python", "-m", "receiver"]
    port = int(container["args"][container["args"].index("--port") + 1])
    assert service["spec"]["ports"][0]["port"] == port
    alertmanager = yaml.safe_load((REPO_DIR / "deployments/alertmanager-receiver.yml").read_text())
    [webhook] = alertmanager["receivers"][0]["webhook_configs"]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert webhook["url"] == f"http://{name}.{namespace}.svc:{port}/alerts"
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
