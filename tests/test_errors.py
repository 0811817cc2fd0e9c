"""The error hierarchy: translation of library errors at the boundary and the retry condition."""

from __future__ import annotations

import re

import httpx
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from prefect.states import Completed, Failed

from playbook import errors
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
from tasks import boundary
from tasks.boundary import retry_condition_fn, translate_error, translating


def api_exception(status: int, message: str = "boom") -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = f'{{"kind":"Status","status":"Failure","message":"{message}","code":{status}}}'
    return exc


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, ServerError),
        (503, ServerError),
        (429, RateLimitedError),
        (409, ConflictError),
        (404, NotFoundError),
        (401, AccessDeniedError),
        (403, AccessDeniedError),
        (400, InvalidInputError),
        (422, InvalidInputError),
        (405, ApiRequestError),
    ],
)
def test_kubernetes_status_codes_map_to_one_class(status: int, kind: type[RollbackError]) -> None:
    err = translate_error(api_exception(status, 'deployments.apps "x" is bad'), "read x")
    assert type(err) is kind
    assert "read x" in str(err)
    assert 'deployments.apps "x" is bad' in str(err)


def test_failed_json_patch_test_is_a_conflict_to_retry() -> None:
    err = translate_error(
        api_exception(422, "testing value /spec/http/1 failed: test failed"), "patch vs"
    )
    assert isinstance(err, ConflictError)
    assert isinstance(err, TransientError)


def test_a_rejected_guarded_json_patch_is_a_conflict() -> None:
    """The API server's answer to a failed `test` op, as the local cluster sends it."""
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the '
        'server rejected our request due to an error in our request","reason":"Invalid",'
        '"details":{},"code":422}'
    )
    assert isinstance(translate_error(exc, "patch", guarded_patch=True), ConflictError)
    assert isinstance(translate_error(exc, "patch"), InvalidInputError)
    invalid = api_exception(422, "Deployment.apps is invalid")
    invalid.body = invalid.body.replace(
        '"code"', '"reason":"Invalid","details":{"causes":[{}]},"code"'
    )
    assert isinstance(translate_error(invalid, "patch", guarded_patch=True), InvalidInputError)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104)),
            NetworkError,
        ),
        (urllib3.exceptions.NewConnectionError(None, "refused"), NetworkError),
        (urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"), RequestTimeoutError),
        (
            urllib3.exceptions.MaxRetryError(None, "/x", urllib3.exceptions.ConnectTimeoutError()),
            RequestTimeoutError,
        ),
        (ConnectionResetError(104, "Connection reset by peer"), NetworkError),
        (TimeoutError("timed out"), RequestTimeoutError),
        (httpx.ConnectError("refused"), NetworkError),
        (httpx.ReadTimeout("slow"), RequestTimeoutError),
    ],
)
def test_network_failures_are_transient(exc: BaseException, kind: type[RollbackError]) -> None:
    err = translate_error(exc, "call the API")
    assert type(err) is kind
    assert boundary.is_transient(exc)


def test_httpx_status_errors_are_translated() -> None:
    request = httpx.Request("GET", "https://api.github.com/orgs/acme/packages")
    response = httpx.Response(401, json={"message": "Bad credentials"}, request=request)
    err = translate_error(httpx.HTTPStatusError("401", request=request, response=response), "list")
    assert isinstance(err, AccessDeniedError)
    assert "Bad credentials" in str(err)


def test_translating_reraises_from_the_library_error() -> None:
    with pytest.raises(NotFoundError) as info, translating("read Deployment ns/x"):
        raise api_exception(404, 'deployments.apps "x" not found')
    assert isinstance(info.value.__cause__, ApiException)
    assert str(info.value).startswith("read Deployment ns/x failed: not found")


def test_unknown_exceptions_are_permanent() -> None:
    assert isinstance(translate_error(ValueError("odd"), "x"), PermanentError)
    assert not boundary.is_transient(ValueError("odd"))


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (ServerError("500"), True),
        (RateLimitedError("429"), True),
        (ConflictError("409"), True),
        (NetworkError("reset"), True),
        (RequestTimeoutError("slow"), True),
        (api_exception(503), True),
        (NotFoundError("404"), False),
        (InvalidInputError("bad"), False),
        (api_exception(403), False),
        (ValueError("bug"), False),
    ],
)
def test_retry_condition_retries_only_transient_errors(exc: Exception, retry: bool) -> None:
    assert retry_condition_fn(None, None, Failed(data=exc)) is retry


def test_retry_condition_does_not_retry_a_success() -> None:
    assert retry_condition_fn(None, None, Completed(data=1)) is False


def test_the_tree_in_the_docstring_names_every_error_class() -> None:
    """Each class of the module is in the docstring's tree, drawn under its real base class."""
    doc = errors.__doc__ or ""
    parent_of: dict[str, str | None] = {}
    stack: list[str] = []  # the chain of names above the current line
    for line in doc.splitlines():
        match = re.match(r"^ {4}([│ ├└─]*)(\w+Error)\b", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4
        del stack[depth:]
        parent_of[match.group(2)] = stack[-1] if stack else None
        stack.append(match.group(2))
    classes = {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, RollbackError)
    }
    assert set(parent_of) == set(classes)
    for name, cls in classes.items():
        base = cls.__bases__[0]
        expected = None if cls is RollbackError else base.__name__
        assert parent_of[name] == expected, f"{name} is drawn under {parent_of[name]}"


@pytest.mark.stack
def test_prefect_retries_only_transient_errors(local_stack: object) -> None:
    """Wired into real Prefect task runs: a 503 is retried, a 404 is not."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    calls = {"transient": 0, "permanent": 0}

    @task(
        retries=3,
        retry_delay_seconds=0,
        retry_condition_fn=retry_condition_fn,
        cache_policy=NO_CACHE,
    )
    def flaky() -> int:
        calls["transient"] += 1
        if calls["transient"] < 3:
            raise translate_error(api_exception(503), "read")
        return calls["transient"]

    @task(
        retries=3,
        retry_delay_seconds=0,
        retry_condition_fn=retry_condition_fn,
        cache_policy=NO_CACHE,
    )
    def gone() -> None:
        calls["permanent"] += 1
        raise translate_error(api_exception(404), "read")

    @flow
    def run() -> int:
        with pytest.raises(NotFoundError):
            gone()
        return flaky()

    assert run() == 3
    assert calls == {"transient": 3, "permanent": 1}
