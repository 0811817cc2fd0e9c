"""The alert rules ship as deployments/prometheus/rollback-rules.yml, generated from
deployments/decision-matrix.yaml (`make rules`), and Prometheus' own `promtool` checks and
tests them.

For every indicator of the matrix, input series with the metric names and labels its query
reads, shaped from its own thresholds and window: below the warning threshold (no alert),
between warning and critical (the warning only) and beyond critical (both); a second
namespace of the same service stays below warning, so each alert names its environment. The
same cases run against a matrix with other thresholds and windows. The local stack's
Prometheus loads the same rules, with its short `for` and window.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from playbook.thresholds import DEFAULT_MATRIX_FILE, MATRIX_ENV, Indicator, load_decision_matrix
from stack import prometheus
from stack.__main__ import alert_rules, main
from stack.config import REPO_DIR, Ports
from stack.local import ALERT_FOR, ALERT_WINDOW, LocalStack
from stack.prometheus import PRODUCTION_FOR, RULES_FILE

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SERVICE, NAMESPACE, OTHER_NAMESPACE = "rag-api", "production", "staging"
EVALUATION_SECONDS = 30
ROUTES_FILE = REPO_DIR / "deployments" / "alert-routes.yaml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def seconds(duration: str) -> float:
    """A Prometheus duration (`5m`, `1h30m`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


# --- how Prometheus prints a value in an annotation (Go's fmt and template functions) ------


def go_g4(value: float) -> str:
    return f"{value:.4g}"


def humanize_percentage(value: float) -> str:
    return f"{go_g4(value * 100)}%"


def humanize_duration(value: float) -> str:
    assert 0 < value < 60, f"only sub-minute durations are shaped here, not {value}"
    if value >= 1:
        return f"{go_g4(value)}s"
    return f"{go_g4(value * 1000)}ms"


def humanize(value: float) -> str:
    assert 1 <= abs(value) < 1000, f"only 1..999 are shaped here, not {value}"
    return go_g4(value)


def plain(value: float) -> str:
    text = repr(value)  # Go's %v of a float64: the shortest text that reads back
    return text.removesuffix(".0")


@dataclass(frozen=True)
class Expected:
    """What the routes and people see of one indicator's alerts."""

    alert: str
    what: str
    value_text: Callable[[float], str]


# The alert names are deployments/alert-routes.yaml's; an indicator the matrix gains needs
# its row here (and an input-series shape below) before these tests pass.
EXPECTED = {
    "error_rate": Expected("RollbackHighErrorRate", "error rate", humanize_percentage),
    "p99_latency": Expected("RollbackHighLatency", "P99 latency", humanize_duration),
    "availability": Expected("RollbackLowAvailability", "availability", humanize_percentage),
    "rag_quality_ndcg": Expected("RollbackLowRagQuality", "RAG quality NDCG", plain),
    "user_complaints": Expected("RollbackUserComplaints", "user complaints", humanize),
}


def threshold_text(indicator: Indicator, threshold: float) -> str:
    if indicator.unit == "ratio":
        return f"{threshold * 100:g}%"
    if indicator.unit == "seconds":
        return f"{threshold * 1000:g}ms"
    return f"{threshold:g}"


# --- input series: each indicator's metrics, shaped so that its query gives a value --------


@dataclass(frozen=True)
class Timing:
    """The indicator's window, the rules' `for`, the sample interval and the evaluation time
    (by then the value has held for longer than `for`, over full windows)."""

    window: float
    for_: float
    interval: float
    end: float

    @property
    def samples(self) -> int:
        return round(self.end / self.interval) + 1


@dataclass(frozen=True)
class Shaped:
    series: dict[str, list[float]]
    value: float
    """What the indicator's query gives at `Timing.end` (as Prometheus computes it)."""


def labels(namespace: str, pod: str = "a", **more: str) -> str:
    base = {
        "namespace": namespace,
        "service": SERVICE,
        "job": SERVICE,
        "instance": f"{namespace}-pod-{pod}:8080",
        **more,
    }
    return ",".join(f'{k}="{v}"' for k, v in base.items())


def counter(step: float, timing: Timing) -> list[float]:
    return [step * k for k in range(timing.samples)]


def error_rate(target: float, namespace: str, timing: Timing) -> Shaped:
    """1000 requests per sample interval, `target` of them failing with 500."""
    failed = round(target * 1000)
    metric = "http_requests_total"
    return Shaped(
        {
            f"{metric}{{{labels(namespace, code='200')}}}": counter(1000 - failed, timing),
            f"{metric}{{{labels(namespace, code='500')}}}": counter(failed, timing),
        },
        failed / 1000,
    )


def p99_latency(target: float, namespace: str, timing: Timing) -> Shaped:
    """90 % of requests within target/2, 99 % within target: the P99 is the target."""
    metric = "http_request_duration_seconds_bucket"
    buckets = {repr(target / 2): 900, repr(target): 990, "+Inf": 1000}
    return Shaped(
        {
            f"{metric}{{{labels(namespace, le=le)}}}": counter(count, timing)
            for le, count in buckets.items()
        },
        target,
    )


def availability(target: float, namespace: str, timing: Timing) -> Shaped:
    """Two pods, always scraped (`up` 1); pod a unhealthy (`rag_healthy` 0) for one stretch
    that lies in every window from `for` before the end to the end, so that the value holds
    over that time; pod b healthy (the query takes the worst pod)."""
    in_window = round(timing.window / timing.interval) + 1
    down = round((1 - target) * in_window)
    last_down = round((timing.end - timing.for_) / timing.interval)
    first_down = last_down - down + 1
    assert first_down >= round((timing.end - timing.window) / timing.interval), (
        f"{down} unhealthy samples do not fit between the window's start and `for` before the "
        "end: this shape needs a window longer than `for`"
    )
    healthy = [0.0 if first_down <= k <= last_down else 1.0 for k in range(timing.samples)]
    always = [1.0] * timing.samples
    return Shaped(
        {
            f"rag_healthy{{{labels(namespace)}}}": healthy,
            f"up{{{labels(namespace)}}}": always,
            f"rag_healthy{{{labels(namespace, 'b')}}}": always,
            f"up{{{labels(namespace, 'b')}}}": always,
        },
        (in_window - down) / in_window,
    )


def rag_quality_ndcg(target: float, namespace: str, timing: Timing) -> Shaped:
    """Pod a at `target`, pod b better (the query takes the worst pod)."""
    return Shaped(
        {
            f"rag_quality_ndcg{{{labels(namespace)}}}": [target] * timing.samples,
            f"rag_quality_ndcg{{{labels(namespace, 'b')}}}": [max(1.0, target)] * timing.samples,
        },
        target,
    )


def user_complaints(target: float, namespace: str, timing: Timing) -> Shaped:
    """Complaints at a steady pace, `target` of them per window."""
    values = counter(target * timing.interval / timing.window, timing)
    last, window_start = timing.samples - 1, round((timing.end - timing.window) / timing.interval)
    return Shaped(
        {f"rag_user_complaints_total{{{labels(namespace)}}}": values},
        values[last] - values[window_start],  # the samples lie on the window's ends
    )


SHAPES: dict[str, Callable[[float, str, Timing], Shaped]] = {
    "error_rate": error_rate,
    "p99_latency": p99_latency,
    "availability": availability,
    "rag_quality_ndcg": rag_quality_ndcg,
    "user_complaints": user_complaints,
}
LEVELS = ("ok", "warning", "critical")


def target(indicator: Indicator, level: str) -> float:
    """A value at `level` from the indicator's thresholds: half the warning (or halfway to
    1 for a ratio or score that must stay high), halfway between warning and critical,
    twice the critical (or half of it when low is bad)."""
    warning, critical = indicator.warning, indicator.critical
    if level == "warning":
        value = (warning + critical) / 2
    elif indicator.higher_is_worse:
        value = warning / 2 if level == "ok" else critical * 2
        if indicator.unit == "ratio":
            value = min(value, (critical + 1) / 2)
    elif level == "ok":
        value = (warning + 1) / 2 if warning < 1 else warning * 2
    else:
        value = critical / 2
    return float(round(value)) if indicator.unit == "count" else float(f"{value:.4g}")


def timing(indicator: Indicator, for_: float, interval: float) -> Timing:
    window = seconds(indicator.window)
    step = math.lcm(EVALUATION_SECONDS, round(interval * 1000)) / 1000
    end = math.ceil((window + for_ + 2 * EVALUATION_SECONDS) / step) * step
    return Timing(window, for_, interval, end)


def shaped(indicator: Indicator, level: str, for_: float) -> tuple[Timing, Shaped]:
    """The series for `level`, at the coarsest sample interval that reaches that level."""
    assert indicator.name in SHAPES, (
        f"no input series for the indicator {indicator.name!r}: add its shape to SHAPES"
    )
    wanted = {"ok": "OK", "warning": "WARNING", "critical": "CRITICAL"}[level]
    for interval in (15.0, 5.0, 1.0):
        when = timing(indicator, for_, interval)
        result = SHAPES[indicator.name](target(indicator, level), NAMESPACE, when)
        if indicator.classify(result.value).value == wanted:
            return when, result
    raise AssertionError(f"cannot shape {indicator.name} at {level} ({result.value})")


# --- the rule files ------------------------------------------------------------------------


def rules_of(text: str) -> list[dict[str, Any]]:
    [group] = yaml.safe_load(text)["groups"]
    return list(group["rules"])


def rule(text: str, alert: str, severity: str) -> dict[str, Any]:
    [found] = [
        r for r in rules_of(text) if r["alert"] == alert and r["labels"]["severity"] == severity
    ]
    return found


def split_expr(expr: str) -> tuple[str, str, float]:
    """`(value) > 0.01` as its value expression, comparator and threshold."""
    match = re.fullmatch(r"\((?P<value>.*)\) (?P<op>[<>]=?) (?P<threshold>\S+)", expr.strip())
    assert match, f"not `(query) <op> <threshold>`: {expr}"
    return match["value"], match["op"], float(match["threshold"])


def expected_alert(indicator: Indicator, severity: str, value: float) -> dict[str, Any]:
    threshold = indicator.warning if severity == "warning" else indicator.critical
    comparator = {"above": ">", "at_least": ">=", "below": "<", "at_most": "<="}
    expected = EXPECTED[indicator.name]
    summary = (
        f"{SERVICE} {expected.what} {expected.value_text(value)} "
        f"{comparator[indicator.breach]} {threshold_text(indicator, threshold)}"
    )
    return {
        "exp_labels": {"severity": severity, "namespace": NAMESPACE, "service": SERVICE},
        "exp_annotations": {"summary": summary},
    }


def crossing_tests(rules_text: str, indicator: Indicator) -> list[dict[str, Any]]:
    """One promtool test per level of `indicator`: its series (and the other namespace's, OK)
    and, at the end, the alerts expected of every alert name of the file (only this
    indicator's, only for this namespace)."""
    assert indicator.name in EXPECTED, f"add the alert of {indicator.name!r} to EXPECTED"
    names = sorted({r["alert"] for r in rules_of(rules_text)})
    for_ = seconds(rule(rules_text, EXPECTED[indicator.name].alert, "warning")["for"])
    tests = []
    for level in LEVELS:
        when, series = shaped(indicator, level, for_)
        other = SHAPES[indicator.name](target(indicator, "ok"), OTHER_NAMESPACE, when)
        assert indicator.classify(other.value).value == "OK"
        severities = LEVELS[1 : LEVELS.index(level) + 1]
        alerts = {EXPECTED[indicator.name].alert: severities}
        checks = [
            {
                "eval_time": f"{when.end:g}s",
                "alertname": name,
                "exp_alerts": [
                    expected_alert(indicator, severity, series.value)
                    for severity in alerts.get(name, ())
                ],
            }
            for name in names
        ]
        tests.append(
            {
                "name": f"{indicator.name} {level}: {indicator.format(series.value)}",
                "interval": f"{when.interval:g}s",
                "input_series": [
                    {"series": name, "values": " ".join(repr(v) for v in values)}
                    for name, values in {**series.series, **other.series}.items()
                ],
                "alert_rule_test": checks,
            }
        )
    return tests


def run_rule_tests(
    tmp_path: Path, rules_text: str, tests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(rules_text)
    document = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": f"{EVALUATION_SECONDS}s",
        "tests": tests,
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    return promtool("test", "rules", "tests.yml", cwd=tmp_path)


SHIPPED_MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
INDICATORS = list(SHIPPED_MATRIX.indicators)
# Other thresholds and windows for every indicator, to show the cases follow the matrix.
EDITS = {
    "error_rate": {"warning": 0.02, "critical": 0.25, "window": "2m"},
    "p99_latency": {"warning": 0.3, "critical": 2.0, "window": "10m"},
    "availability": {"warning": 0.999, "critical": 0.98, "window": "30m"},
    "rag_quality_ndcg": {"warning": 0.8, "critical": 0.5, "window": "5m"},
    "user_complaints": {"warning": 5, "critical": 20, "window": "30m"},
}


@pytest.fixture(scope="module")
def edited_matrix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = yaml.safe_load(DEFAULT_MATRIX_FILE.read_text())
    assert set(raw["indicators"]) == set(EDITS), "give EDITS a row for each indicator"
    for name, edit in EDITS.items():
        raw["indicators"][name].update(edit)
    path = tmp_path_factory.mktemp("matrix") / "decision-matrix.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- 1, 2: the shipped file is the matrix's ------------------------------------------------


def test_the_shipped_rules_are_what_make_rules_generates_from_the_matrix(tmp_path: Path) -> None:
    out = tmp_path / "rollback-rules.yml"
    assert main(["rules", "--matrix", str(DEFAULT_MATRIX_FILE), "--output", str(out)]) == 0
    assert out.read_bytes() == RULES_FILE.read_bytes(), (
        f"{RULES_FILE.relative_to(REPO_DIR)} and {DEFAULT_MATRIX_FILE.relative_to(REPO_DIR)} "
        "disagree: run `make rules` and commit the file"
    )


def test_make_rules_runs_that_command() -> None:
    dry = subprocess.run(
        ["make", "-n", "rules"], cwd=REPO_DIR, capture_output=True, text=True, check=True
    )
    command = " ".join(dry.stdout.replace("\\\n", " ").split())
    assert (
        "-m stack rules --matrix deployments/decision-matrix.yaml "
        "--output deployments/prometheus/rollback-rules.yml"
    ) in command


def test_an_edited_matrix_without_make_rules_is_caught(
    edited_matrix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the freshness test compares does change with the matrix (here through
    $ROLLBACK_FLOWS_DECISION_MATRIX, as `python -m stack rules` reads it)."""
    monkeypatch.setenv(MATRIX_ENV, str(edited_matrix))
    rendered = alert_rules()
    assert rendered != RULES_FILE.read_text()
    assert '(rate(http_requests_total{service!=""}[2m]))) > 0.25' in rendered


def test_the_shipped_header_says_how_it_is_made() -> None:
    header = RULES_FILE.read_text().split("\ngroups:")[0]
    assert "GENERATED from\n# deployments/decision-matrix.yaml: do not edit." in header
    assert "#   python -m stack rules --matrix deployments/decision-matrix.yaml --for 2m\n" in (
        header
    )
    assert "`make rules` regenerates deployments/prometheus/rollback-rules.yml" in header
    assert f"for: {PRODUCTION_FOR}" in header


def test_the_shipped_rules_pass_promtool_check(tmp_path: Path) -> None:
    checked = promtool("check", "rules", str(RULES_FILE), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count = 2 * len(INDICATORS) + 1  # warning and critical per indicator, and unhealthy
    assert f"SUCCESS: {count} rules found" in checked.stdout


@pytest.mark.parametrize("name", INDICATORS)
def test_each_indicator_has_a_warning_and_a_critical_rule_at_the_matrix_thresholds(
    name: str,
) -> None:
    indicator = SHIPPED_MATRIX.indicator(name)
    text = RULES_FILE.read_text()
    for severity, threshold in (("warning", indicator.warning), ("critical", indicator.critical)):
        found = rule(text, EXPECTED[name].alert, severity)
        _, comparator, stated = split_expr(found["expr"])
        assert (comparator, stated) == (indicator.condition(threshold).split()[0], threshold)
        assert found["for"] == PRODUCTION_FOR
        assert f"[{indicator.window}]" in found["expr"]


def test_every_alert_a_route_matches_is_in_the_shipped_rules() -> None:
    routes = yaml.safe_load(ROUTES_FILE.read_text())["routes"]
    shipped = {(r["alert"], r["labels"]["severity"]) for r in rules_of(RULES_FILE.read_text())}
    for route in routes:
        match = route["match"]
        assert (match["alertname"], match["severity"]) in shipped, route["name"]


# --- 3: promtool test rules, with series crossing each threshold ---------------------------


@pytest.mark.parametrize("name", INDICATORS)
def test_the_shipped_rules_fire_at_each_threshold_of_the_matrix(tmp_path: Path, name: str) -> None:
    """Below warning: no alert; between warning and critical: the warning; beyond critical:
    both (Alertmanager's inhibit rule then silences the warning)."""
    indicator = SHIPPED_MATRIX.indicator(name)
    text = RULES_FILE.read_text()
    result = run_rule_tests(tmp_path, text, crossing_tests(text, indicator))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", INDICATORS)
def test_rules_from_another_matrix_fire_at_its_thresholds(
    tmp_path: Path, name: str, edited_matrix: Path
) -> None:
    indicator = load_decision_matrix(edited_matrix).indicator(name)
    text = alert_rules(matrix=edited_matrix)
    result = run_rule_tests(tmp_path, text, crossing_tests(text, indicator))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", INDICATORS)
def test_each_rule_measures_what_the_flows_measure(tmp_path: Path, name: str) -> None:
    """Over one service's series, the rule's value is the matrix query's (what
    evaluate-release, verify-rollback and guarded-rollback read), to the last bit."""
    indicator = SHIPPED_MATRIX.indicator(name)
    text = RULES_FILE.read_text()
    value, _, _ = split_expr(rule(text, EXPECTED[name].alert, "critical")["expr"])
    for_ = seconds(PRODUCTION_FOR)
    when, series = shaped(indicator, "critical", for_)
    test = {
        "interval": f"{when.interval:g}s",
        "input_series": [
            {"series": s, "values": " ".join(repr(v) for v in values)}
            for s, values in series.series.items()
        ],
        "promql_expr_test": [
            {
                "expr": f"({value}) - on() ({indicator.render(SERVICE)})",
                "eval_time": f"{when.end:g}s",
                "exp_samples": [{"labels": "{}", "value": 0}],
            }
        ],
    }
    result = run_rule_tests(tmp_path, text, [test])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unhealthy_alert_fires_when_health_or_the_scrape_fails(tmp_path: Path) -> None:
    def series(namespace: str, healthy: str, up: str) -> list[dict[str, str]]:
        return [
            {"series": f"rag_healthy{{{labels(namespace)}}}", "values": healthy},
            {"series": f"up{{{labels(namespace)}}}", "values": up},
        ]

    alert = {"exp_labels": {"severity": "critical", "namespace": NAMESPACE, "service": SERVICE}}
    alert["exp_annotations"] = {"summary": f"{SERVICE} is unhealthy"}
    cases = {"unhealthy": ("0x10", "1x10"), "not scraped": ("1x10", "0x10")}
    tests = [
        {
            "name": name,
            "interval": "1m",
            "input_series": series(NAMESPACE, *values) + series(OTHER_NAMESPACE, "1x10", "1x10"),
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "RollbackServiceUnhealthy", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "RollbackServiceUnhealthy", "exp_alerts": [alert]},
            ],
        }
        for name, values in cases.items()
    ]
    result = run_rule_tests(tmp_path, RULES_FILE.read_text(), tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_promtool(tmp_path: Path) -> None:
    """The check can fail: expecting the critical alert between warning and critical."""
    indicator = SHIPPED_MATRIX.indicator("error_rate")
    text = RULES_FILE.read_text()
    tests = crossing_tests(text, indicator)
    [warning_case] = [t for t in tests if t["name"].startswith("error_rate warning")]
    [check] = [
        c for c in warning_case["alert_rule_test"] if c["alertname"] == EXPECTED["error_rate"].alert
    ]
    check["exp_alerts"].append(expected_alert(indicator, "critical", target(indicator, "warning")))
    result = run_rule_tests(tmp_path, text, [warning_case])
    assert result.returncode != 0
    assert "RollbackHighErrorRate" in result.stdout + result.stderr


def test_a_query_the_rules_cannot_extend_is_refused() -> None:
    indicator = SHIPPED_MATRIX.indicator("error_rate").model_copy(
        update={"query": 'sum(rate(http_requests_total{service="$service"}[$window])) by (code)'}
    )
    with pytest.raises(prometheus.InvalidInputError, match="groups with 'by'"):
        prometheus.fleet_query(indicator)
    indicator = indicator.model_copy(
        update={"query": 'sum(rate(http_requests_total{service=~"$service"}[$window]))'}
    )
    with pytest.raises(prometheus.InvalidInputError, match='service="\\$service"'):
        prometheus.fleet_query(indicator)


# --- 4: the local stack loads the same rules, with its short `for` and window ---------------


def test_the_local_stack_loads_the_shipped_rules_with_its_short_durations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What LocalStack starts Prometheus with: the shipped file's alerts, thresholds and
    summaries; `for` ALERT_FOR and every window ALERT_WINDOW instead of the matrix's."""
    monkeypatch.setenv("ROLLBACK_FLOWS_STATE", str(tmp_path))
    monkeypatch.delenv(MATRIX_ENV, raising=False)
    started: list[Path] = []
    monkeypatch.setattr(
        prometheus, "start_prometheus", lambda config, *_: started.append(config) or 0
    )
    LocalStack("rules-check", Ports(canary=18001))._start_prometheus()
    [config] = started
    checked = promtool("check", "config", str(config), cwd=tmp_path)  # and its rule files
    assert checked.returncode == 0, checked.stdout + checked.stderr
    [rules_path] = yaml.safe_load(config.read_text())["rule_files"]
    stack_rules, shipped = rules_of(Path(rules_path).read_text()), rules_of(RULES_FILE.read_text())
    assert [r["alert"] for r in stack_rules] == [r["alert"] for r in shipped]
    for ours, theirs in zip(stack_rules, shipped, strict=True):
        assert ours["labels"] == theirs["labels"]
        assert ours["annotations"] == theirs["annotations"]
        assert ours["for"] == ALERT_FOR
        assert ours["expr"] == re.sub(r"\[[0-9a-z]+\]", f"[{ALERT_WINDOW}]", theirs["expr"])
