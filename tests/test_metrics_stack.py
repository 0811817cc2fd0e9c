"""Tests of the metrics half of the local stack.

Pure parts first (behaviour file, image tags, the simulator core, the OpenMetrics history
renderer, rendered configs and alert rules checked by promtool/amtool), then the real thing:
Prometheus and Alertmanager processes fed by backfilled history and by the simulator running
in this process, with a loopback webhook sink standing in for the alert receiver.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from stack.processes import free_port, stop
from stack.prometheus import (
    LATENCY_BUCKETS,
    TrafficStep,
    backfill,
    error_ratio_expr,
    p99_latency_expr,
    render_alertmanager_config,
    render_history,
    render_prometheus_config,
    render_rules,
    start_alertmanager,
    start_prometheus,
)
from stack.simulator import (
    Behaviour,
    ImageSourceError,
    Simulator,
    SimulatorConfigError,
    image_tag,
    kubernetes_image_source,
    load_config,
)

GOOD_IMAGE = "ghcr.io/acme/rag-api:v1.2.3"
BAD_IMAGE = "ghcr.io/acme/rag-api:v1.2.4"  # 20 % errors in stack/simulator.yaml


# --- loopback HTTP helpers ---------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request POSTed to the loopback server."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class LoopbackServer:
    """A tiny HTTP server on 127.0.0.1: answers GETs from `replies`, records POSTed JSON."""

    replies: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> LoopbackServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait_for(
        self, matches: Callable[[Received], bool], timeout: float, since: int = 0
    ) -> Received:
        """The first request received after the `since` first ones that `matches`, waiting up
        to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [item for item in self.received[since:] if matches(item)]
            if found:
                return found[0]
            time.sleep(0.1)
        bodies = json.dumps([item.body for item in self.received], indent=1)[-3000:]
        raise AssertionError(f"nothing matching arrived within {timeout}s; received: {bodies}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = server.replies.get(self.path, (404, {"kind": "Status"}))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.received.append(Received(self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@dataclass
class ImageSwitch:
    """A "current image" source the tests flip by hand, or make fail."""

    image: str | None = GOOD_IMAGE
    failure: str | None = None

    def __call__(self) -> str | None:
        if self.failure is not None:
            raise ImageSourceError(self.failure)
        return self.image


# --- behaviour file and image tags -----------------------------------------------------


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("ghcr.io/acme/rag-api:v1.2.3", "v1.2.3"),
        ("localhost:5000/rag-api:v1.2.5-slow", "v1.2.5-slow"),
        ("localhost:5000/rag-api", "latest"),
        ("rag-api:v1.2.4@sha256:abc", "v1.2.4"),
        ("rag-api@sha256:abc", "sha256:abc"),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_shipped_behaviour_file_describes_good_and_bad_versions() -> None:
    config = load_config()
    assert config.behaviour_for("v1.2.3") == config.default == Behaviour()
    assert config.behaviour_for(None) == config.default
    assert config.behaviour_for("v1.2.4").error_ratio == 0.2
    assert config.behaviour_for("v1.2.5-slow").slow_latency_seconds == (0.7, 0.9)
    assert config.behaviour_for("v1.2.5-very-slow").slow_latency_seconds == (1.5, 2.0)
    unhealthy = config.behaviour_for("v1.2.6-unhealthy")
    assert not unhealthy.healthy
    assert unhealthy.model_copy(update={"healthy": True}) == config.default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default: [unclosed", "is not valid YAML"),
        ("default:\n  error_ratio: 1.5\n", "default.error_ratio: Input should be less than"),
        ("versions:\n  - behaviour: {}\n", "versions.0.match: Field required"),
        ("versions:\n  - match: v1\n    behaviour: {errors: 0.2}\n", "behaviour.errors: Extra"),
        ("default:\n  latency_seconds: [0.5, 0.1]\n", "low 0.5 is above high 0.1"),
        ("- just a list\n", "Input should be a valid dictionary"),
    ],
)
def test_bad_behaviour_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "simulator.yaml"
    path.write_text(text)
    with pytest.raises(SimulatorConfigError, match="simulator config") as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_missing_behaviour_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SimulatorConfigError, match="cannot read simulator config"):
        load_config(tmp_path / "absent.yaml")


