"""The boundary where the libraries' errors become the playbook's (`playbook/errors.py`).

Every task calls Kubernetes, Prometheus, GitHub, the registry, a webhook or the Prefect API
through a library; what those raise (`kubernetes.client.ApiException`, urllib3's, httpx's,
requests' and prometheus_api_client's) is translated here into the one hierarchy, so nothing
past `tasks/` knows which library failed. Here too: Prefect's retry condition (retry only
what is transient), the run's logger the tasks share, and `as_is` for a big argument.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import httpx
import requests
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote
from prometheus_api_client import PrometheusApiClientException

from playbook.errors import (
    AccessDeniedError,
    ApiRequestError,
    ConflictError,
    InvalidInputError,
    NetworkError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RequestTimeoutError,
    RollbackError,
    ServerError,
    TransientError,
)

_PATCH_TEST_FAILED = "test failed"


def _status_message(body: Any) -> str:
    """The human message of a Kubernetes `Status` or GitHub error body, else the raw body."""
    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body).strip()[:300]
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return str(body).strip()[:300]


def _is_bare_invalid(body: Any) -> bool:
    """A 422 Status without causes: how the API server reports a JSON patch it cannot apply."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return False
    details = data.get("details") if isinstance(data, dict) else None
    return (
        isinstance(data, dict)
        and data.get("reason") == "Invalid"
        and not (details or {}).get("causes")
    )


def error_for_status(status: int, what: str, detail: str = "") -> RollbackError:
    """The error class for an HTTP status, with a message naming what was attempted."""
    suffix = f": {detail}" if detail else ""
    message = f"{what} failed with HTTP {status}{suffix}"
    if status == 409:
        return ConflictError(message)
    if status == 422 and _PATCH_TEST_FAILED in detail:
        return ConflictError(f"{message} (the object changed since it was read)")
    if status == 429:
        return RateLimitedError(message)
    if status >= 500:
        return ServerError(message)
    if status in (401, 403):
        return AccessDeniedError(message)
    if status == 404:
        return NotFoundError(f"{what} failed: not found{suffix}")
    if status in (400, 422):
        return InvalidInputError(message)
    return ApiRequestError(message)


def translate_error(exc: BaseException, what: str, guarded_patch: bool = False) -> RollbackError:
    """Translate a Kubernetes client, urllib3 or httpx exception into this hierarchy.

    Args:
        exc: The exception raised by a library call.
        what: What was attempted, e.g. "read Deployment production/rag-api".
        guarded_patch: The call sent a JSON patch with `test` operations planned from a read.
            The API server answers a failed `test` (or a path that no longer exists) with a
            bare 422 "Invalid" without details; for such a patch that means the object
            changed since it was read, so it becomes a ConflictError (re-read and retry).

    Returns:
        The matching `RollbackError`; the caller raises it `from exc`.
    """
    if isinstance(exc, RollbackError):
        return exc
    if isinstance(exc, ApiException):
        if not exc.status:
            return NetworkError(f"{what} failed: {exc.reason}")
        if guarded_patch and exc.status == 422 and _is_bare_invalid(exc.body):
            return ConflictError(
                f"{what} failed: the object changed since it was read (a JSON-patch test failed)"
            )
        return error_for_status(int(exc.status), what, _status_message(exc.body) or exc.reason)
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        return error_for_status(response.status_code, what, _status_message(response.content))
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(f"{what} timed out: {exc}")
    if isinstance(exc, httpx.TransportError):
        return NetworkError(f"{what} failed: {exc}")
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return translate_error(exc.reason, what)
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a subclass of ConnectTimeout
        return NetworkError(f"{what} failed: {exc}")
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return RequestTimeoutError(f"{what} timed out: {exc}")
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError):
        return NetworkError(f"{what} failed: {exc}")
    return PermanentError(f"{what} failed unexpectedly: {type(exc).__name__}: {exc}")


@contextmanager
def translating(what: str, guarded_patch: bool = False) -> Iterator[None]:
    """Run a block of library calls, re-raising their errors as `RollbackError`s."""
    try:
        yield
    except RollbackError:
        raise
    except (ApiException, httpx.HTTPError, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate_error(exc, what, guarded_patch) from exc


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the call that raised `exc` can succeed."""
    if isinstance(exc, RollbackError):
        return isinstance(exc, TransientError)
    if isinstance(exc, ApiException | httpx.HTTPError | urllib3.exceptions.HTTPError | OSError):
        return isinstance(translate_error(exc, "call"), TransientError)
    return False


def retry_condition_fn(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed task run only for transient errors."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            result = state.result(raise_on_failure=False)
        except Exception as raised:
            result = raised
        exc = result if isinstance(result, BaseException) else None
    return exc is not None and is_transient(exc)


_PROMETHEUS_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)$", re.S)


def _prometheus_error(detail: str) -> str | None:
    """The `error` of Prometheus's JSON answer, from the repr of the body the client's message
    holds (`b'{"status":"error",...}'`: read as the bytes it stands for, then as JSON)."""
    try:
        return str(json.loads(ast.literal_eval(detail))["error"])
    except (ValueError, TypeError, SyntaxError, KeyError):
        return None


def translate_prometheus_error(exc: Exception, what: str) -> RollbackError:
    """Translate what prometheus_api_client (over requests) raised into this hierarchy."""
    if isinstance(exc, PrometheusApiClientException):
        found = _PROMETHEUS_STATUS.search(str(exc))
        if found:
            detail = found.group(2)
            return error_for_status(
                int(found.group(1)), what, _prometheus_error(detail) or detail[:300]
            )
        return ServerError(f"{what} failed: {exc}")
    if isinstance(exc, requests.Timeout):
        return RequestTimeoutError(f"{what} timed out: {exc}")
    if isinstance(exc, requests.ConnectionError | requests.exceptions.RetryError):
        return NetworkError(f"{what} failed: {exc}")
    if isinstance(exc, ValueError):  # a body that is not Prometheus JSON
        return ServerError(f"{what} answered something that is not Prometheus JSON: {exc}")
    return NetworkError(f"{what} failed: {type(exc).__name__}: {exc}")


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The flow or task run's logger, else the module's (a task function called outside a run)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("rollback_flows")


T = TypeVar("T")


def as_is(value: T) -> T:
    """A task argument Prefect passes without visiting each element (`quote`).

    Prefect walks every argument of a task call twice, looking for futures and states to
    resolve; a Deployment and its ReplicaSets have thousands of elements, which cost a run
    tens of milliseconds per call. The task receives the value itself.
    """
    return cast(T, quote(value))
