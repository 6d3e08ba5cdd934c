"""After the Docker engine restarts (as after a reboot), every site serves its live colour again
with no sumbg command, its idle colour comes back too, and `status` agrees with the records.

The engine is restarted the way it was started: by systemd where systemd runs it, else the way
`make setup` starts it (scripts/setup.sh). Every other test's containers restart with it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import REPO, Host, docker, http_get, wait_until

# It restarts the engine under every container: `make test` runs it alone, after the others.
pytestmark = [pytest.mark.e2e, pytest.mark.engine_restart]

SLUG = "t-reboot"
DOMAIN = f"{SLUG}.example.test"


def systemd_runs_docker() -> bool:
    return (
        Path("/run/systemd/system").is_dir()
        and subprocess.run(["systemctl", "is-active", "--quiet", "docker"], capture_output=True).returncode == 0
    )


def restart_engine() -> None:
    if systemd_runs_docker():
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=300)
    else:
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
        assert wait_until(
            lambda: subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0, 120
        ), "dockerd did not stop"
        setup = subprocess.run(
            ["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=600
        )
        assert setup.returncode == 0, setup.stderr[-2000:]
    assert docker("info", check=False).returncode == 0


def health(host: Host) -> tuple[int, str | None]:
    try:
        status, _, body = http_get(host.http_port, DOMAIN, "/health/", timeout=3)
    except OSError:
        return 0, None
    return status, (json.loads(body).get("version") or {}).get("build") if status == 200 else None


def test_after_an_engine_restart_every_colour_serves_again_with_no_command(host: Host):
    host.init(SLUG, "v1.0.0")
    upgraded = host.sumbg("upgrade", SLUG, "v1.1.0", "--watch", "0", "--json")
    assert upgraded.returncode == 0, str(upgraded)
    before = host.state(SLUG)
    assert (before["live"], before["previous"]) == ("green", "blue")
    assert health(host) == (200, "v1.1.0")

    restart_engine()

    started = time.monotonic()
    assert wait_until(lambda: health(host) == (200, "v1.1.0"), 120), f"the site answers {health(host)}"
    took = time.monotonic() - started
    running = docker("ps", "--filter", f"name=sum-{SLUG}-", "--format", "{{.Names}}").stdout.split()
    assert sorted(running) == [
        f"sum-{SLUG}-blue-web",
        f"sum-{SLUG}-data-postgres",
        f"sum-{SLUG}-data-redis",
        f"sum-{SLUG}-green-web",
    ], running
    assert host.state(SLUG) == before  # nothing was run: the records are as they were
    status = host.sumbg("status", SLUG, "--json")
    assert status.returncode == 0, str(status)
    document = status.json()
    assert document["agreement"] == {"agree": True, "problems": [], "notes": []}, document["agreement"]
    assert (document["live"], document["ref"], document["health"]["status"]) == ("green", "v1.1.0", "ok")
    assert document["rollback"] == {"possible": True, "colour": "blue", "ref": "v1.0.0", "instant": True}
    # The idle colour answers too: a rollback right after the restart is the usual instant flip.
    rolled = host.sumbg("rollback", SLUG, "--json")
    assert rolled.returncode == 0, str(rolled)
    assert rolled.json()["instant"] is True and health(host) == (200, "v1.0.0")
    print(f"the site served again {took:.1f}s after the engine answered")
    host.teardown_site(SLUG)
