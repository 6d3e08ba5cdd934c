"""The SUM golden path's edge features on the real engine: several names per site, the
canonical redirect, compression and security headers, basic auth on one site only,
`sumbg apply`, and an init re-run that keeps a hand edit to site.toml."""

from __future__ import annotations

import gzip
import http.client
import re
import subprocess

import pytest

from .conftest import Host, http_get

pytestmark = pytest.mark.e2e

SLUG, DOMAIN, WWW = "t-gp", "t-gp.example.test", "www.t-gp.example.test"
OTHER = "t-gp2"


def get(host: Host, domain: str, path: str, headers: dict | None = None):
    """One request; returns (status, [(header, value)...] lower-cased, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", host.http_port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": domain, "X-Forwarded-Proto": "https", **(headers or {})})
        response = conn.getresponse()
        return response.status, [(k.lower(), v) for k, v in response.getheaders()], response.read()
    finally:
        conn.close()


def values(headers: list, name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def edit_site_toml(host: Host, slug: str, old: str, new: str) -> None:
    path = host.site_dir(slug) / "site.toml"
    text = path.read_text()
    assert text.count(old) == 1, text
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def sites(host: Host):
    host.init(SLUG, "v1.0.0", "--domain", WWW)
    host.init(OTHER, "v1.0.0")
    yield
    host.teardown_site(SLUG)
    host.teardown_site(OTHER)


def test_several_names_redirect_to_the_canonical_one(host: Host, sites) -> None:
    status, headers, _ = get(host, WWW, "/contact/?x=1")
    assert (status, values(headers, "location")) == (308, [f"https://{DOMAIN}/contact/?x=1"])
    state = host.sumbg("status", SLUG, "--json").json()
    assert state["agreement"]["agree"] is True
    env = (host.site_dir(SLUG) / "run" / "app.env").read_text()
    assert f"ALLOWED_HOSTS={DOMAIN},{WWW}\n" in env
    assert f"CSRF_TRUSTED_ORIGINS=https://{DOMAIN},https://{WWW}\n" in env


def test_compression_and_security_headers_through_caddy(host: Host, sites) -> None:
    status, headers, body = get(host, DOMAIN, "/", {"Accept-Encoding": "gzip"})
    assert status == 200
    assert values(headers, "content-encoding") == ["gzip"]
    assert b"sum-core" in gzip.decompress(body)
    # One value each: the app's own X-Frame-Options is replaced, never duplicated.
    assert values(headers, "x-content-type-options") == ["nosniff"]
    assert values(headers, "x-frame-options") == ["DENY"]
    assert values(headers, "referrer-policy") == ["strict-origin-when-cross-origin"]
    assert values(headers, "permissions-policy") == ["geolocation=(), microphone=(), camera=()"]
    status, headers, _ = get(host, DOMAIN, "/static/sum_core/css/main.css", {"Accept-Encoding": "zstd"})
    assert status == 200 and values(headers, "x-frame-options") == ["DENY"]


def test_basic_auth_for_one_site_only_and_every_name_serving(host: Host, sites) -> None:
    hashed = subprocess.run(
        [str(host.caddy_binary), "hash-password", "--plaintext", "staging-pass"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    edit_site_toml(host, SLUG, "redirect_to_canonical = true", "redirect_to_canonical = false")
    edit_site_toml(host, SLUG, "# [[caddy.basic_auth]]", "[[caddy.basic_auth]]")
    edit_site_toml(host, SLUG, '# path = "/admin/*"', 'path = "/admin/*"')
    edit_site_toml(host, SLUG, '# user = "staging"', 'user = "staging"')
    edit_site_toml(host, SLUG, '# hash = "$2a$14$..."', f'hash = "{hashed}"')
    # init spelled the smoke checks out: the one under /admin/ must now expect 401.
    refused = host.sumbg("apply")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"sumbg: error: {SLUG}/site.toml: smoke.checks[3].status: /admin/login/ is behind caddy.basic_auth "
        "(/admin/*), so sumbg gets 401: say status = 401"
    ]
    edit_site_toml(host, SLUG, 'path = "/admin/login/"\nstatus = 200', 'path = "/admin/login/"\nstatus = 401')
    applied = host.sumbg("apply", "--json")
    assert applied.returncode == 0, str(applied)
    assert applied.json()["changed"] == [f"sites/{SLUG}.caddy"]
    assert host.sumbg("apply", "--json").json()["changed"] == []  # nothing to do: no reload

    assert get(host, DOMAIN, "/admin/login/")[0] == 401
    assert get(host, DOMAIN, "/admin/login/", {"Authorization": "Basic c3RhZ2luZzp3cm9uZw=="})[0] == 401
    import base64

    good = base64.b64encode(b"staging:staging-pass").decode()
    assert get(host, DOMAIN, "/admin/login/", {"Authorization": f"Basic {good}"})[0] == 200
    assert get(host, OTHER + ".example.test", "/admin/login/")[0] == 200  # the other site is open
    assert get(host, WWW, "/")[0] == 200  # every name serves now
    assert "basic_auth" not in (host.root / "caddy" / "sites" / f"{OTHER}.caddy").read_text()
    assert "staging-pass" not in (host.root / "caddy" / "sites" / f"{SLUG}.caddy").read_text()


def test_a_value_that_would_inject_a_directive_is_refused_and_changes_nothing(host: Host, sites) -> None:
    before = (host.root / "caddy" / "sites" / f"{SLUG}.caddy").read_text()
    edit_site_toml(host, SLUG, 'extra = ""', 'extra = "}\\nhttp://evil.example.test {\\nrespond 200"')
    try:
        refused = host.sumbg("apply")
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"sumbg: error: {SLUG}/site.toml: caddy.extra: line 1 closes a block it did not open: braces must balance"
        ]
        assert (host.root / "caddy" / "sites" / f"{SLUG}.caddy").read_text() == before
    finally:
        edit_site_toml(host, SLUG, 'extra = "}\\nhttp://evil.example.test {\\nrespond 200"', 'extra = ""')


def test_init_rerun_after_a_failure_keeps_a_hand_edit(host: Host, sites) -> None:
    slug = "t-rerun"
    failed = host.sumbg(
        "init",
        slug,
        "--repo",
        str(host.repo),
        "--domain",
        f"{slug}.example.test",
        "--ref",
        "v1.0.0",
        "--env",
        "DJANGO_SETTINGS_MODULE=acme.settings.nowhere",
    )
    try:
        assert failed.returncode == 1, str(failed)
        assert "migrate" in failed.stderr
        edit_site_toml(host, slug, 'DJANGO_SETTINGS_MODULE = "acme.settings.nowhere"\n', "")
        edit_site_toml(host, slug, 'notes = ""', 'notes = "kitchen client, edited by hand"')
        changed = host.sumbg(
            "init",
            slug,
            "--repo",
            str(host.repo),
            "--domain",
            f"{slug}.example.test",
            "--ref",
            "v1.0.0",
            "--environment",
            "staging",
        )
        assert changed.returncode == 2
        assert changed.stderr.strip().splitlines() == [
            f"sumbg: error: site.toml of {slug} (kept from an earlier init, with any edits) has environment = "
            "'production', not 'staging': edit site.toml, or remove it to start afresh"
        ]
        again = host.sumbg(
            "init", slug, "--repo", str(host.repo), "--domain", f"{slug}.example.test", "--ref", "v1.0.0"
        )
        assert again.returncode == 0, str(again)
        assert "edits kept" in again.stderr
        text = (host.site_dir(slug) / "site.toml").read_text()
        assert re.search(r'^notes = "kitchen client, edited by hand"$', text, re.M)
        assert http_get(host.http_port, f"{slug}.example.test", "/")[0] == 200
    finally:
        host.teardown_site(slug)
