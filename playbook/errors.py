"""The one error hierarchy of rollback-flows, and the translation of library errors into it.

Every failure a flow can meet is one of these, so a caller (a flow, a retry policy, a person
reading the run) knows what to do next without knowing which library raised it::

    RollbackError                 base of everything raised on purpose
    ├── TransientError            retry: the same call can succeed later
    │   ├── ServerError           5xx from an API
    │   ├── RateLimitedError      429
    │   ├── NetworkError          connection refused/reset, DNS, broken stream
    │   ├── RequestTimeoutError   connect or read timeout
    │   └── ConflictError         409 or a failed JSON-patch `test`: re-read, then retry
    └── PermanentError            stop: retrying cannot help, a person must act
        ├── InvalidInputError     bad parameters: unknown service, malformed version, ...
        │   └── RevisionNotFoundError
        ├── NotFoundError         404: the object does not exist
        ├── AccessDeniedError     401/403, or credentials missing
        ├── ApiRequestError       any other 4xx: the request itself is wrong
        ├── RolloutFailedError    the rollout stopped progressing or missed its deadline
        ├── VerificationFailedError  the change was made but the result is not as expected
        └── UnsafePatchError      the planned change would break traffic; nothing was sent

Library exceptions (`kubernetes.client.ApiException`, urllib3's, httpx's) are translated at
the boundary by `translate_error` / `translating`, so they never leak past `tasks/`.
`retry_condition_fn` lets a Prefect task retry only the transient ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException


class RollbackError(Exception):
    """Base of every error this project raises on purpose."""


class TransientError(RollbackError):
    """The same call can succeed if retried after a delay."""


class ServerError(TransientError):
    """The API answered 5xx."""


class RateLimitedError(TransientError):
    """The API answered 429 Too Many Requests."""


class NetworkError(TransientError):
    """The API could not be reached or the connection broke (refused, reset, DNS)."""


class RequestTimeoutError(TransientError):
    """Connecting to or reading from the API took longer than the timeout."""


class ConflictError(TransientError):
    """The object changed under us (409, or a failed JSON-patch `test`): re-read and retry."""


class PermanentError(RollbackError):
    """Retrying cannot help; the message says what a person must change."""


class InvalidInputError(PermanentError):
    """A parameter or configuration value is invalid; nothing was changed."""


class RevisionNotFoundError(InvalidInputError):
    """The requested rollout revision does not exist in the Deployment's history."""


class NotFoundError(PermanentError):
    """The object does not exist (404)."""


class AccessDeniedError(PermanentError):
    """Credentials are missing, invalid (401) or not allowed to do this (403)."""


class ApiRequestError(PermanentError):
    """The API rejected the request (a 4xx other than 401, 403, 404, 409, 429)."""


class RolloutFailedError(PermanentError):
    """The rollout exceeded its progress deadline or did not finish in time."""


class VerificationFailedError(PermanentError):
    """The change was applied but a check of the result failed (pods, routes, version)."""


class UnsafePatchError(PermanentError):
    """The planned change would leave traffic unsafe, so it was not applied."""


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
