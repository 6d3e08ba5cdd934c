"""A client repo with its own Dockerfile that declares neither GIT_SHA nor BUILD_ID.

The example release v1.10.0-own-dockerfile adds a plain `Dockerfile` at the repo root
(sum-core 0.9.3 vendored as a wheel). sumbg builds with it, and sets GIT_SHA (the commit)
and BUILD_ID (the ref) in the app containers' environment itself (compose/app.yml, from the
image's labels), so /health/ still reports the version and the switch can confirm it.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from .conftest import Host, docker, http_get

pytestmark = pytest.mark.e2e

SLUG = "t-own"
DOMAIN = f"{SLUG}.example.test"
TAG = "v1.10.0-own-dockerfile"
IMAGE = f"sum-{SLUG}:{TAG}"
VERSION_VARS = ("GIT_SHA", "BUILD_ID")


def tag_commit(host: Host, ref: str) -> str:
    return subprocess.run(
        ["git", "-C", str(host.repo), "rev-parse", f"{ref}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()


def env_names(env: list[str] | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in env or [])


@pytest.fixture(scope="module")
def site(host: Host):
    # This test's own image, left by an earlier run, would be reused (same commit, same settings):
    # remove it so the upgrade really builds with the repo's Dockerfile.
    docker("image", "rm", "-f", IMAGE, check=False)
    try:
        host.init(SLUG, "v1.6.0")
        yield SLUG
    finally:
        host.teardown_site(SLUG)


def test_own_dockerfile_without_version_variables_still_reports_its_version(host: Host, site: str) -> None:
    commit = tag_commit(host, TAG)
    # The release's Dockerfile is the client's own, and declares no version variable at all.
    dockerfile = subprocess.run(
        ["git", "-C", str(host.repo), "show", f"{TAG}:Dockerfile"], capture_output=True, text=True, check=True
    ).stdout
    assert "FROM ${PYTHON_IMAGE}" in dockerfile
    for name in VERSION_VARS:
        assert name not in dockerfile

    result = host.sumbg("upgrade", site, TAG, "--watch", "0", "--json")
    assert result.returncode == 0, str(result)
    outcome = result.json()
    assert outcome["outcome"] == "done", outcome
    assert [(s["name"], s["outcome"]) for s in outcome["steps"]] == [
        ("preflight", "ok"),
        ("build", "ok"),
        ("backup", "ok"),
        ("rehearsal", "skipped"),  # the image lists no pending migration (issue 22): nothing to rehearse
        ("migrate", "skipped"),
        ("start", "ok"),
        ("smoke", "ok"),
        ("switch", "ok"),
        ("workers", "skipped"),
        ("after-switch", "skipped"),
    ], outcome["steps"]
    assert outcome["sum_core"] == {"from": "0.8.0", "to": "0.9.3"}
    skipped = {s["name"]: s.get("reason") for s in outcome["steps"] if s["name"] in ("rehearsal", "migrate")}
    why = f"no pending migration: {TAG}'s image lists none against the live database"
    assert skipped == {"rehearsal": why, "migrate": why}

    # The build used the repo's own Dockerfile (and says so, in the output and in history).
    build = next(s for s in outcome["steps"] if s["name"] == "build")
    assert build["dockerfile"] == "the repo's own Dockerfile", build
    assert build["image"] == IMAGE
    recorded = next(s for s in host.history(site)[-1]["steps"] if s["name"] == "build")
    assert recorded["dockerfile"] == "the repo's own Dockerfile"

    # The image declares neither variable: not in its environment, not in any layer's command.
    image = json.loads(docker("image", "inspect", IMAGE).stdout)[0]
    assert image["Config"]["Labels"]["sumbg.commit"] == commit
    assert image["Config"]["Labels"]["sumbg.ref"] == TAG
    image_env = env_names(image["Config"]["Env"])
    assert not set(VERSION_VARS) & set(image_env), image_env
    assert commit not in json.dumps(image["Config"]["Env"])
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
    assert "pip install --find-links /app/vendor" in history  # the client's Dockerfile, not sumbg's
    for name in VERSION_VARS:
        assert name not in history, history

    # sumbg put them in the running container's environment: the tag's commit and the tag.
    state = host.state(site)
    assert (state["live"], state["colours"][state["live"]]["ref"]) == ("green", TAG)
    container = json.loads(docker("inspect", f"sum-{site}-green-web").stdout)[0]
    assert container["Config"]["Image"] == IMAGE
    container_env = env_names(container["Config"]["Env"])
    assert (container_env.get("GIT_SHA"), container_env.get("BUILD_ID")) == (commit, TAG), container_env
    assert container["Config"]["User"] == "app"

    # /health/ through the edge reports that version, and the page runs the vendored sum-core 0.9.3.
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200, body
    health = json.loads(body)
    assert health["version"]["git_sha"] == commit and health["version"]["build"] == TAG, health
    status, _, body = http_get(host.http_port, DOMAIN, "/")
    assert status == 200
    assert re.search(rb'id="sum-core-version">\s*0\.9\.3\s*<', body), body[:2000]

    # Records, Caddy, containers and the answering version agree.
    status_result = host.sumbg("status", site, "--json")
    assert status_result.returncode == 0, str(status_result)
    report = status_result.json()
    assert report["agreement"]["agree"] is True, report["agreement"]
    assert (report["live"], report["ref"], report["commit"]) == ("green", TAG, commit)
    assert report["health"]["version"] == {"git_sha": commit, "build": TAG}, report["health"]