# --- the simulator core ----------------------------------------------------------------


def test_simulator_fails_exactly_the_configured_share() -> None:
    switch = ImageSwitch(BAD_IMAGE)
    simulator = Simulator(load_config(), switch)
    simulator.refresh_version()
    outcomes = [simulator.serve_request() for _ in range(500)]
    assert simulator.version == "v1.2.4"
    assert sum(outcome.code == 500 for outcome in outcomes) == 100
    assert all(0.02 <= outcome.duration_seconds <= 0.08 for outcome in outcomes)
    metrics = simulator.metrics().decode()
    assert 'http_requests_total{code="500",track="stable",version="v1.2.4"} 100.0' in metrics
    assert 'http_requests_total{code="200",track="stable",version="v1.2.4"} 400.0' in metrics
    assert 'rag_build_info{version="v1.2.4"} 1.0' in metrics


def test_each_version_keeps_its_own_request_and_latency_series() -> None:
    switch = ImageSwitch(BAD_IMAGE)
    simulator = Simulator(load_config(), switch, track="canary")
    simulator.refresh_version()
    for _ in range(100):
        simulator.serve_request()
    switch.image = GOOD_IMAGE
    simulator.refresh_version()
    for _ in range(50):
        simulator.serve_request()
    metrics = simulator.metrics().decode()
    # the bad version's counts stay as they were; the good one starts at zero errors
    assert 'http_requests_total{code="500",track="canary",version="v1.2.4"} 20.0' in metrics
    assert 'http_requests_total{code="200",track="canary",version="v1.2.4"} 80.0' in metrics
    assert 'http_requests_total{code="500",track="canary",version="v1.2.3"} 0.0' in metrics
    assert 'http_requests_total{code="200",track="canary",version="v1.2.3"} 50.0' in metrics
    assert 'http_request_duration_seconds_count{track="canary",version="v1.2.4"} 100.0' in metrics
    assert 'http_request_duration_seconds_count{track="canary",version="v1.2.3"} 50.0' in metrics


def test_simulator_follows_the_image_and_reports_unknown_without_a_deployment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    switch = ImageSwitch(None)
    simulator = Simulator(load_config(), switch)
    with caplog.at_level(logging.INFO, logger="stack.simulator"):
        simulator.refresh_version()
        simulator.refresh_version()
    assert simulator.version == "unknown"
    assert simulator.health()[1] == {"status": "healthy", "version": "unknown"}
    assert [record.levelname for record in caplog.records] == ["WARNING"]

    switch.image = "rag-api:v1.2.6-unhealthy"
    simulator.refresh_version()
    status, body = simulator.health()
    assert (status, body["status"], body["version"]) == (503, "unhealthy", "v1.2.6-unhealthy")
    metrics = simulator.metrics().decode()
    assert "rag_healthy 0.0" in metrics
    assert 'rag_build_info{version="unknown"}' not in metrics


def test_simulator_keeps_its_version_when_the_source_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    switch = ImageSwitch(BAD_IMAGE)
    simulator = Simulator(load_config(), switch)
    simulator.refresh_version()
    switch.failure = "apiserver unreachable"
    with caplog.at_level(logging.WARNING, logger="stack.simulator"):
        simulator.refresh_version()
        simulator.refresh_version()
    assert simulator.version == "v1.2.4"
    assert len(caplog.records) == 1
    assert "apiserver unreachable" in caplog.records[0].getMessage()


