"""Prometheus and Alertmanager of the local stack: configuration, history, processes.

The metrics that the rag-api simulator exposes and that backfilled history carries are one
contract, defined here: `http_requests_total{code, service}`, the
`http_request_duration_seconds` histogram (buckets `LATENCY_BUCKETS`) and the gauges
`rag_healthy`, `rag_quality_ndcg`, `rag_build_info{version}`. Scraped series also carry `job`
and `instance`; backfilled ones do not, so every query aggregates `by (service)`. The
simulator's request counter and histogram also carry `version` (the image tag it serves) and
`track` (`stable`, `canary`), so one version's own series can be selected.

The alert rules are generated from the decision matrix (`alert_rules_text`): each
indicator's own query, for every service at once, against its thresholds. The shipped file,
`RULES_FILE`, has the production durations (`python -m stack rules`, `make rules`); the local
stack's (`render_rules`) the same alerts with a short `for` and window.

Order of use: render the configs, `backfill` history into the data directory, then
`start_prometheus` and `start_alertmanager`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from string import Template

from prometheus_client.utils import floatToGoString

from playbook.errors import InvalidInputError
from playbook.thresholds import DecisionMatrix, Indicator, load_decision_matrix
from stack.config import REPO_DIR
from stack.processes import StackError, ensure_port_free, http_ok, start, stop, wait_until

TEMPLATE_DIR = Path(__file__).with_name("prometheus")
LOOPBACK = "127.0.0.1"
SERVICE = "rag-api"
REQUESTS_METRIC = "http_requests_total"
LATENCY_METRIC = "http_request_duration_seconds"
# 0.3, 0.5 and 1.0 are edges so that the playbook's P99 thresholds are exact.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
RETENTION = "30d"
READY_TIMEOUT_SECONDS = 30.0
PROMTOOL_TIMEOUT_SECONDS = 300.0
# `render_history` spreads most requests over (0, 100 ms].
_TYPICAL_LATENCY_SECONDS = 0.1


def error_ratio_expr(window: str, service: str | None = None, by: str = "service") -> str:
    """PromQL: share of 5xx responses over `window`, one series per `by` labels.

    Never an empty vector while the service is scraped (the simulator pre-creates the
    code="500" series); NaN when there was no traffic at all.
    """
    scope = _service_matchers(service)
    errors = _selector(*scope, 'code=~"5.."')
    return (
        f"(sum by ({by}) (rate({REQUESTS_METRIC}{errors}[{window}]))"
        f" / sum by ({by}) (rate({REQUESTS_METRIC}{_selector(*scope)}[{window}])))"
    )


def p99_latency_expr(window: str, service: str | None = None, by: str = "service") -> str:
    """PromQL: P99 request duration in seconds over `window`, one series per `by` labels."""
    buckets = f"{LATENCY_METRIC}_bucket{_selector(*_service_matchers(service))}"
    return f"histogram_quantile(0.99, sum by ({by}, le) (rate({buckets}[{window}])))"


def _service_matchers(service: str | None) -> list[str]:
    return [f"service={json.dumps(service)}"] if service else []


def _selector(*matchers: str) -> str:
    return "{" + ",".join(matchers) + "}" if matchers else ""


def render_prometheus_config(
    directory: Path,
    *,
    simulator_port: int,
    alertmanager_port: int,
    rules_path: Path,
    interval: str = "1s",
    service: str = SERVICE,
    namespace: str = "production",
    canary_port: int | None = None,
) -> Path:
    """Write `prometheus.yml`: scrape the simulator (and the canary's, on `canary_port`),
    evaluate `rules_path`, alert Alertmanager.

    `interval` is both the scrape and the evaluation interval.
    """
    ports = [simulator_port] if canary_port is None else [simulator_port, canary_port]
    return _render(
        "prometheus.yml",
        directory,
        interval=interval,
        rules_path=_yaml_string(str(rules_path)),
        alertmanager_port=str(alertmanager_port),
        targets=json.dumps([f"{LOOPBACK}:{port}" for port in ports]),
        service=_yaml_string(service),
        namespace=_yaml_string(namespace),
    )


# --- alert rules ---------------------------------------------------------------------------

RULES_FILE = REPO_DIR / "deployments" / "prometheus" / "rollback-rules.yml"
"""The shipped alert rules, generated from the decision matrix by `make rules`."""
PRODUCTION_FOR = "2m"
"""How long a breach lasts before its alert fires, in the shipped rules. The playbook states
no duration: two minutes, so that one bad scrape or evaluation does not start a rollback."""
STACK_WINDOW = "5s"
"""The window of every indicator in the local stack's rules (five of its 1 s scrapes)."""
UNHEALTHY_ALERT = "RollbackServiceUnhealthy"
PER_SERVICE_LABELS = ("namespace", "service")

# The alert of each indicator: the name deployments/alert-routes.yaml matches and what its
# summary calls the indicator. An indicator the matrix adds is Rollback{High,Low}<Name>.
_ALERTS = {
    "error_rate": ("RollbackHighErrorRate", "error rate"),
    "p99_latency": ("RollbackHighLatency", "P99 latency"),
    "availability": ("RollbackLowAvailability", "availability"),
    "rag_quality_ndcg": ("RollbackLowRagQuality", "RAG quality NDCG"),
    "user_complaints": ("RollbackUserComplaints", "user complaints"),
}
# How a summary shows the value, by the indicator's unit (Prometheus' template functions).
_VALUE_TEXT = {
    "ratio": "$value | humanizePercentage",
    "seconds": "$value | humanizeDuration",
    "count": "$value | humanize",
    "score": "$value",
}
_COMPARATORS = {"above": ">", "at_least": ">=", "below": "<", "at_most": "<="}
# Stands for the service while the matrix's query is rendered, then becomes `service!=""`.
_EVERY_SERVICE = "__rollback_flows_every_service__"
_PROMQL_STRING = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)")
_AGGREGATION = re.compile(
    r"\b(?P<op>sum|min|max|avg|group|stddev|stdvar|count|count_values|bottomk|topk|quantile)"
    r"\s*(?:(?P<by>\bby)\s*\((?P<labels>[^()]*)\)\s*)?\(",
    re.IGNORECASE,
)
_GROUPING = re.compile(r"\b(by|without|on|ignoring)\s*\(", re.IGNORECASE)


