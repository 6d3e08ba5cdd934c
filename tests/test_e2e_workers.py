"""A site's worker is part of its release, on the real engine with a real Celery worker (issue 18).

One site (`w18-tasks`, the example's v1.15.0-tasks and later, `init --worker`) shared by the
module, in order: tasks queued before, during and after an upgrade and a rollback each run
exactly once (counted in the database), with a 30 s task running at each switch that completes
on the worker that took it; the rollback ends while the old worker still runs its task; a
release whose worker crash-loops is reverted with the worker's log tail, its degraded /health/
said; `[health] required_checks` stops it before the switch; `status` flags a live worker that
is down (exit 1) until `recover` starts it; a 20 s request survives a retire of its colour.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse

import psycopg
import pytest

from sumbg.lock import is_held

from .conftest import Host, docker, wait_until

pytestmark = pytest.mark.e2e

SLUG = "w18-tasks"
DOMAIN = f"{SLUG}.example.test"
FIRST, SECOND, CRASHING = "v1.15.0-tasks", "v1.16.0-tasks", "v1.17.0-worker-crashloop"


@pytest.fixture(scope="module")
def site(host: Host):
    host.init(SLUG, FIRST, "--worker")
    toml = host.site_dir(SLUG) / "site.toml"
    # Shorter than the defaults, as an operator may set them: the behaviour is the same, the test quicker.
    text = toml.read_text().replace("ready_after = 10", "ready_after = 4").replace("watch = 30", "watch = 5")
    toml.write_text(text)
    yield SLUG
    wait_until(lambda: not worker_move_running(host), 120)
    host.teardown_site(SLUG)


def post(host: Host, path: str, fields: dict[str, str], *, port: int | None = None, timeout: float = 30):
    body = urllib.parse.urlencode(fields)
    conn = http.client.HTTPConnection("127.0.0.1", port or host.http_port, timeout=timeout)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={
                "Host": DOMAIN,
                "X-Forwarded-Proto": "https",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def queue(host: Host, kind: str, label: str, **fields: str) -> bool:
    status, body = post(host, "/tasks/", {"kind": kind, "label": label, **fields})
    return status == 202 and json.loads(body)["queued"] == [label]


def runs(host: Host) -> list[tuple[str, str, str]]:
    """(label, kind, release) of every task run the workers recorded."""
    with psycopg.connect(host.db_url(SLUG)) as conn:
        return conn.execute("SELECT label, kind, release FROM sum_core_taskrun ORDER BY id").fetchall()


def logs(name: str) -> str:
    out = docker("logs", name, check=False)
    return out.stdout + out.stderr


def names(pattern: str) -> list[str]:
    return docker("ps", "--filter", f"name={pattern}", "--format", "{{.Names}}").stdout.split()


def worker_moves(host: Host) -> list[dict]:
    """The background worker moves after rollbacks that have ended, as the history records them."""
    return [e for e in host.history(SLUG) if e.get("operation") == "worker" and e["event"] == "finished"]


def worker_move_running(host: Host) -> bool:
    """A background worker move holds the site's lock."""
    return is_held(host.site_dir(SLUG) / ".lock")


