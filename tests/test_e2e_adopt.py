"""`sumbg adopt` on a simulated runbook host (tests/golden_host.py): Debian's PostgreSQL, Redis
and Caddy, gunicorn and Celery under a supervisor standing in for systemd, the golden-path
layout (units with continued ExecStart= lines, gunicorn on a unix socket, the host Caddy
proxying to it). Bad input and --dry-run change nothing; the adoption itself runs under a
background visitor that reads and writes through the host Caddy; --undo puts the old
deployment back. Then the operator moves the old site to socket activation (a .socket unit),
and it is adopted and undone again. The tests share one golden host and run in file order.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from .conftest import Host, docker, snapshot_tree
from .golden_host import GoldenHost, Visitor, start_golden_host, sumbg_at_failpoint

pytestmark = pytest.mark.e2e

SLUG = "t-adopt"
QUEUED_TASK = '{"body": "W10=", "headers": {"task": "acme.tasks.monthly_report", "id": "9f1c"}}'
DOMAIN = "adopt.example.test"


@pytest.fixture(scope="module")
def golden(host: Host, example_repo: Path, tmp_path_factory) -> GoldenHost:
    host.teardown_site(SLUG)
    old = start_golden_host(tmp_path_factory.mktemp("golden"), example_repo, slug=SLUG, domain=DOMAIN, celery=True)
    yield old
    old.stop()


def on_golden(host: Host, golden: GoldenHost, *args: str):
    """sumbg as an operator runs it on the runbook host (its systemctl first on PATH)."""
    import subprocess

    from .conftest import SUMBG, Result

    proc = subprocess.run(
        [str(SUMBG), *args],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        env={**golden.path_env(), "SUMBG_ROOT": str(host.root)},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def adopt_argv(
    golden: GoldenHost,
    *args: str,
    source: Path | None = None,
    systemd_dir: Path | None = None,
    caddy_dir: Path | None = None,
) -> list[str]:
    argv = ["adopt", SLUG, *args]
    if "--undo" not in args:
        argv += [
            "--from",
            str(source or golden.site_dir),
            "--systemd-dir",
            str(systemd_dir or golden.systemd_dir),
            "--caddy-dir",
            str(caddy_dir or golden.caddy_dir),
        ]
    return argv


def adopt(host: Host, golden: GoldenHost, *args: str, **paths: Path):
    return on_golden(host, golden, *adopt_argv(golden, *args, **paths))


def sumbg_psql(sql: str) -> str:
    user = SLUG.replace("-", "_")
    done = docker("exec", f"sum-{SLUG}-data-postgres", "psql", "-X", "-At", "-U", user, "-d", user, "-c", sql)
    return done.stdout.strip()


def old_files(golden: GoldenHost) -> dict[str, bytes]:
    """What adoption must not change before its cutover: the site folder (but the app's own
    logs and caches), the units and the host Caddy config."""
    files = {}
    for root in (golden.site_dir, golden.systemd_dir, golden.caddy_dir):
        files.update({f"{root}/{k}": v for k, v in snapshot_tree(root, exclude=("venv", "static")).items()})
    return files


def nothing_of_sumbg(host: Host) -> None:
    assert not (host.root / SLUG).exists()
    assert host.containers(f"sum-{SLUG}-") == []
    assert docker("volume", "ls", "-q", "--filter", f"name=sum-{SLUG}-").stdout.split() == []


GOLDEN_HEADERS = ("x-content-type-options", "x-frame-options", "referrer-policy", "permissions-policy")


def site_headers(golden: GoldenHost) -> dict[str, str]:
    """The headers the host Caddy's site file sets (and the Server header it removes), and the
    compression it applies, as a visitor gets them on the homepage."""
    answer = golden.request("GET", "/", headers={"Accept-Encoding": "gzip"})
    assert answer.status_code == 200, answer.status_code
    return {name: answer.headers.get(name, "") for name in (*GOLDEN_HEADERS, "server", "content-encoding")}


def old_site_serves(golden: GoldenHost) -> None:
    answer = golden.request("GET", "/health/")
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"]["git_sha"] == "unknown"  # the runbook app: no GIT_SHA in its env
    status = golden.supervisor_status()
    assert (
        f"{golden.unit('gunicorn')}" in status and "RUNNING" in status.split(golden.unit("gunicorn"))[1].split("\n")[0]
    )


def variant(golden: GoldenHost, tmp: Path, *, env: str | None = None, units: bool = True) -> dict:
    """A copy of the deployment's files under another folder, to break one part of it."""
    site = tmp / "srv/sum" / SLUG
    shutil.copytree(golden.app_dir, site / "app", symlinks=True)
    shutil.copytree(golden.site_dir / "media", site / "media")
    (site / ".env").write_text(env if env is not None else golden.env_file.read_text())
    systemd = tmp / "systemd"
    systemd.mkdir()
    if units:
        for unit in golden.systemd_dir.glob("*.service"):
            (systemd / unit.name).write_text(unit.read_text().replace(str(golden.site_dir), str(site)))
    shutil.copytree(golden.caddy_dir, tmp / "caddy")
    main = tmp / "caddy/Caddyfile"  # its import names the folder by its absolute path
    main.write_text(main.read_text().replace(str(golden.caddy_dir), str(tmp / "caddy")))
    return {"source": site, "systemd_dir": systemd, "caddy_dir": tmp / "caddy"}


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no .env", ".env does not exist"),
        ("wrong database password", "cannot read the database"),
        ("no gunicorn unit", "runs gunicorn"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    host: Host, golden: GoldenHost, tmp_path, breakage: str, message: str
) -> None:
    env = golden.env_file.read_text()
    if breakage == "wrong database password":
        env = env.replace(f"DJANGO_DB_PASSWORD={golden.env()['DJANGO_DB_PASSWORD']}", "DJANGO_DB_PASSWORD=wrong")
    paths = variant(golden, tmp_path, env=env, units=breakage != "no gunicorn unit")
    if breakage == "no .env":
        (paths["source"] / ".env").unlink()
    before = old_files(golden)
    result = adopt(host, golden, "--json", **paths)
    assert result.returncode == 2, str(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], str(result)
    assert json.loads(result.stdout)["exit_code"] == 2
    nothing_of_sumbg(host)
    assert old_files(golden) == before
    old_site_serves(golden)


