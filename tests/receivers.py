"""Real receivers for notification tests: an HTTP server (a signed webhook and a Slack-shaped
incoming webhook) and an SMTP server with STARTTLS and login (aiosmtpd), on loopback ports.

They record what they were sent, exactly as received, and check what a real receiver checks:
the webhook verifies the HMAC-SHA256 signature of the raw body, the Slack endpoint wants a JSON
body with a "text" string (as Slack's incoming webhooks do), the SMTP server wants STARTTLS
before the login and the right password.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verdict: str  # what the receiver answered: "accepted", or why it refused

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """POST /hook: the sumbg event as JSON, signed with `secret`; POST /slack/...: {"text": ...}."""

    secret: bytes
    port: int
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, verdict = receiver.judge(self.path, self.headers, body)
                receiver.received.append(Received(self.path, dict(self.headers), body, verdict))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else verdict.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def judge(self, path: str, headers: Any, body: bytes) -> tuple[int, str]:
        path = urlsplit(path).path
        if headers.get("Content-Type") != "application/json":
            return 415, "not JSON"
        if path == "/hook":
            expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, headers.get("X-Sumbg-Signature") or ""):
                return 401, "bad signature"
            return 200, "accepted"
        if path.startswith("/slack/"):
            payload = json.loads(body)
            if not isinstance(payload.get("text"), str) or not payload["text"]:
                return 400, "no text"
            return 200, "accepted"
        return 404, "no such path"

    def events(self, history_id: str | None = None) -> list[dict[str, Any]]:
        found = [r.json() for r in self.received if urlsplit(r.path).path == "/hook" and r.verdict == "accepted"]
        return [e for e in found if history_id is None or e.get("history_id") == history_id]

    def slack_texts(self) -> list[str]:
        return [r.json()["text"] for r in self.received if r.path.startswith("/slack/") and r.verdict == "accepted"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Collect:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "data": envelope.content.decode("utf-8", "replace").replace("\r\n", "\n"),
                "tls": session.ssl is not None,
                "login": session.authenticated,
            }
        )
        return "250 OK"


def self_signed_cert(
    folder: Path, subject: str = "/CN=127.0.0.1", days: int = 1, name: str = "smtp"
) -> tuple[Path, Path]:
    """A self-signed certificate (and its key), made with openssl: by default for 127.0.0.1."""
    cert, key = folder / f"{name}-cert.pem", folder / f"{name}-key.pem"
    san = ["-addext", "subjectAltName=IP:127.0.0.1"] if subject == "/CN=127.0.0.1" else []
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", str(days), "-subj", subject, *san],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class SmtpSink:
    """An SMTP server that requires STARTTLS, then a login as `user` with `password`."""

    def __init__(self, port: int, folder: Path, user: str, password: str) -> None:
        self.cert, key = self_signed_cert(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.handler = _Collect()

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
            return AuthResult(success=ok, handled=False)

        self.controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        )
        self.controller.start()

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.handler.messages

    def stop(self) -> None:
        self.controller.stop()
