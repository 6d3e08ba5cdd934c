"""sumbg.smoke against a real HTTP server on 127.0.0.1 standing in for the edge Caddy."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sumbg.adapters import probe as smoke_module
from sumbg.adapters.probe import Answer, Health, Prober, Target, live_target, preview_target
from sumbg.cli import exit_code_of
from sumbg.config import DEFAULT_SMOKE_CHECKS, CaddySettings, EdgeSettings, SiteConfig, SmokeCheck
from sumbg.errors import CheckFailed

DOMAIN = "acme.example.com"
UNHEALTHY = {"status": "unhealthy", "checks": {"database": "down"}}


class FakeEdge:
    """Answers like a SUM site behind Caddy; records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.health: list[tuple[int, dict]] = []  # answers to come, the last one repeats
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        with self.lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        if path == "/health/":
            with self.lock:
                status, payload, *extra = self.health[0] if self.health else (200, {"status": "ok"})
                if len(self.health) > 1:
                    self.health.pop(0)
            return (
                status,
                {"Content-Type": "application/json", **(extra[0] if extra else {})},
                json.dumps(payload).encode(),
            )
        routes = {
            "/": (200, {"Content-Type": "text/html; charset=utf-8"}, b"<h1>Acme</h1>\n<p>Welcome   home</p>"),
            "/static/sum_core/css/main.css": (200, {"Content-Type": "text/css"}, b"body { margin: 0 }"),
            "/admin/login/": (200, {"Content-Type": "text/html"}, b"<form>login</form>"),
            "/missing/": (404, {"Content-Type": "text/html"}, b"<h1>Not Found</h1>"),
            "/api/status": (200, {"Content-Type": "application/json"}, b'{"status": "maintenance"}'),
            "/not-json": (200, {"Content-Type": "application/json"}, b"<html>oops</html>"),
            "/no-type": (200, {}, b"plain"),
            "/big": (500, {"Content-Type": "text/plain"}, b"x" * 1000),
            "/contact/": (
                200,
                {"Content-Type": "text/html", "Set-Cookie": "csrftoken=COOKIE123; Path=/"},
                b'<form><input type="hidden" name="csrfmiddlewaretoken" value="TOKEN456"></form>',
            ),
            "/no-token/": (200, {"Content-Type": "text/html"}, b"<form></form>"),
            "/to-https/": (301, {"Location": f"https://{DOMAIN}/to-https/"}, b""),
            "/to-www/": (301, {"Location": f"https://www.{DOMAIN}/to-www/"}, b""),
            "/to-login/": (302, {"Location": "/accounts/login/?next=/to-login/"}, b""),
        }
        if method == "POST":
            return 302, {"Location": "/thanks/"}, b""
        return routes.get(path, (404, {}, b"nope"))


