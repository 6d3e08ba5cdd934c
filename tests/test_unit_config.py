"""sumbg.config: sumbg.toml and site.toml read from real files, validated, written back."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from sumbg import config
from sumbg.cli import exit_code_of
from sumbg.config import (
    DEFAULT_SMOKE_CHECKS,
    EdgeSettings,
    HostConfig,
    Images,
    MigrationSettings,
    SiteConfig,
    SmokeCheck,
    WatchSettings,
    keys,
    load_host,
    load_site,
    render_site_toml,
)
from sumbg.config.keys import SITE_TOML, SUMBG_TOML, lookup
from sumbg.config.reference import COMMAND, reference
from sumbg.errors import ConfigError, UsageError

MINIMAL_SITE = """\
slug = "acme"
domain = "acme.example.com"
repo = "/srv/repos/acme"

[app]
project = "acme"
"""


# ---------------------------------------------------------------- helpers


def host_from(tmp_path: Path, text: str) -> HostConfig:
    (tmp_path / "sumbg.toml").write_text(text)
    return load_host(tmp_path)


def host_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        host_from(tmp_path, text)
    assert exit_code_of(info.value) == 2
    return info.value


def site_from(tmp_path: Path, text: str, slug: str = "acme") -> SiteConfig:
    (tmp_path / slug).mkdir(exist_ok=True)
    (tmp_path / slug / "site.toml").write_text(text)
    return load_site(HostConfig(root=tmp_path), slug)


def site_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        site_from(tmp_path, text)
    assert exit_code_of(info.value) == 2
    return info.value


def reparse(site: SiteConfig) -> SiteConfig:
    text = render_site_toml(site)
    return config.parse_site(tomllib.loads(text))


def toml_error(text: str) -> str:
    with pytest.raises(tomllib.TOMLDecodeError) as info:
        tomllib.loads(text)
    return str(info.value)


# ---------------------------------------------------------------- host: defaults


def test_host_without_sumbg_toml_uses_defaults(tmp_path):
    host = load_host(tmp_path)
    assert host == HostConfig(root=tmp_path)
    assert host.edge == EdgeSettings(
        http_port=80, https_port=443, preview_port=8081, bind="0.0.0.0", tls="auto", acme_email="", name="sum-edge"
    )
    assert host.images == Images(python="python:3.12-slim", postgres="postgres:16", redis="redis:7", caddy="caddy:2")
    assert host.ca_bundle == ""
    assert host.min_free_gb == 2.0
    assert host.edge.container == "sum-edge-caddy"
    assert host.edge.probe_host == "127.0.0.1"
    assert host.caddy_dir == tmp_path / "caddy"
    assert host.www_dir == tmp_path / "www"
    assert host.site_dir("acme") == tmp_path / "acme"


def test_empty_sumbg_toml_gives_the_same_defaults(tmp_path):
    assert host_from(tmp_path, "") == HostConfig(root=tmp_path)


def test_root_comes_from_sumbg_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SUMBG_ROOT", str(tmp_path))
    assert load_host().root == tmp_path
    monkeypatch.delenv("SUMBG_ROOT")
    assert config.root_from_env() == Path("/srv/sum")


def test_host_every_setting(tmp_path):
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    host = host_from(
        tmp_path,
        f"""
[edge]
http_port = 8080
https_port = 8443
preview_port = 9081
bind = "127.0.0.1"
tls = "internal"
acme_email = "ops@example.com"
name = "sum-edge-2"

[images]
python = "registry.local/python:3.12"
postgres = "postgres:16.4"
redis = "redis:7.2"
caddy = "caddy:2.10"

[build]
ca_bundle = "{bundle}"

[preflight]
min_free_gb = 5
""",
    )
    assert host == HostConfig(
        root=tmp_path,
        edge=EdgeSettings(
            http_port=8080,
            https_port=8443,
            preview_port=9081,
            bind="127.0.0.1",
            tls="internal",
            acme_email="ops@example.com",
            name="sum-edge-2",
        ),
        images=Images(
            python="registry.local/python:3.12", postgres="postgres:16.4", redis="redis:7.2", caddy="caddy:2.10"
        ),
        ca_bundle=str(bundle),
        min_free_gb=5.0,
    )
    assert isinstance(host.min_free_gb, float)
    assert host.edge.container == "sum-edge-2-caddy"
    assert host.edge.probe_host == "127.0.0.1"


@pytest.mark.parametrize(
    "bind, probe", [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("10.0.0.5", "10.0.0.5"), ("::1", "::1")]
)
def test_probe_host(tmp_path, bind, probe):
    assert host_from(tmp_path, f'[edge]\nbind = "{bind}"\n').edge.probe_host == probe


@pytest.mark.parametrize("mode", ["auto", "internal", "off"])
def test_tls_modes(tmp_path, mode):
    assert host_from(tmp_path, f'[edge]\ntls = "{mode}"\n').edge.tls == mode


# ---------------------------------------------------------------- host: errors


@pytest.mark.parametrize(
    "text, message",
    [
        ('[edge]\ntls = "bogus"', "sumbg.toml: edge.tls: must be one of auto, internal, off, not 'bogus'"),
        ("[edge]\ntls = true", "sumbg.toml: edge.tls: must be a string, not True"),
        ("[edge]\nhttp_port = 0", "sumbg.toml: edge.http_port: must be a port number 1-65535, not 0"),
        ("[edge]\nhttps_port = 65536", "sumbg.toml: edge.https_port: must be a port number 1-65535, not 65536"),
        ("[edge]\npreview_port = -1", "sumbg.toml: edge.preview_port: must be a port number 1-65535, not -1"),
        ("[edge]\nhttp_port = true", "sumbg.toml: edge.http_port: must be an integer, not True"),
        ("[edge]\nhttps_port = false", "sumbg.toml: edge.https_port: must be an integer, not False"),
        ('[edge]\nhttp_port = "80"', "sumbg.toml: edge.http_port: must be an integer, not '80'"),
        ("[edge]\nhttp_port = 80.0", "sumbg.toml: edge.http_port: must be an integer, not 80.0"),
        (
            "[edge]\npreview_port = 80",
            "sumbg.toml: edge.preview_port: http_port, https_port and preview_port must all differ",
        ),
        (
            "[edge]\nhttp_port = 443",
            "sumbg.toml: edge.preview_port: http_port, https_port and preview_port must all differ",
        ),
        ('[edge]\nbind = "localhost"', "sumbg.toml: edge.bind: must be an IP address, not 'localhost'"),
        ('[edge]\nbind = ""', "sumbg.toml: edge.bind: must be an IP address, not ''"),
        ('[edge]\nacme_email = "ops.example.com"', "sumbg.toml: edge.acme_email: must be an email address"),
        ('[edge]\nacme_email = "ops@example.com }"', "sumbg.toml: edge.acme_email: must be an email address"),
        ('[edge]\nacme_email = "ops@example.com\\n}"', "sumbg.toml: edge.acme_email: must be an email address"),
        (
            '[edge]\nacme_ca = "http://ca.example/dir"',
            "sumbg.toml: edge.acme_ca: must be the https:// URL of an ACME directory, not 'http://ca.example/dir'",
        ),
        (
            '[edge]\nacme_ca = "https://ca.example/dir }"',
            "sumbg.toml: edge.acme_ca: must be the https:// URL of an ACME directory, not 'https://ca.example/dir }'",
        ),
        (
            '[edge]\nacme_ca_root = "/nonexistent/root.pem"',
            "sumbg.toml: edge.acme_ca_root: must be the absolute path of a PEM file, not '/nonexistent/root.pem'",
        ),
        ('[edge]\nname = "Sum_Edge"', "sumbg.toml: edge.name: must match ^[a-z0-9][a-z0-9-]{0,62}$"),
        ('[edge]\nname = ""', "sumbg.toml: edge.name: must match ^[a-z0-9][a-z0-9-]{0,62}$"),
        ("[edge]\nhtp_port = 80", "sumbg.toml: edge.htp_port: unknown setting"),
        ('edge = "sum-edge"', "sumbg.toml: edge: must be a table, not 'sum-edge'"),
        ("[[edge]]\ntls = 'off'", "sumbg.toml: edge: must be a table, not [{'tls': 'off'}]"),
        ('[images]\npython = ""', "sumbg.toml: images.python: must be an image reference like 'python:3.12-slim'"),
        (
            '[images]\npostgres = "postgres 16"',
            "sumbg.toml: images.postgres: must be an image reference like 'postgres:16'",
        ),
        ('[images]\nredis = "--privileged"', "sumbg.toml: images.redis: must be an image reference like 'redis:7'"),
        ("[images]\ncaddy = 2", "sumbg.toml: images.caddy: must be a string, not 2"),
        ('[images]\nnode = "node:20"', "sumbg.toml: images.node: unknown setting"),
        (
            '[build]\nca_bundle = "/nonexistent/ca.pem"',
            "sumbg.toml: build.ca_bundle: file /nonexistent/ca.pem does not exist",
        ),
        ("[build]\ncache = true", "sumbg.toml: build.cache: unknown setting"),
        ("[preflight]\nmin_free_gb = -1", "sumbg.toml: preflight.min_free_gb: must not be negative"),
        (
            "[preflight]\nmin_free_gb = true",
            "sumbg.toml: preflight.min_free_gb: must be an integer or a number, not True",
        ),
        (
            '[preflight]\nmin_free_gb = "2"',
            "sumbg.toml: preflight.min_free_gb: must be an integer or a number, not '2'",
        ),
        ("root = '/srv'", "sumbg.toml: root: unknown setting"),
        ("zzz = 1\naaa = 2", "sumbg.toml: aaa: unknown setting"),
    ],
)
def test_host_errors(tmp_path, text, message):
    assert host_error(tmp_path, text).message == message


def test_ca_bundle_must_be_a_file_not_a_directory(tmp_path):
    err = host_error(tmp_path, f'[build]\nca_bundle = "{tmp_path}"\n')
    assert err.message == f"sumbg.toml: build.ca_bundle: file {tmp_path} does not exist"


def test_malformed_sumbg_toml(tmp_path):
    text = "[edge\ntls = 'off'\n"
    err = host_error(tmp_path, text)
    assert err.message == f"sumbg.toml: not valid TOML: {toml_error(text)}"
    assert isinstance(err, UsageError)


def test_unreadable_sumbg_toml(tmp_path):
    (tmp_path / "sumbg.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        load_host(tmp_path)
    assert info.value.message == f"sumbg.toml: cannot read {tmp_path / 'sumbg.toml'}: Is a directory"
    assert exit_code_of(info.value) == 2


# ---------------------------------------------------------------- site: defaults


def test_minimal_site_defaults(tmp_path):
    site = site_from(tmp_path, MINIMAL_SITE)
    assert site == SiteConfig(
        slug="acme",
        domain="acme.example.com",
        repo="/srv/repos/acme",
        environment="production",
        project="acme",
        settings_module="acme.settings.production",
        wsgi="acme.wsgi:application",
        web_workers=2,
        worker_command="",
        db_publish_port=0,
        health_timeout=120.0,
        smoke_checks=DEFAULT_SMOKE_CHECKS,
        keep_backups=10,
        watch_seconds=30.0,
        notes="",
        extra_env=(),
    )
    assert DEFAULT_SMOKE_CHECKS == (
        SmokeCheck(path="/health/", status=200, json_status=("ok", "degraded")),
        SmokeCheck(path="/", status=200),
        SmokeCheck(path="/static/sum_core/css/main.css", status=200, content_type="text/css"),
        SmokeCheck(path="/admin/login/", status=200),
    )
    assert isinstance(site.health_timeout, float) and isinstance(site.watch_seconds, float)


def test_db_identifiers_replace_hyphens(tmp_path):
    site = site_from(tmp_path, MINIMAL_SITE.replace('"acme"', '"acme-shop"', 1), slug="acme-shop")
    assert (site.db_name, site.db_user) == ("acme_shop", "acme_shop")


def test_site_every_setting(tmp_path):
    site = site_from(
        tmp_path,
        """
