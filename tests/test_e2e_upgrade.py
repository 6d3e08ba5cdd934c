"""`sumbg upgrade` on the real engine: zero failed requests, clean aborts, locking, dry runs."""

from __future__ import annotations

import hashlib
import json

import psycopg
import pytest

from .conftest import Host, docker, http_get, snapshot_tree, wait_until
from .test_e2e_init import post_lead, tag_commit
from .traffic import TEST_PAUSE, Traffic

pytestmark = pytest.mark.e2e


def count_leads(host: Host, slug: str) -> list[tuple]:
    with psycopg.connect(host.db_url(slug)) as conn:
        return conn.execute("SELECT id, name, email FROM sum_core_lead ORDER BY id").fetchall()


def finished(host: Host, slug: str) -> dict:
    return [e for e in host.history(slug) if e.get("event") == "finished"][-1]


def assert_version_moved(report, old: str, new: str) -> None:
    """Every client saw only old, then only new: never a failure, never back and forth."""
    assert report.failures == [], report.summary()
    per_client = report.per_client_builds()
    assert per_client, "the background client sent nothing"
    for client, builds in per_client.items():
        assert builds in ([old, new], [new]), f"client {client} saw {builds}"
    last = sorted(report.samples, key=lambda s: s.at)[-1]
    assert last.build == new


class TestZeroDowntimeUpgrade:
    SLUG = "t-up"
    DOMAIN = "t-up.example.test"

    @pytest.fixture(scope="class")
    @classmethod
    def site(cls, host: Host) -> str:
        host.init(cls.SLUG, "v1.0.0")
        return cls.SLUG

    def test_dry_run_changes_nothing(self, host: Host, site: str) -> None:
        files_before = snapshot_tree(host.root, exclude=(f"{site}/repo.git",))
        containers_before = host.own_containers()
        result = host.sumbg("upgrade", site, "v1.1.0", "--dry-run", "--json")
        assert result.returncode == 0, str(result)
        plan = result.json()
        assert [step["name"] for step in plan["steps"]] == [
            "preflight",
            "build",
            "backup",
            "rehearsal",
            "migrate",
            "start",
            "smoke",
            "switch",
            "workers",
            "watch",
            "after-switch",
        ]
        assert plan["image"] == f"sum-{site}:v1.1.0"
        assert plan["compose_projects"] == [f"sum-{site}-data", f"sum-{site}-green"]
        assert plan["traffic_switch"].endswith(f"state/{site}/live: blue -> green")
        assert plan["caddy_config_diff"] == "(no structural change: no reload)"
        assert plan["steps"][2]["backup"].startswith(str(host.site_dir(site) / "backups" / f"{site}_"))
        assert "pg_dump" in result.stderr and "dry run" in result.stderr
        assert snapshot_tree(host.root, exclude=(f"{site}/repo.git",)) == files_before
        assert host.own_containers() == containers_before

    def test_upgrade_under_load_fails_no_request(self, host: Host, site: str) -> None:
        leads_before = count_leads(host, site)
        with Traffic(host.http_port, self.DOMAIN, keepalive_clients=3, fresh_clients=2, pause=TEST_PAUSE) as traffic:
            traffic.settle()
            result = host.sumbg("upgrade", site, "v1.1.0", "--json", "--watch", "3")
            traffic.settle()
        report = traffic.stop()
        assert result.returncode == 0, str(result)
        assert_version_moved(report, "v1.0.0", "v1.1.0")
        assert report.sent > 200, report.summary()

        outcome = result.json()
        assert outcome["outcome"] == "done"
        # The build is skipped when this engine already holds the image built from that commit.
        build = next(s for s in outcome["steps"] if s["name"] == "build")
        assert build["outcome"] == "ok" or (build["outcome"], build["reason"]) == (
            "skipped",
            f"sum-{site}:v1.1.0 already built from {tag_commit(host, 'v1.1.0')[:12]}",
        )
        assert [(s["name"], s["outcome"]) for s in outcome["steps"] if s["name"] != "build"] == [
            ("preflight", "ok"),
            ("backup", "ok"),
            ("rehearsal", "ok"),
            ("migrate", "ok"),
            ("start", "ok"),
            ("smoke", "ok"),
            ("switch", "ok"),
            ("workers", "skipped"),
            ("watch", "ok"),
            ("after-switch", "skipped"),
        ]
        assert outcome["sum_core"] == {"from": "0.6.3", "to": "0.7.0"}
        assert 0 < outcome["flip_seconds"] < 1

        state = host.state(site)
        assert (state["live"], state["previous"]) == ("green", "blue")
        assert state["colours"]["green"]["ref"] == "v1.1.0"
        assert state["colours"]["blue"]["ref"] == "v1.0.0"
        assert state["operation"] is None
        # The old colour keeps running for an instant rollback.
        assert f"sum-{site}-blue-web" in docker("ps", "--format", "{{.Names}}").stdout.split()
        assert count_leads(host, site) == leads_before

        backup = host.site_dir(site) / "backups" / state["colours"]["green"]["backup"]
        assert backup.stat().st_mode & 0o777 == 0o600
        sums = backup.with_name(backup.name + ".sha256")
        assert sums.read_text() == f"{hashlib.sha256(backup.read_bytes()).hexdigest()}  {backup.name}\n"
        assert sums.stat().st_mode & 0o777 == 0o600

        status, headers, body = http_get(host.http_port, self.DOMAIN, "/static/sum_core/css/main.css")
        assert status == 200 and b"sum-core 0.7.0" in body
        assert post_lead(host, self.DOMAIN, name="Phone", email="p@example.test", message="m", phone="+44 1234") == 302

    def test_records_and_operator_documents(self, host: Host, site: str) -> None:
        entry = finished(host, site)
        assert (entry["operation"], entry["outcome"], entry["from"], entry["to"]) == (
            "upgrade",
            "done",
            "v1.0.0",
            "v1.1.0",
        )
        assert all(step["seconds"] >= 0 for step in entry["steps"])
        matrix = (host.root / "SITES.md").read_text()
        assert (
            "| Site | Environment | Slug | Current Version | Last Deploy Date | Last Upgrade Outcome | Notes |"
            in matrix
        )
        row = next(line for line in matrix.splitlines() if f"| {site} |" in line)
        assert f"| {self.DOMAIN} | production | {site} | v1.1.0 |" in row and "upgrade done" in row
        secrets = host.secrets(site)
        for path in host.site_dir(site).glob("*.jsonl"):
            assert secrets["POSTGRES_PASSWORD"] not in path.read_text()