@pytest.fixture
def fake_edge():
    edge = FakeEdge()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = edge.answer(self.command, self.path, dict(self.headers), body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    edge.port = server.server_address[1]
    edge.target = Target("live", f"http://127.0.0.1:{edge.port}", DOMAIN)
    yield edge
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def prober():
    with Prober(timeout=2.0) as p:
        yield p


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- targets

SITE = SiteConfig(slug="acme", domain=DOMAIN, repo="/srv/repo")


def test_live_target_without_tls():
    edge = EdgeSettings(tls="off", http_port=8080, https_port=8443, preview_port=9081)
    assert live_target(edge, SITE) == Target("live", "http://127.0.0.1:8080", DOMAIN, sni=False)


@pytest.mark.parametrize("tls", ["auto", "internal"])
def test_live_target_with_tls(tls):
    edge = EdgeSettings(tls=tls, http_port=8080, https_port=8443, preview_port=9081)
    assert live_target(edge, SITE) == Target("live", "https://127.0.0.1:8443", DOMAIN, sni=True)


def test_live_target_on_a_specific_address():
    assert live_target(EdgeSettings(tls="off", bind="10.0.0.5"), SITE).base_url == "http://10.0.0.5:80"
    assert live_target(EdgeSettings(tls="auto", bind="::1"), SITE).base_url == "https://[::1]:443"


@pytest.mark.parametrize("tls", ["auto", "internal"])
def test_live_target_of_a_site_behind_another_proxy_is_plain_http(tls):
    edge = EdgeSettings(tls=tls, http_port=8080, https_port=8443, preview_port=9081)
    behind = SiteConfig(slug="acme", domain=DOMAIN, repo="/srv/repo", caddy=CaddySettings(behind_proxy=True))
    assert live_target(edge, behind) == Target("live", "http://127.0.0.1:8080", DOMAIN, sni=False)


@pytest.mark.parametrize("tls", ["off", "internal", "auto"])
def test_preview_target_is_always_plain_http_on_loopback(tls):
    edge = EdgeSettings(tls=tls, bind="10.0.0.5", preview_port=9081)
    assert preview_target(edge, DOMAIN) == Target("preview", "http://127.0.0.1:9081", DOMAIN, sni=False)


# ---------------------------------------------------------------- requests


def test_request_sends_host_and_forwarded_proto(fake_edge, prober):
    answer = prober.request(fake_edge.target, "/")
    assert answer == Answer(200, "text/html; charset=utf-8", "<h1>Acme</h1>\n<p>Welcome   home</p>")
    headers = fake_edge.requests[-1]["headers"]
    assert headers["Host"] == DOMAIN
    assert headers["X-Forwarded-Proto"] == "https"
    assert fake_edge.requests[-1]["path"] == "/"


def test_request_does_not_follow_redirects(fake_edge, prober):
    answer = prober.request(fake_edge.target, "/contact/", "POST", data={"a": "b"})
    assert answer.status == 302
    assert len(fake_edge.requests) == 1


def test_connection_refused_is_an_answer_not_an_exception(prober):
    answer = prober.request(Target("preview", f"http://127.0.0.1:{closed_port()}", DOMAIN), "/")
    assert answer == Answer(0, "", "", error="ConnectError: [Errno 111] Connection refused")
    assert answer.describe() == "ConnectError: [Errno 111] Connection refused"


def test_answer_excerpt_and_describe():
    assert Answer(200, "", "a\n\n  b\tc  ").excerpt() == "a b c"
    assert Answer(500, "", "x" * 400).excerpt() == "x" * 300 + "..."
    assert Answer(500, "", "x" * 300).excerpt() == "x" * 300
    assert Answer(503, "", "down\n").describe() == "HTTP 503: down"
    assert Answer(200, "", "[1, 2]").json() is None
    assert Answer(200, "", "nope").json() is None
    assert Answer(200, "", '{"status": "ok"}').json() == {"status": "ok"}


def test_health_properties():
    ok = Health(Answer(200, "application/json", '{"status": "ok", "version": {"build": "v2", "sum_core": "0.7.0"}}'))
    assert (ok.status, ok.version, ok.passing) == ("ok", {"build": "v2", "sum_core": "0.7.0"}, True)
    assert Health(Answer(200, "", '{"status": "degraded"}')).passing is True
    assert Health(Answer(503, "", '{"status": "ok"}')).passing is False
    assert Health(Answer(200, "", '{"status": "unhealthy"}')).passing is False
    assert Health(Answer(200, "", "<html>")).status is None
    assert Health(Answer(200, "", '{"version": "v2"}')).version == {}
    # A status that is not a string is no status (and never passes); a JSON body that is not an object is no body.
    numeric, listed = Health(Answer(200, "", '{"status": 1}')), Health(Answer(200, "", '["ok"]'))
    assert (numeric.status, numeric.passing) == (None, False)
    assert (listed.status, listed.version, listed.passing) == (None, {}, False)


# ---------------------------------------------------------------- smoke checks


@pytest.mark.parametrize("check", DEFAULT_SMOKE_CHECKS, ids=lambda c: c.path)
def test_default_checks_pass_against_a_healthy_site(fake_edge, prober, check):
    record = prober.check(fake_edge.target, check)
    assert record.pop("seconds") < 2
    assert record == {"check": f"GET {check.path}", "status": 200}


def test_check_passes_with_content_type_prefix_and_contains(fake_edge, prober):
    check = SmokeCheck(path="/", content_type="text/html", contains="Welcome")
    assert prober.check(fake_edge.target, check)["status"] == 200


def check_failure(fake_edge, prober, check: SmokeCheck, target: Target | None = None) -> CheckFailed:
    with pytest.raises(CheckFailed) as info:
        prober.check(target or fake_edge.target, check)
    assert exit_code_of(info.value) == 1
    return info.value


def test_status_mismatch(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/missing/"))
    assert err.message == "smoke check GET /missing/ on the live colour failed: expected HTTP 200, got 404"
    assert err.output_tail == "<h1>Not Found</h1>"


def test_content_type_mismatch(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/", content_type="text/css"))
    assert err.message == (
        "smoke check GET / on the live colour failed: expected content type text/css, got text/html; charset=utf-8"
    )
    assert err.output_tail == "<h1>Acme</h1> <p>Welcome home</p>"


def test_missing_content_type(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/no-type", content_type="text/plain"))
    assert (
        err.message == "smoke check GET /no-type on the live colour failed: expected content type text/plain, got none"
    )


def test_body_does_not_contain(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/", contains="Goodbye"))
    assert err.message == "smoke check GET / on the live colour failed: body does not contain 'Goodbye'"


def test_json_status_mismatch(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/api/status", json_status=("ok", "degraded")))
    assert err.message == (
        "smoke check GET /api/status on the live colour failed: expected status ok or degraded, got 'maintenance'"
    )
    assert err.output_tail == '{"status": "maintenance"}'


def test_json_status_of_a_non_json_body(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/not-json", json_status=("ok",)))
    assert err.message == "smoke check GET /not-json on the live colour failed: expected status ok, got None"


def test_unhealthy_health_check(fake_edge, prober):
    fake_edge.health = [(503, UNHEALTHY)]
    err = check_failure(fake_edge, prober, DEFAULT_SMOKE_CHECKS[0])
    assert err.message == "smoke check GET /health/ on the live colour failed: expected HTTP 200, got 503"
    assert err.output_tail == json.dumps(UNHEALTHY)


def test_long_bodies_are_cut_in_the_evidence(fake_edge, prober):
    err = check_failure(fake_edge, prober, SmokeCheck(path="/big"))
    assert err.output_tail == "x" * 300 + "..."


def test_connection_refused(prober):
    target = Target("preview", f"http://127.0.0.1:{closed_port()}", DOMAIN)
    with pytest.raises(CheckFailed) as info:
        prober.check(target, SmokeCheck(path="/"))
    assert info.value.message == (
        "smoke check GET / on the preview colour failed: ConnectError: [Errno 111] Connection refused"
    )
    assert info.value.output_tail == "ConnectError: [Errno 111] Connection refused"


def test_post_check_with_csrf(fake_edge, prober):
    check = SmokeCheck(
        path="/contact/",
        method="POST",
        status=302,
        csrf_from="/contact/",
        form=(("name", "Smoke Test"), ("email", "smoke@example.com")),
    )
    record = prober.check(fake_edge.target, check)
    assert (record["check"], record["status"]) == ("POST /contact/", 302)
    get, post = fake_edge.requests
    assert (get["method"], get["path"], post["method"], post["path"]) == ("GET", "/contact/", "POST", "/contact/")
    assert urllib.parse.parse_qs(post["body"].decode()) == {
        "name": ["Smoke Test"],
        "email": ["smoke@example.com"],
        "csrfmiddlewaretoken": ["TOKEN456"],
    }
    headers = post["headers"]
    assert headers["Cookie"] == "csrftoken=COOKIE123"
    assert headers["Origin"] == f"https://{DOMAIN}"
    assert headers["Referer"] == f"https://{DOMAIN}/contact/"
    assert (headers["Host"], headers["X-Forwarded-Proto"]) == (DOMAIN, "https")
    assert len(prober.client.cookies) == 0  # cleared so later checks start clean


def test_post_check_without_a_csrf_token(fake_edge, prober):
    check = SmokeCheck(path="/contact/", method="POST", status=302, csrf_from="/no-token/")
    err = check_failure(fake_edge, prober, check)
    assert err.message == "smoke check POST /contact/ on the live colour failed: no CSRF token on /no-token/ (HTTP 200)"
    assert [r["method"] for r in fake_edge.requests] == ["GET"]  # never posted


# ---------------------------------------------------------------- waiting for health


@pytest.fixture
def fast_polling(monkeypatch):
    """wait_healthy polls every 0.5 s; poll every 0.05 s here so these tests stay fast."""
    real_sleep = time.sleep
    monkeypatch.setattr(smoke_module.time, "sleep", lambda seconds: real_sleep(min(seconds, 0.05)))


def test_wait_healthy_returns_once_health_passes(fake_edge, prober, fast_polling):
    fake_edge.health = [
        (503, UNHEALTHY),
        (200, {"status": "degraded"}),
        (200, {"status": "ok", "version": {"build": "v2"}}),
    ]
    waits = []
    started = time.monotonic()
    health = prober.wait_healthy(fake_edge.target, 5, on_wait=lambda: waits.append(1))
    assert health.status == "degraded"  # degraded passes: the real sum-core answers 200 for it
    assert len(waits) == 1
    assert len(fake_edge.requests) == 2
    assert time.monotonic() - started < 2


def test_wait_healthy_waits_for_the_expected_version(fake_edge, prober, fast_polling):
    fake_edge.health = [
        (200, {"status": "ok", "version": {"build": "v1"}}),
        (200, {"status": "ok", "version": {"build": "v2", "sum_core": "0.7.0"}}),
    ]
    health = prober.wait_healthy(fake_edge.target, 5, expect_version={"build": "v2"})
    assert health.version == {"build": "v2", "sum_core": "0.7.0"}


def without_timeout(message: str) -> str:
    """The message with its "within <timeout>s" normalised (its formatting is a known cosmetic bug, below)."""
    return re.sub(r"within [0-9.]+s:", "within Ns:", message, count=1)


def test_wait_healthy_times_out_with_the_body(fake_edge, prober, fast_polling):
    fake_edge.health = [(503, UNHEALTHY)]
    started = time.monotonic()
    with pytest.raises(CheckFailed) as info:
        prober.wait_healthy(fake_edge.target, 0.3)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2
    body = json.dumps(UNHEALTHY)
    assert (
        without_timeout(info.value.message) == f"live /health/ through Caddy did not pass within Ns: HTTP 503: {body}"
    )
    assert info.value.output_tail == body
    assert exit_code_of(info.value) == 1
    assert len(fake_edge.requests) >= 2  # it kept polling until the deadline


def test_wait_healthy_times_out_on_the_wrong_version(fake_edge, prober, fast_polling):
    fake_edge.health = [(200, {"status": "ok", "version": {"build": "v1"}})]
    with pytest.raises(CheckFailed) as info:
        prober.wait_healthy(fake_edge.target, 0.2, expect_version={"build": "v2"})
    body = json.dumps({"status": "ok", "version": {"build": "v1"}})
    assert without_timeout(info.value.message) == (
        f"live /health/ through Caddy did not pass reporting version {{'build': 'v2'}} within Ns: HTTP 200: {body}"
    )


def test_wait_healthy_names_the_real_timeout(fake_edge, prober, fast_polling):
    fake_edge.health = [(503, UNHEALTHY)]
    with pytest.raises(CheckFailed) as info:
        prober.wait_healthy(fake_edge.target, 0.5)
    assert (
        info.value.message == f"live /health/ through Caddy did not pass within 0.5s: HTTP 503: {json.dumps(UNHEALTHY)}"
    )


def test_wait_healthy_with_nothing_listening(prober, fast_polling):
    target = Target("preview", f"http://127.0.0.1:{closed_port()}", DOMAIN)
    with pytest.raises(CheckFailed) as info:
        prober.wait_healthy(target, 0.2)
    assert without_timeout(info.value.message) == (
        "preview /health/ through Caddy did not pass within Ns: ConnectError: [Errno 111] Connection refused"
    )


# ---------------------------------------------------------------- redirects fail fast, with the likely cause

HTTPS_HINT = (
    "the app redirects to HTTPS because it does not see the request as secure: its settings set "
    "SECURE_SSL_REDIRECT, and the app server must trust the edge's X-Forwarded-Proto (sumbg starts "
    "gunicorn with FORWARDED_ALLOW_IPS = the edge network; an image whose own command starts another "
    "server, or overrides that, must trust it too)"
)


def test_wait_healthy_fails_at_once_on_a_redirect(fake_edge, prober, fast_polling):
    fake_edge.health = [(301, {}, {"Location": f"https://{DOMAIN}/health/"})]
    started = time.monotonic()
    with pytest.raises(CheckFailed) as info:
        prober.wait_healthy(fake_edge.target, 60)
    assert time.monotonic() - started < 5
    assert len(fake_edge.requests) == 1
    assert info.value.message == (
        f"live /health/ through Caddy answered HTTP 301 redirecting to https://{DOMAIN}/health/; {HTTPS_HINT}"
    )


@pytest.mark.parametrize(
    "path, message",
    [
        ("/to-https/", f"expected HTTP 200, got HTTP 301 redirecting to https://{DOMAIN}/to-https/: {HTTPS_HINT}"),
        (
            "/to-www/",
            f"expected HTTP 200, got HTTP 301 redirecting to https://www.{DOMAIN}/to-www/: the app redirects "
            "to another host: check the site's domains and the app's canonical-host settings (ALLOWED_HOSTS, "
            "PREPEND_WWW)",
        ),
        (
            "/to-login/",
            "expected HTTP 200, got HTTP 302 redirecting to /accounts/login/?next=/to-login/: the app "
            "redirects this path; a smoke check that expects it can say status = 302",
        ),
    ],
)
def test_smoke_check_redirects_say_where_and_why(fake_edge, prober, path, message):
    err = check_failure(fake_edge, prober, SmokeCheck(path=path))
    assert err.message == f"smoke check GET {path} on the live colour failed: {message}"
