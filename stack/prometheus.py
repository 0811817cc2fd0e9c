"""Prometheus and Alertmanager of the local stack: configuration, history, processes.

The metrics that the rag-api simulator exposes and that backfilled history carries are one
contract, defined here: `http_requests_total{code, service}`, the
`http_request_duration_seconds` histogram (buckets `LATENCY_BUCKETS`) and the gauges
`rag_healthy`, `rag_quality_ndcg`, `rag_build_info{version}`. Scraped series also carry `job`
and `instance`; backfilled ones do not, so every query aggregates `by (service)`. The
simulator's request counter and histogram also carry `version` (the image tag it serves) and
`track` (`stable`, `canary`), so one version's own series can be selected.

Order of use: render the configs, `backfill` history into the data directory, then
`start_prometheus` and `start_alertmanager`.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from string import Template

from prometheus_client.utils import floatToGoString

from playbook.thresholds import DecisionMatrix
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


@dataclass(frozen=True)
class AlertThresholds:
    """The decision matrix of the playbook ("When to Rollback"): warning and critical."""

    error_ratio_warning: float = 0.01
    error_ratio_critical: float = 0.05
    p99_seconds_warning: float = 0.5
    p99_seconds_critical: float = 1.0
    ndcg_warning: float = 0.7
    ndcg_critical: float = 0.6

    @classmethod
    def from_matrix(cls, matrix: DecisionMatrix) -> AlertThresholds:
        """The thresholds of the decision matrix file, so that editing it changes the alerts
        as it changes the flows' verdicts."""
        errors, p99 = matrix.indicator("error_rate"), matrix.indicator("p99_latency")
        ndcg = matrix.indicator("rag_quality_ndcg")
        return cls(
            error_ratio_warning=errors.warning,
            error_ratio_critical=errors.critical,
            p99_seconds_warning=p99.warning,
            p99_seconds_critical=p99.critical,
            ndcg_warning=ndcg.warning,
            ndcg_critical=ndcg.critical,
        )


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


def render_rules(
    directory: Path,
    *,
    for_duration: str,
    rate_window: str = "5s",
    thresholds: AlertThresholds = AlertThresholds(),
) -> Path:
    """Write `rules.yml`: the playbook's alerts, each firing after `for_duration`.

    `rate_window` is the window of the rate() in the error-ratio and latency rules; use at
    least four scrape intervals.
    """
    return _render(
        "rules.yml",
        directory,
        for_duration=for_duration,
        error_ratio=error_ratio_expr(rate_window, by="namespace, service"),
        p99_latency=p99_latency_expr(rate_window, by="namespace, service"),
        error_ratio_warning=str(thresholds.error_ratio_warning),
        error_ratio_critical=str(thresholds.error_ratio_critical),
        error_ratio_warning_text=_percent(thresholds.error_ratio_warning),
        error_ratio_critical_text=_percent(thresholds.error_ratio_critical),
        p99_seconds_warning=str(thresholds.p99_seconds_warning),
        p99_seconds_critical=str(thresholds.p99_seconds_critical),
        p99_warning_text=_milliseconds(thresholds.p99_seconds_warning),
        p99_critical_text=_milliseconds(thresholds.p99_seconds_critical),
        ndcg_warning=str(thresholds.ndcg_warning),
        ndcg_critical=str(thresholds.ndcg_critical),
    )


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