def test_simulator_serves_health_version_and_metrics_over_http() -> None:
    switch = ImageSwitch(GOOD_IMAGE)
    simulator = Simulator(load_config(), switch, requests_per_second=100.0)
    port = simulator.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json() == {"status": "healthy", "version": "v1.2.3"}
        assert httpx.get(f"{base}/version").json() == {"version": "v1.2.3"}
        time.sleep(0.3)
        metrics = httpx.get(f"{base}/metrics").text
        assert 'http_requests_total{code="500",track="stable",version="v1.2.3"} 0.0' in metrics
        assert (
            'http_request_duration_seconds_bucket{le="0.3",track="stable",version="v1.2.3"}'
            in metrics
        )
        assert "rag_quality_ndcg 0.82" in metrics
        switch.image = "ghcr.io/acme/rag-api:v1.2.6-unhealthy"
        _eventually(lambda: httpx.get(f"{base}/health").status_code == 503, timeout=3.0)
        assert httpx.get(f"{base}/version").json() == {"version": "v1.2.6-unhealthy"}
        assert httpx.get(f"{base}/nowhere").status_code == 404
    finally:
        simulator.stop()


def test_kubernetes_image_source_reads_the_pod_template(tmp_path: Path) -> None:
    deployment_path = "/apis/apps/v1/namespaces/production/deployments/rag-api"
    with LoopbackServer() as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(_kubeconfig(api.url)))
        source = kubernetes_image_source(kubeconfig, "production", "rag-api", "rag-api")
        assert source() is None  # no such Deployment (404)

        api.replies[deployment_path] = (200, _deployment({"sidecar": "x:1", "rag-api": BAD_IMAGE}))
        assert source() == BAD_IMAGE

        api.replies[deployment_path] = (200, _deployment({"sidecar": "x:1"}))
        with pytest.raises(ImageSourceError, match="no container 'rag-api' \\(it has: sidecar\\)"):
            source()

        api.replies[deployment_path] = (500, {"kind": "Status"})
        with pytest.raises(ImageSourceError, match="HTTP 500"):
            source()


def _kubeconfig(server: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }


def _deployment(images: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rag-api", "namespace": "production"},
        "spec": {
            "selector": {"matchLabels": {"app": "rag-api"}},
            "template": {
                "metadata": {"labels": {"app": "rag-api"}},
                "spec": {"containers": [{"name": n, "image": i} for n, i in images.items()]},
            },
        },
    }


# --- OpenMetrics history ---------------------------------------------------------------


def test_latency_buckets_hold_the_playbook_thresholds() -> None:
    assert {0.05, 0.1, 0.3, 0.5, 1.0, 2.5} <= set(LATENCY_BUCKETS)


@pytest.mark.parametrize("p99", [0.005, 0.05, 0.2, 0.3, 0.5, 0.8, 1.0, 1.2, 4.0])
def test_history_histogram_gives_the_step_p99(p99: float) -> None:
    text = render_history([TrafficStep(1_000.0, 10.0, 0.0, p99)], end=1_100.0)
    last_buckets = _last_values(text, "http_request_duration_seconds_bucket")
    assert _histogram_quantile(0.99, last_buckets) == pytest.approx(p99, rel=0.01)


def test_history_counts_requests_and_errors_per_step() -> None:
    steps = [TrafficStep(1_000.0, 10.0, 0.02, 0.2), TrafficStep(1_060.0, 20.0, 0.5, 0.2)]
    text = render_history(steps, end=1_120.0, interval_seconds=30.0)
    lines = text.splitlines()
    assert lines[:2] == [
        "# HELP http_requests Requests served, by status code.",
        "# TYPE http_requests counter",
    ]
    assert lines[-1] == "# EOF"
    assert 'http_requests_total{code="200",service="rag-api"} 588.000 1060.000' in lines
    assert 'http_requests_total{code="500",service="rag-api"} 12.000 1060.000' in lines
    assert 'http_requests_total{code="500",service="rag-api"} 612.000 1120.000' in lines
    assert 'http_request_duration_seconds_count{service="rag-api"} 1800.000 1120.000' in lines
    assert (
        'http_request_duration_seconds_bucket{le="1.0",service="rag-api"} 0.000 1000.000' in lines
    )


