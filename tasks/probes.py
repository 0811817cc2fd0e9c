"""HTTP probes of a service: GET /health and GET /version, like the playbook's `curl`.

Any HTTP answer is an observation (a 503 from /health is a result, not an error); only
connection failures and timeouts raise, as transient errors that the task retries.
"""

from __future__ import annotations

import os
import time

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from playbook.checks import ProbeResult, version_from_body
from playbook.errors import InvalidInputError
from playbook.post_rollback import ProbeSettings
from playbook.services import ServiceConfig
from tasks.boundary import retry_condition_fn, translate_error

SERVICE_URL_ENV = "ROLLBACK_FLOWS_SERVICE_URL"


def probe_urls(service: ServiceConfig, base_url: str | None = None) -> tuple[str, str]:
    """The /health and /version URLs: `base_url`, else `$ROLLBACK_FLOWS_SERVICE_URL` (both + the
    path), else the service's configured `health_url` and `version_url`."""
    base = base_url or os.environ.get(SERVICE_URL_ENV)
    if base:
        if not base.startswith(("http://", "https://")):
            raise InvalidInputError(f"malformed service URL {base!r}: expected http(s)://...")
        base = base.rstrip("/")
        return f"{base}/health", f"{base}/version"
    if service.health_url is None or service.version_url is None:
        raise InvalidInputError(
            f"service {service.name!r} has no health_url/version_url in the services file; "
            f"pass base_url or set {SERVICE_URL_ENV}"
        )
    return str(service.health_url), str(service.version_url)


def _get(url: str, settings: ProbeSettings) -> tuple[httpx.Response, float]:
    verify: bool | str = str(settings.ca_bundle) if settings.ca_bundle else settings.verify_tls
    started = time.monotonic()
    try:
        with httpx.Client(timeout=settings.timeout_seconds, verify=verify) as client:
            response = client.get(url, headers={"Accept": "application/json, text/plain"})
    except httpx.HTTPError as exc:
        raise translate_error(exc, f"GET {url}") from exc
    return response, time.monotonic() - started


def _excerpt(response: httpx.Response, chars: int) -> str:
    return " ".join(response.text[:chars].split())


@task(
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=60,
    cache_policy=NO_CACHE,
)
def probe_health(url: str, settings: ProbeSettings | None = None) -> ProbeResult:
    """GET the health endpoint: status, latency and the start of the body."""
    settings = settings or ProbeSettings()
    response, seconds = _get(url, settings)
    return ProbeResult(
        url, response.status_code, seconds, _excerpt(response, settings.body_excerpt_chars)
    )


@task(
    retries=2,
    retry_delay_seconds=[1, 3],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=60,
    cache_policy=NO_CACHE,
)
def probe_version(url: str, settings: ProbeSettings | None = None) -> ProbeResult:
    """GET the version endpoint: as `probe_health`, plus the version it reports (JSON or text)."""
    settings = settings or ProbeSettings()
    response, seconds = _get(url, settings)
    version = version_from_body(response.text) if response.status_code == 200 else None
    return ProbeResult(
        url,
        response.status_code,
        seconds,
        _excerpt(response, settings.body_excerpt_chars),
        version,
    )
