"""The canary guard watches the canary itself: its own series (the service's metrics with the
canary's track and version) and its own /health, never the stable service's. Pure query
rendering first, then the guard on the real stack, where a second simulator serves the canary
(`--track canary`, a twentieth of stable's requests) and Prometheus scrapes both."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster import REPOSITORY, deployment_body, eventually, snapshot, use_services
from cluster import wait_rolled_out as rolled_out
from kubernetes import client
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows.canary_guard import canary_guard
from playbook.errors import InvalidInputError
from playbook.guard import CanaryTriggers, Health, Trigger
from playbook.names import ledger_name, lock_name
from playbook.services import DEFAULT_SERVICES_FILE, CanaryConfig, load_services
from playbook.thresholds import DEFAULT_MATRIX_FILE, load_decision_matrix
from stack.local import StackState
from tasks.concurrency import forget_rollbacks

MATRIX = load_decision_matrix(DEFAULT_MATRIX_FILE)
CANARY = load_services(DEFAULT_SERVICES_FILE).get("rag-api").canary
GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
STABLE, CANARY_VERSION = "v1.2.3", "v1.3.0"


# --- the canary's own series, rendered from the matrix's queries (pure) ----------------------


def test_the_guards_queries_select_the_canarys_track_and_version() -> None:
    assert CANARY is not None
    own = CANARY.own_series("v1.3.0")
    assert own == {"track": "canary", "version": "v1.3.0"}
    assert MATRIX.indicator("error_rate").render("rag-api", "1m", own) == (
        '(sum(rate(http_requests_total{service="rag-api",track="canary",version="v1.3.0",'
        'code=~"5.."}[1m])) or sum(rate(http_requests_total{service="rag-api",track="canary",'
        'version="v1.3.0"}[1m])) * 0) / sum(rate(http_requests_total{service="rag-api",'
        'track="canary",version="v1.3.0"}[1m]))'
    )
    assert MATRIX.indicator("p99_latency").render("rag-api", "1m", own) == (
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{service="rag-api",track="canary",version="v1.3.0"}[1m])))'
    )
    # an image without a tag: the track alone
    assert CANARY.own_series(None) == {"track": "canary"}


def test_quotes_backslashes_dollars_and_newlines_render_escaped() -> None:
    labels = {"track": 'can"ary\\', "version": "v1.3.0$window"}
    query = MATRIX.indicator("p99_latency").render('rag"api\nx  é', "30s", labels)
    assert query == (
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{service="rag\\"api\\nx  é",track="can\\"ary\\\\",version="v1.3.0$window"}[30s])))'
    )


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ({"series_labels": {"tr-ack": "canary"}}, "series_labels"),
        ({"series_labels": {"version": "v1"}}, r"must not set \['version'\]"),
        ({"series_labels": {"service": "x", "track": "canary"}}, r"must not set \['service'\]"),
        ({"series_labels": {}}, "the version alone would also select stable pods"),
        ({"health_url": "rag-api-canary/health"}, "health_url"),
        ({"health_url": "ftp://rag-api-canary/health"}, "health_url"),
    ],
)
def test_a_bad_canary_description_is_refused(canary: dict[str, Any], message: str) -> None:
    base = {
        "deployment": "rag-api-canary",
        "virtual_service": "rag-api",
        "canary_destination": {"host": "rag-api", "subset": "canary"},
        "stable_destination": {"host": "rag-api", "subset": "stable"},
    }
    with pytest.raises(ValueError, match=message):
        CanaryConfig.model_validate({**base, **canary})


def test_the_canary_health_url_is_its_environments() -> None:
    services = load_services(DEFAULT_SERVICES_FILE).get("rag-api")
    urls = {
        name: services.in_environment(name).canary.health_url_in(env.namespace)  # type: ignore[union-attr]
        for name, env in services.environments.items()
    }
    assert urls == {
        "production": "http://rag-api-canary.production.svc.cluster.local:8080/health",
        "staging": "http://rag-api-canary.staging.svc.cluster.local:8080/health",
    }
    assert urls["production"] != str(services.health_url)  # never the stable service's


# --- the guard on the real stack ----------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """A canary phase in the simulators' namespace: stable and canary Deployments, a split."""

    stack: StackState
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi
    namespace: str

    def start(self, stable: str, canary: str) -> None:
        """rag-api at `stable` (3 pods), rag-api-canary at `canary` (1 pod), a 95/5 split;
        returns once each simulator serves its version and the canary's series has data."""
        ns = self.namespace
        self.apps.create_namespaced_deployment(ns, deployment_body(f"{REPOSITORY}:{stable}"))
        self.apps.create_namespaced_deployment(
            ns, deployment_body(f"{REPOSITORY}:{canary}", replicas=1, name="rag-api-canary")
        )
        route = [
            {"destination": {"host": "rag-api", "subset": "stable"}, "weight": 95},
            {"destination": {"host": "rag-api", "subset": "canary"}, "weight": 5},
        ]
        self.custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "VirtualService",
                "metadata": {"name": "rag-api"},
                "spec": {"hosts": ["rag-api"], "http": [{"name": "split", "route": route}]},
            },
        )
        rolled_out(self.apps, ns, "rag-api")
        rolled_out(self.apps, ns, "rag-api-canary")
        for url, version in ((self.stack.simulator_url, stable), (self.stack.canary_url, canary)):
            eventually(lambda u=url, v=version: served(u) == v, 20, f"{url} serving {version}")
        eventually(lambda: self.error_ratio(canary) is not None, 20, "the canary's series")

    def error_ratio(self, canary_version: str | None = None) -> float | None:
        """The error ratio over 5 s: the canary's own (its version) or, without, the service's."""
        labels = CANARY.own_series(canary_version) if canary_version and CANARY else None
        query = MATRIX.indicator("error_rate").render("rag-api", "5s", labels)
        return prometheus_value(self.stack, query)

    def routes(self) -> list[dict[str, Any]]:
        vs = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, "rag-api"
        )
        return list(vs["spec"]["http"])

    def canary_replicas(self) -> int:
        return int(
            self.apps.read_namespaced_deployment("rag-api-canary", self.namespace).spec.replicas
        )