slug = "acme"
domain = "www.acme.example.com"
repo = "git@github.com:org/acme.git"
environment = "staging"
notes = "client: Acme Ltd"

[app]
settings = "config.settings"
wsgi = "config.wsgi:app"
web_workers = 4
worker_command = "celery -A config worker"

[env]
SENTRY_DSN = "https://key@sentry.example.com/1"
FEATURE_X = ""

[database]
publish_port = 15432

[health]
timeout = 2.5

[upgrade]
keep_backups = 3
watch = 0

[[smoke.checks]]
path = "/contact/"
method = "POST"
status = 302
csrf_from = "/contact/"
form = { name = "Smoke", email = "smoke@example.com" }

[[smoke.checks]]
path = "/api/status"
content_type = "application/json"
contains = "ready"
json_status = ["ok"]
""",
    )
    assert site == SiteConfig(
        slug="acme",
        domain="www.acme.example.com",
        repo="git@github.com:org/acme.git",
        environment="staging",
        project="",
        settings_module="config.settings",
        wsgi="config.wsgi:app",
        web_workers=4,
        worker_command="celery -A config worker",
        db_publish_port=15432,
        health_timeout=2.5,
        keep_backups=3,
        watch_seconds=0.0,
        notes="client: Acme Ltd",
        extra_env=(("SENTRY_DSN", "https://key@sentry.example.com/1"), ("FEATURE_X", "")),
        smoke_checks=(
            SmokeCheck(
                path="/contact/",
                method="POST",
                status=302,
                csrf_from="/contact/",
                form=(("name", "Smoke"), ("email", "smoke@example.com")),
            ),
            SmokeCheck(
                path="/api/status", status=200, content_type="application/json", contains="ready", json_status=("ok",)
            ),
        ),
    )
    assert site.smoke_checks[0].describe() == "POST /contact/"


def test_empty_smoke_check_list_means_no_checks(tmp_path):
    site = site_from(tmp_path, MINIMAL_SITE + "\n[smoke]\nchecks = []\n")
    assert site.smoke_checks == ()


# ---------------------------------------------------------------- site: errors

THREE_CHECKS = """
[[smoke.checks]]
path = "/"
[[smoke.checks]]
path = "/about/"
[[smoke.checks]]
path = "{path}"
"""


def check(body: str) -> str:
    """MINIMAL_SITE plus one smoke check with the given body."""
    return MINIMAL_SITE + "\n[[smoke.checks]]\n" + body + "\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ('domain = "a.com"\nrepo = "/r"', "site.toml: slug: is required"),
        ('slug = "acme"\nrepo = "/r"', "site.toml: domains: is required"),
        ('slug = "acme"\ndomain = "a.com"', "site.toml: repo: is required"),
        ('slug = "Acme"\ndomain = "a.com"\nrepo = "/r"', "site.toml: slug: must match ^[a-z0-9][a-z0-9-]{0,62}$"),
        ('slug = 1\ndomain = "a.com"\nrepo = "/r"', "site.toml: slug: must be a string, not 1"),
        (
            'slug = "acme"\ndomain = "Acme.com"\nrepo = "/r"',
            "site.toml: domain: must be a hostname (lowercase letters, digits, hyphens, dots)",
        ),
        (
            'slug = "acme"\ndomain = "evil.com {\\n respond 200 }"\nrepo = "/r"',
            "site.toml: domain: must be a hostname (lowercase letters, digits, hyphens, dots)",
        ),
        (
            'slug = "acme"\ndomain = "a.com"\nrepo = "/r"\n[app]\nproject = "my-site"',
            "site.toml: app.project: must be a Python package name",
        ),
        (
            'slug = "acme"\ndomain = "a.com"\nrepo = "/r"',
            "site.toml: app.settings: must be a dotted Python path (set app.project or app.settings/app.wsgi)",
        ),
        (
            'slug = "acme"\ndomain = "a.com"\nrepo = "/r"\n[app]\nsettings = "x.settings"',
            "site.toml: app.wsgi: must be a dotted Python path (set app.project or app.settings/app.wsgi)",
        ),
        (
            'slug = "acme"\ndomain = "a.com"\nrepo = "/r"\n[app]\nsettings = "x settings"\nwsgi = "x.wsgi:a"',
            "site.toml: app.settings: must be a dotted Python path (set app.project or app.settings/app.wsgi)",
        ),
        (MINIMAL_SITE + "web_workers = 0", "site.toml: app.web_workers: must be greater than 0, not 0"),
        (MINIMAL_SITE + "web_workers = true", "site.toml: app.web_workers: must be an integer, not True"),
        (MINIMAL_SITE + "web_workers = 2.5", "site.toml: app.web_workers: must be an integer, not 2.5"),
        (
            MINIMAL_SITE + 'worker_command = """celery\nworker"""',
            "site.toml: app.worker_command: must be a single line",
        ),
        (MINIMAL_SITE + "workers = 2", "site.toml: app.workers: unknown setting"),
        (MINIMAL_SITE + "stop_timeout = 0", "site.toml: app.stop_timeout: must be greater than 0, not 0"),
        (MINIMAL_SITE + "[worker]\nready_afer = 5", "site.toml: worker.ready_afer: unknown setting"),
        (MINIMAL_SITE + "[worker]\nstop_timeout = 0", "site.toml: worker.stop_timeout: must be greater than 0, not 0"),
        (
            MINIMAL_SITE + "[worker]\nping_timeout = -1",
            "site.toml: worker.ping_timeout: must be greater than 0, not -1",
        ),
        (MINIMAL_SITE + "[worker]\nready_after = 0", "site.toml: worker.ready_after: must be greater than 0, not 0"),
        (
            MINIMAL_SITE + '[worker]\nready_timeout = "1m"',
            "site.toml: worker.ready_timeout: must be an integer or a number, not '1m'",
        ),
        (
            MINIMAL_SITE + '[health]\nrequired_checks = ["celery", "two words"]',
            "site.toml: health.required_checks[1]: must be the name of a check of /health/ (letters, digits, _ . -)",
        ),
        (MINIMAL_SITE + '[env]\n"FOO-BAR" = "x"', 'site.toml: env.FOO-BAR: must be NAME = "single-line value"'),
        (MINIMAL_SITE + '[env]\nFOO = "a\\nb"', 'site.toml: env.FOO: must be NAME = "single-line value"'),
        (MINIMAL_SITE + "[env]\nFOO = 1", "site.toml: env.FOO: must be a string, not 1"),
        (MINIMAL_SITE + "[env]\nFOO = true", "site.toml: env.FOO: must be a string, not True"),
        (
            MINIMAL_SITE + "[database]\npublish_port = 70000",
            "site.toml: database.publish_port: must be a port number 0-65535, not 70000",
        ),
        (
            MINIMAL_SITE + "[database]\npublish_port = true",
            "site.toml: database.publish_port: must be an integer, not True",
        ),
        (MINIMAL_SITE + "[database]\nport = 5432", "site.toml: database.port: unknown setting"),
        (MINIMAL_SITE + "[health]\ntimeout = 0", "site.toml: health.timeout: must be greater than 0, not 0"),
        (MINIMAL_SITE + "[health]\ntimeout = -1.5", "site.toml: health.timeout: must be greater than 0, not -1.5"),
        (
            MINIMAL_SITE + "[health]\ntimeout = true",
            "site.toml: health.timeout: must be an integer or a number, not True",
        ),
        (MINIMAL_SITE + "[health]\npath = '/health/'", "site.toml: health.path: unknown setting"),
        (
            MINIMAL_SITE + "[upgrade]\nkeep_backups = 0",
            "site.toml: upgrade.keep_backups: must be greater than 0, not 0",
        ),
        (
            MINIMAL_SITE + "[upgrade]\nkeep_backups = false",
            "site.toml: upgrade.keep_backups: must be an integer, not False",
        ),
        (MINIMAL_SITE + "[upgrade]\nwatch = -1", "site.toml: upgrade.watch: must not be negative"),
        (
            MINIMAL_SITE + '[upgrade]\nwatch = "30s"',
            "site.toml: upgrade.watch: must be an integer or a number, not '30s'",
        ),
        (MINIMAL_SITE + "[smoke]\nchecks = '/'", "site.toml: smoke.checks: must be a list, not '/'"),
        (MINIMAL_SITE + "[smoke]\nchecks = ['/']", "site.toml: smoke.checks[0]: must be a table"),
        (MINIMAL_SITE + "[smoke]\nretries = 3", "site.toml: smoke.retries: unknown setting"),
        (
            MINIMAL_SITE + THREE_CHECKS.format(path="health/"),
            "site.toml: smoke.checks[2].path: must start with / and contain no spaces",
        ),
        (
            MINIMAL_SITE + THREE_CHECKS.format(path="/a b"),
            "site.toml: smoke.checks[2].path: must start with / and contain no spaces",
        ),
        (
            MINIMAL_SITE + THREE_CHECKS.format(path="/a\\tb"),
            "site.toml: smoke.checks[2].path: must start with / and contain no spaces",
        ),
        (check("status = 200"), "site.toml: smoke.checks[0].path: is required"),
        (check('path = "/"\nstatus = 99'), "site.toml: smoke.checks[0].status: must be an HTTP status code"),
        (check('path = "/"\nstatus = 600'), "site.toml: smoke.checks[0].status: must be an HTTP status code"),
        (check('path = "/"\nstatus = true'), "site.toml: smoke.checks[0].status: must be an integer, not True"),
        (check('path = "/"\nstatus = "200"'), "site.toml: smoke.checks[0].status: must be an integer, not '200'"),
        (check('path = "/"\nmethod = "PUT"'), "site.toml: smoke.checks[0].method: must be one of GET, POST, not 'PUT'"),
        (check('path = "/"\nmethod = "get"'), "site.toml: smoke.checks[0].method: must be one of GET, POST, not 'get'"),
        (check('path = "/"\nform = { a = 1 }'), "site.toml: smoke.checks[0].form: values must be strings"),
        (check('path = "/"\nform = "a=1"'), "site.toml: smoke.checks[0].form: must be a table, not 'a=1'"),
        (check('path = "/"\njson_status = [1]'), "site.toml: smoke.checks[0].json_status: must be a list of strings"),
        (check('path = "/"\njson_status = "ok"'), "site.toml: smoke.checks[0].json_status: must be a list, not 'ok'"),
        (check('path = "/"\ncsrf_from = "contact/"'), "site.toml: smoke.checks[0].csrf_from: must start with /"),
        (check('path = "/"\ncontent_type = 1'), "site.toml: smoke.checks[0].content_type: must be a string, not 1"),
        (check('path = "/"\ncontains = false'), "site.toml: smoke.checks[0].contains: must be a string, not False"),
        (check('path = "/"\nsatus = 200'), "site.toml: smoke.checks[0].satus: unknown setting"),
        (MINIMAL_SITE.replace("[app]", 'branch = "main"\n[app]'), "site.toml: branch: unknown setting"),
    ],
)
def test_site_errors(tmp_path, text, message):
    assert site_error(tmp_path, text).message == message


def test_site_slug_must_match_its_folder(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "site.toml").write_text(MINIMAL_SITE)
    with pytest.raises(ConfigError) as info:
        load_site(HostConfig(root=tmp_path), "other")
    assert info.value.message == "site.toml: slug: is 'acme' but the site folder is 'other'"
    assert exit_code_of(info.value) == 2


def test_missing_site(tmp_path):
    with pytest.raises(UsageError) as info:
        load_site(HostConfig(root=tmp_path), "acme")
    assert info.value.message == f"no site 'acme' under {tmp_path} (run `sumbg init acme ...` first)"
    assert exit_code_of(info.value) == 2


def test_load_site_rejects_an_invalid_slug_before_touching_files(tmp_path):
    with pytest.raises(UsageError) as info:
        load_site(HostConfig(root=tmp_path), "../etc")
    assert info.value.message == (
        "invalid site slug '../etc': use 1-63 lowercase letters, digits and hyphens, starting with a letter or digit"
    )


def test_malformed_site_toml(tmp_path):
    text = MINIMAL_SITE + "web_workers = = 2\n"
    err = site_error(tmp_path, text)
    assert err.message == f"site.toml: not valid TOML: {toml_error(text)}"


# ---------------------------------------------------------------- round trip


def test_round_trip_of_a_minimal_site(tmp_path):
    site = site_from(tmp_path, MINIMAL_SITE)
    assert reparse(site) == site


def test_round_trip_of_every_setting(tmp_path):
    site = SiteConfig(
        slug="acme-shop",
        domain="shop.acme.example.com",
        repo="https://github.com/org/acme.git",
        environment="staging",
        project="acme",
        settings_module="acme.settings.staging",
        wsgi="acme.wsgi:application",
        web_workers=3,
        worker_command='celery -A acme worker -Q "default"',
        db_publish_port=15432,
        health_timeout=2.5,
        keep_backups=4,
        watch_seconds=0.0,
        watch=WatchSettings(
            interval=0.5,
            consecutive_failures=5,
            max_failed_ratio=0.0,
            min_probes=4,
            max_visitor_5xx=1,
            max_visitor_5xx_ratio=0.5,
        ),
        notes='Acme "shop" | café \\ tab\there',
        migrations=MigrationSettings(rehearsal=False, rehearsal_max_mb=100, read_paths=("/leads/", "/a?b=1")),
        extra_env=(("SENTRY_DSN", "https://k@s.example.com/1"), ("QUOTED", 'say "hi"'), ("EMPTY", "")),
        smoke_checks=(
            SmokeCheck(path="/health/", json_status=("ok", "degraded")),
            SmokeCheck(
                path="/contact/",
                method="POST",
                status=302,
                csrf_from="/contact/",
                form=(("name", "Smoke Test"), ("email", "smoke@example.com"), ("message", 'a "b" c')),
            ),
            SmokeCheck(path="/static/app.css", status=200, content_type="text/css", contains="body {"),
            SmokeCheck(path="/gone/", status=410),
        ),
    )
    text = render_site_toml(site)
    assert reparse(site) == site
    # What `sumbg init` writes loads through the normal path too.
    (tmp_path / "acme-shop").mkdir()
    (tmp_path / "acme-shop" / "site.toml").write_text(text)
    assert load_site(HostConfig(root=tmp_path), "acme-shop") == site


def test_rendered_site_toml_spells_out_every_section():
    text = render_site_toml(
        SiteConfig(
            slug="acme",
            domain="acme.example.com",
            repo="/r",
            project="acme",
            settings_module="acme.settings.production",
            wsgi="acme.wsgi:application",
            extra_env=(("FOO", "bar"),),
            smoke_checks=(SmokeCheck(path="/", json_status=("ok",)),),
        )
    )
    assert (
        text
        == """\
