"""The notification adapter against real receivers on loopback (no Docker): a signed webhook, a
Slack-shaped endpoint, SMTP with STARTTLS and login; and what a failure says (never the URL)."""

from __future__ import annotations

import email
import email.policy
import json
import os
from pathlib import Path

import pytest

from sumbg.adapters.notify import Courier, DeliveryFailed, signature
from sumbg.config import NotifyTarget
from sumbg.ops.events import message_of, new_event

from .conftest import free_port
from .receivers import HttpReceiver, SmtpSink


def secret(path: Path, text: str) -> str:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture
def web():
    receiver = HttpReceiver(b"k3y", free_port())
    yield receiver
    receiver.stop()


def event() -> dict:
    return new_event(
        "upgrade.failed",
        "failed",
        host="h",
        site="acme",
        operation="upgrade",
        history_id="abc",
        summary="acme: upgrade v1 -> v2 failed at step smoke: GET / answered 500",
        step="smoke",
        evidence="Traceback ...\nValueError: boom",
    )


def test_a_webhook_gets_the_event_signed_over_its_raw_body(web: HttpReceiver, tmp_path: Path) -> None:
    key = secret(tmp_path / "key", "k3y")
    target = NotifyTarget(name="audit", webhook_url=f"http://127.0.0.1:{web.port}/hook", webhook_secret_file=key)
    sent = event()
    Courier().send(target, message_of(sent), 5)
    [received] = web.received
    assert received.verdict == "accepted"
    assert received.json() == sent
    assert received.headers["X-Sumbg-Signature"] == signature(b"k3y", received.body)
    assert (received.headers["X-Sumbg-Event"], received.headers["X-Sumbg-Delivery"]) == ("upgrade.failed", sent["id"])


def test_a_wrong_key_is_refused_by_the_receiver_and_said_without_the_url(web: HttpReceiver, tmp_path: Path) -> None:
    url = secret(tmp_path / "url", f"http://127.0.0.1:{web.port}/hook?token=s3cret")
    target = NotifyTarget(webhook_url_file=url, webhook_secret_file=secret(tmp_path / "key", "wrong"), source="x")
    with pytest.raises(DeliveryFailed) as info:
        Courier().send(target, message_of(event()), 5)
    assert info.value.message == "webhook (x): the receiver answered HTTP 401"


def test_slack_gets_one_readable_paragraph(web: HttpReceiver, tmp_path: Path) -> None:
    url = secret(tmp_path / "slack", f"http://127.0.0.1:{web.port}/slack/T0/B0/s3cret")
    Courier().send(NotifyTarget(name="ops", slack_url_file=url), message_of(event()), 5)
    assert web.slack_texts() == [
        "sumbg on h: acme: upgrade v1 -> v2 failed at step smoke: GET / answered 500. Failed step: smoke. "
        "History id abc (`sumbg history acme`).\n```\nTraceback ...\nValueError: boom\n```"
    ]


def test_a_receiver_that_is_down_is_said_plainly(tmp_path: Path) -> None:
    url = secret(tmp_path / "url", f"http://127.0.0.1:{free_port()}/t0ken")
    with pytest.raises(DeliveryFailed) as info:
        Courier().send(NotifyTarget(name="a", webhook_url_file=url), message_of(event()), 2)
    assert info.value.message == "webhook a: connection refused"
    assert "t0ken" not in str(info.value)


def test_email_over_starttls_with_a_login(tmp_path: Path) -> None:
    sink = SmtpSink(free_port(), tmp_path, "sumbg", "pw")
    try:
        target = NotifyTarget(
            name="oncall",
            email_to=("a@example.test", "b@example.test"),
            email_from="sumbg@example.test",
            smtp_host="127.0.0.1",
            smtp_port=sink.controller.port,
            smtp_user="sumbg",
            smtp_password_file=secret(tmp_path / "pw", "pw"),
            smtp_ca_file=str(sink.cert),
        )
        sent = event()
        Courier().send(target, message_of(sent), 5)
        [mail] = sink.messages
        assert (mail["tls"], mail["login"], mail["to"]) == (True, True, ["a@example.test", "b@example.test"])
        parsed = email.message_from_string(mail["data"], policy=email.policy.default)
        assert (parsed["Subject"], parsed["From"]) == ("[sumbg] acme: upgrade.failed", "sumbg@example.test")
        text, document = parsed.get_content().split("\n\n", 1)
        assert text == message_of(sent).text
        assert json.loads(document) == sent
        wrong = NotifyTarget(**{**target.__dict__, "smtp_password_file": secret(tmp_path / "pw2", "nope")})
        with pytest.raises(DeliveryFailed) as info:
            Courier().send(wrong, message_of(event()), 5)
        assert info.value.message == "email oncall: the SMTP server refused the login (535)"
        untrusted = NotifyTarget(**{**target.__dict__, "smtp_ca_file": ""})
        with pytest.raises(DeliveryFailed) as info:
            Courier().send(untrusted, message_of(event()), 5)
        assert info.value.message.startswith("email oncall: STARTTLS failed: ")
    finally:
        sink.stop()
