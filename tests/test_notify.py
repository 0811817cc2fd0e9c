"""Notifications to a Slack-compatible webhook: the payload, the loopback sink, bad setups."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from playbook.errors import AccessDeniedError, InvalidInputError, NetworkError
from stack.local import StackState
from stack.processes import free_port
from stack.sink import WebhookSink
from tasks.notify import WEBHOOK_URL_ENV, message_payload, send_notification


def test_payload_is_slack_compatible() -> None:
    assert message_payload("🚨 ESCALATION: rag-api") == {"text": "🚨 ESCALATION: rag-api"}
    with pytest.raises(InvalidInputError, match="empty notification"):
        message_payload("  ")


def test_sink_receives_the_text(alert_sink: WebhookSink, monkeypatch: pytest.MonkeyPatch) -> None:
    path = f"/notify/{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(WEBHOOK_URL_ENV, f"{alert_sink.url}{path}")
    sent = send_notification.fn("✅ RESOLVED: rag-api")
    [delivery] = alert_sink.received(path)
    assert delivery.body == {"text": "✅ RESOLVED: rag-api"}
    assert delivery.headers["Content-Type"] == "application/json"
    assert (sent.status_code, sent.host) == (200, "127.0.0.1")


def test_missing_webhook_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WEBHOOK_URL_ENV, raising=False)
    with pytest.raises(AccessDeniedError, match=WEBHOOK_URL_ENV):
        send_notification.fn("hello")
    monkeypatch.setenv(WEBHOOK_URL_ENV, "hooks.slack.com/services/T0/B0/secret")
    with pytest.raises(InvalidInputError, match="not an http"):
        send_notification.fn("hello")


def test_unreachable_webhook_is_transient_and_keeps_the_url_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(WEBHOOK_URL_ENV, f"http://127.0.0.1:{free_port()}/services/T0/B0/secret")
    with pytest.raises(NetworkError) as caught:
        send_notification.fn("hello", timeout_seconds=2)
    assert "127.0.0.1" in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.stack
@pytest.mark.timeout(60)
def test_webhook_url_from_a_secret_block(
    local_stack: StackState, alert_sink: WebhookSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    monkeypatch.delenv(WEBHOOK_URL_ENV, raising=False)
    name = f"notify-{uuid.uuid4().hex[:8]}"
    path = f"/notify/{name}"
    Secret(value=SecretStr(f"{alert_sink.url}{path}")).save(name)
    send_notification.fn("from a block", secret_block=name)
    assert [d.body for d in alert_sink.received(path)] == [{"text": "from a block"}]
    with pytest.raises(
        AccessDeniedError,
        match="no notification webhook: the Prefect Secret block 'absent-block' does not exist",
    ):
        send_notification.fn("x", secret_block="absent-block")
