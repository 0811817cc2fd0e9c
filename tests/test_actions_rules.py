"""Procedure 1's pure rules: a workflow run as GitHub reports it, which run is ours, its progress,
the dispatch inputs and how long a rate limit is waited out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from playbook.actions import (
    WorkflowRun,
    created_filter,
    dispatch_inputs,
    find_marked_run,
    parse_run,
    progress_of,
    rate_limit_wait,
)
from playbook.errors import InvalidInputError

URL = "https://github.com/acme/rag-api/actions/runs/42"
NOW = 1_700_000_000.0


def run(status: str, conclusion: str | None = None, id_: int = 42, title: str = "") -> WorkflowRun:
    return WorkflowRun(id_, title, status, conclusion, URL, "2026-12-01T03:00:00Z")


def test_a_run_object_of_the_rest_api_is_read_with_githubs_defaults() -> None:
    body = {
        "id": "42",
        "display_title": "Rollback production to v1.2.3 [prefect-a]",
        "name": "Rollback",
        "status": "completed",
        "conclusion": "failure",
        "html_url": URL,
        "created_at": "2026-12-01T03:00:00Z",
        "run_attempt": 2,
    }
    assert parse_run(body) == WorkflowRun(
        42,
        "Rollback production to v1.2.3 [prefect-a]",
        "completed",
        "failure",
        URL,
        "2026-12-01T03:00:00Z",
        2,
    )
    # an older API without display_title: the workflow's name; no title, attempt or time at all
    assert parse_run({**body, "display_title": None}).display_title == "Rollback"
    bare = parse_run({"id": 7, "status": "queued", "html_url": URL})
    assert (bare.display_title, bare.conclusion, bare.created_at, bare.run_attempt) == (
        "",
        None,
        "",
        1,
    )
    assert parse_run({**body, "run_attempt": None}).run_attempt == 1


def test_a_run_succeeded_only_when_it_completed_with_success() -> None:
    assert run("completed", "success").succeeded
    assert not run("completed", "failure").succeeded
    assert not run("in_progress", "success").succeeded  # a conclusion before the end is no end
    assert run("completed", "cancelled").completed and not run("queued").completed


def test_a_run_is_described_with_its_conclusion_only_once_it_completed() -> None:
    assert run("in_progress").describe() == f"workflow run 42 (in_progress) {URL}"
    assert run("completed", "failure").describe() == f"workflow run 42 (completed: failure) {URL}"


def test_progress_is_ten_while_waiting_fifty_while_running_and_a_hundred_when_done() -> None:
    assert [progress_of(run(s)) for s in ("queued", "waiting", "in_progress", "completed")] == [
        10.0,
        10.0,
        50.0,
        100.0,
    ]


def test_a_repeated_dispatch_follows_the_newest_run_with_the_marker() -> None:
    runs = [
        run("completed", "failure", 41, "Rollback [prefect-a]"),
        run("queued", None, 44, "Rollback [prefect-a]"),
        run("queued", None, 45, "Rollback [prefect-b]"),
        run("in_progress", None, 43, "Rollback [prefect-a]"),
    ]
    assert find_marked_run(runs, "prefect-a") == runs[1]
    assert find_marked_run([], "prefect-a") is None


def test_the_created_filter_is_at_or_after_the_second_in_utc() -> None:
    assert created_filter(datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC)) == (
        ">=2026-01-02T03:04:05Z"
    )


def test_dispatch_inputs_are_strings_as_github_wants_them_and_the_marker_one_word() -> None:
    assert dispatch_inputs("staging", "v1.2.3", True, "prefect-9f2c") == {
        "environment": "staging",
        "target_version": "v1.2.3",
        "skip_confirmation": "true",
        "run_id": "prefect-9f2c",
    }
    assert dispatch_inputs("production", "v1.2.3", False, "m")["skip_confirmation"] == "false"
    for marker in ("", "two\twords", "new\nline"):
        with pytest.raises(InvalidInputError, match="malformed run marker"):
            dispatch_inputs("staging", "v1.2.3", False, marker)


def test_a_rate_limit_waits_as_its_headers_say_never_a_negative_time() -> None:
    assert rate_limit_wait(429, {"Retry-After": "-5"}, "", NOW) == 0.0
    assert rate_limit_wait(403, {"RETRY-AFTER": "2.5"}, "", NOW) == 2.5
    past = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 30)}
    assert rate_limit_wait(403, past, "", NOW) == 0.0
    soon = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 30)}
    assert rate_limit_wait(403, soon, "", NOW) == 30.0


def test_unreadable_rate_limit_headers_fall_back_to_the_next_rule() -> None:
    # a retry-after that is no number: the reset header decides
    reset = {"retry-after": "soon", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000009"}
    assert rate_limit_wait(403, reset, "", NOW) == 9.0
    # neither readable: a secondary limit by its message, else a permission error
    broken = {"retry-after": "soon", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "later"}
    assert rate_limit_wait(403, broken, "secondary RATE LIMIT", NOW) == 60.0
    assert rate_limit_wait(403, broken, "Resource not accessible", NOW) is None
    assert rate_limit_wait(429, broken, "", NOW) == 60.0
    # remaining 0 without a reset time: no time to wait until
    assert rate_limit_wait(403, {"x-ratelimit-remaining": "0"}, "", NOW) is None
