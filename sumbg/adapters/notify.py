"""Sending one message to one `[[notify]]` target: a webhook (HTTP POST of the event's JSON,
signed with HMAC-SHA256), a Slack incoming webhook, or email over SMTP.

The standard library only (urllib.request, smtplib, hmac): delivery goes to outside receivers
with the system's CAs and proxies, one short request per message, which has nothing in common
with probe.py's pooled httpx client aimed at our own edge with Host headers. One attempt per
call: the caller (sumbg.ops.events) retries, with backoff, against a deadline.

Secrets are read from their files here, at the moment of sending, and never leave this module:
an error names the target and what failed, never the URL, the key or the password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from sumbg import __version__
from sumbg.config import NotifyTarget
from sumbg.errors import SumbgError

SIGNATURE_HEADER = "X-Sumbg-Signature"
EVENT_HEADER = "X-Sumbg-Event"
DELIVERY_HEADER = "X-Sumbg-Delivery"


class DeliveryFailed(SumbgError):
    """A notification was not accepted by its receiver (this attempt)."""


@dataclass(frozen=True)
class Message:
    """One event, ready for every kind of target: its JSON document and its words."""

    event: dict[str, Any]
    subject: str  # email's subject
    text: str  # one readable paragraph (Slack, email), with the evidence


class Courier:
    """Delivers a message to a target, one attempt at a time."""

    def send(self, target: NotifyTarget, message: Message, timeout: float) -> None:
        if target.kind == "slack":
            url = _secret(target.slack_url_file, "slack_url_file", target)
            _post(url, json.dumps({"text": message.text}).encode(), {}, timeout, target)
        elif target.kind == "email":
            _mail(target, message, timeout)
        else:
            url = target.webhook_url or _secret(target.webhook_url_file, "webhook_url_file", target)
            body = json.dumps(message.event, sort_keys=True).encode()
            headers = {EVENT_HEADER: str(message.event.get("event")), DELIVERY_HEADER: str(message.event.get("id"))}
            if target.webhook_secret_file:
                key = _secret(target.webhook_secret_file, "webhook_secret_file", target).encode()
                headers[SIGNATURE_HEADER] = signature(key, body)
            _post(url, body, headers, timeout, target)


def signature(key: bytes, body: bytes) -> str:
    """The X-Sumbg-Signature header of a body: `sha256=` and the HMAC-SHA256 of the raw bytes, hex."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _secret(path: str, key: str, target: NotifyTarget) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise DeliveryFailed(f"{target.label}: cannot read {key} {path}: {exc.strerror}") from None
    if not value:
        raise DeliveryFailed(f"{target.label}: {key} {path} is empty")
    return value


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, target: NotifyTarget) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"sumbg/{__version__}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"{target.label}: the receiver answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise DeliveryFailed(f"{target.label}: {_reason(exc.reason)}") from None
    except (OSError, ValueError) as exc:  # a timeout mid-read, a malformed URL in a file
        raise DeliveryFailed(f"{target.label}: {_reason(exc)}") from None


def _reason(reason: object) -> str:
    """Why a connection failed, without the URL (which may carry a token)."""
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    if isinstance(reason, ValueError):
        return "the URL is not valid"
    return type(reason).__name__ if not isinstance(reason, str) else reason


def _mail(target: NotifyTarget, message: Message, timeout: float) -> None:
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = target.email_from or f"sumbg@{socket.gethostname()}"
    mail["To"] = ", ".join(target.email_to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain="sumbg")
    mail[EVENT_HEADER] = str(message.event.get("event"))
    mail.set_content(message.text + "\n\n" + json.dumps(message.event, indent=2, sort_keys=True) + "\n")
    try:
        with smtplib.SMTP(target.smtp_host, target.smtp_port, timeout=timeout) as smtp:
            if target.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=target.smtp_ca_file or None))
            if target.smtp_user:
                password = _secret(target.smtp_password_file, "smtp_password_file", target)
                smtp.login(target.smtp_user, password)
            smtp.send_message(mail)
    except smtplib.SMTPNotSupportedError:
        raise DeliveryFailed(f"{target.label}: the SMTP server does not offer STARTTLS") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"{target.label}: the SMTP server refused the login ({exc.smtp_code})") from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"{target.label}: the SMTP server answered {exc.smtp_code}") from None
    except smtplib.SMTPException as exc:
        raise DeliveryFailed(f"{target.label}: SMTP: {type(exc).__name__}") from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"{target.label}: STARTTLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise DeliveryFailed(f"{target.label}: {_reason(exc)}") from None