def alert_name(indicator: Indicator) -> str:
    """The alert of `indicator` (both severities), e.g. `RollbackHighErrorRate`."""
    known = _ALERTS.get(indicator.name)
    if known:
        return known[0]
    worse = "High" if indicator.higher_is_worse else "Low"
    return "Rollback" + worse + "".join(part.title() for part in indicator.name.split("_"))


def fleet_query(indicator: Indicator, window: str | None = None) -> str:
    """The indicator's query from the decision matrix over `window` (its own by default), for
    every service at once: one series per (namespace, service).

    The matrix's query selects one service and aggregates it into one series. Here its
    `service="$service"` selector becomes `service!=""` and every aggregation keeps the
    `namespace` and `service` labels (`sum(` becomes `sum by (namespace, service) (`,
    `sum by (le) (` becomes `sum by (le, namespace, service) (`), so over one service's series
    the value is the matrix's own.

    Raises:
        InvalidInputError: a query whose service is not selected as `service="$service"`, or
            that groups in a way this cannot extend (`without`, `on`, `ignoring`, a `by` after
            the aggregation's argument).
    """
    rendered = indicator.render(_EVERY_SERVICE, window)
    query = rendered.replace(f'service="{_EVERY_SERVICE}"', 'service!=""')
    if _EVERY_SERVICE in query:
        raise InvalidInputError(
            f'the {indicator.name} query must select the service as service="$service" '
            "(and nowhere else) to become an alert for every service"
        )
    parts = _PROMQL_STRING.split(query)
    parts[::2] = [_group_per_service(code, indicator.name) for code in parts[::2]]
    return "".join(parts)