def served(url: str) -> str:
    return str(httpx.get(f"{url}/version", timeout=2).json()["version"])


def prometheus_value(stack: StackState, query: str) -> float | None:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": query}, timeout=5)
    body = response.json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    value = float(result[0]["value"][1]) if result else None
    return None if value is None or value != value else value  # NaN: no data


@pytest.fixture
def phase(
    local_stack: StackState,
    kube_api: client.ApiClient,
    simulator_namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Phase]:
    """The session's simulators' namespace, described with the canary's own /health (the
    canary simulator's); its VirtualService and the guards' state removed afterwards (the
    Deployments go with `simulator_namespace`)."""
    ns = simulator_namespace
    use_services(monkeypatch, tmp_path, ns, canary_url=local_stack.canary_url)
    custom = client.CustomObjectsApi(kube_api)
    yield Phase(local_stack, client.AppsV1Api(kube_api), custom, ns)
    with contextlib.suppress(client.ApiException):
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "rag-api")
    forget_rollbacks(ledger_name(ns, "rag-api"))
    with get_client(sync_client=True) as c, contextlib.suppress(ObjectNotFound):
        c.delete_global_concurrency_limit_by_name(lock_name(ns, "rag-api"))


@pytest.mark.stack
@pytest.mark.timeout(180)
def test_a_failing_canary_beside_a_healthy_stable_is_rolled_back_on_its_own_error_rate(
    phase: Phase,
) -> None:
    canary = f"{CANARY_VERSION}-half-failing"  # half of the canary's requests fail
    phase.start(STABLE, canary)
    eventually(lambda: (phase.error_ratio(canary) or 0) > 0.3, 20, "the canary's errors")
    # the service's series: the canary's 50 % at a twentieth of the requests is under 5 %,
    # what a guard reading them would have let through
    service_wide = phase.error_ratio()
    assert service_wide is not None and 0 < service_wide < 0.05
    stable_before = snapshot(phase.apps, phase.namespace)

    result = canary_guard(
        "rag-api",
        triggers=CanaryTriggers(window_seconds=60),
        interval_seconds=1,
        rate_window="5s",
        canary_version=canary,
    )

    assert result.outcome == "rolled_back"
    assert [f.trigger for f in result.verdict.fired] == [Trigger.ERROR_RATE]
    ratio = result.verdict.observation.error_ratio
    # the canary's own (half of its few requests a second fail), not the service's (< 5 %)
    assert ratio is not None and ratio > 0.3
    assert result.series == {"track": "canary", "version": canary}
    assert result.health_url == f"{phase.stack.canary_url}/health"
    assert result.rollback is not None and result.rollback.procedure == "canary_rollback"
    reason = result.rollback.reason
    assert reason.startswith("canary guard: error rate above the limit: ")
    assert f'the canary\'s own series track="canary",version="{canary}"' in reason
    assert f"{ratio * 100:.2f} %" in result.to_markdown()
    # the cluster: the split sends everything to stable, the canary is scaled to 0
    assert phase.routes() == [
        {
            "name": "split",
            "route": [{"destination": {"host": "rag-api", "subset": "stable"}, "weight": 100}],
        }
    ]
    assert phase.canary_replicas() == 0
    assert snapshot(phase.apps, phase.namespace) == stable_before


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_a_healthy_canary_beside_a_failing_stable_is_not_rolled_back(phase: Phase) -> None:
    phase.start("v1.2.4", CANARY_VERSION)  # stable fails 20 % of its requests
    # the service's series are critical: a guard reading them would roll the canary back
    eventually(lambda: (phase.error_ratio() or 0) > 0.05, 20, "the service's errors")
    before = phase.routes()

    result = canary_guard(
        "rag-api",
        triggers=CanaryTriggers(window_seconds=5),
        interval_seconds=1,
        rate_window="5s",
        canary_version=CANARY_VERSION,
    )

    assert result.outcome == "passed" and result.rollback is None
    assert result.verdict.window_over and not result.verdict.fired
    seen = result.verdict.observation
    assert seen.health is Health.HEALTHY
    assert seen.error_ratio == 0.0  # the canary's own requests: none failed
    assert seen.p99_seconds is not None and 0 < seen.p99_seconds < 0.3
    assert result.series == {"track": "canary", "version": CANARY_VERSION}
    assert phase.routes() == before
    assert phase.canary_replicas() == 1