# Written by `sumbg init`; edit freely, sumbg validates it before every operation. Every setting is
# described in sumbg's docs/configuration.md.

# The site's name: its folder under the root, its containers, network and database.
slug = "acme"
# Every name the site answers to; the first is canonical (checks use it). An older `domain = "..."`
# still loads.
domains = ["acme.example.com"]
# The client repository: a path or a git URL.
repo = "/r"
# A label for the sites matrix (production, staging, ...).
environment = "production"
# Free text for the sites matrix (the client, a contact, ...).
notes = ""
# Notifications of this site's events: a table per target (docs/events.md).
# name: A name for messages and `sumbg status` (never the URL); empty: the kind.
# events: Event names, groups ("all", "failures") or "upgrade.*".
# webhook_url: POST each event as JSON here (a URL without a secret in it).
# webhook_url_file: A file (mode 0600) holding the webhook's URL, when the URL carries a token.
# webhook_secret_file: A file (mode 0600) holding a key: each POST is signed, X-Sumbg-Signature:
# sha256=HMAC(key, body).
# slack_url_file: A file (mode 0600) holding a Slack incoming-webhook URL: each event as one
# readable paragraph.
# email_to: Send each event by email to these addresses.
# email_from: The sender; empty: sumbg@<this host's name>.
# smtp_host: The SMTP server (required for email).
# smtp_port: Its port.
# smtp_starttls: Upgrade the connection with STARTTLS (refused if the server cannot).
# smtp_user: Log in as this user; empty: no login.
# smtp_password_file: A file (mode 0600) holding smtp_user's password.
# smtp_ca_file: A CA bundle trusted for STARTTLS (an in-house relay); empty: the system's CAs.
# [[notify]]
# name = "ops"
# events = ["failures"]
# slack_url_file = "/etc/sumbg/slack-url"