@pytest.mark.parametrize(
    ("steps", "end", "message"),
    [
        ([], 10.0, "at least one step"),
        ([TrafficStep(5.0, 1, 0, 0.1), TrafficStep(5.0, 1, 0, 0.1)], 10.0, "increasing"),
        ([TrafficStep(5.0, 1, 0, 0.1)], 5.0, "must be after"),
    ],
)
def test_history_refuses_bad_steps(steps: list[TrafficStep], end: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_history(steps, end)


@pytest.mark.parametrize("p99", [0.001, 5.0, 7.0])
def test_traffic_step_refuses_a_p99_beyond_the_buckets(p99: float) -> None:
    with pytest.raises(ValueError, match="p99_seconds must be within"):
        TrafficStep(0.0, 1.0, 0.0, p99)


def _last_values(text: str, name: str) -> dict[float, float]:
    """The last sample of each bucket of `name`, by `le`."""
    values: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            values[float(le)] = float(line.rsplit(" ", 2)[1])
    return values


def _histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """PromQL's histogram_quantile for one histogram (linear interpolation in a bucket)."""
    edges = sorted(buckets)
    rank = q * buckets[edges[-1]]
    lower, below = 0.0, 0.0
    for edge in edges:
        if buckets[edge] >= rank:
            if edge == float("inf"):
                return lower
            return lower + (edge - lower) * (rank - below) / (buckets[edge] - below)
        lower, below = edge, buckets[edge]
    raise AssertionError("unreachable: the +Inf bucket holds every request")


# --- rendered configs and alert rules, checked by the real tools -----------------------


def test_rendered_configs_are_valid(tmp_path: Path) -> None:
    rules = render_rules(tmp_path, for_duration="2s")
    prometheus = render_prometheus_config(
        tmp_path, simulator_port=18000, alertmanager_port=19093, rules_path=rules
    )
    alertmanager = render_alertmanager_config(tmp_path, webhook_url="http://127.0.0.1:9/hook")
    _run("promtool", "check", "config", str(prometheus))
    _run("amtool", "check-config", str(alertmanager))
    scrape = yaml.safe_load(prometheus.read_text())["scrape_configs"][0]
    assert scrape["static_configs"][0] == {
        "targets": ["127.0.0.1:18000"],
        "labels": {"service": "rag-api", "namespace": "production"},
    }
    receiver = yaml.safe_load(alertmanager.read_text())["receivers"][0]["webhook_configs"][0]
    assert receiver == {"url": "http://127.0.0.1:9/hook", "send_resolved": True}


def test_alert_rules_fire_at_the_playbook_thresholds(tmp_path: Path) -> None:
    """`promtool test rules` on synthetic series shaped like backfilled ones (no job/instance)."""
    render_rules(tmp_path, for_duration="2s")
    buckets = "http_request_duration_seconds_bucket"
    cases = {
        "error_warning": [
            ('http_requests_total{service="svc-a",code="200"}', "0+97x30"),
            ('http_requests_total{service="svc-a",code="500"}', "0+3x30"),
        ],
        "error_critical": [
            ('http_requests_total{service="svc-b",code="200"}', "0+80x30"),
            ('http_requests_total{service="svc-b",code="500"}', "0+20x30"),
        ],
        "latency_warning": [  # P99 0.75 s
            (f'{buckets}{{service="svc-c",le="0.5"}}', "0+196x30"),
            (f'{buckets}{{service="svc-c",le="0.75"}}', "0+198x30"),
            (f'{buckets}{{service="svc-c",le="+Inf"}}', "0+200x30"),
        ],
        "latency_critical": [  # P99 1.5 s
            (f'{buckets}{{service="svc-d",le="1.0"}}', "0+197x30"),
            (f'{buckets}{{service="svc-d",le="2.5"}}', "0+200x30"),
            (f'{buckets}{{service="svc-d",le="+Inf"}}', "0+200x30"),
        ],
        "health": [
            ('rag_healthy{service="svc-e",job="j",instance="i"}', "0x30"),
            ('up{service="svc-f",job="j",instance="i"}', "0x30"),
            ('up{service="svc-g",job="j",instance="i"}', "1x30"),
        ],
        "quality": [('rag_quality_ndcg{service="svc-h"}', "0.55x30")],
    }

    def alert(service: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "exp_labels": {"service": service, "severity": severity},
            "exp_annotations": {"summary": summary},
        }

    expected = {
        "RollbackHighErrorRate": [
            alert("svc-a", "warning", "svc-a error rate 3% > 1%"),
            alert("svc-b", "warning", "svc-b error rate 20% > 1%"),
            alert("svc-b", "critical", "svc-b error rate 20% > 5%"),
        ],
        "RollbackHighLatency": [
            alert("svc-c", "warning", "svc-c P99 latency 750ms > 500ms"),
            alert("svc-d", "warning", "svc-d P99 latency 1.5s > 500ms"),
            alert("svc-d", "critical", "svc-d P99 latency 1.5s > 1000ms"),
        ],
        "RollbackServiceUnhealthy": [
            alert("svc-e", "critical", "svc-e is unhealthy"),
            alert("svc-f", "critical", "svc-f is unhealthy"),
        ],
        "RollbackLowRagQuality": [
            alert("svc-h", "warning", "svc-h RAG quality NDCG 0.55 < 0.7"),
            alert("svc-h", "critical", "svc-h RAG quality NDCG 0.55 < 0.6"),
        ],
    }
    series = [
        {"series": name, "values": values} for case in cases.values() for name, values in case
    ]
    checks = [{"eval_time": "1s", "alertname": name, "exp_alerts": []} for name in expected] + [
        {"eval_time": "20s", "alertname": name, "exp_alerts": alerts}
        for name, alerts in expected.items()
    ]
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["rules.yml"],
                "evaluation_interval": "1s",
                "tests": [{"interval": "1s", "input_series": series, "alert_rule_test": checks}],
            }
        )
    )
    _run("promtool", "test", "rules", str(test_file))


