"""`.github/workflows/rollback.yml`: actionlint (built by `make setup`) passes it and fails a
broken copy; its inputs are what automated-rollback dispatches and the services' environments."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from playbook.actions import dispatch_inputs
from playbook.services import DEFAULT_SERVICES_FILE, load_services
from stack.config import bin_dir

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "rollback.yml"


def actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = bin_dir() / "actionlint"
    assert binary.is_file(), f"{binary} is missing: `make setup` builds it"
    return subprocess.run(
        [str(binary), "-no-color", "-shellcheck=", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_actionlint_passes_the_rollback_workflow() -> None:
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_fails_a_broken_copy(tmp_path: Path) -> None:
    broken = (
        WORKFLOW.read_text()
        .replace("${{ inputs.target_version }}", "${{ inputs.target_versoin }}", 1)
        .replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout-minutes: soon")
    )
    path = tmp_path / ".github" / "workflows" / "rollback.yml"
    path.parent.mkdir(parents=True)
    path.write_text(broken)

    result = actionlint(path)

    assert result.returncode == 1, result.stdout
    assert 'property "target_versoin" is not defined' in result.stdout
    assert "timeout-minutes" in result.stdout


def _on(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True


def test_the_inputs_are_what_automated_rollback_sends_and_the_environments_configured() -> None:
    inputs = _on(yaml.safe_load(WORKFLOW.read_text()))["workflow_dispatch"]["inputs"]

    assert set(inputs) == set(dispatch_inputs("production", "v1.2.3", False, "prefect-1"))
    assert inputs["skip_confirmation"]["type"] == "boolean"
    service = load_services(DEFAULT_SERVICES_FILE).get("rag-api")
    assert inputs["environment"]["options"] == list(service.environments)
    assert service.actions is not None and service.actions.workflow == WORKFLOW.name