# The Django project in the client's repository.
[app]
# The Django project's package (found by `sumbg init` beside manage.py).
project = "acme"
# The settings module (DJANGO_SETTINGS_MODULE).
settings = "acme.settings.production"
# The WSGI application gunicorn serves.
wsgi = "acme.wsgi:application"
# gunicorn's worker processes in each colour.
web_workers = 2
# A background worker's shell command (`init --worker`: SUM's Celery worker); empty: none.
worker_command = ""
# Seconds a stopping web lets its in-flight requests finish (gunicorn's graceful timeout); Docker
# kills it 5 s after that.
stop_timeout = 30

# The background worker ([app] worker_command), part of each release: an operation that starts it
# waits until it is ready (running, not restarted for ready_after seconds, and for a Celery worker
# answering `celery inspect ping`); after a switch the old colour's worker finishes its tasks
# (SIGTERM, Celery's warm shutdown) while the new one already consumes.
[worker]
# Seconds a worker must run without restarting to count as ready.
ready_after = 10
# Seconds a Celery worker has to answer `celery inspect ping`.
ping_timeout = 5
# Seconds an operation waits for the worker it started to be ready before it fails.
ready_timeout = 90
# Seconds an old worker has to finish its tasks after SIGTERM; then SIGKILL.
stop_timeout = 300

# Extra non-secret environment variables of the app, NAME = "value" (secrets go in `<slug>/.env`).
[env]
FOO = "bar"

# The site's PostgreSQL.
[database]
# Publish Postgres on 127.0.0.1:PORT for diagnosis; 0 keeps it private.
publish_port = 0

# The health check of a new colour.
[health]
# Seconds a new colour has to answer /health/ with the new version.
timeout = 120
# Checks of /health/ (e.g. ["celery"]) whose failure makes the site unhealthy, even when it answers
# "degraded".
required_checks = []

# Upgrades of this site.
[upgrade]
# The newest backups kept, besides [backup] keep_daily/keep_weekly/keep_monthly; older ones are
# deleted.
keep_backups = 10
# Seconds the watch after a switch keeps probing ([watch]); 0: no watch. `--watch` overrides it.
watch = 30
# Stop the idle colour this long after an upgrade went live (`sumbg retire --due`, from cron): less
# memory, and a rollback then restarts it (not instant). 0 keeps it; unset: sumbg.toml's.
# retire_idle_after = "2d"

# The watch after a switch reverts only on a failure that persists: consecutive_failures failed
# probes in a row, or more than max_failed_ratio of them (after min_probes), or at least
# max_visitor_5xx answers in the 5xx range that Caddy gave the site's visitors, above
# max_visitor_5xx_ratio of its requests.
[watch]
# Seconds between probes.
interval = 1
# This many failed probes in a row revert.
consecutive_failures = 3
# More than this share of failed probes reverts...
max_failed_ratio = 0.3
# ...once at least this many probes were made.
min_probes = 10
# At least this many 5xx answers to the site's visitors revert...
max_visitor_5xx = 10
# ...when they are more than this share of its requests.
max_visitor_5xx_ratio = 0.05

# Commands run around an operation: a host command (run with sh -c), or "manage: <command>" (a
# management command in a one-off container of the release), with SUMBG_SLUG, SUMBG_OPERATION,
# SUMBG_OUTCOME, SUMBG_FROM_REF, SUMBG_TO_REF, SUMBG_FROM_COLOUR, SUMBG_TO_COLOUR and
# SUMBG_HISTORY_ID in their environment (docs/events.md). A failing pre_* hook stops the operation
# before anything changes; a failing post_* hook is reported and recorded, and undoes nothing.
[hooks]
# Before an upgrade's backup, once the new release is built (a failure stops it); empty: none.
pre_upgrade = ""
# Once an upgrade's new release is live and confirmed, before the watch; empty: none.
post_switch = ""
# Once an upgrade succeeded; empty: none.
post_upgrade = ""
# Once traffic went back: `sumbg rollback`, or the watch's revert; empty: none.
post_rollback = ""
# Before every backup (`sumbg backup`, an upgrade's); empty: none.
pre_backup = ""
# Seconds a hook may run before it is killed (and fails).
hook_timeout = 60