class Producer:
    """Queues a `record` task every few hundred milliseconds through the edge, in the background,
    keeping the labels the site accepted (202)."""

    def __init__(self, host: Host, prefix: str) -> None:
        self.host, self.prefix = host, prefix
        self.queued: list[str] = []
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            label = f"{self.prefix}-{n}"
            try:
                accepted = queue(self.host, "record", label)
            except OSError:
                accepted = False
            if accepted:
                self.queued.append(label)
            else:
                self.refused += 1
            self._stop.wait(0.3)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_tasks_run_exactly_once_across_an_upgrade_and_a_rollback(host: Host, site: str) -> None:
    assert queue(host, "record", "before-anything")
    assert wait_until(lambda: ("before-anything", "record", FIRST) in runs(host), 60), runs(host)
    with Producer(host, "during") as producer:
        upgrade = host.popen("upgrade", SLUG, SECOND, "--json")
        progress = []
        assert upgrade.stderr is not None and upgrade.stdout is not None
        for line in upgrade.stderr:
            progress.append(line)
            if line.strip().startswith("-> smoke:"):
                # A 30 s task that blue's worker is running at the switch, moments later.
                assert queue(host, "slow", "slow-at-upgrade", seconds="30")
        upgraded = json.loads(upgrade.stdout.read())
        assert upgrade.wait() == 0, "".join(progress)
        workers = next(s for s in upgraded["steps"] if s["name"] == "workers")
        (draining,) = workers["draining"]
        assert (workers["stopped"], workers["started"]) == ("blue", "green")
        assert draining.startswith(f"sum-{SLUG}-blue-worker-draining-")
        assert (
            workers["ready"]["ping"].startswith("celery@")
            and workers["ready"]["container"] == f"sum-{SLUG}-green-worker"
        )
        assert "slow task started: slow-at-upgrade" in logs(draining)

        assert queue(host, "slow", "slow-at-rollback", seconds="30")
        assert wait_until(lambda: "slow task started: slow-at-rollback" in logs(f"sum-{SLUG}-green-worker"), 60)
        rolled = host.sumbg("rollback", SLUG, "--json")
        assert rolled.returncode == 0, str(rolled)
        # It ended once traffic was confirmed, while green's worker still runs its 30 s task.
        assert "slow-at-rollback" not in [label for label, _, _ in runs(host)]
        assert rolled.json()["worker"]["in_background"] is True
        assert wait_until(lambda: worker_moves(host), 120)
        (moved,) = worker_moves(host)
        assert moved["outcome"] == "done", moved
        settled = len(producer.queued)
        assert wait_until(lambda: len(producer.queued) >= settled + 3, 30)  # and after, on blue's new worker
    assert producer.queued and producer.refused == 0
    expected = {"before-anything", "slow-at-upgrade", "slow-at-rollback", *producer.queued}
    assert wait_until(lambda: {label for label, _, _ in runs(host)} >= expected, 120), len(runs(host))
    counted: dict[str, int] = {}
    for label, _, _ in runs(host):
        counted[label] = counted.get(label, 0) + 1
    assert {label: n for label, n in counted.items() if n != 1} == {}
    assert set(counted) == expected
    releases = {label: release for label, _, release in runs(host)}
    # Each long task finished on the worker that took it, which finished it before it went.
    assert (releases["slow-at-upgrade"], releases["slow-at-rollback"]) == (FIRST, SECOND)
    assert wait_until(lambda: len([e for e in host.history(SLUG) if e.get("event") == "worker-drained"]) == 2, 60)
    drained = [e for e in host.history(SLUG) if e.get("event") == "worker-drained"]
    assert [(e["colour"], e["outcome"], e["exit_code"]) for e in drained] == [
        ("blue", "exited", 0),
        ("green", "exited", 0),
    ]
    # The upgrade's worker step did not wait for blue's old worker to finish its task.
    assert drained[0]["container"] == draining and workers["seconds"] < drained[0]["seconds"]
    assert not [n for n in names(f"sum-{SLUG}-") if "draining" in n]