def test_dry_run_reads_everything_and_changes_nothing(host: Host, golden: GoldenHost) -> None:
    before = old_files(golden)
    calls = len(golden.shim_calls())
    result = adopt(host, golden, "--dry-run", "--json")
    assert result.returncode == 0, str(result)
    plan = result.json()
    head = golden.exec("git", "-C", str(golden.app_dir), "rev-parse", "HEAD").stdout.strip()
    assert plan["deployment"]["commit"] == head and plan["commit"] == head
    assert plan["deployment"]["units"] == [f"{golden.unit('gunicorn')}.service", f"{golden.unit('celery')}.service"]
    assert plan["deployment"]["domains"] == [DOMAIN, f"www.{DOMAIN}"]
    # The golden path's unit (ExecStart= over several lines) read as systemd reads it.
    assert plan["deployment"]["app_address"] == f"unix:{golden.app_socket}"
    assert f"it answers on unix:{golden.app_socket}, behind " in result.stderr
    assert {"SENTRY_DSN", "ACME_FEATURE_BANNER", "DJANGO_SECRET_KEY"} <= set(plan["deployment"]["carried_env"])
    assert [s["name"] for s in plan["steps"]][-8:] == [
        "maintenance",
        "stop-old",
        "final-import",
        "final-media",
        "recheck",
        "cutover",
        "settle",
        "tasks",
    ]
    assert golden.env()["DJANGO_SECRET_KEY"] not in result.stdout + result.stderr
    nothing_of_sumbg(host)
    assert old_files(golden) == before
    assert len(golden.shim_calls()) == calls  # no systemctl call at all
    old_site_serves(golden)