def _group_per_service(code: str, indicator: str) -> str:
    """`code` (PromQL outside string literals) with `namespace, service` in every grouping."""
    aggregations = list(_AGGREGATION.finditer(code))
    extended = {match.start("by") for match in aggregations if match.group("by")}
    for grouping in _GROUPING.finditer(code):
        if grouping.start() not in extended:
            raise InvalidInputError(
                f"the {indicator} query groups with {grouping.group(1)!r} in a way the alert "
                "rules cannot extend to every service: write each aggregation as "
                "`sum by (labels) (...)`, without on/ignoring/without"
            )

    def per_service(match: re.Match[str]) -> str:
        labels = [label.strip() for label in (match.group("labels") or "").split(",")]
        labels = [label for label in labels if label]
        labels += [label for label in PER_SERVICE_LABELS if label not in labels]
        return f"{match.group('op')} by ({', '.join(labels)}) ("

    return _AGGREGATION.sub(per_service, code)


def alert_rules_text(
    matrix: DecisionMatrix,
    *,
    for_duration: str,
    window: str | None = None,
    preamble: Sequence[str] = (),
) -> str:
    """The playbook's alert rules as a Prometheus rule file: a warning and a critical alert
    for each indicator of `matrix` (its `fleet_query` over `window`, else its own window,
    compared with its thresholds), and the unhealthy alert; each fires after `for_duration`.

    `preamble` opens the file's header comment: paragraphs, wrapped, and lines kept as they
    are (those indented by two spaces).
    """
    indicators = list(matrix.indicators.values())
    rules: list[str] = []
    for indicator in indicators:
        query = fleet_query(indicator, window)
        for severity in ("warning", "critical"):
            rules += _indicator_rule(indicator, query, severity, for_duration)
    rules += _unhealthy_rule(for_duration)
    opening = [
        line
        for paragraph in preamble
        for line in (
            [paragraph]
            if paragraph.startswith("  ")
            else textwrap.wrap(paragraph, 90, break_long_words=False, break_on_hyphens=False)
        )
    ]
    header = [*opening, *_rules_header(indicators, for_duration, window)]
    body = ["groups:", "  - name: rollback-playbook", "    rules:", *rules[:-1]]
    return "".join(f"# {line}".rstrip() + "\n" for line in header) + "\n".join(body) + "\n"


def _rules_header(indicators: list[Indicator], for_duration: str, window: str | None) -> list[str]:
    table = [("alert", "indicator", "window", "warning", "critical")] + [
        (
            alert_name(ind),
            ind.name,
            window or ind.window,
            ind.condition(ind.warning),
            ind.condition(ind.critical),
        )
        for ind in indicators
    ]
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    rows = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    over = f"over {window} (not its own window)" if window else "over its own window"
    return [
        "",
        "A warning and a critical alert for each indicator of the decision matrix, firing after",
        f"{for_duration}: the indicator's own query {over}, for every service at once (its",
        '`service="$service"` selector becomes `service!=""` and each aggregation keeps',
        "`namespace` and `service`, so each alert names the environment it is about), compared",
        "with its thresholds.",
        "",
        *rows,
        f"  {UNHEALTHY_ALERT} (critical only) is no row of the matrix: it is the playbook's",
        '  automatic trigger "Health endpoint returns unhealthy" (the service reports itself',
        "  unhealthy, rag_healthy 0, or its scrape fails, up 0).",
        "",
        "No data raises no alert: an indicator whose series this Prometheus does not have (user",
        "complaints, `required: false`, where no support tooling exports",
        "rag_user_complaints_total) never fires. deployments/alert-routes.yaml decides which",
        "alerts start a rollback.",
        "",
    ]


