"""Builds on the real engine (issue 22): what an image holds, recorded and explained; [build] lock;
a release built before rebuilt as it was; bad input (an unsatisfiable lock file, a corrupt cache)
stopping the build with one line; the rehearsal and migrate skipped when nothing is pending.

One site, w22-a, moved through releases of a copy of the example repo with two more tags:
w22-locked (v1.7.0-git-pin plus a constraints.txt pinning tzdata==2024.1, an old one) and
w22-bad-lock (v1.8.0-git-pin plus a constraints.txt asking for tzdata==1999.1, which no index has).
sum-core comes from git through site.toml [build] git_url_rewrites to a file:// copy.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, Host, docker, http_get

pytestmark = pytest.mark.e2e

SLUG = "w22-a"
DOMAIN = f"{SLUG}.example.test"
PIN_HOST = "https://git.sum-core.invalid/acme/"


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.test"]
    done = subprocess.run(["git", *ident, "-C", str(repo), *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(example_repo: Path, tmp_path_factory) -> Path:
    """The example repo plus w22-locked and w22-bad-lock."""
    work = tmp_path_factory.mktemp("w22") / "repo"
    _git(example_repo.parent, "clone", "-q", str(example_repo), str(work))
    for tag, base, pin in (("w22-locked", "v1.7.0-git-pin", "2024.1"), ("w22-bad-lock", "v1.8.0-git-pin", "1999.1")):
        _git(work, "checkout", "-q", base)
        (work / "constraints.txt").write_text(f"# tested with\ntzdata=={pin}\n")
        _git(work, "add", "constraints.txt")
        _git(work, "commit", "-q", "-m", f"{tag}: constraints.txt")
        _git(work, "tag", tag)
    return work


@pytest.fixture(scope="module")
def core_url(tmp_path_factory) -> str:
    spec = importlib.util.spec_from_file_location("w22_build_repo", REPO / "examples/sum-site/build_repo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("w22-core")
    module.build_core_repo(root / "acme" / "sum-core.git", quiet=True)
    return f"file://{root}/acme/"


@pytest.fixture(scope="module")
def site(host: Host, repo: Path, core_url: str):
    """w22-a live on v1.6.0 (sum-core vendored), sum-core's git URL mapped to the local copy."""
    images = [f"sum-{SLUG}:{ref}" for ref in ("v1.6.0", "w22-locked", "v1.8.0-git-pin", "w22-bad-lock")]
    docker("rmi", "-f", *images, check=False)
    host.teardown_site(SLUG)
    result = host.sumbg(
        "init", SLUG, "--repo", str(repo), "--domain", DOMAIN, "--ref", "v1.6.0", "--db-port", "0", "--json"
    )
    assert result.returncode == 0, str(result)
    set_build(host, git_url_rewrites=f'{{ "{PIN_HOST}" = "{core_url}" }}')
    yield result.json()
    host.teardown_site(SLUG)
    docker("rmi", "-f", *images, check=False)


def set_build(host: Host, **values: str) -> None:
    path = host.site_dir(SLUG) / "site.toml"
    text = path.read_text()
    section = text.index("\n[build]\n")
    head, body = text[:section], text[section:]
    for key, value in values.items():
        body, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", body, count=1, flags=re.M)
        assert n == 1, key
    path.write_text(head + body)


def build_step(document: dict) -> dict:
    return next(step for step in document["steps"] if step["name"] == "build")


def versions(image: str, *names: str) -> dict[str, str]:
    code = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    done = docker("run", "--rm", "--entrypoint", "python", image, "-c", code, *names)
    return json.loads(done.stdout)


def live_build(host: Host) -> str:
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200, body
    return json.loads(body)["version"]["build"]