def test_a_failure_inside_the_window_puts_the_old_site_back(host: Host, golden: GoldenHost, tmp_path) -> None:
    """Frozen after the final import, a stray file appears in sumbg's media: the exact comparison
    fails, and the old site serves again as it was (a later adoption starts afresh)."""
    before = old_files(golden)
    resume = tmp_path / "resume"
    proc = sumbg_at_failpoint(golden, host.root, adopt_argv(golden), "adopt:final-media", resume)
    try:
        inside = golden.request("GET", "/")
        assert inside.status_code == 503 and inside.headers["retry-after"] == "30"  # the window is open
        (host.root / "www" / SLUG / "media" / "stray.txt").write_text("not in the old site")
        resume.touch()
        stderr = proc.stderr.read()
        assert proc.wait(300) == 1, stderr
    finally:
        proc.kill()
    assert "media differ after the copy" in stderr
    assert old_files(golden) == before  # the site file is back, byte for byte
    old_site_serves(golden)
    assert (
        golden.is_enabled(golden.unit("gunicorn"))
        and "RUNNING" in golden.supervisor_status().split(golden.unit("celery"))[1].split("\n")[0]
    )
    assert host.containers(f"sum-{SLUG}-") == []
    assert docker("volume", "ls", "-q", "--filter", f"name=sum-{SLUG}-data").stdout.split() == []
    assert host.state(SLUG)["adoption"]["status"] == "failed" and host.state(SLUG)["live"] is None
    assert host.history(SLUG)[-1]["outcome"] == "aborted"
    broke = (host.root / "WHAT-BROKE.md").read_text()
    assert f"## {SLUG}: adopt" in broke and "failed step: final-media" in broke
    (host.root / "www" / SLUG / "media" / "stray.txt").unlink()


def test_an_adoption_killed_in_its_window_is_put_back_by_recover(host: Host, golden: GoldenHost) -> None:
    """SIGKILL while the 503 page is up and the old units are stopped: the next adopt says to run
    recover, and recover starts the old site again exactly as it was."""
    before = old_files(golden)
    proc = sumbg_at_failpoint(golden, host.root, adopt_argv(golden), "adopt:final-import")
    try:
        assert golden.request("GET", "/").status_code == 503
        assert "STOPPED" in golden.supervisor_status().split(golden.unit("gunicorn"))[1].split("\n")[0]
    finally:
        proc.kill()
        proc.wait()
    again = adopt(host, golden)
    assert again.returncode == 2 and f"run `sumbg recover {SLUG}`" in again.stderr, str(again)
    recovered = on_golden(host, golden, "recover", SLUG, "--json")
    assert recovered.returncode == 0, str(recovered)
    assert old_files(golden) == before  # the site file is back, byte for byte
    old_site_serves(golden)
    assert "RUNNING" in golden.supervisor_status().split(golden.unit("celery"))[1].split("\n")[0]
    assert host.containers(f"sum-{SLUG}-blue-") == []
    assert host.state(SLUG)["adoption"]["status"] == "failed" and host.state(SLUG)["operation"] is None


@pytest.fixture(scope="module")
def adopted(host: Host, golden: GoldenHost) -> dict:
    for n in range(3):
        assert golden.post_lead(f"before {n}") == 302
    media = golden.make_media(5)
    session = golden.login_admin()
    # A task queued for a queue no worker of the old site consumes: it must not stay behind.
    golden.exec("redis-cli", "-p", str(golden.redis_port), "-n", "1", "RPUSH", "reports", QUEUED_TASK)
    original_site_file = (golden.caddy_dir / f"sites-enabled/sum-{SLUG}.caddy").read_bytes()
    headers = site_headers(golden)
    visitor = Visitor(golden)
    visitor.start()
    time.sleep(1)
    result = adopt(host, golden, "--json")
    time.sleep(1)
    visitor.stop()
    return {
        "result": result,
        "visitor": visitor,
        "media": media,
        "session": session,
        "original_site_file": original_site_file,
        "headers": headers,
    }