# Before `migrate` touches the live database, an upgrade restores the fresh backup into a scratch
# database, migrates that copy, and runs the smoke checks and read_paths against the LIVE release
# pointed at the migrated copy: if it fails there, the release is breaking and is refused unless
# `--maintenance` or `--accept-breaking` is given.
[migrations]
# Rehearse the migrations on a copy of the database.
rehearsal = true
# Databases larger than this (MB) skip the rehearsal (and say so) to keep the upgrade short.
rehearsal_max_mb = 2048
# More GET paths the live release must still serve on the migrated database.
read_paths = []

# This site's backups: each key overrides sumbg.toml's [backup].
[backup]
# The restic repository each backup is uploaded to once verified here: an absolute path,
# sftp:user@host:/path or s3:https://host/bucket/path; empty: sumbg.toml's.
repository = ""
# A file (mode 0600) holding the repository's password (restic's RESTIC_PASSWORD_FILE); empty:
# sumbg.toml's.
password_file = ""
# A file (mode 0600) of restic's documented variables, NAME=value per line (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, ...); empty: sumbg.toml's.
env_file = ""
# A file (mode 0600) holding the key for an sftp: repository; empty: sumbg.toml's.
ssh_key_file = ""
# The sftp server's host key (known_hosts format); empty: sumbg.toml's.
ssh_known_hosts = ""
# The newest backup of each of this many last days with one is kept (here and offsite); unset:
# sumbg.toml's.
# keep_daily = 7
# ...and of this many last weeks; unset: sumbg.toml's.
# keep_weekly = 4
# ...and of this many last months; unset: sumbg.toml's.
# keep_monthly = 6
# A last good backup older than this is a problem in `status` (exit 1); unset: sumbg.toml's.
# max_age = "26h"

# The site's block in the edge Caddy (the SUM golden path by default). After editing, `sumbg apply`
# renders, validates (caddy validate) and reloads the edge.
[caddy]
# Other domains redirect (308) to the first one; false: every domain serves the site.
redirect_to_canonical = true
# Compress responses (encode gzip zstd).
encode = true
# The golden path's X-Content-Type-Options, X-Frame-Options, Referrer-Policy and Permissions-Policy.
security_headers = true
# TLS ends at a proxy in front of the edge (the host Caddy `sumbg adopt` kept): plain HTTP here.
behind_proxy = false
# Raw Caddyfile directives inside the site block (braces must balance), e.g. for a path matcher.
extra = ""
# Response headers added or overridden ("" removes one): { "X-Frame-Options" = "SAMEORIGIN" }.
headers = {}
# Basic auth on a path (e.g. staging's /admin/*); the hash from `caddy hash-password`.
# path: A Caddy path pattern.
# user: The user name.
# hash: The password's bcrypt hash, from `caddy hash-password` (never the password).
# [[caddy.basic_auth]]
# path = "/admin/*"
# user = "staging"
# hash = "$2a$14$..."

# How the client image is built; empty values take sumbg.toml's [build] and [images].
[build]
# The Python base image; empty: sumbg.toml's images.python.
python_image = ""
# Debian packages for the build stage only (compilers, -dev headers).
build_packages = []
# Debian packages for the final image.
packages = []
# none, live or file (see sumbg.toml [build] lock); empty: sumbg.toml's.
lock = ""
# A file (mode 0600) holding a token for git+https requirements (a read-only one); empty: none.
git_token_file = ""
# The user name sent with the token; empty: x-access-token (GitHub accepts any name).
git_username = ""
# A file (mode 0600) holding a deploy key for git+ssh requirements; empty: none.
git_ssh_key_file = ""
# The git servers' host keys (known_hosts format); empty: ~/.ssh/known_hosts, new hosts accepted.
git_ssh_known_hosts = ""
# Like git's insteadOf: { "https://github.com/acme/" = "https://mirror.example/acme/" }.
git_url_rewrites = {}

# The smoke checks a colour must pass before it goes live, and the watch's GET probes.
[smoke]
# The checks, in order; checks = [] for none.
# path: The path requested.
# method: GET, or POST to submit a form.
# status: The status code expected.
# content_type: The Content-Type expected to start with this; empty: any.
# contains: Text the body must contain; empty: any.
# json_status: The body is JSON whose "status" is one of these, e.g. ["ok", "degraded"]; empty: not
# checked.
# csrf_from: A POST first GETs this path for Django's CSRF token and cookie; empty: none.
# form: The form fields a POST sends.
[[smoke.checks]]
path = "/"
status = 200
json_status = ["ok"]

# The logs of this site's removed colours, kept in `<slug>/logs/`.
[logs]
# Compressed logs kept for this site (MB); 0 keeps none; unset: sumbg.toml's [logs] keep_mb.
# keep_mb = 200
"""
    )


def _site(**changes) -> SiteConfig:
    base = dict(
        slug="acme",
        domain="acme.example.com",
        repo="/r",
        project="acme",
        settings_module="acme.settings.production",
        wsgi="acme.wsgi:application",
    )
    return SiteConfig(**{**base, **changes})


def test_round_trip_form_keys_that_need_quoting():
    site = _site(
        smoke_checks=(
            SmokeCheck(path="/signup/", method="POST", form=(("first name", "Smoke"), ("user.email", "s@example.com"))),
        )
    )
    assert reparse(site) == site


def test_round_trip_of_no_smoke_checks():
    site = _site(smoke_checks=())
    assert reparse(site) == site


def test_round_trip_of_characters_outside_the_bmp():
    site = _site(notes="launched \U0001f680", extra_env=(("GREETING", "hi \U0001f44b"),))
    assert reparse(site) == site


@pytest.mark.parametrize(
    "key, value", [("health", "timeout = nan"), ("health", "timeout = inf"), ("upgrade", "watch = nan")]
)
def test_non_finite_numbers_are_rejected(tmp_path, key, value):
    err = site_error(tmp_path, MINIMAL_SITE + f"[{key}]\n{value}\n")
    name, _, raw = value.partition(" = ")
    assert err.message == f"site.toml: {key}.{name}: must be a finite number, not {raw}"


# ---------------------------------------------------------------- [build]: credentials, rewrites, packages


def _secret(path: Path, mode: int = 0o600) -> Path:
    path.write_text("secret\n")
    path.chmod(mode)
    return path


def test_host_build_settings(tmp_path):
    token, key = _secret(tmp_path / "token"), _secret(tmp_path / "deploy_key", 0o400)
    known = tmp_path / "known_hosts"
    known.write_text("github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    host = host_from(
        tmp_path,
        f"""
