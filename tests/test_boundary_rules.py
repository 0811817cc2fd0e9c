"""The boundary's translation of what prometheus_api_client and requests raise (Prometheus's
own error message, quotes and all; a body that is not Prometheus's; a timeout, a refused
connection, a broken answer), the retry condition inside an event loop, and the logger of a
task function called outside a run. Pure: the exceptions are built as the libraries build
them, nothing is sent."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import requests
from prefect.states import Failed
from prometheus_api_client import PrometheusApiClientException

from playbook.errors import (
    InvalidInputError,
    NetworkError,
    RequestTimeoutError,
    ServerError,
)
from tasks.boundary import retry_condition_fn, run_logger, translate_prometheus_error

WHAT = 'Prometheus query at 2026-12-02T03:00:00+00:00: sum(rate(http_requests_total{service="rag-api"}[5m]))'


def client_error(status: int, content: bytes) -> PrometheusApiClientException:
    """What prometheus_api_client raises for an answer that is not 200."""
    return PrometheusApiClientException(f"HTTP Status Code {status} ({content!r})")


def prometheus_body(error_type: str, error: str) -> bytes:
    """Prometheus's JSON error body, as its HTTP API writes it."""
    body = {"status": "error", "errorType": error_type, "error": error}
    return json.dumps(body, separators=(",", ":")).encode()


def test_a_promql_parse_error_gives_prometheus_own_message_with_its_quotes() -> None:
    error = '1:51: parse error: unexpected "=" in label matching, expected string'
    translated = translate_prometheus_error(
        client_error(400, prometheus_body("bad_data", error)), WHAT
    )
    assert type(translated) is InvalidInputError
    assert str(translated) == f"{WHAT} failed with HTTP 400: {error}"


def test_a_query_that_timed_out_inside_prometheus_is_a_server_error_with_its_message() -> None:
    error = "query timed out in expression evaluation"
    translated = translate_prometheus_error(
        client_error(503, prometheus_body("timeout", error)), WHAT
    )
    assert type(translated) is ServerError
    assert str(translated) == f"{WHAT} failed with HTTP 503: {error}"


def test_an_answer_that_is_not_prometheus_json_is_quoted_as_it_came() -> None:
    # through the API server's service proxy, with no Prometheus pod ready: a Status
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'no endpoints available for service "prometheus"',
        "reason": "ServiceUnavailable",
        "code": 503,
    }
    content = json.dumps(status).encode()
    translated = translate_prometheus_error(client_error(503, content), WHAT)
    assert type(translated) is ServerError
    assert str(translated) == f"{WHAT} failed with HTTP 503: {content!r}"
    # a proxy's page, not JSON at all: its first 300 characters
    page = (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        + b"<!-- padding -->\r\n" * 30
    )
    bad_gateway = translate_prometheus_error(client_error(502, page), WHAT)
    assert type(bad_gateway) is ServerError
    assert str(bad_gateway) == f"{WHAT} failed with HTTP 502: {repr(page)[:300]}"


def test_a_client_error_without_a_status_is_a_server_error_naming_it() -> None:
    odd = PrometheusApiClientException("Prometheus answered without a result type")
    translated = translate_prometheus_error(odd, WHAT)
    assert type(translated) is ServerError
    assert str(translated) == f"{WHAT} failed: Prometheus answered without a result type"


CONNECTION = "HTTPConnectionPool(host='prometheus.monitoring', port=9090)"


@pytest.mark.parametrize(
    ("exc", "kind", "says"),
    [
        (
            requests.exceptions.ReadTimeout(f"{CONNECTION}: Read timed out. (read timeout=10)"),
            RequestTimeoutError,
            f"timed out: {CONNECTION}: Read timed out. (read timeout=10)",
        ),
        (
            requests.exceptions.ConnectionError(
                f"{CONNECTION}: Max retries exceeded with url: /api/v1/query (Caused by "
                "NewConnectionError('Failed to establish a new connection: [Errno 111] "
                "Connection refused'))"
            ),
            NetworkError,
            f"failed: {CONNECTION}: Max retries exceeded with url: /api/v1/query (Caused by "
            "NewConnectionError('Failed to establish a new connection: [Errno 111] "
            "Connection refused'))",
        ),
        (
            requests.exceptions.RetryError(
                f"{CONNECTION}: Max retries exceeded with url: /api/v1/query (Caused by "
                "ResponseError('too many 503 error responses'))"
            ),
            NetworkError,
            f"failed: {CONNECTION}: Max retries exceeded with url: /api/v1/query (Caused by "
            "ResponseError('too many 503 error responses'))",
        ),
        (
            requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0),
            ServerError,
            "answered something that is not Prometheus JSON: Expecting value: line 1 column 1 "
            "(char 0)",
        ),
        (
            requests.exceptions.ChunkedEncodingError(
                "('Connection broken: IncompleteRead(512 bytes read, 1536 more expected)', "
                "IncompleteRead(512 bytes read, 1536 more expected))"
            ),
            NetworkError,
            "failed: ChunkedEncodingError: ('Connection broken: IncompleteRead(512 bytes read, "
            "1536 more expected)', IncompleteRead(512 bytes read, 1536 more expected))",
        ),
    ],
    ids=["read-timeout", "refused", "retries-exhausted", "not-json", "broken-answer"],
)
def test_what_requests_raises_under_the_client_becomes_the_projects_error(
    exc: Exception, kind: type[Exception], says: str
) -> None:
    translated = translate_prometheus_error(exc, WHAT)
    assert type(translated) is kind
    assert str(translated) == f"{WHAT} {says}"


def test_the_retry_condition_reads_a_failed_states_exception_inside_an_event_loop() -> None:
    # an async task's engine asks from inside its event loop, where state.result() would
    # return a coroutine instead of the exception
    async def ask(exc: Exception) -> bool:
        return retry_condition_fn(None, None, Failed(data=exc))

    assert asyncio.run(ask(ServerError("Prometheus query failed with HTTP 503"))) is True
    assert asyncio.run(ask(InvalidInputError("Prometheus query failed with HTTP 400"))) is False


def test_a_task_function_called_outside_a_run_logs_as_rollback_flows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="rollback_flows"):
        run_logger().info("read 3 ReplicaSets of production/rag-api")
    [record] = caplog.records
    assert record.name == "rollback_flows"
    assert record.getMessage() == "read 3 ReplicaSets of production/rag-api"
