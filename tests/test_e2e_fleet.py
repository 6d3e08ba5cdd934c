"""`sumbg fleet`: two hosts (two sumbg roots, each with its own edge) reached through a real
sshd on 127.0.0.1, four sites, and one host nobody answers for.

One module-scoped fleet serves every test, in order: status, dry runs, an upgrade of every
site with a canary, then a broken release that stops the run, and `--resume` after its fix.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import EDGE, SUMBG, Host, Result, docker, free_port, http_get, new_host
from .fleet_hosts import SshServer

pytestmark = pytest.mark.e2e

SITES = {"vps-a": ("fl-a1", "fl-a2"), "vps-b": ("fl-b1", "fl-b2")}
EDGES = {"vps-a": f"{EDGE}-fa", "vps-b": f"{EDGE}-fb"}
BROKEN = "fl-b1"  # the site with a repo of its own, where a broken release is tagged
GIT = [
    "git",
    "-c",
    "user.name=Fleet Test",
    "-c",
    "user.email=fleet@example.test",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
]


def remove_edge(name: str) -> None:
    docker("rm", "-f", f"{name}-caddy", check=False)
    docker("volume", "rm", f"{name}-caddy-data", f"{name}-caddy-config", check=False)
    docker("network", "rm", name, check=False)


@dataclass
class Fleet:
    folder: Path
    hosts: dict[str, Host]
    fleet_file: Path  # vps-a and vps-b
    with_down: Path  # also vps-down, which nobody answers for
    broken_repo: Path

    def run(self, *args: str, fleet_file: Path | None = None) -> Result:
        proc = subprocess.run(
            [str(SUMBG), "fleet", *args, "--fleet", str(fleet_file or self.fleet_file)],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
            env=_env_without_sumbg(),
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def host_of(self, slug: str) -> Host:
        return next(self.hosts[name] for name, slugs in SITES.items() if slug in slugs)

    def live(self, slug: str) -> tuple[str, str]:
        """(state.json's live ref, the build /health/ reports through that host's edge)."""
        host = self.host_of(slug)
        status, _, body = http_get(host.http_port, f"{slug}.example.test", "/health/")
        assert status == 200, body
        return host.state(slug)["colours"][host.state(slug)["live"]]["ref"], json.loads(body)["version"]["build"]

    def upgrades(self, slug: str) -> list[dict]:
        return [e for e in self.host_of(slug).history(slug) if e.get("operation") == "upgrade"]


def _env_without_sumbg() -> dict:
    import os

    # Nothing of this session's sumbg settings may reach the fleet: it knows the hosts only by SSH.
    return {k: v for k, v in os.environ.items() if not k.startswith("SUMBG_")}


def _init_sites(host: Host, slugs: tuple[str, ...], repos: dict[str, Path], errors: list[str]) -> None:
    for slug in slugs:
        result = host.sumbg(
            "init",
            slug,
            "--repo",
            str(repos.get(slug, host.repo)),
            "--domain",
            f"{slug}.example.test",
            "--ref",
            "v1.0.0",
        )
        if result.returncode != 0:
            errors.append(f"init {slug}: {result}")


@pytest.fixture(scope="module")
def fleet(host: Host, example_repo: Path, tmp_path_factory) -> Fleet:
    """`host` holds the session's lock on the test edges; these are two more, named after it."""
    folder = tmp_path_factory.mktemp("fleet")
    hosts = {}
    for name, edge in EDGES.items():
        (folder / name).mkdir()
        hosts[name] = new_host(folder / name, edge, example_repo)
        for slug in SITES[name]:
            hosts[name].teardown_site(slug)  # a killed session's
        remove_edge(edge)
    broken_repo = folder / f"{BROKEN}.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(example_repo), str(broken_repo)], check=True)
    sshd = SshServer(folder / "ssh", free_port()).start()
    ssh_config = sshd.client_config(list(SITES), closed_port=free_port())
    errors: list[str] = []
    threads = [
        threading.Thread(target=_init_sites, args=(hosts[name], SITES[name], {BROKEN: broken_repo}, errors))
        for name in SITES
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hosts_toml = "".join(
        f'[hosts.{name}]\nssh = "{name}"\nroot = "{hosts[name].root}"\nsumbg = "{SUMBG}"\n\n' for name in SITES
    )
    common = f'[ssh]\nconfig = "{ssh_config}"\nconnect_timeout = 5\n\n[groups]\nkitchens = ["fl-a2", "vps-b/fl-b2"]\n\n'
    fleet_file = folder / "fleet.toml"
    fleet_file.write_text(common + hosts_toml)
    with_down = folder / "fleet-with-down.toml"
    with_down.write_text(
        common.replace("[groups]", '[fleet]\nmatrix = "SITES-with-down.md"\n\n[groups]')
        + hosts_toml
        + f'[hosts.vps-down]\nssh = "vps-down"\nroot = "/srv/sum"\nsumbg = "{SUMBG}"\n'
    )
    try:
        assert not errors, "\n".join(errors)
        yield Fleet(folder, hosts, fleet_file, with_down, broken_repo)
    finally:
        sshd.stop()
        for name, the_host in hosts.items():
            for slug in SITES[name]:
                the_host.teardown_site(slug)
            remove_edge(EDGES[name])


def test_fleet_status_shows_every_site_and_an_unreachable_host_hides_nothing(fleet: Fleet):
    result = fleet.run("status", "--json", fleet_file=fleet.with_down)
    assert result.returncode == 1, str(result)  # a host did not answer
    hosts = {h["name"]: h for h in result.json()["hosts"]}
    assert set(hosts) == {"vps-a", "vps-b", "vps-down"}
    assert not hosts["vps-down"]["reachable"] and hosts["vps-down"]["sites"] == []
    assert "Connection refused" in hosts["vps-down"]["error"]
    for name, slugs in SITES.items():
        assert hosts[name]["reachable"] and hosts[name]["error"] is None
        rows = hosts[name]["sites"]
        assert [row["site"] for row in rows] == list(slugs)
        for row in rows:
            assert row == {
                "host": name,
                "site": row["site"],
                "domains": [f"{row['site']}.example.test"],
                "live": "blue",
                "ref": "v1.0.0",
                "sum_core": "0.6.3",
                "health": "ok",
                "last": None,
                "rollback": "none",
                "rollback_to": None,
                "problem": "",
                "worker": "none",
                "backup": "-",  # no backup yet, and no [backup] repository
                "backup_problems": [],
            }
    matrix = (fleet.folder / "SITES-with-down.md").read_text()
    for name, slugs in SITES.items():
        for slug in slugs:
            assert f"| {name} | {slug}.example.test | production | {slug} | v1.0.0 |" in matrix
    assert "| vps-down | - | - | - | - | - | - | UNREACHABLE: host vps-down (vps-down) is unreachable" in matrix

    text = fleet.run("status", fleet_file=fleet.with_down)
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    assert lines[0].split() == [
        "HOST",
        "SITE",
        "DOMAINS",
        "LIVE",
        "SUM-CORE",
        "HEALTH",
        "WORKER",
        "ROLLBACK",
        "LAST",
        "OPERATION",
        "BACKUP",
    ]
    assert [line.split()[:6] for line in lines[1:5]] == [
        [name, slug, f"{slug}.example.test", "v1.0.0", "0.6.3", "ok"] for name in SITES for slug in SITES[name]
    ]
    assert lines[5].split()[:2] == ["vps-down", "-"] and "UNREACHABLE" in lines[5]


def test_fleet_upgrade_dry_run_prints_the_plan_and_changes_nothing(fleet: Fleet):
    before = {
        slug: (fleet.host_of(slug).state(slug), len(fleet.host_of(slug).history(slug)))
        for slugs in SITES.values()
        for slug in slugs
    }
    result = fleet.run(
        "upgrade", "--core", "0.7.0", "--canary", "fl-a1", "--sites", "fl-a1,kitchens", "--dry-run", "--json"
    )
    assert result.returncode == 0, str(result)
    moves = result.json()["moves"]
    assert [(m["site"], m["from_ref"], m["to_ref"], m["canary"], m["skip"]) for m in moves] == [
        ("vps-a/fl-a1", "v1.0.0", "v1.1.0", True, None),
        ("vps-a/fl-a2", "v1.0.0", "v1.1.0", False, None),
        ("vps-b/fl-b2", "v1.0.0", "v1.1.0", False, None),
    ]
    none = fleet.run("upgrade", "--core", "9.9.9", "--dry-run")
    assert none.returncode == 0, str(none)
    rows = [line for line in none.stdout.splitlines() if line.startswith("vps-")]
    assert [tuple(row.split()[:3]) for row in rows] == [(n, s, "skip") for n in SITES for s in SITES[n]]
    assert all(row.endswith("no tag of its repo pins sum-core 9.9.9") for row in rows)
    after = {slug: (fleet.host_of(slug).state(slug), len(fleet.host_of(slug).history(slug))) for slug in before}
    assert after == before


def test_fleet_upgrade_moves_every_site_with_the_canary_first(fleet: Fleet):
    result = fleet.run(
        "upgrade", "--core", "0.7.0", "--canary", "fl-a1", "--max-parallel", "2", "--watch", "3", "--json"
    )
    assert result.returncode == 0, str(result)
    document = result.json()
    assert document["outcome"] == "done"
    assert {m["site"]: (m["state"], m["from_ref"], m["to_ref"]) for m in document["moves"]} == {
        f"{name}/{slug}": ("upgraded", "v1.0.0", "v1.1.0") for name in SITES for slug in SITES[name]
    }
    for slugs in SITES.values():
        for slug in slugs:
            assert fleet.live(slug) == ("v1.1.0", "v1.1.0")
    # The canary finished (upgrade and watch) before any other site started; one at a time per host.
    spans = {
        slug: (
            next(e["at"] for e in fleet.upgrades(slug) if e.get("event") == "started"),
            next(e["at"] for e in fleet.upgrades(slug) if e.get("event") == "finished"),
        )
        for slugs in SITES.values()
        for slug in slugs
    }
    assert all(spans["fl-a1"][1] <= spans[slug][0] for slug in spans if slug != "fl-a1")
    for first, second in SITES.values():
        assert spans[first][1] <= spans[second][0] or spans[second][1] <= spans[first][0]
    status = fleet.run("status", "--json")
    assert status.returncode == 0, str(status)
    rows = [row for h in status.json()["hosts"] for row in h["sites"]]
    assert {(r["ref"], r["sum_core"], r["health"], r["rollback"], r["rollback_to"]) for r in rows} == {
        ("v1.1.0", "0.7.0", "ok", "instant", "v1.0.0")
    }
    assert all(r["last"].startswith("upgrade done (") for r in rows)


def tag_release(repo: Path, work: Path, base: str, tag: str, urls: str) -> None:
    """Tag a release of the client repo: `base` with its acme/urls.py replaced by `urls`."""
    if not work.exists():
        subprocess.run(["git", "clone", "-q", str(repo), str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "checkout", "-q", "--detach", base], check=True)
    (work / "acme" / "urls.py").write_text(urls)
    subprocess.run([*GIT, "-C", str(work), "commit", "-q", "-am", tag], check=True)
    subprocess.run([*GIT, "-C", str(work), "tag", "-a", tag, "-m", tag], check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", "origin", tag], check=True)


BROKEN_URLS = """from django.contrib import admin
from django.urls import include, path


def homepage(request):
    raise RuntimeError("this release broke the homepage")


urlpatterns = [
    path("", homepage),
    path("admin/", admin.site.urls),
    path("", include("sum_core.urls")),
]
"""


def test_a_broken_release_stops_the_run_and_resume_goes_on_after_its_fix(fleet: Fleet):
    work = fleet.folder / "b1-work"
    tag_release(fleet.broken_repo, work, "v1.6.0", "v1.6.1", BROKEN_URLS)
    others = [slug for slugs in SITES.values() for slug in slugs if slug != BROKEN]
    before = {slug: (fleet.host_of(slug).state(slug), len(fleet.host_of(slug).history(slug))) for slug in others}

    stopped = fleet.run(
        "upgrade", "--core", "0.8.0", "--canary", f"vps-b/{BROKEN}", "--max-parallel", "2", "--watch", "3", "--json"
    )
    assert stopped.returncode == 1, str(stopped)
    document = stopped.json()
    assert document["outcome"] == "stopped"
    moves = {m["site"]: m for m in document["moves"]}
    assert (moves[f"vps-b/{BROKEN}"]["state"], moves[f"vps-b/{BROKEN}"]["to_ref"]) == ("failed", "v1.6.1")
    assert moves[f"vps-b/{BROKEN}"]["reason"].startswith("step smoke: ") and "500" in moves[f"vps-b/{BROKEN}"]["reason"]
    assert {site: m["state"] for site, m in moves.items() if site != f"vps-b/{BROKEN}"} == {
        f"{name}/{slug}": "not-tried" for name in SITES for slug in SITES[name] if slug != BROKEN
    }
    assert fleet.live(BROKEN) == ("v1.1.0", "v1.1.0")
    after = {slug: (fleet.host_of(slug).state(slug), len(fleet.host_of(slug).history(slug))) for slug in others}
    assert after == before
    assert "not-tried" in stopped.stderr and "LIVE NOW" in stopped.stderr  # the matrix, beside --json

    good_urls = subprocess.run(
        ["git", "-C", str(work), "show", "v1.6.0:acme/urls.py"], check=True, capture_output=True, text=True
    ).stdout
    tag_release(fleet.broken_repo, work, "v1.6.1", "v1.6.2", good_urls)
    resumed = fleet.run("upgrade", "--resume", "--json")
    assert resumed.returncode == 0, str(resumed)
    assert resumed.json()["id"] == document["id"] and resumed.json()["outcome"] == "done"
    assert {m["site"]: (m["state"], m["to_ref"]) for m in resumed.json()["moves"]} == {
        f"{name}/{slug}": ("upgraded", "v1.6.2" if slug == BROKEN else "v1.6.0")
        for name in SITES
        for slug in SITES[name]
    }
    for slugs in SITES.values():
        for slug in slugs:
            expected = "v1.6.2" if slug == BROKEN else "v1.6.0"
            assert fleet.live(slug) == (expected, expected)
    nothing_left = fleet.run("upgrade", "--resume")
    assert nothing_left.returncode == 2 and "no stopped fleet run to resume" in nothing_left.stderr


def test_idle_colours_are_retired_after_their_soak_period_and_a_rollback_then_restarts_one(fleet: Fleet):
    """Density: `sumbg retire --due` (run from cron on each host) stops the idle colours that have
    soaked; the fleet sees that rollback is no longer instant, and a rollback says so."""
    vps_a = fleet.hosts["vps-a"]
    site_toml = vps_a.site_dir("fl-a2") / "site.toml"
    site_toml.write_text(site_toml.read_text().replace('# retire_idle_after = "2d"', "retire_idle_after = 1"))
    retired = vps_a.sumbg("retire", "--due", "--json")
    assert retired.returncode == 0, str(retired)
    outcomes = {item["site"]: (item["outcome"], item["reason"]) for item in retired.json()["sites"]}
    assert outcomes["fl-a1"] == ("kept", "kept: no soak period is set (upgrade.retire_idle_after)")
    assert outcomes["fl-a2"][0] == "retired" and outcomes["fl-a2"][1].startswith("soaked ")
    idle = "blue" if vps_a.state("fl-a2")["live"] == "green" else "green"
    assert vps_a.containers(f"sum-fl-a2-{idle}-") == []
    assert vps_a.state("fl-a2")["colours"][idle]["status"] == "retired"

    rows = {row["site"]: row for h in fleet.run("status", "--json").json()["hosts"] for row in h["sites"]}
    assert (rows["fl-a2"]["rollback"], rows["fl-a2"]["rollback_to"]) == ("restart", "v1.1.0")
    assert rows["fl-a1"]["rollback"] == "instant"

    rolled = vps_a.sumbg("rollback", "fl-a2", "--json")
    assert rolled.returncode == 0, str(rolled)
    assert rolled.json()["instant"] is False
    assert fleet.live("fl-a2") == ("v1.1.0", "v1.1.0")