class TestBrokenReleases:
    SLUG = "t-broken"
    DOMAIN = "t-broken.example.test"

    @pytest.fixture(scope="class")
    @classmethod
    def site(cls, host: Host) -> str:
        host.init(cls.SLUG, "v1.0.0")
        assert post_lead(host, cls.DOMAIN, name="Before", email="b@example.test", message="x") == 302
        return cls.SLUG

    @pytest.mark.parametrize(
        "ref, step, message",
        [
            (
                "v1.2.0-broken-migration",
                "rehearsal",
                "the migrations of sum-t-broken:v1.2.0-broken-migration failed in the rehearsal on a copy of the database; "
                "the live database was never touched",
            ),
            ("v1.3.0-no-gunicorn", "start", "the new colour green never became healthy"),
            (
                "v1.4.0-homepage-500",
                "smoke",
                "smoke check GET / on the preview colour failed: expected HTTP 200, got 500",
            ),
        ],
    )
    def test_broken_release_aborts_cleanly(self, host: Host, site: str, ref: str, step: str, message: str) -> None:
        leads_before = count_leads(host, site)
        state_before = host.state(site)
        with Traffic(host.http_port, self.DOMAIN, pause=TEST_PAUSE) as traffic:
            traffic.settle()
            result = host.sumbg("upgrade", site, ref, "--json")
            traffic.settle()
        report = traffic.stop()
        assert result.returncode == 1, str(result)
        assert report.failures == [], report.summary()
        assert set(report.builds()) == {"v1.0.0"}, report.summary()
        assert host.containers(f"sum-{site}-green") == []
        assert count_leads(host, site) == leads_before
        assert host.state(site)["live"] == state_before["live"] == "blue"

        failure = result.json()
        assert failure["outcome"] == "failed" and failure["step"] == step
        assert message in failure["message"]
        entry = finished(host, site)
        assert (entry["outcome"], entry["failed_step"]) == ("aborted", step)
        assert entry["error"]["message"] == failure["message"]
        # A rehearsal's failure comes before anything was started that would need undoing.
        assert entry["undo"] == (
            [] if step == "rehearsal" else [{"what": f"remove the new colour sum-{site}-green", "outcome": "ok"}]
        )
        broke = (host.root / "WHAT-BROKE.md").read_text()
        assert f"## {site}: upgrade v1.0.0 -> {ref}" in broke
        if step == "rehearsal":
            assert "deliberately broken migration" in failure["output_tail"]
        if step == "start":
            assert "gunicorn" in failure["output_tail"]

    def test_a_good_release_upgrades_after_the_broken_ones(self, host: Host, site: str) -> None:
        result = host.sumbg("upgrade", site, "v1.6.0", "--watch", "0")
        assert result.returncode == 0, str(result)
        status, _, body = http_get(host.http_port, self.DOMAIN, "/health/")
        assert json.loads(body)["version"]["build"] == "v1.6.0"


