"""Traffic is never left on a failing colour (real engine, real Caddy, a background client).

One site goes through the failure paths in order, sharing its containers:
a failed upgrade at smoke (the rollback target is started again), a release
that turns unhealthy (reverted by the watch, rollback goes to the last healthy
release), a rollback whose target was stopped behind sumbg's back (traffic
put back and confirmed), and a watch that ignores one isolated failed probe.
"""

from __future__ import annotations

import json

import pytest

from .conftest import Host, docker, http_get, wait_until
from .test_e2e_upgrade import finished
from .traffic import TEST_PAUSE, Traffic

pytestmark = pytest.mark.e2e

SLUG = "t-sw"
DOMAIN = "t-sw.example.test"


def live_build(host: Host) -> str:
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200, body
    return json.loads(body)["version"]["build"]


def colours(host: Host) -> dict:
    state = host.state(SLUG)
    return {
        colour: (record["ref"], record["status"], record.get("outcome")) for colour, record in state["colours"].items()
    }


def assert_agree(host: Host) -> None:
    status = host.sumbg("status", SLUG, "--json").json()
    assert status["agreement"]["agree"] is True, status["agreement"]
    assert status["caddy"]["live"] == status["live"]
    assert (host.root / "caddy" / "state" / SLUG / "live").read_text() == f"{status['live']}\n"


@pytest.fixture(scope="module")
def site(host: Host):
    host.init(SLUG, "v1.0.0")
    result = host.sumbg("upgrade", SLUG, "v1.1.0", "--watch", "0")
    assert result.returncode == 0, str(result)
    yield SLUG
    host.teardown_site(SLUG)


def test_failed_upgrade_keeps_the_rollback_target_and_the_watch_reverts(host: Host, site: str) -> None:
    with Traffic(host.http_port, DOMAIN, path="/", keepalive_clients=2, fresh_clients=1, pause=TEST_PAUSE) as traffic:
        # 1. Fails at smoke (its homepage answers 500) after the idle blue (v1.0.0) was removed
        #    to make room: blue is started again before the command exits.
        smoke = host.sumbg("upgrade", site, "v1.4.0-homepage-500", "--watch", "0", "--json")
        assert smoke.returncode == 1, str(smoke)
        assert smoke.json()["step"] == "smoke"
        assert "started the previous release v1.0.0 again in blue" in smoke.stderr
        assert "`sumbg rollback` stays instant" in smoke.stderr
        assert colours(host) == {"green": ("v1.1.0", "live", "healthy"), "blue": ("v1.0.0", "idle", "healthy")}
        restored = finished(host, site)["rollback_target"]
        assert (restored["restored"], restored["ref"], restored["colour"]) == (True, "v1.0.0", "blue")
        assert restored["seconds"] > 0
        dry = host.sumbg("rollback", site, "--dry-run", "--json")
        assert dry.returncode == 0, str(dry)
        assert (dry.json()["to"], dry.json()["to_colour"]) == ("v1.0.0", "blue")
        assert "would go from green (v1.1.0) to blue (v1.0.0)" in dry.stderr

        # 2. Turns unhealthy during the watch: reverted after 3 failed probes in a row.
        broken = host.sumbg("upgrade", site, "v1.5.0-turns-unhealthy", "--watch", "90", "--json")
        assert broken.returncode == 1, str(broken)
        message = broken.json()["message"]
        assert message.startswith("after the switch the site failed its watch (3 probes in a row failed")
        assert "rolled back to green (v1.1.0) by itself" in message
        entry = finished(host, site)
        assert entry["reverted"]["flip_seconds"] < 1
        assert entry["watch"]["failed_probes"] == 3
        assert entry["watch"]["visitor_requests"] > entry["watch"]["probes"]
        assert [flip["outcome"] for flip in entry["flips"]] == ["confirmed", "confirmed"]
        assert live_build(host) == "v1.1.0"
        # The failed release is not the rollback target: the release it displaced is back.
        assert colours(host) == {"green": ("v1.1.0", "live", "healthy"), "blue": ("v1.0.0", "idle", "healthy")}
        assert_agree(host)

        # 3. Rollback goes to the last healthy release, instantly.
        rolled = host.sumbg("rollback", site, "--json")
        assert rolled.returncode == 0, str(rolled)
        assert (rolled.json()["to"], rolled.json()["steps"][0]["outcome"]) == ("v1.0.0", "skipped")
        assert live_build(host) == "v1.0.0"
        traffic.settle()
    report = traffic.stop()
    assert report.failures == [], report.summary()
    assert report.sent > 100, report.summary()


def test_flip_whose_target_stopped_puts_traffic_back(host: Host, site: str, tmp_path) -> None:
    assert host.state(site)["live"] == "blue"
    resume = tmp_path / "resume"
    stderr_path = tmp_path / "stderr"
    with Traffic(host.http_port, DOMAIN, path="/", keepalive_clients=2, fresh_clients=1, pause=TEST_PAUSE) as traffic:
        with stderr_path.open("w") as stderr:
            proc = host.popen(
                "rollback",
                site,
                "--json",
                stderr=stderr,
                env={"SUMBG_FAILPOINT": "rollback:flip", "SUMBG_FAILPOINT_RESUME": str(resume)},
            )
            assert wait_until(lambda: "failpoint rollback:flip reached" in stderr_path.read_text(), 60)
            docker("stop", f"sum-{site}-green-web")  # behind sumbg's back, after its ready check
            resume.touch()
            out, _ = proc.communicate(timeout=120)
        traffic.settle()
    report = traffic.stop()
    assert proc.returncode == 1, stderr_path.read_text()
    failure = json.loads(out)
    assert failure["error"] == "FlipFailed"
    assert failure["message"].startswith("green did not answer as v1.1.0 through Caddy after the flip")
    assert failure["message"].endswith("traffic is back on blue (v1.0.0), confirmed through Caddy")
    assert report.failures == [], report.summary()
    assert live_build(host) == "v1.0.0"
    state = host.state(site)
    assert (state["live"], state["colours"]["green"]["outcome"]) == ("blue", "failed")
    assert_agree(host)
    refused = host.sumbg("rollback", site)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "no healthy release to roll back to: green (v1.1.0) failed" in refused.stderr


def test_one_isolated_failed_probe_does_not_revert(host: Host, site: str) -> None:
    env = {"SUMBG_INJECT_PROBE_FAILURES": "1"}
    proc = host.popen("upgrade", site, "v1.6.0", "--watch", "5", "--json", env=env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["watch"]["failed_probes"] == 1 and result["watch"]["probes"] >= 4
    assert "watch: probe 1 failed: injected failure" in err
    assert live_build(host) == "v1.6.0"
    assert colours(host)["green"] == ("v1.6.0", "live", "healthy")
    assert_agree(host)


def test_status_and_upgrade_say_when_caddy_and_records_disagree(host: Host, site: str) -> None:
    live_file = host.root / "caddy" / "state" / site / "live"
    live_file.write_text("blue\n")  # a hand edit: traffic to the idle colour
    try:
        status = host.sumbg("status", site)
        assert "DISAGREE: state.json says green is live but Caddy's live file names blue" in status.stdout
        assert f"run `sumbg recover {site}`" in status.stdout
        refused = host.sumbg("upgrade", site, "v1.1.0", "--allow-same-core")
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            f"sumbg: error: upgrade of {site} refused: site {site}'s records and "
            "what serves it disagree: state.json says green is live"
        )
    finally:
        recovered = host.sumbg("recover", site)
    assert recovered.returncode == 0, str(recovered)
    assert live_build(host) == "v1.6.0"
    assert_agree(host)
