"""Day-2 commands on the real engine: logs (following, and a retired colour's kept logs),
manage (a superuser the admin login accepts, exit codes passed through, pipes), shell and psql.

One site for the module: v1.0.0 deployed, upgraded to v1.1.0, then its idle colour (v1.0.0)
retired, so it has a live colour, an idle one that is gone and that colour's kept logs.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pytest

from .conftest import SUMBG, Host, http_get, wait_until

pytestmark = pytest.mark.e2e

SLUG = "w25-day2"
DOMAIN = f"{SLUG}.example.test"


@pytest.fixture(scope="module")
def site(host: Host) -> Iterator[str]:
    """v1.0.0 went live in blue and answered a marked request; v1.1.0 then went live in green,
    and blue (v1.0.0) was retired: its logs were kept."""
    host.init(SLUG, "v1.0.0")
    assert http_get(host.http_port, DOMAIN, "/?w25-marker=served-by-v1.0.0")[0] == 200
    upgraded = host.sumbg("upgrade", SLUG, "v1.1.0", "--watch", "0")
    assert upgraded.returncode == 0, str(upgraded)
    retired = host.sumbg("retire", SLUG, "--force")
    assert retired.returncode == 0, str(retired)
    try:
        yield SLUG
    finally:
        host.teardown_site(SLUG)
        shutil.rmtree(host.site_dir(SLUG), ignore_errors=True)
        host.sumbg("apply")


def run(host: Host, *args: str, env: dict[str, str] | None = None, input: str | None = None):
    return subprocess.run(
        [str(SUMBG), *args],
        capture_output=True,
        text=True,
        env={**host.env(), **(env or {})},
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=300,
    )


# ---------------------------------------------------------------- logs


def test_logs_follow_sees_a_request_made_after_it_started(host: Host, site: str):
    follower = host.popen("logs", site, "--follow", "--tail", "0")
    seen: list[str] = []

    def read() -> None:
        for line in follower.stdout:
            seen.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:

        def a_new_request_shows() -> bool:
            # --tail 0: nothing before the follow started is printed, so a marker seen was logged after it.
            marker = uuid.uuid4().hex
            assert http_get(host.http_port, DOMAIN, f"/?w25-follow={marker}")[0] == 200
            return bool(wait_until(lambda: any(marker in line for line in seen), timeout=2, interval=0.1))

        assert wait_until(a_new_request_shows, timeout=30, interval=0), follower.stderr
        assert follower.poll() is None  # still following
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=15)
    assert code == 0
    assert all("w25-marker=served-by-v1.0.0" not in line for line in seen)  # green (v1.1.0) never served it


def test_logs_of_the_live_colour_with_tail(host: Host, site: str):
    marker = uuid.uuid4().hex
    assert http_get(host.http_port, DOMAIN, f"/?w25-tail={marker}")[0] == 200

    def last_line() -> list[str]:
        result = host.sumbg("logs", site, "--tail", "1")
        assert result.returncode == 0, str(result)
        assert result.stderr.startswith(f"sum-{site}-green-web (v1.1.0):\n")
        return result.stdout.splitlines()

    # gunicorn's access log (stdout) has the request's line last once the request is logged.
    lines = wait_until(lambda: (found := last_line()) and marker in found[-1] and found, timeout=10)
    assert len(lines) == 1 and f"GET /?w25-tail={marker}" in lines[0]


def test_release_reads_the_logs_of_a_retired_colour(host: Host, site: str):
    gone = host.sumbg("logs", site, "--colour", "blue")
    assert gone.returncode == 2, str(gone)
    assert gone.stderr.strip() == (
        f"sumbg: error: the blue colour of {site} has no web container: it no longer exists; its logs were "
        f"kept when it was removed: `sumbg logs {site} --release v1.0.0`"
    )
    kept = host.sumbg("logs", site, "--release", "v1.0.0")
    assert kept.returncode == 0, str(kept)
    assert "GET /?w25-marker=served-by-v1.0.0" in kept.stdout
    # Each line as Docker timestamped it; the file is named in the header on stderr.
    assert all(
        re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z |\[sumbg: )", line) for line in kept.stdout.splitlines()
    )
    [kept_file] = (host.site_dir(site) / "logs").glob("*_blue_web_v1.0.0.log.gz")
    assert f"{kept_file} (blue web, kept when it was removed at" in kept.stderr
    assert oct(kept_file.stat().st_mode & 0o777) == "0o600"
    tail = host.sumbg("logs", site, "--release", "v1.0.0", "--tail", "2")
    assert tail.stdout.splitlines() == kept.stdout.splitlines()[-2:]
    later = host.sumbg("logs", site, "--release", "v1.0.0", "--since", "2030-01-01T00:00:00Z")
    assert (later.returncode, later.stdout) == (0, "")
    follow = host.sumbg("logs", site, "--release", "v1.0.0", "--follow")
    assert follow.returncode == 2 and "no longer runs: --follow reads a running colour" in follow.stderr
    # The retire recorded the file it kept.
    retire = [e for e in host.history(site) if e.get("operation") == "retire" and e.get("event") == "finished"]
    assert retire[-1]["kept_logs"] == [kept_file.name]


def test_release_of_the_live_colour_reads_it_through_the_engine(host: Host, site: str):
    result = host.sumbg("logs", site, "--release", "v1.1.0", "--tail", "1")
    assert result.returncode == 0, str(result)
    assert f"sum-{site}-green-web (v1.1.0):" in result.stderr
    unknown = host.sumbg("logs", site, "--release", "v9.9.9")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        f"sumbg: error: no web logs of release v9.9.9 of {site}: no colour runs it and none were kept (kept: v1.0.0)"
    )


# ---------------------------------------------------------------- manage, shell, psql


def admin_login(host: Host, username: str, password: str) -> tuple[int, str]:
    """Log in to the Django admin through the edge as a browser would: (status, Location)."""
    status, headers, body = http_get(host.http_port, DOMAIN, "/admin/login/?next=/admin/")
    assert status == 200, body[:300]
    cookie = re.search(r"csrftoken=([^;]+)", headers["set-cookie"]).group(1)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username={username}&password={password}&next=/admin/"
    status, headers, _ = http_get(
        host.http_port,
        DOMAIN,
        "/admin/login/?next=/admin/",
        method="POST",
        body=form.encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={cookie}",
            "Referer": f"https://{DOMAIN}/admin/login/",
            "Origin": f"https://{DOMAIN}",
        },
    )
    return status, headers.get("location", "")


def test_manage_createsuperuser_makes_a_user_the_admin_login_accepts(host: Host, site: str):
    password = "w25-" + uuid.uuid4().hex
    created = run(
        host,
        "manage",
        site,
        "--env",
        "DJANGO_SUPERUSER_PASSWORD",
        "--",
        "createsuperuser",
        "--noinput",
        "--username",
        "w25admin",
        "--email",
        "w25admin@example.test",
        env={"DJANGO_SUPERUSER_PASSWORD": password},
    )
    assert created.returncode == 0, created.stderr
    assert "Superuser created successfully." in created.stdout
    assert admin_login(host, "w25admin", password) == (302, "/admin/")
    assert admin_login(host, "w25admin", "not-the-password")[0] == 200  # the form again: refused
    # Plain pipes: stdout carries the command's output and nothing else.
    dumped = run(host, "manage", site, "--", "dumpdata", "auth.user")
    assert dumped.returncode == 0, dumped.stderr
    assert [user["fields"]["username"] for user in json.loads(dumped.stdout)] == ["w25admin"]
    # The history names the command, never its arguments or the password.
    entries = [e for e in host.history(site) if e.get("operation") == "manage"]
    assert [(e["event"], e["command"], e["colour"], e["ref"], e["exit_code"]) for e in entries] == [
        ("ran", "createsuperuser", "green", "v1.1.0", 0),
        ("ran", "dumpdata", "green", "v1.1.0", 0),
    ]
    history = (host.site_dir(site) / "history.jsonl").read_text()
    assert password not in history and "w25admin" not in history
    assert "manage    exit 0" in host.sumbg("history", site).stdout


def test_manage_passes_the_exit_code_of_a_failing_command(host: Host, site: str):
    failing = run(host, "manage", site, "--", "shell", "-c", "import sys; print('about to fail'); sys.exit(7)")
    assert failing.returncode == 7, failing.stderr
    assert failing.stdout.strip() == "about to fail"
    unknown = run(host, "manage", site, "--", "no_such_command")
    assert unknown.returncode == 1
    assert "Unknown command: 'no_such_command'" in unknown.stderr
    entries = [e for e in host.history(site) if e.get("operation") == "manage"]
    assert [(e["command"], e["exit_code"]) for e in entries[-2:]] == [("shell", 7), ("no_such_command", 1)]


def test_manage_on_the_idle_colour_and_a_missing_variable(host: Host, site: str):
    gone = run(host, "manage", site, "--colour", "idle", "--", "check")
    # The idle colour (blue) was retired, but its release is recorded and its image is still here.
    assert gone.returncode == 0, gone.stderr
    entries = [e for e in host.history(site) if e.get("operation") == "manage"]
    assert (entries[-1]["colour"], entries[-1]["ref"]) == ("blue", "v1.0.0")
    missing = run(host, "manage", site, "--env", "W25_NOT_SET", "--", "check")
    assert missing.returncode == 2
    assert "--env W25_NOT_SET: no such variable in sumbg's environment" in missing.stderr
    with_value = run(host, "manage", site, "--env", "W25=secret", "--", "check")
    assert with_value.returncode == 2 and "secret" not in with_value.stderr


def test_shell_runs_in_the_release_with_the_sites_environment(host: Host, site: str):
    result = run(host, "shell", site, "--", "sh", "-c", 'echo "$DJANGO_SETTINGS_MODULE $DJANGO_DB_HOST"; exit 3')
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "acme.settings.production postgres"
    piped = run(host, "shell", site, input="echo from-stdin $GIT_SHA\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("from-stdin ")


def test_psql_logs_in_as_the_sites_own_role(host: Host, site: str):
    result = run(host, "psql", site, "--", "-tAc", "SELECT current_user, current_database()")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "w25_day2|w25_day2"
    piped = run(host, "psql", site, "--", "-tA", input="SELECT 6 * 7;\n")
    assert (piped.returncode, piped.stdout.strip()) == (0, "42")
    failing = run(host, "psql", site, "--", "-c", "SELECT no_such_column")
    assert failing.returncode == 1 and "no_such_column" in failing.stderr
    assert [e["command"] for e in host.history(site) if e.get("operation") == "psql"] == ["psql"] * 3
    # The password never reached a process's arguments: it is in no history line either.
    assert host.secrets(site)["POSTGRES_PASSWORD"] not in (host.site_dir(site) / "history.jsonl").read_text()


def test_a_terminal_reaches_the_container_only_when_both_ends_are_one(host: Host, site: str):
    probe = "import sys; print('tty', sys.stdin.isatty(), sys.stdout.isatty())"
    piped = run(host, "manage", site, "--", "shell", "-c", probe)
    assert (piped.returncode, piped.stdout.strip()) == (0, "tty False False")
    # `script` gives sumbg a pseudo-terminal (util-linux, on every Debian), as an operator's ssh session does.
    command = " ".join([str(SUMBG), "manage", site, "--", "shell", "-c", f'"{probe}"'])
    at_a_terminal = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        env=host.env(),
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert at_a_terminal.returncode == 0, at_a_terminal.stdout + at_a_terminal.stderr
    assert "tty True True" in at_a_terminal.stdout
