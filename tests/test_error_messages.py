"""Library errors translated at the boundary, stated exactly: each message names what was
attempted and what the API said, and the retry condition finds the exception however the
task run's state carries it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from playbook.errors import (
    ConflictError,
    InvalidInputError,
    NetworkError,
    NotFoundError,
    PermanentError,
    RequestTimeoutError,
    ServerError,
)
from tasks.boundary import error_for_status, retry_condition_fn, translate_error


def api(status: int, body: Any = None, reason: str = "Reason") -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = body
    return exc


def test_messages_name_the_attempt_the_status_and_the_apis_message() -> None:
    err = translate_error(
        api(404, b'{"kind":"Status","message":"deployments \\"x\\" not found"}'), "read x"
    )
    assert (type(err), str(err)) == (
        NotFoundError,
        'read x failed: not found: deployments "x" not found',
    )
    assert str(error_for_status(503, "read x")) == "read x failed with HTTP 503"
    assert str(error_for_status(404, "read x")) == "read x failed: not found"
    conflict = error_for_status(422, "patch x", "the server rejected our request: test failed")
    assert (type(conflict), str(conflict)) == (
        ConflictError,
        "patch x failed with HTTP 422: the server rejected our request: test failed (the object "
        "changed since it was read)",
    )
    # a body that is not a Status is shown as it came, stripped and at most 300 characters
    raw = translate_error(api(500, "  " + "x" * 400 + "  "), "read x")
    assert str(raw) == "read x failed with HTTP 500: " + "x" * 300
    long_json = '["' + "y" * 400 + '"]'
    assert (
        str(translate_error(api(500, long_json), "read x"))
        == "read x failed with HTTP 500: " + long_json[:300]
    )
    listed = translate_error(api(500, '["a"]'), "read x")
    assert str(listed) == 'read x failed with HTTP 500: ["a"]'
    # undecodable bytes do not hide the rest of the message
    assert (
        str(translate_error(api(500, b"bad \xff byte"), "read x"))
        == "read x failed with HTTP 500: bad \ufffd byte"
    )
    # no body: the reason phrase
    assert str(translate_error(api(500, None, "Internal Server Error"), "read x")) == (
        "read x failed with HTTP 500: Internal Server Error"
    )
    assert (
        str(translate_error(api(0, None, "connection refused"), "read x"))
        == "read x failed: connection refused"
    )


def test_a_bare_invalid_answer_to_a_guarded_patch_is_a_conflict_and_otherwise_invalid_input() -> (
    None
):
    bare = api(
        422, '{"kind":"Status","reason":"Invalid","message":"the server rejected our request"}'
    )
    err = translate_error(bare, "patch x", guarded_patch=True)
    assert (type(err), str(err)) == (
        ConflictError,
        "patch x failed: the object changed since it was read (a JSON-patch test failed)",
    )
    assert type(translate_error(bare, "patch x")) is InvalidInputError
    detailed = api(
        422,
        '{"kind":"Status","reason":"Invalid","message":"m","details":{"causes":[{"field":"spec"}]}}',
    )
    assert type(translate_error(detailed, "patch x", guarded_patch=True)) is InvalidInputError
    for not_a_status in ("not json", '["Invalid"]'):
        assert (
            type(translate_error(api(422, not_a_status), "patch x", guarded_patch=True))
            is InvalidInputError
        )


def test_http_client_errors_name_the_attempt() -> None:
    request = httpx.Request("GET", "http://x/health")
    response = httpx.Response(502, request=request, content=b'{"message": "bad gateway"}')
    status = httpx.HTTPStatusError("boom", request=request, response=response)
    assert (type(translate_error(status, "probe")), str(translate_error(status, "probe"))) == (
        ServerError,
        "probe failed with HTTP 502: bad gateway",
    )
    timeout = translate_error(httpx.ReadTimeout("read timed out"), "probe")
    assert (type(timeout), str(timeout)) == (RequestTimeoutError, "probe timed out: read timed out")
    refused = translate_error(httpx.ConnectError("refused"), "probe")
    assert (type(refused), str(refused)) == (NetworkError, "probe failed: refused")


def test_urllib3_errors_are_unwrapped_to_their_cause() -> None:
    cause = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    wrapped = urllib3.exceptions.MaxRetryError(None, "/api", cause)  # type: ignore[arg-type]
    err = translate_error(wrapped, "list pods")
    assert (type(err), str(err)) == (NetworkError, f"list pods failed: {cause}")
    slow = urllib3.exceptions.ReadTimeoutError(None, "/api", "slow")  # type: ignore[arg-type]
    timeout = translate_error(slow, "list pods")
    assert type(timeout) is RequestTimeoutError and str(timeout).startswith("list pods timed out: ")
    broken = translate_error(urllib3.exceptions.ProtocolError("reset"), "list pods")
    assert (type(broken), str(broken)) == (NetworkError, "list pods failed: reset")
    odd = translate_error(KeyError("k"), "list pods")
    assert (type(odd), str(odd)) == (PermanentError, "list pods failed unexpectedly: KeyError: 'k'")


class StoredResult:
    """A task run state whose data is a stored result, not the exception itself."""

    def __init__(self, outcome: Any, raises: bool = False) -> None:
        self.data = object()
        self._outcome = outcome
        self._raises = raises

    def result(self, raise_on_failure: bool = True) -> Any:
        if raise_on_failure or self._raises:
            raise self._outcome
        return self._outcome


def test_the_retry_condition_reads_the_exception_from_the_states_result() -> None:
    assert retry_condition_fn(None, None, StoredResult(ServerError("503"))) is True
    assert retry_condition_fn(None, None, StoredResult(NotFoundError("404"))) is False
    assert retry_condition_fn(None, None, StoredResult(ServerError("503"), raises=True)) is True
    assert retry_condition_fn(None, None, StoredResult("a value")) is False


@pytest.mark.parametrize("status", [409, 429, 500])
def test_transient_statuses_keep_the_detail(status: int) -> None:
    assert str(error_for_status(status, "x", "why")) == f"x failed with HTTP {status}: why"
