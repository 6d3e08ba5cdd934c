"""`sumbg takeover`: after adoption, the edge takes the host Caddy's ports with its certificates.

It needs an edge of its own (its ports and TLS mode change), so this module runs a second
sumbg root beside the session's, with an edge named after the session's test edge. Its runbook
host binds gunicorn to 127.0.0.1:<port> (the TCP variant; test_e2e_adopt.py has the unix socket
and the socket-activated ones).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from sumbg.adapters.probe import served_certificate

from .conftest import EDGE, SUMBG, Host, Result, docker, new_host
from .golden_host import GoldenHost, start_golden_host, sumbg_at_failpoint

pytestmark = pytest.mark.e2e

SLUG = "t-take"
DOMAIN = "take.example.test"
TAKE_EDGE = f"{EDGE}-take"


def remove_edge() -> None:
    docker("rm", "-f", f"{TAKE_EDGE}-caddy", check=False)
    docker("volume", "rm", f"{TAKE_EDGE}-caddy-data", f"{TAKE_EDGE}-caddy-config", check=False)
    docker("network", "rm", TAKE_EDGE, check=False)


@pytest.fixture(scope="module")
def own_host(host: Host, example_repo: Path, tmp_path_factory) -> Host:
    """A second root with its own edge; `host` holds the session's lock on the test edges."""
    other = new_host(tmp_path_factory.mktemp("sumbg-root-take"), TAKE_EDGE, example_repo)
    other.teardown_site(SLUG)
    remove_edge()  # a killed session's: this session holds the lock on the test edges
    yield other
    other.teardown_site(SLUG)
    remove_edge()


@pytest.fixture(scope="module")
def golden(own_host: Host, example_repo: Path, tmp_path_factory) -> GoldenHost:
    old = start_golden_host(tmp_path_factory.mktemp("golden-take"), example_repo, slug=SLUG, domain=DOMAIN, bind="tcp")
    yield old
    old.stop()