def _indicator_rule(
    indicator: Indicator, query: str, severity: str, for_duration: str
) -> list[str]:
    threshold = indicator.warning if severity == "warning" else indicator.critical
    comparator = _COMPARATORS[indicator.breach]
    what = _ALERTS.get(indicator.name, ("", indicator.title))[1]
    summary = (
        f"{{{{ $labels.service }}}} {what} {{{{ {_VALUE_TEXT[indicator.unit]} }}}} "
        f"{comparator} {_threshold_text(indicator, threshold)}"
    )
    return _rule(
        alert_name(indicator),
        f"({query}) {comparator} {_number(threshold)}",
        for_duration,
        severity,
        summary,
        comment=f"{indicator.name} ({indicator.title}), {severity}: "
        f"{indicator.condition(threshold)}",
    )


def _unhealthy_rule(for_duration: str) -> list[str]:
    return _rule(
        UNHEALTHY_ALERT,
        "(min by (namespace, service) (rag_healthy) < 1)"
        ' or (min by (namespace, service) (up{service!=""}) < 1)',
        for_duration,
        "critical",
        "{{ $labels.service }} is unhealthy",
        comment="unhealthy: the service says so (rag_healthy 0, /health 503) or cannot be scraped",
    )


def _rule(
    alert: str, expr: str, for_duration: str, severity: str, summary: str, comment: str
) -> list[str]:
    return [
        f"      # {comment}",
        f"      - alert: {alert}",
        "        expr: |-",
        f"          {expr}",
        f"        for: {for_duration}",
        "        labels:",
        f"          severity: {severity}",
        "        annotations:",
        f"          summary: {_yaml_string(summary)}",
        "",
    ]


def _threshold_text(indicator: Indicator, threshold: float) -> str:
    match indicator.unit:
        case "ratio":
            return _percent(threshold)
        case "seconds":
            return _milliseconds(threshold)
        case _:
            return f"{threshold:g}"