def test_init_records_what_the_image_holds(host: Host, site: dict) -> None:
    image = f"sum-{SLUG}:v1.6.0"
    built = build_step(site)
    held = {d["name"]: d for d in built["dependencies"]}
    assert held["sum-core"] == {"name": "sum-core", "version": "0.8.0", "source": "vendor"}
    assert held["Django"] == {"name": "Django", "version": "5.1.4"}
    assert "pip" not in held and "setuptools" not in held
    assert built["wheels"]["wheels"] == len(held) and built["wheels"]["cache"].endswith(
        "/.cache/wheels/" + (built["wheels"]["cache"].rsplit("/", 1)[1])
    )
    # The same list in state.json, on the image's label, and from the image itself.
    state = host.state(SLUG)
    assert state["colours"]["blue"]["dependencies"] == built["dependencies"]
    label = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Labels"]["sumbg.dependencies"]
    assert sorted(label.split(), key=str.lower) == sorted(
        (f"{d['name']}=={d['version']}" + ("+vendor" if d.get("source") else "") for d in built["dependencies"]),
        key=str.lower,
    )
    assert versions(image, "Django", "sum-core") == {"Django": "5.1.4", "sum-core": "0.8.0"}
    # The wheels and the toolchain never reach the final image.
    history = docker("history", "--no-trunc", image).stdout
    assert "sumbg-wheels" not in history.replace("/sumbg-local", "")
    found = docker("run", "--rm", "--entrypoint", "sh", image, "-c", "ls -d /sumbg-wheels /sumbg-build 2>&1; true")
    assert "No such file" in found.stdout and found.stdout.count("No such file") == 2
    # sumbg releases SLUG --deps REF
    shown = host.sumbg("releases", SLUG, "--deps", "v1.6.0")
    assert shown.returncode == 0, str(shown)
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"{SLUG} v1.6.0 (commit ") and lines[0].endswith(
        f"image {image}): {len(held)} distributions, recorded in state.json (blue)"
    )
    assert re.search(r"^  sum-core +0\.8\.0  vendor$", shown.stdout, re.M), shown.stdout
    as_json = host.sumbg("releases", SLUG, "--deps", "v1.6.0", "--json").json()
    assert as_json["dependencies"] == built["dependencies"]
    unknown = host.sumbg("releases", SLUG, "--deps", "v1.1.0")
    assert unknown.returncode == 2 and unknown.stderr.startswith(
        f"sumbg: error: no dependencies are recorded for v1.1.0 of {SLUG}: this host has not built it"
    )


def test_a_lock_file_pins_the_build_and_a_release_without_migrations_skips_rehearsal_and_migrate(
    host: Host, site: dict
) -> None:
    set_build(host, lock='"file"')
    result = host.sumbg("upgrade", SLUG, "w22-locked", "--yes", "--watch", "0", "--json")
    assert result.returncode == 0, str(result)
    document = result.json()
    built = build_step(document)
    assert built["constraints"] == {"source": 'constraints.txt at w22-locked ([build] lock = "file")', "pins": 1}
    assert "resolving against constraints.txt at w22-locked" in result.stderr
    held = {d["name"]: d for d in built["dependencies"]}
    assert held["tzdata"]["version"] == "2024.1"
    assert held["sum-core"]["version"] == "0.9.0" and held["sum-core"]["source"] == "git"
    diff = built["dependency_diff"]
    assert (diff["from"], diff["to"]) == ("v1.6.0", "w22-locked")
    changed = {c["name"]: c for c in diff["changed"]}
    assert changed["sum-core"]["why"] == "requirements"
    assert changed["sum-core"]["to"] == f"0.9.0 (git {held['sum-core']['commit'][:12]})"
    assert changed["tzdata"]["to"] == "2024.1" and changed["tzdata"]["why"] == "resolver"
    assert {c["name"].lower(): c["why"] for c in diff["added"]}.get("pillow") == "requirements"
    # Printed by the build step too, and kept in the history.
    assert re.search(r"^ +dependencies, live v1\.6\.0 -> w22-locked: \d+ changed", result.stderr, re.M)
    assert re.search(r"^ +tzdata 2026\.\d+ -> 2024\.1 +resolver$", result.stderr, re.M), result.stderr
    assert build_step(host.history(SLUG)[-1])["dependency_diff"] == diff
    # sum-core 0.8.0 -> 0.9.0 brings no migration: known from the image, so no rehearsal, no migrate.
    steps = {step["name"]: step for step in document["steps"]}
    why = "no pending migration: w22-locked's image lists none against the live database"
    assert built["pending_migrations"] == []
    assert (steps["rehearsal"]["outcome"], steps["rehearsal"]["reason"]) == ("skipped", why)
    assert (steps["migrate"]["outcome"], steps["migrate"]["reason"]) == ("skipped", why)
    assert f"{why}: the rehearsal and migrate steps will be skipped" in result.stderr
    assert live_build(host) == "w22-locked"
    assert host.state(SLUG)["colours"]["green"]["dependencies"] == built["dependencies"]