[build]
git_token_file = "{token}"
git_username = "sum-bot"
git_ssh_key_file = "{key}"
git_ssh_known_hosts = "{known}"
git_url_rewrites = {{ "https://github.com/acme/" = "https://mirror.local/acme/", "git@github.com:" = "ssh://git@github.com/" }}
""",
    )
    assert host.build == config.BuildSettings(
        git_token_file=str(token),
        git_username="sum-bot",
        git_ssh_key_file=str(key),
        git_ssh_known_hosts=str(known),
        git_url_rewrites=(
            ("https://github.com/acme/", "https://mirror.local/acme/"),
            ("git@github.com:", "ssh://git@github.com/"),
        ),
    )
    assert host_from(tmp_path, "").build == config.BuildSettings()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_a_credential_file_others_can_read_is_refused(tmp_path, mode):
    token = _secret(tmp_path / "token", mode)
    err = host_error(tmp_path, f'[build]\ngit_token_file = "{token}"\n')
    assert err.message == (
        f"sumbg.toml: build.git_token_file: {token} has mode {mode:04o}; "
        f"a credential file must be 0600 (chmod 600 {token})"
    )
    key = _secret(tmp_path / "key", mode)
    err = site_error(tmp_path, MINIMAL_SITE + f'[build]\ngit_ssh_key_file = "{key}"\n')
    assert err.message == (
        f"site.toml: build.git_ssh_key_file: {key} has mode {mode:04o}; "
        f"a credential file must be 0600 (chmod 600 {key})"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[build]\ngit_token_file = "token"',
            "sumbg.toml: build.git_token_file: must be an absolute path, not 'token'",
        ),
        (
            '[build]\ngit_token_file = "/nonexistent/token"',
            "sumbg.toml: build.git_token_file: file /nonexistent/token does not exist",
        ),
        ('[build]\ngit_ssh_key_file = "/"', "sumbg.toml: build.git_ssh_key_file: / is not a file"),
        ("[build]\ngit_token_file = 1", "sumbg.toml: build.git_token_file: must be a string, not 1"),
        (
            '[build]\ngit_ssh_known_hosts = "known_hosts"',
            "sumbg.toml: build.git_ssh_known_hosts: must be the absolute path of a file, not 'known_hosts'",
        ),
        (
            '[build]\ngit_ssh_known_hosts = "/nonexistent"',
            "sumbg.toml: build.git_ssh_known_hosts: must be the absolute path of a file, not '/nonexistent'",
        ),
        (
            '[build]\ngit_username = "a b"',
            "sumbg.toml: build.git_username: must be a user name without spaces, ':' or '@'",
        ),
        (
            '[build]\ngit_username = "bot:pw"',
            "sumbg.toml: build.git_username: must be a user name without spaces, ':' or '@'",
        ),
        (
            '[build]\ngit_url_rewrites = "https://a/"',
            "sumbg.toml: build.git_url_rewrites: must be a table, not 'https://a/'",
        ),
        (
            '[build]\ngit_url_rewrites = { "https://a/" = 1 }',
            "sumbg.toml: build.git_url_rewrites: 'https://a/' must map a URL prefix to a non-empty URL prefix without spaces",
        ),
        (
            '[build]\ngit_url_rewrites = { "https://a/" = "" }',
            "sumbg.toml: build.git_url_rewrites: 'https://a/' must map a URL prefix to a non-empty URL prefix without spaces",
        ),
        (
            '[build]\ngit_url_rewrites = { "" = "https://b/" }',
            "sumbg.toml: build.git_url_rewrites: '' must map a URL prefix to a non-empty URL prefix without spaces",
        ),
        ('[build]\npython_image = "python:3.13-slim"', "sumbg.toml: build.python_image: unknown setting"),
        ('[build]\npackages = ["file"]', "sumbg.toml: build.packages: unknown setting"),
    ],
)
def test_host_build_errors(tmp_path, text, message):
    assert host_error(tmp_path, text).message == message


def test_site_build_settings_round_trip(tmp_path):
    token = _secret(tmp_path / "token")
    site = site_from(
        tmp_path,
        MINIMAL_SITE
        + f"""
[build]
python_image = "python:3.13-slim"
build_packages = ["gcc", "libjpeg-dev", "zlib1g-dev"]
packages = ["libjpeg62-turbo", "gettext=0.21-12"]
git_token_file = "{token}"
git_username = "bot"
git_url_rewrites = {{ "https://github.com/acme/" = "https://mirror.local/acme/" }}
""",
    )
    assert site.build == config.BuildSettings(
        python_image="python:3.13-slim",
        build_packages=("gcc", "libjpeg-dev", "zlib1g-dev"),
        packages=("libjpeg62-turbo", "gettext=0.21-12"),
        git_token_file=str(token),
        git_username="bot",
        git_url_rewrites=(("https://github.com/acme/", "https://mirror.local/acme/"),),
    )
    assert reparse(site) == site
    assert site_from(tmp_path, MINIMAL_SITE).build == config.BuildSettings()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'python_image = "python 3"',
            "site.toml: build.python_image: must be an image reference like 'python:3.12-slim'",
        ),
        (
            'python_image = "--privileged"',
            "site.toml: build.python_image: must be an image reference like 'python:3.12-slim'",
        ),
        (
            'packages = ["gcc; rm -rf /"]',
            'site.toml: build.packages: must be a list of Debian package names like ["libjpeg62-turbo"]',
        ),
        (
            'build_packages = ["$(id)"]',
            'site.toml: build.build_packages: must be a list of Debian package names like ["libjpeg62-turbo"]',
        ),
        (
            "build_packages = [1]",
            'site.toml: build.build_packages: must be a list of Debian package names like ["libjpeg62-turbo"]',
        ),
        ('packages = "gcc"', "site.toml: build.packages: must be a list, not 'gcc'"),
        ('ca_bundle = "/etc/ssl/certs/ca-certificates.crt"', "site.toml: build.ca_bundle: unknown setting"),
    ],
)
def test_site_build_errors(tmp_path, text, message):
    assert site_error(tmp_path, MINIMAL_SITE + f"[build]\n{text}\n").message == message


def test_rendered_build_table():
    text = render_site_toml(
        _site(
            build=config.BuildSettings(
                python_image="python:3.13-slim",
                build_packages=("gcc",),
                packages=("libjpeg62-turbo", "file"),
                git_token_file="/etc/sumbg/token",
                git_username="bot",
                git_url_rewrites=(("https://github.com/acme/", "https://mirror.local/acme/"),),
            )
        )
    )
    start = text.index("[build]\n")
    assert (
        text[start : text.index("\n\n", start) + 1]
        == """\
