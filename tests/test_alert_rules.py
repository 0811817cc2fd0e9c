"""The alert rules follow the decision matrix: `python -m stack rules` renders them from
deployments/decision-matrix.yaml, and Prometheus' own `promtool` checks and tests them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from playbook.thresholds import DEFAULT_MATRIX_FILE, MATRIX_ENV
from stack.__main__ import alert_rules

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
LABELS = 'namespace="production",service="rag-api"'


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def error_rate_case(expected: list[dict[str, object]]) -> dict[str, object]:
    """20 % of requests fail for 10 minutes."""
    return {
        "interval": "1m",
        "input_series": [
            {"series": f'http_requests_total{{{LABELS},code="200"}}', "values": "0+480x10"},
            {"series": f'http_requests_total{{{LABELS},code="500"}}', "values": "0+120x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "RollbackHighErrorRate", "exp_alerts": expected}
        ],
    }


def alert(severity: str, limit: str) -> dict[str, object]:
    return {
        "exp_labels": {"severity": severity, "namespace": "production", "service": "rag-api"},
        "exp_annotations": {"summary": f"rag-api error rate 20% > {limit}"},
    }


def run_rule_tests(tmp_path: Path, case: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(alert_rules("2m", "5m"))
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [case]}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    return promtool("test", "rules", "tests.yml", cwd=tmp_path)


def test_the_rendered_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(alert_rules("2m", "5m"))
    checked = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_a_20_percent_error_rate_fires_the_warning_and_the_critical_alert(tmp_path: Path) -> None:
    result = run_rule_tests(
        tmp_path, error_rate_case([alert("warning", "1%"), alert("critical", "5%")])
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_editing_the_decision_matrix_changes_the_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = yaml.safe_load(DEFAULT_MATRIX_FILE.read_text())
    matrix["indicators"]["error_rate"]["critical"] = 0.25  # 20 % is no longer critical
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(matrix))
    monkeypatch.setenv(MATRIX_ENV, str(tmp_path / "matrix.yaml"))
    result = run_rule_tests(tmp_path, error_rate_case([alert("warning", "1%")]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The check can fail: expecting no critical alert at 20 % is caught."""
    result = run_rule_tests(tmp_path, error_rate_case([alert("warning", "1%")]))
    assert result.returncode != 0
    assert "RollbackHighErrorRate" in result.stdout + result.stderr
