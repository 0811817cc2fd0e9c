"""The Alertmanager webhook receiver: authenticated, validated alerts become flow runs, once.

POST /alerts takes Alertmanager's webhook (payload version 4):

- 401 unless `Authorization: Bearer <token>` matches the secret (constant-time comparison);
- 413 when the body is larger than `max_body_bytes` (checked before and while reading);
- 400 with the reason when the body is not JSON or not a version-4 payload;
- otherwise 200 and one outcome per alert. A firing alert that matches a route starts that
  route's deployment with an idempotency key from its fingerprint and `startsAt`, so repeated
  deliveries map to the one run; while another rollback of the same service is scheduled or
  running, it is refused with the reason. Resolved and unrouted alerts start nothing. Every
  alert is recorded as a Prefect event (`rollback-flows.alert.<action>`);
- 503 when the Prefect API cannot be reached or does not answer within
  `answer_within_seconds`, so Alertmanager delivers again later (a run created before that
  is found again by its idempotency key: the redelivery starts nothing more).

GET /health answers 200 with the receiver's counters and whether Prefect answers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from playbook.errors import InvalidInputError, PermanentError, RollbackError, TransientError
from playbook.names import lock_name, target_tag
from playbook.services import ServiceConfig, ServicesFile
from receiver.alerts import Alert, InvalidPayload, WebhookPayload, idempotency_key, parse_payload
from receiver.config import ReceiverConfig, Route
from receiver.runs import PrefectRuns, RunRef

log = logging.getLogger("rollback_flows.receiver")

_SEEN_LIMIT = 10_000
UNAVAILABLE = "unavailable"
"""The /health counter of alerts answered 503 (Alertmanager delivers them again)."""


class Action(StrEnum):
    """What the receiver did with one alert."""

    STARTED = "started"
    DUPLICATE = "duplicate"
    REFUSED = "refused"
    RESOLVED = "resolved"
    UNROUTED = "unrouted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class AlertOutcome:
    """The receiver's answer for one alert."""

    fingerprint: str
    alertname: str
    status: str
    action: Action
    message: str
    route: str | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None