def test_adopt_moves_every_row_and_file_with_a_measured_window(host: Host, golden: GoldenHost, adopted) -> None:
    result, visitor = adopted["result"], adopted["visitor"]
    assert result.returncode == 0, str(result)
    summary = result.json()
    window = summary["cutover_window_seconds"]
    failed = [s for s in visitor.samples if not 200 <= s[2] < 400]
    print(
        f"\nadopt: cutover window {window:.2f}s; {len(visitor.samples)} requests, {len(failed)} answered 503 "
        f"in it, {len(visitor.acknowledged)} writes acknowledged; steps "
        + ", ".join(f"{s['name']} {s['seconds']:.2f}s" for s in summary["steps"])
    )
    # Only the host Caddy's maintenance page, never a refused connection, a 502 or a lost request.
    assert {s[2] for s in failed} <= {503}, failed[:5]
    assert failed, "the visitor never saw the window: the test did not exercise it"
    assert max(s[0] for s in failed) - min(s[0] for s in failed) <= window + 1.0
    # Every write the old or the new site acknowledged is in sumbg's database.
    names = set(sumbg_psql("SELECT name FROM sum_core_lead").splitlines())
    assert set(visitor.acknowledged) | {f"before {n}" for n in range(3)} <= names
    # Every table of the old database is there with at least its rows (the new site took more writes).
    old_counts = dict(
        line.split("|") for line in golden.psql("SELECT relname, n_live_tup FROM pg_stat_user_tables").splitlines()
    )
    new_tables = set(sumbg_psql("SELECT relname FROM pg_stat_user_tables").splitlines())
    assert set(old_counts) <= new_tables
    # Every media file, byte for byte.
    for name in adopted["media"]:
        assert (host.root / "www" / SLUG / "media" / name).read_bytes() == (
            golden.site_dir / "media" / name
        ).read_bytes()
    # The site is served by sumbg's colour through the host Caddy, which kept TLS.
    health = golden.request("GET", "/health/").json()
    assert (
        health["version"]["git_sha"]
        == golden.exec("git", "-C", str(golden.app_dir), "rev-parse", "HEAD").stdout.strip()
    )
    assert host.state(SLUG)["live"] == "blue" and host.state(SLUG)["adoption"]["status"] == "adopted"
    assert host.state(SLUG)["adoption"]["app_address"] == f"unix:{golden.app_socket}"
    # The host Caddy's file sumbg wrote keeps the site's headers and compression (and still
    # removes the Server header, which the edge would add).
    assert adopted["headers"]["x-frame-options"] == "DENY" and adopted["headers"]["server"] == ""
    assert adopted["headers"]["content-encoding"] == "gzip"
    assert site_headers(golden) == adopted["headers"]
    # The old units are stopped and disabled, and still there.
    status = golden.supervisor_status()
    for kind in ("gunicorn", "celery"):
        unit = golden.unit(kind)
        assert "STOPPED" in status.split(unit)[1].split("\n")[0], status
        assert not golden.is_enabled(unit)
        assert (golden.systemd_dir / f"{unit}.service").exists()
    assert (golden.site_dir / "venv").is_dir() and (golden.site_dir / "app/.git").is_dir()
    assert host.containers(f"sum-{SLUG}-blue-") == [f"sum-{SLUG}-blue-web", f"sum-{SLUG}-blue-worker"]
    # The task still queued in the old broker moved to sumbg's.
    tasks = next(step for step in summary["steps"] if step["name"] == "tasks")
    assert tasks["moved"] == {"reports": 1}
    assert (
        docker("exec", f"sum-{SLUG}-data-redis", "redis-cli", "-n", "1", "LRANGE", "reports", "0", "-1").stdout.strip()
        == QUEUED_TASK
    )
    assert golden.exec("redis-cli", "-p", str(golden.redis_port), "-n", "1", "LLEN", "reports").stdout.strip() == "0"


def test_the_secret_key_and_settings_came_along(host: Host, golden: GoldenHost, adopted) -> None:
    assert adopted["result"].returncode == 0
    # A session signed by the old app before the adoption is still valid in sumbg's.
    answer = golden.request("GET", "/admin/", cookies={"sessionid": adopted["session"]})
    assert answer.status_code == 200 and "Site administration" in answer.text, answer.status_code
    secrets = host.secrets(SLUG)
    old = golden.env()
    assert secrets["DJANGO_SECRET_KEY"].strip("'") == old["DJANGO_SECRET_KEY"]
    assert secrets["SENTRY_DSN"].strip("'") == old["SENTRY_DSN"] and secrets["ACME_FEATURE_BANNER"] == "on"
    assert (host.root / SLUG / ".env").stat().st_mode & 0o777 == 0o600
    history = host.history(SLUG)
    assert history[-1]["operation"] == "adopt" and history[-1]["outcome"] == "done"
    assert old["DJANGO_SECRET_KEY"] not in (host.root / SLUG / "history.jsonl").read_text()
    assert f"| {SLUG} | v1.0.0 |" in (host.root / "SITES.md").read_text()
    assert "adopt done" in (host.root / "SITES.md").read_text()
    # It is a sumbg site like any other: status says records, Caddy and answers agree.
    status = on_golden(host, golden, "status", SLUG, "--json")
    assert status.returncode == 0, str(status)