def run(own_host: Host, golden: GoldenHost, *args: str) -> Result:
    proc = subprocess.run(
        [str(SUMBG), *args],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
        env={**golden.path_env(), "SUMBG_ROOT": str(own_host.root)},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_takeover_refuses_while_the_host_caddy_serves_a_site_not_adopted(own_host: Host, golden: GoldenHost):
    result = run(
        own_host, golden, "takeover", "--caddy-dir", str(golden.caddy_dir), "--caddy-data", str(golden.caddy_data_dir)
    )
    assert result.returncode == 2, str(result)
    assert f"also serves sum-{SLUG}.caddy" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert golden.request("GET", "/health/").status_code == 200


@pytest.fixture(scope="module")
def certificate(own_host: Host, golden: GoldenHost) -> str:
    """The certificate the host Caddy served before the adoption; the site is adopted afterwards."""
    served = served_certificate("127.0.0.1", golden.https_port, DOMAIN)
    assert served
    adopted = run(
        own_host,
        golden,
        "adopt",
        SLUG,
        "--from",
        str(golden.site_dir),
        "--systemd-dir",
        str(golden.systemd_dir),
        "--caddy-dir",
        str(golden.caddy_dir),
        "--json",
    )
    assert adopted.returncode == 0, str(adopted)
    assert own_host.state(SLUG)["adoption"]["app_address"] == f"127.0.0.1:{golden.app_port}"
    assert served_certificate("127.0.0.1", golden.https_port, DOMAIN) == served  # the host Caddy in front
    return served


def test_a_takeover_that_cannot_confirm_puts_everything_back(
    own_host: Host, golden: GoldenHost, certificate: str, tmp_path: Path
) -> None:
    """Frozen once the edge holds the host Caddy's ports, the edge is stopped behind sumbg's back:
    the confirmation fails, and the settings, the edge on its old ports and the host Caddy come back."""
    settings = {path: path.read_bytes() for path in (own_host.root / "sumbg.toml", own_host.root / SLUG / "site.toml")}
    resume = tmp_path / "resume"
    proc = sumbg_at_failpoint(
        golden,
        own_host.root,
        ["takeover", "--caddy-dir", str(golden.caddy_dir), "--caddy-data", str(golden.caddy_data_dir)],
        "takeover:confirm",
        resume,
    )
    try:
        docker("stop", f"{TAKE_EDGE}-caddy")
        resume.touch()
        stderr = proc.stderr.read()
        assert proc.wait(300) == 1, stderr
    finally:
        proc.kill()
    assert "did not pass" in stderr and "[site t-take, step confirm]" in stderr, stderr
    assert {path: path.read_bytes() for path in settings} == settings
    status = golden.supervisor_status()
    assert "RUNNING" in status.split("caddy")[1].split("\n")[0], status
    assert golden.is_enabled("caddy")
    assert served_certificate("127.0.0.1", golden.https_port, DOMAIN) == certificate
    health = golden.request("GET", "/health/").json()
    assert health["status"] == "ok" and health["version"]["git_sha"] != "unknown"  # sumbg, behind the host Caddy
    assert own_host.state(SLUG)["adoption"]["mode"] == "proxy"
    assert own_host.history(SLUG)[-1]["operation"] == "takeover"
    assert own_host.history(SLUG)[-1]["outcome"] == "aborted"


def test_the_edge_takes_the_ports_and_serves_the_same_certificate(own_host: Host, golden: GoldenHost, certificate: str):

    samples: list[tuple[float, int]] = []
    stopping = threading.Event()

    def visit() -> None:
        with golden.client(timeout=5) as client:
            while not stopping.is_set():
                try:
                    status = client.get(golden.url("/")).status_code
                except httpx.HTTPError:
                    status = 0
                samples.append((time.monotonic(), status))
                time.sleep(0.03)

    visitor = threading.Thread(target=visit, daemon=True)
    visitor.start()
    time.sleep(1)
    result = run(
        own_host,
        golden,
        "takeover",
        "--caddy-dir",
        str(golden.caddy_dir),
        "--caddy-data",
        str(golden.caddy_data_dir),
        "--json",
    )
    time.sleep(1)
    stopping.set()
    visitor.join(10)
    assert result.returncode == 0, str(result)
    summary = result.json()
    failed = [s for s in samples if s[1] != 200]
    print(
        f"\ntakeover: window {summary['takeover_window_seconds']:.2f}s; {len(samples)} requests, "
        f"{len(failed)} failed ({sorted({s[1] for s in failed})}); steps "
        + ", ".join(f"{s['name']} {s['seconds']:.2f}s" for s in summary["steps"])
    )
    assert summary["certificates_kept"] == [DOMAIN, f"www.{DOMAIN}"]
    # The edge answers on the host Caddy's port with the certificate the host Caddy had.
    assert served_certificate("127.0.0.1", golden.https_port, DOMAIN) == certificate
    health = golden.request("GET", "/health/").json()
    assert health["status"] == "ok" and health["version"]["git_sha"] != "unknown"
    assert samples[-1][1] == 200 and all(s[1] == 200 for s in samples if s[0] > samples[-1][0] - 0.5)
    status = golden.supervisor_status()
    assert "STOPPED" in status.split("caddy")[1].split("\n")[0], status
    assert not golden.is_enabled("caddy")
    toml = (own_host.root / "sumbg.toml").read_text()
    assert f"http_port = {golden.http_port}" in toml and f"https_port = {golden.https_port}" in toml
    assert 'tls = "internal"' in toml
    assert "behind_proxy = false" in (own_host.root / SLUG / "site.toml").read_text()
    assert own_host.state(SLUG)["adoption"]["mode"] == "takeover"
    assert run(own_host, golden, "status", SLUG, "--json").returncode == 0
    # The takeover is recorded, and undo now refuses (the host Caddy no longer holds the ports).
    assert own_host.history(SLUG)[-1]["operation"] == "takeover"
    undo = run(own_host, golden, "adopt", "--undo", SLUG)
    assert undo.returncode == 2 and "took the host Caddy's ports" in undo.stderr
