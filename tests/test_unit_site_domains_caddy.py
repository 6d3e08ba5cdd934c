"""site.toml: several domains per site, the [caddy] settings (golden path, basic auth, raw
directives) and what they do to the default smoke checks."""

from __future__ import annotations

import pytest

from sumbg.config import DEFAULT_SMOKE_CHECKS, BasicAuth, CaddySettings, SmokeCheck

from .test_unit_config import reparse, site_error, site_from

BASE = 'slug = "acme"\nrepo = "/r"\n[app]\nproject = "acme"\n'
HASH = "$2a$14$Tu8EAG4v0HT8GOP04012vunbSVxSIYG1D4d6X1AF1OQL3OX7QDkNe"


def test_domains_first_is_canonical(tmp_path):
    site = site_from(tmp_path, 'domains = ["acme.example.com", "www.acme.example.com"]\n' + BASE)
    assert (site.domain, site.aliases) == ("acme.example.com", ("www.acme.example.com",))
    assert reparse(site) == site


def test_the_older_single_domain_still_loads(tmp_path):
    site = site_from(tmp_path, 'domain = "acme.example.com"\n' + BASE)
    assert (site.domain, site.aliases) == ("acme.example.com", ())


@pytest.mark.parametrize(
    "line, message",
    [
        ("domains = []", "site.toml: domains: must name at least one domain"),
        (
            'domains = ["acme.example.com", "Evil.com {"]',
            "site.toml: domains[1]: must be a hostname (lowercase letters, digits, hyphens, dots)",
        ),
        ('domains = ["a.example.com", "a.example.com"]', "site.toml: domains: names a domain twice"),
        (
            'domain = "a.example.com"\ndomains = ["b.example.com"]',
            "site.toml: domain: give either domain or domains, not both",
        ),
    ],
)
def test_bad_domains(tmp_path, line, message):
    assert site_error(tmp_path, line + "\n" + BASE).message == message


def test_caddy_defaults_are_the_golden_path(tmp_path):
    site = site_from(tmp_path, 'domain = "acme.example.com"\n' + BASE)
    assert site.caddy == CaddySettings()
    assert site.caddy.response_headers() == (
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
        ("Permissions-Policy", "geolocation=(), microphone=(), camera=()"),
    )


def test_caddy_settings_round_trip(tmp_path):
    text = (
        'domain = "acme.example.com"\n'
        + BASE
        + f'''
[caddy]
redirect_to_canonical = false
encode = false
security_headers = false
extra = "@old path /old/*\\nredir @old /new/ 301"
headers = {{ "X-Robots-Tag" = "noindex" }}

[[caddy.basic_auth]]
path = "/admin/*"
user = "staging"
hash = "{HASH}"
'''
    )
    site = site_from(tmp_path, text)
    assert site.caddy == CaddySettings(
        redirect_to_canonical=False,
        encode=False,
        security_headers=False,
        headers=(("X-Robots-Tag", "noindex"),),
        basic_auth=(BasicAuth("/admin/*", "staging", HASH),),
        extra="@old path /old/*\nredir @old /new/ 301",
    )
    assert site.caddy.response_headers() == (("X-Robots-Tag", "noindex"),)
    assert reparse(site) == site


def test_default_smoke_checks_follow_basic_auth(tmp_path):
    site = site_from(
        tmp_path,
        'domain = "acme.example.com"\n'
        + BASE
        + f'''
[[caddy.basic_auth]]
path = "/admin/*"
user = "staging"
hash = "{HASH}"
''',
    )
    assert site.smoke_checks == (*DEFAULT_SMOKE_CHECKS[:3], SmokeCheck(path="/admin/login/", status=401))


@pytest.mark.parametrize(
    "caddy, message",
    [
        (
            '[[caddy.basic_auth]]\npath = "/admin/*"\nuser = "staging"\nhash = "secret"',
            "site.toml: caddy.basic_auth[0].hash: must be a bcrypt hash from `caddy hash-password` (never a plain "
            "password)",
        ),
        (
            f'[[caddy.basic_auth]]\npath = "/admin/* {{"\nuser = "staging"\nhash = "{HASH}"',
            "site.toml: caddy.basic_auth[0].path: must be a path pattern like /admin/*",
        ),
        (
            f'[[caddy.basic_auth]]\npath = "/admin/*"\nuser = "st aging"\nhash = "{HASH}"',
            "site.toml: caddy.basic_auth[0].user: must be letters, digits, dots, hyphens or underscores",
        ),
        (
            '[caddy]\nextra = "}\\nhttp://evil.example.com {\\nrespond 200"',
            "site.toml: caddy.extra: line 1 closes a block it did not open: braces must balance",
        ),
        ('[caddy]\nextra = "route {"', "site.toml: caddy.extra: braces must balance (a block is left open)"),
        (
            '[caddy]\nheaders = { "X-Evil" = "a\\"\\n}" }',
            'site.toml: caddy.headers.X-Evil: must be Header-Name = "value" without quotes, backslashes, braces or '
            "control characters",
        ),
        (
            '[caddy]\nheaders = { "X Evil" = "a" }',
            'site.toml: caddy.headers.X Evil: must be Header-Name = "value" without quotes, backslashes, braces or '
            "control characters",
        ),
        ('[caddy]\ntls = "off"', "site.toml: caddy.tls: unknown setting"),
        (
            f'[[caddy.basic_auth]]\npath = "/admin/*"\nuser = "staging"\nhash = "{HASH}"\n'
            '[[smoke.checks]]\npath = "/admin/login/"\nstatus = 200',
            "site.toml: smoke.checks[0].status: /admin/login/ is behind caddy.basic_auth (/admin/*), so sumbg gets "
            "401: say status = 401",
        ),
    ],
)
def test_bad_caddy_settings(tmp_path, caddy, message):
    assert site_error(tmp_path, 'domain = "acme.example.com"\n' + BASE + caddy + "\n").message == message