def lock_holder(host: Host, slug: str) -> int | None:
    """The pid the site's lock file names (its holder writes it once it holds the lock)."""
    try:
        return json.loads((host.site_dir(slug) / ".lock").read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


class TestLockingAndInput:
    SLUG = "t-lock"

    @pytest.fixture(scope="class")
    @classmethod
    def site(cls, host: Host) -> str:
        host.init(cls.SLUG, "v1.0.0")
        return cls.SLUG

    def test_concurrent_upgrades_one_runs_other_names_the_holder(self, host: Host, site: str) -> None:
        first = host.popen("upgrade", site, "v1.1.0", "--watch", "0")
        assert wait_until(lambda: lock_holder(host, site) == first.pid, 30), lock_holder(host, site)
        second = host.sumbg("upgrade", site, "v1.1.0", "--watch", "0")
        out, err = first.communicate(timeout=900)
        assert first.returncode == 0, err
        assert second.returncode == 1, str(second)
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith(f"sumbg: error: site {site} is locked by pid {first.pid} on ")
        assert f"running `sumbg upgrade {site} v1.1.0` since " in line

    def test_same_core_pin_stops_unless_allowed(self, host: Host, site: str) -> None:
        result = host.sumbg("upgrade", site, "v1.1.0", "--watch", "0")
        assert result.returncode == 1
        assert "sum-core pin is unchanged (0.7.0)" in result.stderr
        assert host.containers(f"sum-{site}-blue") == [f"sum-{site}-blue-web"]  # rollback target untouched

    def test_unknown_ref_is_bad_input(self, host: Host, site: str) -> None:
        result = host.sumbg("upgrade", site, "v9.9.9")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [f"sumbg: error: ref 'v9.9.9' does not exist in {host.repo}"]


def test_one_version_consumes_tasks_workers_follow_traffic(host: Host) -> None:
    slug = "t-worker"
    host.init(slug, "v1.0.0", "--worker")
    assert 'worker_command = "celery -A acme worker --loglevel=INFO"' in (host.site_dir(slug) / "site.toml").read_text()

    def running():
        return docker("ps", "--filter", f"name=sum-{slug}-", "--format", "{{.Names}}").stdout.split()

    assert f"sum-{slug}-blue-worker" in running()

    def weights() -> dict[str, int]:
        """Each running app container's CPU weight (Docker cpu-shares): the live colour's are 1024."""
        names = sorted(n for n in running() if not n.startswith(f"sum-{slug}-data"))
        out = docker("inspect", "--format", "{{.HostConfig.CpuShares}}", *names).stdout.split()
        return {name[len(f"sum-{slug}-") :]: int(value) for name, value in zip(names, out, strict=False)}

    assert weights() == {"blue-web": 1024, "blue-worker": 1024}
    # A real Celery worker on the site's Redis runs the contact form's task.

    def logs() -> str:
        out = docker("logs", f"sum-{slug}-blue-worker")
        return out.stdout + out.stderr

    assert wait_until(lambda: "ready." in logs(), 60), logs()
    assert post_lead(host, f"{slug}.example.test", name="Task", email="t@example.test", message="m") == 302
    assert wait_until(lambda: "sum_core task done: notify-lead:" in logs(), 30), logs()
    result = host.sumbg("upgrade", slug, "v1.1.0", "--watch", "0", "--json")
    assert result.returncode == 0, str(result)
    workers = next(s for s in result.json()["steps"] if s["name"] == "workers")
    assert (workers["stopped"], workers["started"]) == ("blue", "green")
    assert sorted(n for n in running() if n.endswith("-worker")) == [f"sum-{slug}-green-worker"]
    assert f"sum-{slug}-blue-web" in running()
    # The CPU weight follows the traffic: the colour kept for rollback only gets what live leaves.
    # (blue's old worker, idle, finishes at once on SIGTERM; a drainer in the background removes it.)
    expected = {"blue-web": 128, "green-web": 1024, "green-worker": 1024}
    assert wait_until(lambda: weights() == expected, 60), weights()
    assert host.sumbg("rollback", slug).returncode == 0
    # The rollback ends once traffic is confirmed; the worker follows in the background.
    assert wait_until(lambda: sorted(n for n in running() if n.endswith("-worker")) == [f"sum-{slug}-blue-worker"], 120)
    expected = {"blue-web": 1024, "blue-worker": 1024, "green-web": 128}
    assert wait_until(lambda: weights() == expected, 60), weights()
    assert wait_until(
        lambda: any(e.get("operation") == "worker" and e["event"] == "finished" for e in host.history(slug)), 120
    )
    assert [
        e["outcome"] for e in host.history(slug) if e.get("operation") == "worker" and e["event"] == "finished"
    ] == ["done"]
    host.teardown_site(slug)
