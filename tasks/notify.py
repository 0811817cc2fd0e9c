"""Notifications: POST `{"text": ...}` to a Slack-compatible incoming webhook.

The webhook URL is a secret (anyone holding it can post): it comes from a Prefect Secret
block when a block name is given, else from `$ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL`, and it never
appears in logs or error messages (only its host does). 5xx, 429 and network errors are
retried; any other 4xx is permanent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from playbook.errors import AccessDeniedError, InvalidInputError
from tasks.boundary import error_for_status, retry_condition_fn, translate_error
from tasks.secrets import load_secret

WEBHOOK_URL_ENV = "ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL"
SECRET_BLOCK_ENV = "ROLLBACK_FLOWS_NOTIFY_SECRET_BLOCK"
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Notification:
    """What was sent, where (host only) and what the webhook answered."""

    text: str
    host: str
    status_code: int


def configured(secret_block: str | None = None) -> bool:
    """True when a webhook is configured: a Secret block is named (here or by
    `$ROLLBACK_FLOWS_NOTIFY_SECRET_BLOCK`) or `$ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL` is set."""
    return bool(secret_block or os.environ.get(SECRET_BLOCK_ENV) or os.environ.get(WEBHOOK_URL_ENV))


def webhook_url(secret_block: str | None = None) -> SecretStr:
    """The webhook URL from the Secret block `secret_block` (else the one
    `$ROLLBACK_FLOWS_NOTIFY_SECRET_BLOCK` names), else from `$ROLLBACK_FLOWS_NOTIFY_WEBHOOK_URL`.

    Raises:
        AccessDeniedError: neither is set, or the block cannot be loaded.
        InvalidInputError: the value is not an http(s) URL.
    """
    secret_block = secret_block or os.environ.get(SECRET_BLOCK_ENV)
    if secret_block:
        value = load_secret(secret_block, "no notification webhook")
    else:
        value = os.environ.get(WEBHOOK_URL_ENV, "")
    if not value:
        raise AccessDeniedError(
            f"no notification webhook: create a Secret block and pass its name, or set {WEBHOOK_URL_ENV}"
        )
    if not value.startswith(("http://", "https://")):
        raise InvalidInputError("the notification webhook URL is not an http(s) URL")
    return SecretStr(value)


def message_payload(text: str) -> dict[str, str]:
    """The body of a Slack-compatible incoming webhook: `{"text": ...}`."""
    if not text.strip():
        raise InvalidInputError("refusing to send an empty notification")
    return {"text": text}


@task(
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_condition_fn,
    timeout_seconds=120,
    cache_policy=NO_CACHE,
)
def send_notification(
    text: str, secret_block: str | None = None, timeout_seconds: float = TIMEOUT_SECONDS
) -> Notification:
    """POST `text` to the webhook; returns what it answered."""
    url = webhook_url(secret_block)
    host = httpx.URL(url.get_secret_value()).host
    what = f"POST notification to webhook at {host}"
    try:
        response = httpx.post(
            url.get_secret_value(), json=message_payload(text), timeout=timeout_seconds
        )
    except httpx.HTTPError as exc:
        # httpx puts the URL in its messages; keep only the host
        raise type(translate_error(exc, what))(f"{what} failed: {type(exc).__name__}") from None
    if response.status_code >= 300:
        raise error_for_status(response.status_code, what, response.text[:200])
    return Notification(text, host, response.status_code)
