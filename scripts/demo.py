#!/usr/bin/env python3
"""`make demo`: a real blue/green upgrade and rollback of the example SUM site.

Builds the example client repo, inits it at v1.0.0 behind its own edge Caddy
(loopback ports only), then upgrades to v1.1.0 and rolls back while a
background visitor keeps requesting the site, and prints each step's time and
how many visitor requests failed. `--clean` removes everything it created.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.traffic import Traffic  # noqa: E402

DEMO = REPO / ".demo"
ROOT = DEMO / "root"
SLUG = "acme-kitchens"
DOMAIN = "acme-kitchens.example.test"
EDGE = "sum-edge-demo"
HTTP_PORT, HTTPS_PORT, PREVIEW_PORT = 18080, 18443, 18081
SUMBG = Path(sys.executable).with_name("sumbg")


def sumbg(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "SUMBG_ROOT": str(ROOT)}
    return subprocess.run([str(SUMBG), *args], env=env, text=True, stdout=subprocess.PIPE if capture else None)


def docker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def clean() -> None:
    for project in (f"sum-{SLUG}-blue", f"sum-{SLUG}-green", f"sum-{SLUG}-data", EDGE):
        ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids)
    docker(
        "volume",
        "rm",
        f"sum-{SLUG}-data-pgdata",
        f"sum-{SLUG}-data-redisdata",
        f"{EDGE}-caddy-data",
        f"{EDGE}-caddy-config",
    )
    docker("network", "rm", f"sum-{SLUG}", f"sum-{SLUG}.edge", EDGE)
    shutil.rmtree(DEMO, ignore_errors=True)


def write_host_config() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    local = REPO / "build" / "local-host.toml"
    (ROOT / "sumbg.toml").write_text(
        (local.read_text() if local.exists() else "")
        + f"\n[edge]\nhttp_port = {HTTP_PORT}\nhttps_port = {HTTPS_PORT}\npreview_port = {PREVIEW_PORT}\n"
        f'bind = "127.0.0.1"\ntls = "off"\nname = "{EDGE}"\n'
    )


def versions_seen(report) -> str:
    """What each visitor saw, in its own order (several visitors' answers interleave in time)."""
    sequences = Counter(" -> ".join(builds) for builds in report.per_client_builds().values())
    return "; ".join(f"{count} visitor(s) saw {sequence}" for sequence, count in sorted(sequences.items()))


def show_steps(record: dict) -> None:
    for step in record.get("steps", []):
        note = step.get("reason") or ""
        print(f"    {step['name']:<10} {step['seconds']:>7.2f}s  {step['outcome']}{'  ' + note if note else ''}")


def must(result: subprocess.CompletedProcess, what: str) -> dict:
    if result.returncode != 0:
        sys.exit(f"demo: {what} failed (exit {result.returncode}); see the messages above")
    return json.loads(result.stdout) if result.stdout else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clean", action="store_true", help="remove everything the demo created")
    args = parser.parse_args()
    if args.clean:
        clean()
        print("demo: removed the demo site, its edge and", DEMO)
        return
    clean()
    write_host_config()
    repo = DEMO / "acme-repo"
    subprocess.run(
        [sys.executable, str(REPO / "examples/sum-site/build_repo.py"), str(repo)],
        check=True,
        stdout=subprocess.DEVNULL,
    )

    print(f"\n== 1. sumbg init {SLUG} at v1.0.0 (first deploy, colour blue)")
    init = must(
        sumbg("init", SLUG, "--repo", str(repo), "--domain", DOMAIN, "--ref", "v1.0.0", "--json", capture=True), "init"
    )
    show_steps(init)

    print(f"\n== 2. sumbg upgrade {SLUG} v1.1.0, with a visitor requesting the site throughout")
    with Traffic(HTTP_PORT, DOMAIN, keepalive_clients=2, fresh_clients=2) as traffic:
        time.sleep(1)
        upgrade = must(sumbg("upgrade", SLUG, "v1.1.0", "--watch", "5", "--json", capture=True), "upgrade")
        time.sleep(1)
    report = traffic.stop()
    show_steps(upgrade)
    print(f"    total {upgrade['seconds']:.1f}s; traffic switched in {upgrade['flip_seconds'] * 1000:.0f} ms")
    print(f"    visitors: {report.sent} requests, {len(report.failures)} failed; {versions_seen(report)}")

    print(f"\n== 3. sumbg rollback {SLUG}, visitor still requesting")
    with Traffic(HTTP_PORT, DOMAIN, keepalive_clients=2, fresh_clients=2) as traffic:
        time.sleep(1)
        started = time.monotonic()
        rollback = must(sumbg("rollback", SLUG, "--json", capture=True), "rollback")
        wall = time.monotonic() - started
        time.sleep(1)
    report = traffic.stop()
    print(f"    flip {rollback['flip_seconds'] * 1000:.0f} ms (command wall time {wall:.2f}s)")
    print(f"    visitors: {report.sent} requests, {len(report.failures)} failed; {versions_seen(report)}")

    print("\n== 4. sumbg status")
    sumbg("status")
    print(
        f"\nThe site is still running. Try:\n"
        f"  curl -H 'Host: {DOMAIN}' -H 'X-Forwarded-Proto: https' http://127.0.0.1:{HTTP_PORT}/\n"
        f"  SUMBG_ROOT={ROOT} {SUMBG} history {SLUG}\n"
        f"  SUMBG_ROOT={ROOT} {SUMBG} upgrade {SLUG} v1.6.0\n"
        f"Remove it with: make demo-clean"
    )


if __name__ == "__main__":
    main()