def _run(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}"


# --- the real Prometheus and Alertmanager ----------------------------------------------


@dataclass(frozen=True)
class MetricsStack:
    """The running stack of one test module."""

    prometheus_url: str
    image: ImageSwitch
    sink: LoopbackServer
    history_end: float


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsStack]:
    root = tmp_path_factory.mktemp("metrics-stack")
    now = time.time()
    steps = [
        TrafficStep(now - 3600, 20.0, 0.02, 0.2),
        TrafficStep(now - 1800, 20.0, 0.10, 0.8),
        TrafficStep(now - 600, 20.0, 0.0, 0.05),
    ]
    backfill(render_history(steps, end=now - 120), root / "prometheus-data")

    image = ImageSwitch(GOOD_IMAGE)
    simulator = Simulator(load_config(), image, requests_per_second=40.0, poll_interval_seconds=0.2)
    prometheus_port, alertmanager_port = free_port(), free_port()
    with LoopbackServer() as sink:
        simulator_port = simulator.start()
        pids: list[int] = []
        try:
            am_config = render_alertmanager_config(root, webhook_url=f"{sink.url}/hook")
            pids.append(
                start_alertmanager(
                    am_config, root / "alertmanager-data", alertmanager_port, root / "am.log"
                )
            )
            prom_config = render_prometheus_config(
                root,
                simulator_port=simulator_port,
                alertmanager_port=alertmanager_port,
                rules_path=render_rules(root, for_duration="2s"),
            )
            pids.append(
                start_prometheus(
                    prom_config, root / "prometheus-data", prometheus_port, root / "prom.log"
                )
            )
            yield MetricsStack(f"http://127.0.0.1:{prometheus_port}", image, sink, now - 120)
        finally:
            for pid in reversed(pids):
                stop(pid)
            simulator.stop()


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_backfilled_history_gives_past_error_ratio_and_p99(metrics_stack: MetricsStack) -> None:
    end = metrics_stack.history_end
    at = {"t-50m": end + 120 - 3000, "t-20m": end + 120 - 1200}
    ratio, p99 = error_ratio_expr("5m", "rag-api"), p99_latency_expr("5m", "rag-api")
    assert _query_one(metrics_stack, ratio, at["t-50m"]) == pytest.approx(0.02, abs=1e-3)
    assert _query_one(metrics_stack, ratio, at["t-20m"]) == pytest.approx(0.10, abs=1e-3)
    assert _query_one(metrics_stack, p99, at["t-50m"]) == pytest.approx(0.2, rel=0.01)
    assert _query_one(metrics_stack, p99, at["t-20m"]) == pytest.approx(0.8, rel=0.01)
    series = _query(metrics_stack, "http_requests_total", at["t-20m"])
    assert {item["metric"].get("job") for item in series} == {None}  # backfilled: no job


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_live_error_ratio_follows_the_deployed_version(metrics_stack: MetricsStack) -> None:
    ratio = error_ratio_expr("5s", "rag-api")
    _wait_good(metrics_stack)
    metrics_stack.image.image = BAD_IMAGE
    try:
        _eventually(lambda: abs(_query_one(metrics_stack, ratio) - 0.2) < 0.03, timeout=20.0)
        build = _query(metrics_stack, "rag_build_info")
        assert [item["metric"]["version"] for item in build] == ["v1.2.4"]
    finally:
        metrics_stack.image.image = GOOD_IMAGE