def _number(value: float) -> str:
    """A PromQL number that reads back exactly: `0.01`, `3`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_rules(
    directory: Path,
    *,
    for_duration: str,
    rate_window: str = STACK_WINDOW,
    matrix: DecisionMatrix | None = None,
) -> Path:
    """Write `rules.yml` for the local stack: the shipped rules (`alert_rules_text` of the
    decision matrix, `$ROLLBACK_FLOWS_DECISION_MATRIX` or the shipped file), each alert firing
    after `for_duration` and every indicator over `rate_window` instead of its own window, so
    that alerts fire within seconds. Use a window of at least four scrape intervals.
    """
    text = alert_rules_text(
        matrix or load_decision_matrix(),
        for_duration=for_duration,
        window=rate_window,
        preamble=[
            "Alert rules of the local stack, rendered by stack/prometheus.py from the decision "
            f"matrix as {RULES_FILE.relative_to(REPO_DIR)} is, with the stack's short "
            f"durations (that file: for {PRODUCTION_FOR}, each indicator over its own window)."
        ],
    )
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "rules.yml"
    target.write_text(text)
    return target


def render_alertmanager_config(
    directory: Path,
    *,
    webhook_url: str,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "4h",
    bearer_token_file: Path | None = None,
) -> Path:
    """Write `alertmanager.yml`: every alert to `webhook_url`, resolved ones too; with the
    bearer token in `bearer_token_file` when given (as the receiver requires)."""
    http_config = (
        "\n        http_config:\n          authorization:\n            type: Bearer\n"
        f"            credentials_file: {_yaml_string(str(bearer_token_file))}"
        if bearer_token_file
        else ""
    )
    return _render(
        "alertmanager.yml",
        directory,
        webhook_url=_yaml_string(webhook_url),
        http_config=http_config,
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
    )


@dataclass(frozen=True)
class TrafficStep:
    """From `start` (unix seconds) until the next step: this traffic, error share and P99."""

    start: float
    requests_per_second: float
    error_ratio: float
    p99_seconds: float

    def __post_init__(self) -> None:
        if self.requests_per_second < 0:
            raise ValueError(f"requests_per_second must be >= 0, got {self.requests_per_second}")
        if not 0.0 <= self.error_ratio <= 1.0:
            raise ValueError(f"error_ratio must be within 0..1, got {self.error_ratio}")
        if not LATENCY_BUCKETS[0] <= self.p99_seconds < LATENCY_BUCKETS[-1]:
            raise ValueError(
                f"p99_seconds must be within [{LATENCY_BUCKETS[0]}, {LATENCY_BUCKETS[-1]}) "
                f"(the histogram's finite buckets), got {self.p99_seconds}"
            )


def render_history(
    steps: Sequence[TrafficStep],
    end: float,
    interval_seconds: float = 15.0,
    service: str = SERVICE,
) -> str:
    """OpenMetrics text of the service's counters and latency histogram from `steps[0].start`
    to `end`, one sample every `interval_seconds`, ending with `# EOF` (input of `backfill`).

    `histogram_quantile(0.99, ...)` over the result gives each step's `p99_seconds`.
    """
    _check_steps(steps, end, interval_seconds)
    times = _sample_times(steps[0].start, end, interval_seconds)
    ok, failed, count, total_seconds = 0.0, 0.0, 0.0, 0.0
    buckets = [0.0] * len(LATENCY_BUCKETS)
    request_lines: list[str] = []
    latency_lines: list[str] = []
    for previous, now in pairwise([times[0], *times]):
        for step, requests in _requests_between(steps, end, previous, now):
            ok += requests * (1.0 - step.error_ratio)
            failed += requests * step.error_ratio
            count += requests
            shares, mean_seconds = _latency_shape(step.p99_seconds)
            buckets = [b + requests * share for b, share in zip(buckets, shares, strict=True)]
            total_seconds += requests * mean_seconds
        stamp = f"{now:.3f}"
        labels = f'service="{service}"'
        request_lines += [
            f'{REQUESTS_METRIC}{{code="200",{labels}}} {ok:.3f} {stamp}',
            f'{REQUESTS_METRIC}{{code="500",{labels}}} {failed:.3f} {stamp}',
        ]
        latency_lines += [
            f'{LATENCY_METRIC}_bucket{{le="{floatToGoString(edge)}",{labels}}} {value:.3f} {stamp}'
            for edge, value in zip([*LATENCY_BUCKETS, math.inf], [*buckets, count], strict=True)
        ]
        latency_lines += [
            f"{LATENCY_METRIC}_count{{{labels}}} {count:.3f} {stamp}",
            f"{LATENCY_METRIC}_sum{{{labels}}} {total_seconds:.6f} {stamp}",
        ]
    family = REQUESTS_METRIC.removesuffix("_total")
    return "\n".join(
        [
            f"# HELP {family} Requests served, by status code.",
            f"# TYPE {family} counter",
            *request_lines,
            f"# HELP {LATENCY_METRIC} Duration of served requests.",
            f"# TYPE {LATENCY_METRIC} histogram",
            *latency_lines,
            "# EOF",
            "",
        ]
    )


def backfill(openmetrics_text: str, data_dir: Path) -> None:
    """Write TSDB blocks of `openmetrics_text` into `data_dir`, before Prometheus starts there.

    Runs `promtool tsdb create-blocks-from openmetrics` (timestamps in seconds, `# EOF` last,
    2 h blocks); the blocks are picked up when Prometheus opens the directory.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="backfill-") as scratch:
        source = Path(scratch) / "history.om"
        source.write_text(openmetrics_text)
        argv = [_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", "--quiet"]
        try:
            result = subprocess.run(
                [*argv, str(source), str(data_dir)],
                capture_output=True,
                text=True,
                timeout=PROMTOOL_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"promtool backfill into {data_dir} timed out") from exc
    if result.returncode != 0:
        raise StackError(
            f"promtool could not backfill {data_dir} (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )


def start_prometheus(config_path: Path, data_dir: Path, port: int, log_path: Path) -> int:
    """Start Prometheus on 127.0.0.1:`port` and wait until it is ready; return its pid."""
    argv = [
        _binary("prometheus"),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    return _start_and_wait("Prometheus", argv, port, log_path)


def start_alertmanager(config_path: Path, data_dir: Path, port: int, log_path: Path) -> int:
    """Start Alertmanager on 127.0.0.1:`port` (no clustering) and wait until it is ready;
    return its pid."""
    argv = [
        _binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={config_path}",
        f"--storage.path={data_dir}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--cluster.listen-address=",
    ]
    return _start_and_wait("Alertmanager", argv, port, log_path)


def _start_and_wait(name: str, argv: list[str], port: int, log_path: Path) -> int:
    ensure_port_free(port, name)
    pid = start(name, argv, log_path)
    try:
        wait_until(
            name,
            http_ok(f"http://{LOOPBACK}:{port}/-/ready"),
            READY_TIMEOUT_SECONDS,
            pid=pid,
            log_path=log_path,
        )
    except StackError:
        stop(pid)
        raise
    return pid


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise StackError(f"none of {', '.join(names)} is on PATH (Debian: apt-get install prometheus)")


def _render(template_name: str, directory: Path, **values: str) -> Path:
    template = Template((TEMPLATE_DIR / template_name).read_text())
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / template_name
    target.write_text(template.substitute(values))
    return target


def _yaml_string(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _check_steps(steps: Sequence[TrafficStep], end: float, interval_seconds: float) -> None:
    if not steps:
        raise ValueError("render_history needs at least one step")
    starts = [step.start for step in steps]
    if any(later <= earlier for earlier, later in pairwise(starts)):
        raise ValueError(f"steps must be in strictly increasing start order, got {starts}")
    if end <= starts[-1]:
        raise ValueError(f"end {end} must be after the last step's start {starts[-1]}")
    if interval_seconds <= 0:
        raise ValueError(f"interval_seconds must be > 0, got {interval_seconds}")


def _sample_times(first: float, end: float, interval_seconds: float) -> list[float]:
    samples = int((end - first) // interval_seconds) + 1
    return [first + index * interval_seconds for index in range(samples)]


def _requests_between(
    steps: Sequence[TrafficStep], end: float, since: float, until: float
) -> list[tuple[TrafficStep, float]]:
    """How many requests each step served within [since, until)."""
    ends = [step.start for step in steps[1:]] + [end]
    served = []
    for step, step_end in zip(steps, ends, strict=True):
        overlap = min(until, step_end) - max(since, step.start)
        if overlap > 0:
            served.append((step, overlap * step.requests_per_second))
    return served


def _latency_shape(p99_seconds: float) -> tuple[list[float], float]:
    """Cumulative share of requests at each bucket edge, and the mean duration, for a
    latency distribution whose interpolated 0.99 quantile is `p99_seconds`.

    The distribution is piecewise uniform: most requests within 100 ms, the rest up to the
    lower edge of the bucket holding the P99, and the tail within that bucket; the share
    below that bucket is chosen so that linear interpolation in it lands on the P99.
    """
    upper_index = next(i for i, edge in enumerate(LATENCY_BUCKETS) if edge > p99_seconds)
    lower, upper = LATENCY_BUCKETS[upper_index - 1], LATENCY_BUCKETS[upper_index]
    position = (p99_seconds - lower) / (upper - lower)
    below = max(0.0, (0.99 - position) / (1.0 - position))
    typical = min(lower, _TYPICAL_LATENCY_SECONDS)
    knots = [(0.0, 0.0), (typical, 0.9 * below), (lower, below), (upper, 1.0)]
    if typical == lower:
        del knots[1]
    shares = [_cumulative_share(edge, knots) for edge in LATENCY_BUCKETS]
    mean = sum(
        (share - previous_share) * (edge + previous_edge) / 2.0
        for (previous_edge, previous_share), (edge, share) in pairwise(knots)
    )
    return shares, mean


def _cumulative_share(seconds: float, knots: list[tuple[float, float]]) -> float:
    """The piecewise-linear CDF through `knots` at `seconds` (1 beyond the last knot)."""
    for (left, left_share), (right, right_share) in pairwise(knots):
        if seconds <= right:
            return left_share + (right_share - left_share) * (seconds - left) / (right - left)
    return 1.0