[build]
# The Python base image; empty: sumbg.toml's images.python.
python_image = "python:3.13-slim"
# Debian packages for the build stage only (compilers, -dev headers).
build_packages = ["gcc"]
# Debian packages for the final image.
packages = ["libjpeg62-turbo", "file"]
# none, live or file (see sumbg.toml [build] lock); empty: sumbg.toml's.
lock = ""
# A file (mode 0600) holding a token for git+https requirements (a read-only one); empty: none.
git_token_file = "/etc/sumbg/token"
# The user name sent with the token; empty: x-access-token (GitHub accepts any name).
git_username = "bot"
# A file (mode 0600) holding a deploy key for git+ssh requirements; empty: none.
git_ssh_key_file = ""
# The git servers' host keys (known_hosts format); empty: ~/.ssh/known_hosts, new hosts accepted.
git_ssh_known_hosts = ""
# Like git's insteadOf: { "https://github.com/acme/" = "https://mirror.example/acme/" }.
git_url_rewrites = {"https://github.com/acme/" = "https://mirror.local/acme/"}
"""
    )


# ---------------------------------------------------------------- the idle colour's soak period


def test_retire_idle_after_on_the_host_and_per_site(tmp_path):
    host = host_from(tmp_path, '[upgrade]\nretire_idle_after = "2d"\n')
    assert host.retire_idle_after == 172800.0
    assert load_host(tmp_path / "nothing").retire_idle_after == 0.0
    assert site_from(tmp_path, MINIMAL_SITE).retire_idle_after is None
    assert site_from(tmp_path, MINIMAL_SITE + '\n[upgrade]\nretire_idle_after = "36h"\n').retire_idle_after == 129600.0
    assert site_from(tmp_path, MINIMAL_SITE + "\n[upgrade]\nretire_idle_after = 0\n").retire_idle_after == 0.0
    assert (
        reparse(
            SiteConfig(
                slug="acme",
                domain="acme.example.com",
                repo="/r",
                project="acme",
                settings_module="acme.settings.production",
                wsgi="acme.wsgi:application",
                retire_idle_after=5400.0,
            )
        ).retire_idle_after
        == 5400.0
    )


@pytest.mark.parametrize("value", ['"soon"', '"-1h"', "true", '"1w"'])
def test_a_bad_soak_period_says_where(tmp_path, value):
    error = site_error(tmp_path, MINIMAL_SITE + f"\n[upgrade]\nretire_idle_after = {value}\n")
    assert error.message.startswith("site.toml: upgrade.retire_idle_after: ")
    assert host_error(tmp_path, f"[upgrade]\nretire_idle_after = {value}\n").message.startswith(
        "sumbg.toml: upgrade.retire_idle_after: "
    )


def test_the_background_cpu_weight_of_upgrades(tmp_path):
    assert load_host(tmp_path / "nothing").background_cpu_shares == 128
    assert host_from(tmp_path, "[upgrade]\nbackground_cpu_shares = 1024\n").background_cpu_shares == 1024
    assert host_error(tmp_path, "[upgrade]\nbackground_cpu_shares = 4096\n").message == (
        "sumbg.toml: upgrade.background_cpu_shares: must be from 2 to 1024 (the live colour's), not 4096"
    )


# ---------------------------------------------------------------- one declaration of each key

FILE_OBJECTS = (
    (SUMBG_TOML, HostConfig(root=Path("/srv/sum"))),
    (SITE_TOML, SiteConfig(slug="acme", domain="acme.example.com", repo="/r")),
)


def _leaf_fields(obj: object, prefix: str = "") -> set[str]:
    found = set()
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value):
            found |= _leaf_fields(value, f"{prefix}{field.name}.")
        else:
            found.add(prefix + field.name)
    return found


@pytest.mark.parametrize("spec, defaults", FILE_OBJECTS, ids=lambda value: getattr(value, "name", ""))
def test_the_declared_defaults_are_the_dataclasses_defaults(spec, defaults):
    compared = []
    for section in spec.sections:
        for key in section.keys:
            if key.required or key.default_doc:
                continue
            assert lookup(defaults, section.attr(key)) == key.default, f"{spec.name}: {section.name}.{key.name}"
            compared.append(key.name)
    assert len(compared) >= 15
    check = SmokeCheck(path="/")
    for key in keys.SITE_TOML.find("smoke.checks")[1].item.keys:
        if not key.required:
            assert getattr(check, key.name) == key.default, f"smoke.checks[].{key.name}"


def test_every_field_of_the_configuration_objects_is_declared():
    declared = {}
    for spec, _ in FILE_OBJECTS:
        declared[spec.name] = {section.attr(key) for section in spec.sections for key in section.keys} | {
            section.entries.attr for section in spec.sections if section.entries
        }
    host, site = (obj for _, obj in FILE_OBJECTS)
    # The root is where sumbg.toml is; four [build] keys are site.toml's only (sumbg.toml's lock is build_lock).
    assert declared["sumbg.toml"] == _leaf_fields(host) - {
        "root",
        "build.python_image",
        "build.build_packages",
        "build.packages",
        "build.lock",
    }
    # domain and aliases are the declared `domains`, the canonical one first.
    assert declared["site.toml"] == _leaf_fields(site) - {"domain", "aliases"} | {"domains"}
    assert {key.name for key in keys.SITE_TOML.find("smoke.checks")[1].item.keys} == {
        field.name for field in dataclasses.fields(SmokeCheck)
    }
    assert {key.name for key in keys.SITE_TOML.find("caddy.basic_auth")[1].item.keys} == {
        field.name for field in dataclasses.fields(config.BasicAuth)
    }
    # `source` is where a target was declared, set by the parser.
    assert {key.name for key in keys.SITE_TOML.find("notify")[1].item.keys} == {
        field.name for field in dataclasses.fields(config.NotifyTarget)
    } - {"source"}
    assert keys.SITE_TOML.find("notify")[1].item is keys.SUMBG_TOML.find("notify")[1].item


def _every_setting() -> SiteConfig:
    return _site(
        environment="staging",
        notes="n",
        web_workers=3,
        worker_command="celery -A acme worker",
        db_publish_port=15432,
        health_timeout=2.5,
        keep_backups=4,
        watch_seconds=0.0,
        retire_idle_after=3600.0,
        logs_keep_mb=250.0,
        aliases=("www.acme.example.com",),
        extra_env=(("FOO", "bar"),),
        watch=WatchSettings(interval=0.5, consecutive_failures=5, max_failed_ratio=0.1),
        migrations=MigrationSettings(rehearsal=False, read_paths=("/leads/",)),
        caddy=config.CaddySettings(
            redirect_to_canonical=False,
            encode=False,
            security_headers=False,
            headers=(("X-Frame-Options", "SAMEORIGIN"),),
            basic_auth=(config.BasicAuth("/admin/*", "staging", "$2a$14$" + "a" * 53),),
            extra="respond /ping 200",
            behind_proxy=True,
        ),
        build=config.BuildSettings(python_image="python:3.13-slim", packages=("file",)),
        backup=config.SiteBackupSettings(
            repository="sftp:backup@vault.example.com:/srv/restic",
            keep_daily=3,
            keep_weekly=0,
            keep_monthly=12,
            max_age=7200.0,
        ),
        notify=(
            config.NotifyTarget(
                name="ops",
                events=("failures", "upgrade.*"),
                webhook_url="https://hooks.example.com/sumbg",
                source="acme/site.toml notify[0]",
            ),
            config.NotifyTarget(
                events=("all",),
                email_to=("ops@example.com",),
                email_from="sumbg@example.com",
                smtp_host="smtp.example.com",
                smtp_port=2525,
                smtp_starttls=False,
                smtp_user="sumbg",
                source="acme/site.toml notify[1]",
            ),
        ),
        hooks=config.HookSettings(
            pre_upgrade="/usr/local/bin/deploy-window",
            post_switch="manage: wagtail_update_index",
            post_upgrade="curl -fsS https://status.example.com/up",
            post_rollback="echo rolled back",
            pre_backup="sync",
            hook_timeout=30.0,
        ),
        smoke_checks=(
            SmokeCheck(path="/admin/login/", status=401),
            SmokeCheck(path="/contact/", method="POST", status=302, csrf_from="/contact/", form=(("a", "b"),)),
            SmokeCheck(path="/api/", content_type="application/json", contains="ok", json_status=("ok",)),
        ),
    )


def _written_keys(text: str) -> dict[str, str]:
    """`table.key` -> the comment right above it (its lines joined), for every key of a site.toml."""
    found, table, comment = {}, "", []
    for line in text.splitlines():
        if line.startswith("#"):
            comment.append(line[2:])
            continue
        if line.startswith("["):
            table = line.strip("[]")
        elif line and table != "env":
            name = line.partition(" = ")[0]
            found.setdefault(f"{table}.{name}" if table else name, " ".join(comment))
        comment = []
    return found


def test_init_writes_every_declared_setting_under_its_help():
    site = _every_setting()
    text = render_site_toml(site)
    assert reparse(site) == site
    written = _written_keys(text)
    comments = " ".join(line[2:] for line in text.splitlines() if line.startswith("#"))
    for section in SITE_TOML.sections:
        for key in section.keys:
            if key.item is None:
                assert written.pop(f"{section.name}.{key.name}" if section.name else key.name) == key.help
                continue
            # A list of tables: its help and its keys' above the first table; the keys in each.
            assert f"{key.help} " + " ".join(f"{inner.name}: {inner.help}" for inner in key.item.keys) in comments
            for inner in key.item.keys:
                # A key written only when set may be left out of every table (a target has one kind).
                assert written.pop(f"{key.item.name}.{inner.name}", "" if inner.if_set else None) == ""
    assert written == {}


def test_an_unset_soak_period_and_no_basic_auth_are_written_as_examples():
    text = render_site_toml(_site())
    assert '\n# retire_idle_after = "2d"\n' in text
    assert '\n# [[caddy.basic_auth]]\n# path = "/admin/*"\n# user = "staging"\n# hash = "$2a$14$..."\n' in text
    # Taking the comment marks off gives a valid site.toml with that setting.
    edited = text.replace('# retire_idle_after = "2d"', 'retire_idle_after = "2d"')
    hashed = "$2a$14$" + "b" * 53
    for line in ("[[caddy.basic_auth]]", 'path = "/admin/*"', 'user = "staging"', f'hash = "{hashed}"'):
        edited = edited.replace("# " + line.replace(hashed, "$2a$14$..."), line)
    site = config.parse_site(
        tomllib.loads(edited.replace('path = "/admin/login/"\nstatus = 200', 'path = "/admin/login/"\nstatus = 401'))
    )
    assert site.retire_idle_after == 172800.0
    assert site.caddy.basic_auth == (config.BasicAuth("/admin/*", "staging", hashed),)
    assert site.smoke_checks[-1] == SmokeCheck(path="/admin/login/", status=401)


# ---------------------------------------------------------------- editing a file in place

OPERATORS_SITE = """\
# acme: the client's own notes, kept by every edit
slug = "acme"
domain = "acme.example.com"   # the older single domain
repo = "/srv/repos/acme"

