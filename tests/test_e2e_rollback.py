"""Rollback, database restore, watch-and-revert, crash recovery, backups, retire (real engine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import psycopg
import pytest

from .conftest import SUMBG, Host, docker, http_get, wait_until
from .test_e2e_init import post_lead
from .test_e2e_upgrade import assert_version_moved, finished
from .traffic import TEST_PAUSE, Traffic

pytestmark = pytest.mark.e2e


def leads(host: Host, slug: str) -> list[tuple]:
    with psycopg.connect(host.db_url(slug)) as conn:
        return conn.execute("SELECT id, name, email FROM sum_core_lead ORDER BY id").fetchall()


def columns(host: Host, slug: str) -> set[str]:
    with psycopg.connect(host.db_url(slug)) as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'sum_core_lead'"
            )
        }


def live_build(host: Host, domain: str) -> str:
    status, _, body = http_get(host.http_port, domain, "/health/")
    assert status == 200, body
    return json.loads(body)["version"]["build"]


class TestRollback:
    SLUG = "t-rb"
    DOMAIN = "t-rb.example.test"

    @pytest.fixture(scope="class")
    @classmethod
    def site(cls, host: Host) -> str:
        host.init(cls.SLUG, "v1.0.0")
        result = host.sumbg("upgrade", cls.SLUG, "v1.1.0", "--watch", "0")
        assert result.returncode == 0, str(result)
        return cls.SLUG

    def test_rollback_under_load_is_instant_and_fails_nothing(self, host: Host, site: str) -> None:
        with Traffic(host.http_port, self.DOMAIN, keepalive_clients=3, fresh_clients=2, pause=TEST_PAUSE) as traffic:
            traffic.settle()
            result = host.sumbg("rollback", site, "--json")
            traffic.settle()
        report = traffic.stop()
        assert result.returncode == 0, str(result)
        assert_version_moved(report, "v1.1.0", "v1.0.0")
        outcome = result.json()
        assert outcome["flip_seconds"] < 1.0
        assert [(s["name"], s["outcome"]) for s in outcome["steps"]] == [("ready", "skipped"), ("flip", "ok")]
        assert "traffic flipped to blue in" in result.stderr
        state = host.state(site)
        assert (state["live"], state["previous"]) == ("blue", "green")
        entry = finished(host, site)
        assert (entry["operation"], entry["outcome"], entry["flip_seconds"]) == (
            "rollback",
            "done",
            outcome["flip_seconds"],
        )
        # Rolling back again goes forward to green: both colours stay running.
        again = host.sumbg("rollback", site)
        assert again.returncode == 0, str(again)
        assert live_build(host, self.DOMAIN) == "v1.1.0"

    def test_backup_list_and_plain_sql_restore(self, host: Host, site: str, tmp_path) -> None:
        taken = host.sumbg("backup", site, "--json")
        assert taken.returncode == 0, str(taken)
        name = taken.json()["steps"][0]["file"]
        listed = host.sumbg("backups", site, "--json").json()["backups"]
        mine = next(item for item in listed if item["file"] == name)
        assert (mine["ref"], mine["verified"]) == ("v1.1.0", True)
        assert mine["size"] > 0
        assert (host.site_dir(site) / "backups" / name).stat().st_mode & 0o777 == 0o600

        # The real SUM backup_db.sh writes plain SQL, gzipped.
        before = leads(host, site)
        sql_gz = tmp_path / f"{site}_backup_db.sql.gz"
        dump = subprocess.run(
            f"docker exec sum-{site}-data-postgres pg_dump -U t_rb -d t_rb | gzip > {sql_gz}",
            shell=True,
            capture_output=True,
            text=True,
        )
        assert dump.returncode == 0, dump.stderr
        assert post_lead(host, self.DOMAIN, name="After dump", email="a@example.test", message="m") == 302
        assert len(leads(host, site)) == len(before) + 1

        refused = host.sumbg("restore", site, str(sql_gz))
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            "sumbg: error: restore replaces the site's database: pass --yes (no terminal to ask on)"
        ]
        restored = host.sumbg("restore", site, str(sql_gz), "--yes", "--json")
        assert restored.returncode == 0, str(restored)
        assert leads(host, site) == before
        assert restored.json()["safety_backup"] in [
            b["file"] for b in host.sumbg("backups", site, "--json").json()["backups"]
        ]
        assert live_build(host, self.DOMAIN) == "v1.1.0"

    def test_retire_refuses_young_target_then_rollback_restarts_it(self, host: Host, site: str) -> None:
        refused = host.sumbg("retire", site)
        assert refused.returncode == 2
        assert "only rollback target" in refused.stderr and "pass --force" in refused.stderr
        assert host.containers(f"sum-{site}-blue") == [f"sum-{site}-blue-web"]

        retired = host.sumbg("retire", site, "--force")
        assert retired.returncode == 0, str(retired)
        assert host.containers(f"sum-{site}-blue") == []
        assert host.state(site)["colours"]["blue"]["status"] == "retired"

        rolled = host.sumbg("rollback", site, "--json")
        assert rolled.returncode == 0, str(rolled)
        outcome = rolled.json()
        assert outcome["instant"] is False
        assert outcome["steps"][0]["name"] == "ready" and outcome["steps"][0]["outcome"] == "ok"
        assert "not instant" in rolled.stderr
        assert live_build(host, self.DOMAIN) == "v1.0.0"

    def test_client_repo_makefile_targets(self, host: Host, site: str, tmp_path) -> None:
        wrote = host.sumbg("makefile", "--slug", site, "--write", str(tmp_path))
        assert wrote.returncode == 0, str(wrote)
        assert (tmp_path / ".sumbg.toml").read_text().endswith(f'slug = "{site}"\n')
        (tmp_path / "Makefile").write_text("include sumbg.mk\n")
        make = subprocess.run(
            ["make", "-C", str(tmp_path), "status", f"SUMBG={SUMBG}"], capture_output=True, text=True, env=host.env()
        )
        assert make.returncode == 0, make.stderr
        assert site in make.stdout and "live=blue" in make.stdout
        usage = subprocess.run(
            ["make", "-C", str(tmp_path), "upgrade", f"SUMBG={SUMBG}"], capture_output=True, text=True, env=host.env()
        )
        assert usage.returncode != 0 and "usage: make upgrade VERSION=v1.2.0" in usage.stderr

    def test_nothing_to_roll_back_is_bad_input(self, host: Host) -> None:
        host.init("t-fresh", "v1.0.0")
        result = host.sumbg("rollback", "t-fresh")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "sumbg: error: site t-fresh has nothing to roll back to (green holds no release)"
        ]
        host.teardown_site("t-fresh")


class StatusWatcher:
    """Polls a path through Caddy and counts the HTTP statuses it sees (0 = connection error)."""

    def __init__(self, host: Host, domain: str, path: str = "/") -> None:
        self.host, self.domain, self.path = host, domain, path
        self.statuses: Counter = Counter()
        self.maintenance_pages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, headers, body = http_get(self.host.http_port, self.domain, self.path, timeout=10)
            except OSError:
                status, body = 0, b""
            self.statuses[status] += 1
            if status == 503 and b"maintenance" in body:
                self.maintenance_pages += 1
            time.sleep(0.02)


def test_rollback_restore_db_puts_the_pre_upgrade_database_back(host: Host) -> None:
    slug, domain = "t-rs", "t-rs.example.test"
    host.init(slug, "v1.0.0")
    assert post_lead(host, domain, name="Pre", email="pre@example.test", message="before upgrade") == 302
    before = leads(host, slug)
    assert "phone" not in columns(host, slug)
    assert host.sumbg("upgrade", slug, "v1.1.0", "--watch", "0").returncode == 0
    assert "phone" in columns(host, slug)
    assert post_lead(host, domain, name="New", email="new@example.test", message="m", phone="+1 555") == 302
    assert len(leads(host, slug)) == len(before) + 1

    with StatusWatcher(host, domain) as watcher:
        result = host.sumbg("rollback", slug, "--restore-db", "--json")
        time.sleep(0.5)
    assert result.returncode == 0, str(result)
    outcome = result.json()
    assert [s["name"] for s in outcome["steps"]] == ["ready", "verify", "safety-backup", "restore", "reopen"]
    assert leads(host, slug) == before
    assert "phone" not in columns(host, slug)
    safety = host.site_dir(slug) / "backups" / outcome["safety_backup"]
    assert safety.exists() and safety.stat().st_mode & 0o777 == 0o600
    assert live_build(host, domain) == "v1.0.0"
    assert set(watcher.statuses) <= {200, 503}, watcher.statuses
    assert watcher.statuses[503] > 0 and watcher.maintenance_pages == watcher.statuses[503], watcher.statuses
    assert not (host.root / "caddy" / "state" / slug / "maintenance").exists()
    host.teardown_site(slug)


class TestCrashRecovery:
    SLUG = "t-crash"
    DOMAIN = "t-crash.example.test"

    @pytest.fixture(scope="class")
    @classmethod
    def site(cls, host: Host) -> str:
        host.init(cls.SLUG, "v1.0.0")
        return cls.SLUG

    @staticmethod
    def migrate_container_running(site: str) -> bool:
        out = docker(
            "ps",
            "--filter",
            f"label=com.docker.compose.project=sum-{site}-green",
            "--filter",
            "label=com.docker.compose.oneoff=True",
            "--format",
            "{{.Names}}",
        ).stdout
        return bool(out.strip())

    @pytest.mark.parametrize(
        "point", ["upgrade:build", "rehearsal:copy-migrated", "during-migrate", "upgrade:smoke", "switch:after-write"]
    )
    def test_sigkill_then_recover(self, host: Host, site: str, point: str, tmp_path) -> None:
        stderr_path = tmp_path / "stderr"
        with Traffic(host.http_port, self.DOMAIN, pause=TEST_PAUSE) as traffic:
            with stderr_path.open("w") as stderr:
                env = {} if point == "during-migrate" else {"SUMBG_FAILPOINT": point}
                proc = host.popen("upgrade", site, "v1.1.0", "--watch", "0", stderr=stderr, env=env)
                if point == "during-migrate":
                    reached = wait_until(lambda: self.migrate_container_running(site), timeout=300, interval=0.05)
                else:
                    reached = wait_until(lambda: f"failpoint {point} reached" in stderr_path.read_text(), timeout=300)
                assert reached, stderr_path.read_text()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)

            status = host.sumbg("status", site, "--json").json()
            assert status["interrupted"] is True
            assert "INTERRUPTED" in host.sumbg("status", site).stdout
            blocked = host.sumbg("upgrade", site, "v1.1.0")
            assert blocked.returncode == 1 and f"run `sumbg recover {site}` first" in blocked.stderr

            recovered = host.sumbg("recover", site, "--json")
            assert recovered.returncode == 0, str(recovered)
            traffic.settle()
        report = traffic.stop()
        assert report.failures == [], report.summary()

        state = host.state(site)
        assert state["operation"] is None
        assert state["live"] == "blue"
        assert (host.root / "caddy" / "state" / site / "live").read_text() == "blue\n"
        assert live_build(host, self.DOMAIN) == "v1.0.0"
        assert not self.migrate_container_running(site)
        # No half-started colour is left behind, nor a rehearsal's stand-in or scratch database.
        assert host.containers(f"sum-{site}-green") == []
        assert host.containers(f"sum-{site}-rehearsal") == []
        with psycopg.connect(host.db_url(site)) as conn:
            assert [
                row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%sumbg%'")
            ] == []
        after = host.sumbg("status", site, "--json").json()
        assert after["interrupted"] is False and after["health"]["status"] == "ok"
        entry = finished(host, site)
        assert (entry["operation"], entry["outcome"]) == ("recover", "done")
        assert entry["interrupted"]["kind"] == "upgrade"


def test_no_secret_in_process_arguments_output_or_records(host: Host) -> None:
    slug = "t-secret"
    host.init(slug, "v1.0.0")
    secrets = host.secrets(slug)
    samples: list[str] = []
    proc = host.popen("upgrade", slug, "v1.1.0", "--watch", "0", "--json")
    while proc.poll() is None:
        samples.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
        time.sleep(0.05)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert len(samples) > 10
    texts = {"ps": "\n".join(samples), "stdout": out, "stderr": err}
    for path in host.site_dir(slug).rglob("*"):
        if path.is_file() and path.name != ".env" and "repo.git" not in path.parts and path.suffix != ".dump":
            texts[str(path)] = path.read_text(errors="replace")
    for name in ("POSTGRES_PASSWORD", "DJANGO_SECRET_KEY"):
        for where, text in texts.items():
            assert secrets[name] not in text, f"{name} leaked into {where}"
    for path in [host.site_dir(slug) / ".env", *(host.site_dir(slug) / "backups").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o600, path
    host.teardown_site(slug)