def test_a_release_whose_worker_crash_loops_is_reverted_with_its_log_tail(host: Host, site: str) -> None:
    result = host.sumbg("upgrade", SLUG, CRASHING)
    assert result.returncode == 1, str(result)
    assert (
        "sumbg: error: after the switch its worker was not ready (the worker of green is not ready: " in result.stderr
    )
    assert "rolled back to blue (v1.15.0-tasks) by itself" in result.stderr
    assert "--- last worker log lines ---" in result.stderr and "[tasks]" in result.stderr  # its banner
    # Its /health/ said why all along ("degraded" passes): said at each check, kept in the history.
    reason = "check celery fails: Redis transport requires redis-py versions 6.1.0 or later. You have 5.2.1"
    assert f"start: /health/ is degraded: {reason}" in result.stderr
    finished = [e for e in host.history(SLUG) if e.get("event") == "finished"][-1]
    assert (finished["operation"], finished["outcome"], finished["failed_step"]) == ("upgrade", "aborted", "workers")
    assert "the worker of green is not ready: it crashed" in finished["error"]["message"]
    assert "[tasks]" in finished["error"]["output_tail"]
    start = next(s for s in finished["steps"] if s["name"] == "start")
    assert start["degraded"]["celery"].startswith("Redis transport requires redis-py versions 6.1.0")
    # Web and worker went back together; the release it displaced runs again, so a rollback stays instant.
    state = host.state(SLUG)
    assert state["live"] == "blue" and state["colours"]["blue"]["worker"]["status"] == "ready"
    assert (state["colours"]["green"]["ref"], state["colours"]["green"]["status"]) == (SECOND, "idle")
    assert finished["rollback_target"]["restored"] is True
    status = host.sumbg("status", SLUG)
    assert status.returncode == 0, str(status)
    assert "worker: blue running" in status.stdout


def test_a_request_in_flight_survives_a_retire_of_its_colour(host: Host, site: str) -> None:
    # green is idle (the preview listener serves it): hold a 20 s request open on it, then retire it.
    answer: dict[str, object] = {}

    def slow() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", host.preview_port, timeout=60)
        try:
            conn.request("GET", "/slow/?seconds=20", headers={"Host": DOMAIN, "X-Forwarded-Proto": "https"})
            response = conn.getresponse()
            answer.update(status=response.status, body=response.read())
        finally:
            conn.close()

    assert host.state(SLUG)["live"] == "blue" and f"sum-{SLUG}-green-web" in names(f"sum-{SLUG}-green-web")
    request = threading.Thread(target=slow)
    request.start()
    assert wait_until(lambda: "slow request started: 20s" in logs(f"sum-{SLUG}-green-web"), 30)
    retired = host.sumbg("retire", SLUG, "--force")
    request.join(timeout=60)
    assert retired.returncode == 0, str(retired)
    assert answer == {"status": 200, "body": b"slept 20s\n"}
    assert not names(f"sum-{SLUG}-green-web")


def test_a_required_check_stops_the_release_before_the_switch(host: Host, site: str) -> None:
    toml = host.site_dir(SLUG) / "site.toml"
    before = toml.read_text()
    toml.write_text(before.replace("required_checks = []", 'required_checks = ["celery"]'))
    try:
        result = host.sumbg("upgrade", SLUG, CRASHING)
    finally:
        toml.write_text(before)
    assert result.returncode == 1, str(result)
    assert "required check celery fails: Redis transport requires redis-py versions 6.1.0 or later" in result.stderr
    finished = [e for e in host.history(SLUG) if e.get("event") == "finished"][-1]
    assert finished["failed_step"] == "start" and host.state(SLUG)["live"] == "blue"
    assert "switch" not in [s["name"] for s in finished["steps"]]


def test_status_flags_a_live_worker_that_is_down_until_recover(host: Host, site: str) -> None:
    docker("stop", "--time", "30", f"sum-{SLUG}-blue-worker")
    text = host.sumbg("status", SLUG)
    assert text.returncode == 1, str(text)
    assert "PROBLEM: the live colour blue's worker is stopped (exit code 0)" in text.stdout
    document = host.sumbg("status", SLUG, "--json")
    assert document.returncode == 1
    assert document.json()["worker_problem"] == "the live colour blue's worker is stopped (exit code 0)"
    assert document.json()["workers"]["blue"]["state"] == "stopped"
    recovered = host.sumbg("recover", SLUG, "--json")
    assert recovered.returncode == 0, str(recovered)
    assert "blue's worker ready" in next(s for s in recovered.json()["steps"] if s["name"] == "tidy")["actions"]
    again = host.sumbg("status", SLUG, "--json")
    assert again.returncode == 0 and again.json()["workers"]["blue"]["state"] == "running"
