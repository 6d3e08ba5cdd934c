"""The golden-host fixture itself: a site deployed the runbook way (systemd units, host
PostgreSQL/Redis/Caddy) in one container, reachable through its host Caddy, driven by the
systemctl shim exactly as `sumbg adopt` will drive a real VPS."""
from __future__ import annotations

import stat
import subprocess

import pytest

from .golden_host import GoldenHost, golden_host_factory  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

SLUG = "gh-acme"


def test_a_golden_host_serves_the_site_and_obeys_the_systemctl_shim(golden_host_factory) -> None:  # noqa: F811
    host: GoldenHost = golden_host_factory(slug=SLUG, celery=True)
    print(f"golden host started in {host.startup_seconds} s: {host.timings}")
    gunicorn = f"sum-{SLUG}-gunicorn"

    # The layout sumbg adopt reads.
    env = host.env()
    assert list(env) == ["DJANGO_SETTINGS_MODULE", "DJANGO_SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_DB_NAME",
                         "DJANGO_DB_USER", "DJANGO_DB_PASSWORD", "DJANGO_DB_HOST", "DJANGO_DB_PORT", "REDIS_URL",
                         "CELERY_BROKER_URL", "DJANGO_STATIC_ROOT", "DJANGO_MEDIA_ROOT", "SENTRY_DSN",
                         "ACME_FEATURE_BANNER"]
    assert env["DJANGO_DB_PORT"] == str(host.pg_port) and env["DJANGO_DB_NAME"] == "gh_acme"
    assert stat.S_IMODE((host.site_dir / ".env").stat().st_mode) == 0o600
    unit = (host.systemd_dir / f"{gunicorn}.service").read_text()
    assert f"WorkingDirectory={host.site_dir}/app\n" in unit
    assert f"EnvironmentFile={host.site_dir}/.env\n" in unit
    assert f"ExecStart={host.site_dir}/venv/bin/gunicorn acme.wsgi:application --bind 127.0.0.1:{host.app_port}" in unit
    celery = (host.systemd_dir / f"sum-{SLUG}-celery.service").read_text()
    assert f"ExecStart={host.site_dir}/venv/bin/celery -A acme worker --loglevel=INFO\n" in celery
    git = subprocess.run(["git", "-C", str(host.site_dir / "app"), "describe", "--tags"],
                         capture_output=True, text=True, check=True)
    assert git.stdout.strip() == "v1.0.0"
    assert (host.site_dir / "venv/bin/gunicorn").exists()
    assert any((host.site_dir / "static").rglob("main*.css"))
    assert (host.caddy_data_dir / "pki/authorities/local/root.crt").exists()

    # Leads and the admin through the host Caddy (https, SNI = the domain).
    assert [host.post_lead(f"Lead {n}") for n in range(3)] == [302, 302, 302]
    assert host.lead_count() == 3
    session = host.login_admin()
    admin = host.request("GET", "/admin/", cookies={"sessionid": session})
    assert admin.status_code == 200 and "Site administration" in admin.text
    assert host.request("GET", "/admin/").status_code == 302

    # Media through Caddy's file_server.
    names = host.make_media(3)
    assert "uploads/file-1.txt" in names and len(names) == 4
    media = host.request("GET", "/media/uploads/file-1.txt")
    assert media.status_code == 200 and media.content == (host.site_dir / "media/uploads/file-1.txt").read_bytes()
    assert len(media.content) > 2000

    # The systemctl shim, found first on PATH as sumbg will find it.
    def systemctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["systemctl", *args], check=False, capture_output=True, text=True, env=host.path_env())

    assert systemctl("is-active", gunicorn, f"sum-{SLUG}-celery", "caddy", "postgresql", "redis-server").stdout \
        == "active\n" * 5
    assert systemctl("stop", gunicorn).returncode == 0
    assert host.request("GET", "/").status_code == 502
    inactive = systemctl("is-active", f"{gunicorn}.service")
    assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")
    assert systemctl("start", gunicorn).returncode == 0
    assert host.request("GET", "/").status_code == 200
    assert systemctl("restart", f"{gunicorn}.service").returncode == 0
    assert host.request("GET", "/health/").status_code == 200

    assert host.is_enabled(gunicorn) and host.is_enabled("caddy")
    assert systemctl("is-enabled", gunicorn).stdout == "enabled\n"
    assert systemctl("disable", gunicorn).returncode == 0
    disabled = systemctl("is-enabled", gunicorn)
    assert (disabled.returncode, disabled.stdout) == (1, "disabled\n")
    assert not host.is_enabled(gunicorn)
    assert systemctl("is-active", gunicorn).returncode == 0  # disable without --now keeps it running
    assert systemctl("disable", "--now", gunicorn).returncode == 0
    assert systemctl("is-active", gunicorn).returncode == 3
    assert systemctl("enable", "--now", gunicorn).returncode == 0
    assert host.is_enabled(gunicorn) and systemctl("is-active", "-q", gunicorn).returncode == 0
    assert host.request("GET", "/").status_code == 200

    # Caddy reloads a changed site file; a broken one is refused and the old config keeps serving.
    site_file = host.caddy_dir / "sites-enabled" / f"sum-{SLUG}.caddy"
    good = site_file.read_text()
    site_file.write_text(good.replace("\tencode gzip\n", "\tencode gzip\n\theader X-Golden reloaded\n"))
    assert systemctl("reload", "caddy").returncode == 0, systemctl("reload", "caddy").stderr
    assert host.request("GET", "/").headers.get("x-golden") == "reloaded"
    site_file.write_text(good.replace("tls internal", "tls internal {"))
    assert systemctl("reload", "caddy.service").returncode != 0
    assert host.request("GET", "/").status_code == 200
    site_file.write_text(good)
    assert systemctl("reload", "caddy").returncode == 0

    assert systemctl("daemon-reload").returncode == 0
    unknown = systemctl("frobnicate", gunicorn)
    assert unknown.returncode == 1 and "frobnicate" in unknown.stderr
    assert ["stop", gunicorn] in host.shim_calls()
    assert f"{gunicorn}" in host.supervisor_status()

    host.stop()
    host.stop()  # idempotent
    assert subprocess.run(["docker", "inspect", host.container], check=False, capture_output=True).returncode != 0