def test_undo_puts_the_old_deployment_back_with_the_writes_made_since(host: Host, golden: GoldenHost, adopted) -> None:
    assert adopted["result"].returncode == 0
    assert golden.post_lead("after adoption") == 302
    upload = host.root / "www" / SLUG / "media" / "uploads" / "after-adoption.txt"
    upload.write_text("uploaded to sumbg")
    result = adopt(host, golden, "--undo", "--json")
    assert result.returncode == 0, str(result)
    assert "after adoption" in golden.psql("SELECT name FROM sum_core_lead").splitlines()
    assert (golden.site_dir / "media/uploads/after-adoption.txt").read_text() == "uploaded to sumbg"
    assert (golden.caddy_dir / f"sites-enabled/sum-{SLUG}.caddy").read_bytes() == adopted["original_site_file"]
    old_site_serves(golden)
    assert golden.is_enabled(golden.unit("gunicorn")) and golden.is_enabled(golden.unit("celery"))
    assert golden.post_lead("after undo") == 302
    assert host.containers(f"sum-{SLUG}-blue-") == []
    assert host.state(SLUG)["adoption"]["status"] == "undone" and host.state(SLUG)["live"] is None
    # The session from before the adoption still works on the old app.
    answer = golden.request("GET", "/admin/", cookies={"sessionid": adopted["session"]})
    assert answer.status_code == 200, answer.status_code


def test_adopt_again_from_a_backup_db_sh_file(host: Host, golden: GoldenHost, adopted, tmp_path) -> None:
    """After an undo, the operator moved the old site to socket activation (a .socket unit holds
    gunicorn's socket, gunicorn binds fd://0); it is adopted again, this time from the .sql.gz
    file the runbook's backup_db.sh writes (for a database sumbg cannot read with the .env's
    credentials). The socket unit is stopped and disabled with its service."""
    started = time.monotonic()
    golden.rebind("socket")
    print(f"\nrebind to socket activation: {time.monotonic() - started:.1f}s")
    old_site_serves(golden)
    assert golden.program_state(golden.socket_unit) == "RUNNING"
    assert golden.post_lead("in the backup file") == 302
    dump = golden.site_dir / "backups" / f"{SLUG}_20261127.sql.gz"
    # As from a host where the app's role had another name: its OWNER TO lines name a role sumbg lacks.
    made = golden.exec(
        "sh",
        "-c",
        f"runuser -u postgres -- pg_dump -p {golden.pg_port} {golden.db_name} | "
        f"sed 's/OWNER TO {golden.db_name};/OWNER TO acme_runbook;/' | gzip > {dump}",
    )
    assert made.returncode == 0, made.stderr
    result = adopt(host, golden, "--dump", str(dump), "--json")
    assert result.returncode == 0, str(result)
    summary = result.json()
    print("adopt --dump: " + ", ".join(f"{s['name']} {s['seconds']:.2f}s" for s in summary["steps"]))
    final = next(step for step in summary["steps"] if step["name"] == "final-import")
    assert "writes after it are not carried" in final["reason"]
    names = set(sumbg_psql("SELECT name FROM sum_core_lead").splitlines())
    assert {"in the backup file", "after adoption", "before 0"} <= names
    assert golden.request("GET", "/health/").json()["version"]["git_sha"] != "unknown"
    assert host.state(SLUG)["adoption"]["status"] == "adopted"
    assert host.state(SLUG)["adoption"]["units"] == golden.unit_files()
    assert golden.unit_files()[0] == f"sum-{SLUG}-gunicorn.socket"
    for unit in golden.unit_files():
        assert golden.program_state(unit) == "STOPPED" and not golden.is_enabled(unit), unit


def test_undo_enables_and_starts_the_socket_unit_with_its_service(host: Host, golden: GoldenHost) -> None:
    assert host.state(SLUG)["adoption"]["status"] == "adopted"
    result = adopt(host, golden, "--undo", "--json")
    assert result.returncode == 0, str(result)
    print("\nadopt --undo: " + ", ".join(f"{s['name']} {s['seconds']:.2f}s" for s in result.json()["steps"]))
    for unit in golden.unit_files():
        assert golden.program_state(unit) == "RUNNING" and golden.is_enabled(unit), unit
    old_site_serves(golden)  # through the host Caddy, to gunicorn on the socket the socket unit holds
    assert golden.post_lead("after the second undo") == 302
    assert "after the second undo" in golden.psql("SELECT name FROM sum_core_lead").splitlines()
    calls = golden.shim_calls()
    assert ["enable", golden.socket_unit] in calls and ["start", golden.socket_unit] in calls