class Receiver:
    """Turns validated webhook payloads into flow runs; one instance per app."""

    def __init__(self, config: ReceiverConfig, services: ServicesFile, runs: PrefectRuns) -> None:
        self.config = config
        self.services = services
        self.runs = runs
        self.counts: Counter[str] = Counter()
        self._service_locks: dict[str, asyncio.Lock] = {}
        self._seen: OrderedDict[str, AlertOutcome] = OrderedDict()

    async def handle(self, payload: WebhookPayload) -> list[AlertOutcome]:
        """One outcome per alert of the payload, in order.

        An Alertmanager group's webhook can name many services: their alerts are handled at
        once, each service's own one after another in the payload's order (its lock is
        first come, first served). Every alert is handled before an error is raised, so a
        failure answers the webhook only when nothing is still being started.
        """
        results = await asyncio.gather(
            *(self._handle_and_record(alert) for alert in payload.alerts),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [result for result in results if isinstance(result, AlertOutcome)]

    async def _handle_and_record(self, alert: Alert) -> AlertOutcome:
        outcome = await self._handle_alert(alert)
        self.counts[outcome.action.value] += 1
        log.info(
            "alert %s %s (%s): %s: %s",
            outcome.alertname,
            outcome.fingerprint,
            outcome.status,
            outcome.action.value,
            outcome.message,
        )
        await self._record(alert, outcome)
        return outcome

    async def _handle_alert(self, alert: Alert) -> AlertOutcome:
        def outcome(action: Action, message: str, **more: Any) -> AlertOutcome:
            return AlertOutcome(
                alert.fingerprint, alert.alertname, alert.status, action, message, **more
            )

        if alert.status == "resolved":
            return outcome(Action.RESOLVED, "resolved: recorded, nothing started")
        route = self.config.route_for(alert)
        if route is None:
            return outcome(Action.UNROUTED, "no route matches this alert's labels; nothing started")
        parameters = route.parameters_for(alert)
        try:
            service = self.services.get(str(parameters["service"]))
            environment = _environment_of(service, parameters)
        except PermanentError as exc:
            return outcome(Action.REJECTED, str(exc), route=route.name)
        namespace = service.environments[environment].namespace
        target = f"{namespace}/{service.name}"
        lock = self._service_locks.setdefault(target, asyncio.Lock())
        async with lock:
            return await self._start(alert, route, parameters, namespace, service.name, outcome)

    async def _start(
        self,
        alert: Alert,
        route: Route,
        parameters: dict[str, Any],
        namespace: str,
        service: str,
        outcome: Any,
    ) -> AlertOutcome:
        key = idempotency_key(alert)
        if key in self._seen:
            seen = self._seen[key]
            return outcome(
                Action.DUPLICATE,
                f"already started as flow run {seen.flow_run_name}",
                route=route.name,
                flow_run_id=seen.flow_run_id,
                flow_run_name=seen.flow_run_name,
            )
        deployment_id = await self.runs.deployment_id(route.deployment)
        tag = target_tag(namespace, service)
        # three reads of the server at once; their answers are taken in this order
        existing, running, locked = await asyncio.gather(
            self.runs.run_with_key(deployment_id, key),
            self.runs.active_runs(tag),
            self.runs.lock_in_use(lock_name(namespace, service)),
        )
        if existing is not None:
            return self._remember(key, outcome(*_duplicate(existing), **_run(route, existing)))
        active = [run for run in running if run.idempotency_key != key]
        if active:
            busy = ", ".join(f"{r.name} ({r.state}, id {r.id})" for r in active)
            return outcome(
                Action.REFUSED,
                f"refused: a rollback of {namespace}/{service} is already in progress: {busy}; "
                "this alert is recorded and starts nothing",
                route=route.name,
            )
        if locked:
            return outcome(
                Action.REFUSED,
                f"refused: a rollback of {namespace}/{service} holds the service's lock; "
                "this alert is recorded and starts nothing",
                route=route.name,
            )
        run = await self.runs.create_run(
            deployment_id,
            parameters,
            key,
            name=f"{route.name}-{service}-{alert.fingerprint}",
            tags=["alert", "automatic", f"route:{route.name}", tag],
        )
        return self._remember(
            key,
            outcome(
                Action.STARTED,
                f"started flow run {run.name} of {route.deployment}",
                **_run(route, run),
            ),
        )

    def _remember(self, key: str, outcome: AlertOutcome) -> AlertOutcome:
        self._seen[key] = outcome
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        return outcome

    async def _record(self, alert: Alert, outcome: AlertOutcome) -> None:
        """Record the alert and what was done as a Prefect event (best effort)."""
        key = idempotency_key(alert)
        resource = {
            "prefect.resource.id": f"prometheus.alert.{alert.fingerprint}",
            "prefect.resource.name": alert.alertname or alert.fingerprint,
            **{f"alert.label.{k}": v for k, v in alert.labels.items()},
        }
        payload = {
            "idempotency_key": key,
            "starts_at": alert.starts_at.isoformat(),
            "ends_at": alert.ends_at.isoformat() if alert.ends_at else None,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            **{k: v for k, v in asdict(outcome).items() if k not in ("fingerprint", "status")},
        }
        try:
            await self.runs.record_event(
                f"rollback-flows.alert.{outcome.action.value}", key, resource, payload
            )
        except Exception as exc:  # best effort: the outcome stands without its event
            log.warning("could not record alert %s as a Prefect event: %s", key, exc)


def _environment_of(service: ServiceConfig, parameters: dict[str, Any]) -> str:
    """The environment an alert is about, from its `namespace` (and `cluster`) parameters.

    Raises:
        InvalidInputError: the alert names no namespace, or no single environment of the
            service has that namespace and cluster; the alert starts nothing.
    """
    namespace, cluster = parameters.get("namespace"), parameters.get("cluster")
    if not namespace:
        raise InvalidInputError(
            f"rejected: the alert names no namespace, so it names none of the environments of "
            f"{service.name} ({service.known_environments()}); give the alert a `namespace` "
            'label and its route `namespace: "{{ labels.namespace }}"`'
        )
    try:
        return service.environment_for(str(namespace), str(cluster) if cluster else None)
    except InvalidInputError as exc:
        raise InvalidInputError(f"rejected: {exc}; nothing outside it is touched") from None


def _duplicate(run: RunRef) -> tuple[Action, str]:
    return Action.DUPLICATE, f"already started as flow run {run.name} ({run.state})"


def _run(route: Route, run: RunRef) -> dict[str, Any]:
    return {"route": route.name, "flow_run_id": run.id, "flow_run_name": run.name}


def authorized(header: str | None, token: SecretStr) -> bool:
    """Whether an Authorization header carries the bearer token (constant-time comparison)."""
    scheme, _, presented = (header or "").partition(" ")
    expected = token.get_secret_value().encode()
    ok = hmac.compare_digest(presented.strip().encode(), expected)
    return ok and scheme.lower() == "bearer" and bool(expected)


def _error(status: int, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse({"status": "error", "reason": reason}, status_code=status, headers=headers)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` bytes (reading stops there)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    config: ReceiverConfig,
    token: SecretStr,
    services: ServicesFile,
    prefect_api_url: str | None = None,
) -> FastAPI:
    """The receiver as an ASGI app talking to the Prefect API at `prefect_api_url`."""
    if not token.get_secret_value():
        raise PermanentError("the receiver's bearer token is empty")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        settings = {PREFECT_API_URL: prefect_api_url} if prefect_api_url else {}
        with temporary_settings(settings):
            async with get_client(httpx_settings={"timeout": config.prefect_timeout_seconds}) as c:
                app.state.receiver = Receiver(config, services, PrefectRuns(c))
                app.state.client = c
                yield

    app = FastAPI(title="rollback-flows alert receiver", lifespan=lifespan)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        receiver: Receiver = request.app.state.receiver
        try:
            await asyncio.wait_for(request.app.state.client.api_healthcheck(), 5)
            prefect = "ok"
        except Exception as exc:  # reported, not raised: the receiver itself is up
            prefect = f"unreachable: {type(exc).__name__}"
        return JSONResponse(
            {"status": "ok", "prefect": prefect, "alerts": dict(receiver.counts)}, 200
        )

    @app.post("/alerts")
    async def alerts(request: Request) -> JSONResponse:
        if not authorized(request.headers.get("authorization"), token):
            return _error(401, "missing or invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return _error(400, "Content-Length is not a number")
            if int(declared) > config.max_body_bytes:
                return _error(413, f"body larger than {config.max_body_bytes} bytes")
        raw = await _read_limited(request, config.max_body_bytes)
        if raw is None:
            return _error(413, f"body larger than {config.max_body_bytes} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return _error(400, f"body is not valid JSON: {str(exc)[:200]}")
        try:
            payload = parse_payload(data)
        except InvalidPayload as exc:
            return _error(400, f"not an Alertmanager version-4 webhook: {exc}")
        receiver: Receiver = request.app.state.receiver
        try:
            outcomes = await asyncio.wait_for(
                receiver.handle(payload), config.answer_within_seconds
            )
        except TimeoutError:
            reason = (
                f"Prefect did not answer within {config.answer_within_seconds:g} s, "
                "deliver again later"
            )
        except TransientError as exc:
            reason = f"Prefect is unavailable, deliver again later: {exc}"
        except RollbackError as exc:
            reason = f"cannot start flow runs: {exc}"
        else:
            return JSONResponse(
                {"status": "ok", "alerts": [asdict(outcome) for outcome in outcomes]}, 200
            )
        # Each alert of the payload is to be delivered again: counted, never dropped.
        receiver.counts[UNAVAILABLE] += len(payload.alerts)
        log.warning("answering 503 for %d alert(s): %s", len(payload.alerts), reason)
        return _error(503, reason)

    return app