@pytest.mark.stack
@pytest.mark.timeout(120)
def test_the_canarys_failing_health_endpoint_is_seen_while_stables_is_fine(
    phase: Phase,
) -> None:
    canary = f"{CANARY_VERSION}-unhealthy"
    phase.start(STABLE, canary)
    assert httpx.get(f"{phase.stack.simulator_url}/health", timeout=2).status_code == 200
    assert httpx.get(f"{phase.stack.canary_url}/health", timeout=2).status_code == 503
    before = phase.routes()

    result = canary_guard(
        "rag-api",
        triggers=CanaryTriggers(window_seconds=60),
        interval_seconds=1,
        rate_window="5s",
        dry_run=True,
    )

    assert result.outcome == "dry_run"
    assert [f.trigger for f in result.verdict.fired] == [Trigger.UNHEALTHY]
    seen = result.verdict.observation
    assert seen.health is Health.UNHEALTHY
    assert seen.health_detail.startswith("the canary's /health answered 503")
    assert f"version {canary} is configured unhealthy" in seen.health_detail
    assert phase.routes() == before and phase.canary_replicas() == 1  # a dry run


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_the_guard_refuses_a_canary_without_its_own_health_url(
    local_stack: StackState, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_services(monkeypatch, tmp_path, namespace)  # the canary section has no health_url
    with pytest.raises(InvalidInputError, match="has no canary health_url in the services file"):
        canary_guard("rag-api", triggers=CanaryTriggers(window_seconds=1))


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_an_escaped_selector_is_valid_promql(local_stack: StackState) -> None:
    labels = {"track": 'can"ary\\', "version": "v1.3.0$x"}
    query = MATRIX.indicator("error_rate").render('rag"api\nx', "5s", labels)
    assert prometheus_value(local_stack, query) is None  # accepted, no such series
    unescaped = 'sum(rate(http_requests_total{service="rag"api"}[5s]))'
    response = httpx.get(
        f"{local_stack.prometheus_url}/api/v1/query", params={"query": unescaped}, timeout=5
    )
    assert response.json()["status"] == "error"  # what escaping prevents
