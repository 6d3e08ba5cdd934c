"""HTTP checks through the edge Caddy: the only module that imports httpx.

Every check goes through Caddy with the site's Host header and
`X-Forwarded-Proto: https`, either to the public listener (the live colour) or
to the loopback preview listener (the idle colour), so it exercises exactly the
routes, static files and headers visitors get.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from sumbg.config import EdgeSettings, SiteConfig, SmokeCheck
from sumbg.errors import CheckFailed
from sumbg.naming import METRICS_HOST

EXCERPT = 300


@dataclass(frozen=True)
class Target:
    """Where a colour of a site can be reached through Caddy."""

    label: str
    base_url: str
    domain: str
    sni: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    uds: str = ""  # reached over this unix socket (HTTP, Host header = domain) instead of base_url's address
    required_checks: tuple[str, ...] = ()  # /health/ checks whose failure is unhealthy, even when "degraded"


def unix_socket_target(label: str, path: str, domain: str) -> Target:
    """An app server listening on a unix socket (gunicorn's `--bind unix:PATH`), asked for `domain`."""
    return Target(label, "http://localhost", domain, uds=path)


def live_target(edge: EdgeSettings, site: SiteConfig) -> Target:
    required = site.required_checks
    if edge.tls == "off" or site.caddy.behind_proxy:
        return Target(
            "live", f"http://{_host(edge.probe_host)}:{edge.http_port}", site.domain, required_checks=required
        )
    return Target(
        "live", f"https://{_host(edge.probe_host)}:{edge.https_port}", site.domain, sni=True, required_checks=required
    )


def preview_target(edge: EdgeSettings, domain: str, required_checks: tuple[str, ...] = ()) -> Target:
    return Target("preview", f"http://127.0.0.1:{edge.preview_port}", domain, required_checks=required_checks)


def rehearsal_target(edge: EdgeSettings, domain: str) -> Target:
    """The live release on a migrated copy of the database, through the preview listener."""
    return Target(
        "rehearsal", f"http://127.0.0.1:{edge.preview_port}", domain, headers=(("X-Sumbg-Route", "rehearsal"),)
    )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass
class Answer:
    status: int
    content_type: str
    text: str
    error: str = ""
    location: str = ""

    @property
    def redirect(self) -> bool:
        return 300 <= self.status < 400

    def json(self) -> dict[str, object] | None:
        """The body as a JSON object, or None if it is not one."""
        try:
            value = json.loads(self.text)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def excerpt(self) -> str:
        body = re.sub(r"\s+", " ", self.text).strip()
        return body[:EXCERPT] + ("..." if len(body) > EXCERPT else "")

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.redirect:
            return f"HTTP {self.status} redirecting to {self.location or '(no Location header)'}"
        return f"HTTP {self.status}: {self.excerpt()}"


# How a check of /health/ says it fails: the real sum-core's {"status": "fail", "detail": ...}, or
# {"ok": false, "error": ...} (the example site's shape).
_FAILING_CHECK = ("fail", "failed", "failing", "error", "unhealthy", "down")


@dataclass
class Health:
    answer: Answer
    required: tuple[str, ...] = ()  # checks whose failure fails the whole answer ([health] required_checks)

    @property
    def status(self) -> str | None:
        body = self.answer.json()
        status = body.get("status") if body else None
        return status if isinstance(status, str) else None

    @property
    def version(self) -> dict[str, object]:
        """What /health/ says about the release it runs (sum-core: `git_sha`, `build`), or {}."""
        body = self.answer.json() or {}
        version = body.get("version")
        return version if isinstance(version, dict) else {}

    @property
    def failing_checks(self) -> dict[str, str]:
        """{check: what it says} for every check the body reports as failing."""
        body = self.answer.json() or {}
        checks = body.get("checks")
        if not isinstance(checks, dict):
            return {}
        failing = {}
        for name, check in checks.items():
            if isinstance(check, dict):
                state = check.get("status")
                failed = check.get("ok") is False or (isinstance(state, str) and state.lower() in _FAILING_CHECK)
                detail = check.get("detail") or check.get("error") or check.get("message") or state or "failing"
            else:
                failed, detail = check is False or (isinstance(check, str) and check.lower() in _FAILING_CHECK), check
            if failed:
                failing[str(name)] = " ".join(str(detail).split())[:EXCERPT]
        return failing

    @property
    def required_failing(self) -> dict[str, str]:
        """The required checks that fail (or that the body does not report at all)."""
        if not self.required:
            return {}
        body = self.answer.json() or {}
        checks = body.get("checks")
        reported = set(checks) if isinstance(checks, dict) else set()
        failing = self.failing_checks
        return {
            name: failing.get(name) or "not reported by /health/"
            for name in self.required
            if name in failing or name not in reported
        }

    @property
    def passing(self) -> bool:
        # The real sum-core answers 200 for ok and degraded, 503 only for unhealthy; a required
        # check's failure is unhealthy for this site whatever the overall status says.
        return self.answer.status == 200 and self.status in ("ok", "degraded") and not self.required_failing

    def describe(self) -> str:
        """What is wrong with (or what is) the answer, for a message."""
        required = self.required_failing
        if self.answer.status == 200 and self.status in ("ok", "degraded") and required:
            return "; ".join(f"required check {name} fails: {detail}" for name, detail in required.items())
        return self.answer.describe()


class Prober:
    def __init__(self, timeout: float = 5.0) -> None:
        # Loopback probes of our own edge: with TLS on, the certificate is for the
        # domain (or Caddy's internal CA), so verification is left to the real visitors.
        self.client = httpx.Client(timeout=timeout, verify=False, follow_redirects=False)
        self.timeout = timeout
        self.socket_clients: dict[str, httpx.Client] = {}

    def close(self) -> None:
        self.client.close()
        for client in self.socket_clients.values():
            client.close()

    def _client(self, target: Target) -> httpx.Client:
        if not target.uds:
            return self.client
        if target.uds not in self.socket_clients:
            self.socket_clients[target.uds] = httpx.Client(
                transport=httpx.HTTPTransport(uds=target.uds), timeout=self.timeout, follow_redirects=False
            )
        return self.socket_clients[target.uds]

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        target: Target,
        path: str,
        method: str = "GET",
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        all_headers = {"Host": target.domain, "X-Forwarded-Proto": "https", **dict(target.headers), **(headers or {})}
        extensions = {"sni_hostname": target.domain} if target.sni else {}
        try:
            response = self._client(target).request(
                method, target.base_url + path, headers=all_headers, data=data, extensions=extensions
            )
        except httpx.HTTPError as exc:
            return Answer(0, "", "", error=f"{type(exc).__name__}: {exc or 'no answer'}")
        return Answer(
            response.status_code,
            response.headers.get("content-type", ""),
            response.text,
            location=response.headers.get("location", ""),
        )

    def visitor_counts(self, edge: EdgeSettings, domain: str) -> tuple[int, int] | None:
        """What the edge served `domain`'s visitors so far (requests, 5xx), or None if it cannot tell."""
        answer = self.request(Target("metrics", f"http://127.0.0.1:{edge.preview_port}", METRICS_HOST), "/metrics")
        if answer.status != 200:
            return None
        return visitor_counts_from_metrics(answer.text, domain)

    def health(self, target: Target) -> Health:
        return Health(self.request(target, "/health/"), target.required_checks)

    def wait_healthy(
        self,
        target: Target,
        timeout: float,
        *,
        expect_version: dict[str, str | None] | None = None,
        on_wait: Callable[[], object] | None = None,
    ) -> Health:
        """Poll /health/ until it passes (and reports the expected version) or the deadline passes."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.health(target)
            if last.passing and _version_matches(last.version, expect_version):
                return last
            if last.answer.redirect:
                # A redirect is a setting, not a slow start: waiting will not change it.
                raise CheckFailed(
                    f"{target.label} /health/ through Caddy answered {last.answer.describe()}; "
                    f"{redirect_hint(target, last.answer)}"
                )
            if time.monotonic() >= deadline:
                wanted = f" reporting version {expect_version}" if expect_version else ""
                raise CheckFailed(
                    f"{target.label} /health/ through Caddy did not pass{wanted} within {timeout:g}s: "
                    f"{last.describe()}",
                    output_tail=last.answer.excerpt(),
                )
            if on_wait:
                on_wait()
            time.sleep(0.5)

    def evaluate(self, target: Target, check: SmokeCheck) -> tuple[dict[str, object], Answer, str]:
        """One smoke check: its record, the answer, and what is wrong with it ('' if nothing)."""
        started = time.monotonic()
        if check.method == "POST":
            answer = self._post_form(target, check)
        else:
            answer = self.request(target, check.path)
        record: dict[str, object] = {
            "check": check.describe(),
            "status": answer.status,
            "seconds": round(time.monotonic() - started, 3),
        }
        return record, answer, _problem(check, answer, target)

    def check(self, target: Target, check: SmokeCheck) -> dict[str, object]:
        """One smoke check; returns its record or raises CheckFailed naming the check."""
        record, answer, problem = self.evaluate(target, check)
        if problem:
            raise CheckFailed(
                f"smoke check {check.describe()} on the {target.label} colour failed: {problem}",
                output_tail=answer.excerpt() or answer.error,
            )
        return record

    def _post_form(self, target: Target, check: SmokeCheck) -> Answer:
        form = dict(check.form)
        headers = {"Origin": f"https://{target.domain}", "Referer": f"https://{target.domain}{check.path}"}
        if check.csrf_from:
            page = self.request(target, check.csrf_from)
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            cookie = self._client(target).cookies.get("csrftoken")
            if not token or not cookie:
                return Answer(
                    page.status,
                    page.content_type,
                    page.text,
                    error=f"no CSRF token on {check.csrf_from} (HTTP {page.status})",
                )
            form["csrfmiddlewaretoken"] = token.group(1)
            headers["Cookie"] = f"csrftoken={cookie}"
            self._client(target).cookies.clear()
        return self.request(target, check.path, "POST", data=form, headers=headers)


_METRIC = re.compile(r"^caddy_http_request_duration_seconds_count\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def visitor_counts_from_metrics(text: str, domain: str) -> tuple[int, int]:
    """(requests, 5xx answers) Caddy served for `domain` on its public listeners.

    Only the site block's outermost handler ("subroute") is counted, so a request is
    counted once; the loopback preview listener (server "preview") is left out.
    """
    requests = errors = 0
    for match in _METRIC.finditer(text):
        labels = dict(_LABEL.findall(match.group("labels")))
        if labels.get("host") != domain or labels.get("server") == "preview" or labels.get("handler") != "subroute":
            continue
        count = int(float(match.group("value")))
        requests += count
        if labels.get("code", "").startswith("5"):
            errors += count
    return requests, errors


def redirect_hint(target: Target, answer: Answer) -> str:
    """The likely cause of an unexpected redirect, for the operator."""
    location = answer.location
    if location.startswith(f"https://{target.domain}"):
        return (
            "the app redirects to HTTPS because it does not see the request as secure: its settings set "
            "SECURE_SSL_REDIRECT, and the app server must trust the edge's X-Forwarded-Proto (sumbg starts "
            "gunicorn with FORWARDED_ALLOW_IPS = the edge network; an image whose own command starts another "
            "server, or overrides that, must trust it too)"
        )
    if location.startswith(("http://", "https://")):
        return (
            "the app redirects to another host: check the site's domains and the app's canonical-host "
            "settings (ALLOWED_HOSTS, PREPEND_WWW)"
        )
    return "the app redirects this path; a smoke check that expects it can say status = " + str(answer.status)


def _version_matches(actual: Mapping[str, object], expected: Mapping[str, str | None] | None) -> bool:
    return not expected or all(actual.get(key) == value for key, value in expected.items())


def _problem(check: SmokeCheck, answer: Answer, target: Target) -> str:
    if answer.error:
        return answer.error
    if answer.status != check.status:
        if answer.redirect:
            return f"expected HTTP {check.status}, got {answer.describe()}: {redirect_hint(target, answer)}"
        return f"expected HTTP {check.status}, got {answer.status}"
    if check.content_type and not answer.content_type.startswith(check.content_type):
        return f"expected content type {check.content_type}, got {answer.content_type or 'none'}"
    if check.contains and check.contains not in answer.text:
        return f"body does not contain {check.contains!r}"
    if check.json_status:
        body = answer.json()
        status = body.get("status") if body else None
        if status not in check.json_status:
            return f"expected status {' or '.join(check.json_status)}, got {status!r}"
    return ""


def served_certificate(address: str, port: int, server_name: str, timeout: float = 5.0) -> str | None:
    """The SHA-256 fingerprint of the certificate a TLS listener serves for `server_name` (SNI),
    or None if it does not answer with one. Not verified: it is compared, not trusted."""
    import hashlib

    try:
        der = _peer_certificate(address, port, server_name, timeout)
    except OSError:
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def _peer_certificate(address: str, port: int, server_name: str, timeout: float) -> bytes | None:
    """The DER certificate a TLS listener serves for `server_name` (SNI), unverified; OSError (an
    ssl.SSLError for a failed handshake) when nothing answers with TLS."""
    import socket
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout) as sock,
        context.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        return tls.getpeercert(binary_form=True)


class CertificateProbe:
    """Which certificate a TLS listener serves (a `CertificateProbe` of sumbg/ops/seams.py)."""

    def served(self, address: str, port: int, server_name: str) -> str | None:
        return served_certificate(address, port, server_name)


@dataclass(frozen=True)
class ServedCertificate:
    issuer: str  # the issuer's common name (or organisation)
    not_after: datetime.datetime  # UTC


def certificate_served(
    address: str, port: int, server_name: str, timeout: float = 5.0
) -> tuple[ServedCertificate | None, str]:
    """The certificate a TLS listener serves for `server_name` (SNI): (its issuer and expiry, ""),
    or (None, why there is none). Read, not verified: doctor reports on it, it does not trust it."""
    import ssl

    try:
        der = _peer_certificate(address, port, server_name, timeout)
    except ssl.SSLError as exc:
        return None, f"TLS handshake failed: {exc.reason or exc}"
    except OSError as exc:
        return None, f"nothing answers on {address}:{port} ({exc.strerror or exc})"
    if not der:
        return None, "no certificate was served"
    try:
        issuer, not_after = certificate_facts(der)
    except (ValueError, IndexError) as exc:
        return None, f"the certificate served cannot be read: {exc}"
    return ServedCertificate(issuer, not_after), ""


_COMMON_NAME = bytes((0x55, 0x04, 0x03))  # 2.5.4.3
_ORGANISATION = bytes((0x55, 0x04, 0x0A))  # 2.5.4.10


def certificate_facts(der: bytes) -> tuple[str, datetime.datetime]:
    """(issuer, not after) of a DER X.509 certificate, read with a few lines of DER instead of a
    cryptography library: Certificate > tbsCertificate > [version], serial, signature, issuer, validity."""
    _, start, end = _element(der, 0)
    _, start, end = _element(der, start)  # tbsCertificate
    fields = _children(der, start, end)
    if fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields = fields[1:]
    issuer, validity = fields[2], fields[3]
    names: dict[bytes, str] = {}
    for _, set_start, set_end in _children(der, issuer[1], issuer[2]):
        for _, pair_start, pair_end in _children(der, set_start, set_end):
            (_, oid_start, oid_end), (_, value_start, value_end) = _children(der, pair_start, pair_end)[:2]
            names.setdefault(der[oid_start:oid_end], der[value_start:value_end].decode("utf-8", "replace"))
    times = _children(der, validity[1], validity[2])
    tag, time_start, time_end = times[1]
    text = der[time_start:time_end].decode("ascii")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 1950-2049
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected time tag {tag:#x}")
    not_after = datetime.datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    return names.get(_COMMON_NAME) or names.get(_ORGANISATION) or "unknown issuer", not_after


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[at : at + count], "big")
        at += count
    if at + length > len(der):
        raise ValueError("truncated DER")
    return tag, at, at + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _element(der, start)
        found.append(element)
        start = element[2]
    return found