@pytest.mark.stack
@pytest.mark.timeout(90)
def test_alertmanager_posts_the_alert_to_the_webhook(metrics_stack: MetricsStack) -> None:
    _wait_good(metrics_stack)
    sink = metrics_stack.sink
    seen = len(sink.received)

    def carries(status: str) -> Callable[[Received], bool]:
        def matches(item: Received) -> bool:
            return any(
                alert["status"] == status
                and alert["labels"].get("alertname") == "RollbackHighErrorRate"
                and alert["labels"].get("severity") == "critical"
                for alert in item.body["alerts"]
            )

        return matches

    metrics_stack.image.image = BAD_IMAGE
    try:
        firing = sink.wait_for(carries("firing"), timeout=30.0, since=seen)
    finally:
        metrics_stack.image.image = GOOD_IMAGE
    assert firing.path == "/hook"
    assert firing.headers["User-Agent"].startswith("Alertmanager/")
    assert firing.body["receiver"] == "webhook"
    assert firing.body["groupLabels"] == {
        "alertname": "RollbackHighErrorRate",
        "service": "rag-api",
    }
    alert = next(a for a in firing.body["alerts"] if a["labels"]["severity"] == "critical")
    assert alert["labels"] == {  # the namespace names the environment it is about
        "alertname": "RollbackHighErrorRate",
        "namespace": "production",
        "service": "rag-api",
        "severity": "critical",
    }
    assert alert["annotations"]["summary"].startswith("rag-api error rate ")

    resolved = sink.wait_for(carries("resolved"), timeout=30.0, since=seen)
    assert any(a["fingerprint"] == alert["fingerprint"] for a in resolved.body["alerts"])


def _wait_good(stack: MetricsStack) -> None:
    """Wait until the simulator serves the good version, scraped, with no alert pending."""
    stack.image.image = GOOD_IMAGE

    def calm() -> bool:
        alerts = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=5.0).json()
        ratios = _query(stack, error_ratio_expr("5s", "rag-api"))
        return not alerts["data"]["alerts"] and [r["value"][1] for r in ratios] == ["0"]

    _eventually(calm, timeout=30.0)


def _query(stack: MetricsStack, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    reply = httpx.get(f"{stack.prometheus_url}/api/v1/query", params=params, timeout=5.0)
    reply.raise_for_status()
    result: list[dict[str, Any]] = reply.json()["data"]["result"]
    return result


def _query_one(stack: MetricsStack, expr: str, at: float | None = None) -> float:
    result = _query(stack, expr, at)
    assert len(result) == 1, f"{expr} at {at}: expected one series, got {result}"
    assert result[0]["metric"] == {"service": "rag-api"}
    return float(result[0]["value"][1])


def _eventually(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.2)