[caddy]
behind_proxy = true  # the host Caddy terminates TLS
# gzip costs more CPU than it saves here
encode = false

[app]
web_workers = 3
project = "acme"
"""


def test_a_site_setting_is_changed_in_place(tmp_path):
    path = tmp_path / "acme" / "site.toml"
    path.parent.mkdir()
    path.write_text(OPERATORS_SITE)
    before = config.set_site_settings(path, {"caddy.behind_proxy": False})
    assert before == OPERATORS_SITE
    # Only that line changed; its own comment spoke of the old value.
    assert path.read_text() == OPERATORS_SITE.replace(
        "behind_proxy = true  # the host Caddy terminates TLS", "behind_proxy = false"
    )
    site = load_site(HostConfig(root=tmp_path), "acme")
    assert (site.caddy.behind_proxy, site.caddy.encode, site.web_workers) == (False, False, 3)


def test_new_settings_go_in_their_tables(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(OPERATORS_SITE)
    config.set_site_settings(
        path,
        {"notes": "hello", "app.worker_command": "celery -A acme worker", "watch.interval": 2, "env.FOO": "bar"},
    )
    assert path.read_text() == (
        OPERATORS_SITE.replace('repo = "/srv/repos/acme"\n', 'repo = "/srv/repos/acme"\nnotes = "hello"\n')
        + 'worker_command = "celery -A acme worker"\n\n[watch]\ninterval = 2\n\n[env]\nFOO = "bar"\n'
    )
    assert config.parse_site(tomllib.loads(path.read_text())).extra_env == (("FOO", "bar"),)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"caddy.behind_proxy": "no"}, "site.toml: caddy.behind_proxy: must be true or false, not 'no'"),
        ({"app.web_workers": 0}, "site.toml: app.web_workers: must be greater than 0, not 0"),
        ({"caddy.behind": True}, "site.toml: caddy.behind: unknown setting"),
        ({"edge.tls": "off"}, "site.toml: edge.tls: unknown setting"),
        ({"smoke.checks": []}, "site.toml: smoke.checks: a list of tables, edited in the file itself"),
        ({"env.FOO-BAR": "x"}, 'site.toml: env.FOO-BAR: must be NAME = "single-line value"'),
        ({"smoke.retries": 3}, "site.toml: smoke.retries: unknown setting"),
        ({"domains": ["b.example.com"]}, "site.toml: domain: give either domain or domains, not both"),
    ],
)
def test_a_bad_edit_is_refused_and_the_file_kept(tmp_path, values, message):
    path = tmp_path / "site.toml"
    path.write_text(OPERATORS_SITE)
    with pytest.raises(ConfigError) as refused:
        config.set_site_settings(path, {"notes": "first a good one", **values})
    assert refused.value.message == message
    assert exit_code_of(refused.value) == 2
    assert path.read_text() == OPERATORS_SITE


def test_a_file_that_is_not_toml_is_not_edited(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(OPERATORS_SITE + "web_workers = = 2\n")
    with pytest.raises(ConfigError) as refused:
        config.set_site_settings(path, {"caddy.behind_proxy": False})
    assert refused.value.message == f"site.toml: not valid TOML: {toml_error(OPERATORS_SITE + 'web_workers = = 2')}"
    with pytest.raises(ConfigError) as missing:
        config.set_site_settings(tmp_path / "nothing.toml", {"caddy.behind_proxy": False})
    assert missing.value.message == f"site.toml: cannot read {tmp_path / 'nothing.toml'}: No such file or directory"


def test_the_site_toml_init_wrote_is_edited_in_place(tmp_path):
    path = tmp_path / "acme" / "site.toml"
    path.parent.mkdir()
    site = _every_setting()
    path.write_text(render_site_toml(site))
    text = path.read_text()
    config.set_site_settings(path, {"caddy.behind_proxy": False, "upgrade.keep_backups": 7})
    assert path.read_text() == text.replace("behind_proxy = true", "behind_proxy = false").replace(
        "keep_backups = 4", "keep_backups = 7"
    )
    changed = dataclasses.replace(site, keep_backups=7, caddy=dataclasses.replace(site.caddy, behind_proxy=False))
    assert load_site(HostConfig(root=tmp_path), "acme") == changed


def test_host_settings_are_changed_in_place_or_the_file_created(tmp_path):
    before = config.set_host_settings(tmp_path, {"edge.tls": "internal", "upgrade.retire_idle_after": "2d"})
    assert before == ""
    assert (tmp_path / "sumbg.toml").read_text() == '[edge]\ntls = "internal"\n\n[upgrade]\nretire_idle_after = "2d"\n'
    host = load_host(tmp_path)
    assert (host.edge.tls, host.retire_idle_after) == ("internal", 172800.0)
    with pytest.raises(ConfigError) as refused:
        config.set_host_settings(tmp_path, {"upgrade.background_cpu_shares": 1})
    assert refused.value.message == (
        "sumbg.toml: upgrade.background_cpu_shares: must be from 2 to 1024 (the live colour's), not 1"
    )
    assert load_host(tmp_path).background_cpu_shares == 128


# ---------------------------------------------------------------- a re-run init and the kept site.toml

KEPT = SiteConfig(
    slug="acme",
    domain="acme.example.com",
    aliases=("www.acme.example.com",),
    repo="/r",
    project="acme",
    settings_module="acme.settings.production",
    wsgi="acme.wsgi:application",
    worker_command="celery -A acme worker --loglevel=INFO",
    extra_env=(("FOO", "bar"),),
)
NO_OPTIONS = {
    "repo": "/r",
    "domains": ["acme.example.com", "www.acme.example.com"],
    "project": None,
    "worker_command": None,
    "db_publish_port": None,
    "environment": None,
    "env": (),
}


def test_a_rerun_init_with_the_same_or_no_options_keeps_the_file():
    config.refuse_changes_to_kept_config(KEPT, **NO_OPTIONS)
    config.refuse_changes_to_kept_config(
        KEPT,
        **NO_OPTIONS
        | {
            "project": "acme",
            "worker_command": "celery -A acme worker --loglevel=INFO",
            "db_publish_port": 0,
            "environment": "production",
            "env": (("FOO", "bar"),),
        },
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"domains": ["acme.example.com"]},
            "has domains = ['acme.example.com', 'www.acme.example.com'], not ['acme.example.com']",
        ),
        ({"repo": "/other"}, "has repo = '/r', not '/other'"),
        ({"env": (("FOO", "baz"),)}, "has env = (('FOO', 'bar'),), not (('FOO', 'baz'),)"),
        ({"db_publish_port": 15432}, "has db_publish_port = 0, not 15432"),
        ({"environment": "staging"}, "has environment = 'production', not 'staging'"),
        ({"project": "other"}, "has project = 'acme', not 'other'"),
        (
            {"worker_command": "rq worker"},
            "has worker_command = 'celery -A acme worker --loglevel=INFO', not 'rq worker'",
        ),
    ],
)
def test_a_rerun_init_that_contradicts_the_kept_file_is_refused(change, message):
    with pytest.raises(UsageError) as refused:
        config.refuse_changes_to_kept_config(KEPT, **NO_OPTIONS | change)
    assert exit_code_of(refused.value) == 2
    assert refused.value.message == (
        f"site.toml of acme (kept from an earlier init, with any edits) {message}: "
        "edit site.toml, or remove it to start afresh"
    )


def test_every_init_option_is_checked_against_the_kept_file():
    assert set(SITE_TOML.options()) == set(NO_OPTIONS)


# ---------------------------------------------------------------- the reference in docs/


def test_the_configuration_reference_is_generated_from_the_declarations():
    committed = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert committed.read_text() == reference(), (
        f"docs/configuration.md differs from the declarations: regenerate it with `.venv/bin/{COMMAND}`"
    )


def test_the_reference_names_every_key():
    text = reference()
    for spec in (SUMBG_TOML, SITE_TOML):
        assert f"\n## {spec.name}\n" in text
        for section in spec.sections:
            assert f"\n### [{section.name}]\n" in text or not section.name
            for key in section.keys:
                assert f"\n| `{key.name}` | " in text