def test_lock_live_keeps_the_live_versions_of_what_requirements_txt_does_not_change(host: Host, site: dict) -> None:
    set_build(host, lock='"live"')
    dry = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--dry-run")
    assert dry.returncode == 0, str(dry)
    assert f"dependencies: not known until sum-{SLUG}:v1.8.0-git-pin is built" in dry.stderr
    result = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0", "--json")
    assert result.returncode == 0, str(result)
    built = build_step(result.json())
    assert built["constraints"]["source"] == 'the live w22-locked ([build] lock = "live")'
    held = {d["name"]: d["version"] for d in built["dependencies"]}
    assert held["tzdata"] == "2024.1" and held["sum-core"] == "0.9.1"
    diff = built["dependency_diff"]
    assert [(c["name"], c["why"]) for c in diff["changed"]] == [("sum-core", "requirements")]
    assert diff["added"] == [] and diff["removed"] == []
    assert live_build(host) == "v1.8.0-git-pin"
    # Now that the image exists, a dry run shows the same diff.
    again = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--dry-run", "--json", "--allow-same-core")
    assert again.returncode == 0, str(again)
    assert again.json()["dependency_diff"]["unchanged"] == len(held)


def test_an_unsatisfiable_lock_file_stops_the_build_with_one_line_and_changes_nothing(host: Host, site: dict) -> None:
    set_build(host, lock='"file"')
    before = host.state(SLUG)
    # w22-bad-lock pins the live sum-core (0.9.1): only its constraints.txt differs.
    result = host.sumbg("upgrade", SLUG, "w22-bad-lock", "--yes", "--watch", "0", "--allow-same-core")
    assert result.returncode == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sumbg: error:")]
    assert errors == [
        "sumbg: error: constraints.txt at w22-bad-lock line 2 pins tzdata==1999.1 (no such version on the package "
        f"index), which the requirements of sum-{SLUG}:w22-bad-lock cannot take: celery 5.4.0 depends on "
        f"tzdata>=2022.7 [site {SLUG}, step build]"
    ]
    assert "Traceback" not in result.stderr
    assert host.state(SLUG)["colours"] == before["colours"] and host.state(SLUG)["live"] == before["live"]
    assert docker("image", "inspect", f"sum-{SLUG}:w22-bad-lock", check=False).returncode != 0
    assert live_build(host) == "v1.8.0-git-pin"
    assert "constraints.txt at w22-bad-lock line 2 pins tzdata==1999.1" in (host.root / "WHAT-BROKE.md").read_text()


def test_a_release_built_before_is_rebuilt_with_its_recorded_versions(host: Host, site: dict) -> None:
    set_build(host, lock='"none"')
    image = f"sum-{SLUG}:w22-locked"
    recorded = {d["name"]: d for d in host.state(SLUG)["colours"]["green"]["dependencies"]}
    assert recorded["tzdata"]["version"] == "2024.1"
    docker("rmi", "-f", image)  # pruned, as `docker image prune -a` would
    result = host.sumbg("upgrade", SLUG, "w22-locked", "--yes", "--watch", "0", "--json")
    assert result.returncode == 0, str(result)
    built = build_step(result.json())
    origin = "the versions recorded for w22-locked in state.json (green)"
    assert built["constraints"] == {
        "source": f"{origin} (a release built before is rebuilt as it was)",
        "pins": len(recorded) - 1,  # all but sum-core, which is fetched at its recorded commit
        "git_commits": {"sum-core": recorded["sum-core"]["commit"]},
    }
    assert f"resolving against {origin}" in result.stderr
    assert {d["name"]: d for d in built["dependencies"]} == recorded
    assert versions(image, "tzdata")["tzdata"] == "2024.1"  # lock = "none" alone would take the newest
    assert built["wheels"]["fetched"] == 0  # every wheel came from the host's cache
    assert live_build(host) == "w22-locked"


def test_a_corrupt_wheel_in_the_cache_stops_the_build_names_it_and_is_removed(host: Host, site: dict) -> None:
    cache = Path(build_step(host.history(SLUG)[-1])["wheels"]["cache"])
    kept = next((cache / "wheelhouse").glob("Django-5.1.4-0-*.whl"))
    data = bytearray(kept.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\0" * 64  # the same size, damaged inside
    kept.write_bytes(bytes(data))
    docker("rmi", "-f", f"sum-{SLUG}:v1.8.0-git-pin")
    before = host.state(SLUG)
    result = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0", "--json")
    assert result.returncode == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sumbg: error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"sumbg: error: the wheel cache's {kept} (django 5.1.4) is corrupt ("
    )
    assert errors[0].endswith(f"); removed it, so the next build fetches it again [site {SLUG}, step build]")
    assert result.json()["outcome"] == "failed" and result.json()["exit_code"] == 1
    assert not kept.exists()
    assert host.state(SLUG)["colours"] == before["colours"] and live_build(host) == "w22-locked"
    # The next build fetches it again.
    again = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0", "--json")
    assert again.returncode == 0, str(again)
    assert build_step(again.json())["wheels"]["fetched"] == 1 and kept.exists()
