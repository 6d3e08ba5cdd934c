"""Fixtures for end-to-end tests on the real Docker engine.

One temporary SUMBG_ROOT per test session (one host, one edge Caddy, several
sites, as on a real VPS), the example client repo built from
examples/sum-site, and a `host` object that runs the real `sumbg` CLI. The
session tears down every container, network and volume it created.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SUMBG = Path(sys.executable).with_name("sumbg")
LOCAL_HOST_CONF = REPO / "build" / "local-host.toml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Host:
    """A sumbg host under a temporary root, driven through the real CLI."""

    def __init__(self, root: Path, http_port: int, preview_port: int, repo: Path) -> None:
        self.root = root
        self.http_port = http_port
        self.preview_port = preview_port
        self.repo = repo

    @property
    def edge_name(self) -> str:
        return EDGE

    @property
    def caddy_binary(self) -> Path:
        return Path(sys.executable).with_name("caddy")

    def env(self) -> dict:
        return {**os.environ, "SUMBG_ROOT": str(self.root)}

    def sumbg(self, *args: str, timeout: float = 900, input: str | None = None) -> Result:
        proc = subprocess.run(
            [str(SUMBG), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, stderr=subprocess.PIPE, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [str(SUMBG), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**self.env(), **(env or {})},
            stdin=subprocess.DEVNULL,
        )

    def site_dir(self, slug: str) -> Path:
        return self.root / slug

    def state(self, slug: str) -> dict:
        return json.loads((self.site_dir(slug) / "state.json").read_text())

    def history(self, slug: str) -> list[dict]:
        path = self.site_dir(slug) / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def secrets(self, slug: str) -> dict:
        pairs = (
            line.split("=", 1)
            for line in (self.site_dir(slug) / ".env").read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        return {k: v for k, v in pairs}

    def init(self, slug: str, ref: str = "v1.0.0", *extra: str) -> Result:
        if not self.site_dir(slug).exists():
            self.teardown_site(slug)  # what an earlier, killed session left under this slug
        db_port = free_port()
        result = self.sumbg(
            "init",
            slug,
            "--repo",
            str(self.repo),
            "--domain",
            f"{slug}.example.test",
            "--ref",
            ref,
            "--db-port",
            str(db_port),
            *extra,
        )
        assert result.returncode == 0, str(result)
        return result

    def db_url(self, slug: str) -> str:
        site_toml = (self.site_dir(slug) / "site.toml").read_text()
        port = next(int(line.split("=")[1]) for line in site_toml.splitlines() if line.startswith("publish_port"))
        user = slug.replace("-", "_")
        return f"postgresql://{user}:{self.secrets(slug)['POSTGRES_PASSWORD']}@127.0.0.1:{port}/{user}"

    def containers(self, prefix: str) -> list[str]:
        out = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        return sorted(name for name in out if name.startswith(prefix))

    def teardown_site(self, slug: str) -> None:
        for project in (f"sum-{slug}-blue", f"sum-{slug}-green", f"sum-{slug}-data"):
            ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
            if ids:
                docker("rm", "-f", "-v", *ids, check=False)
        docker("volume", "rm", f"sum-{slug}-data-pgdata", f"sum-{slug}-data-redisdata", check=False)
        # The site's link to the edge: whichever edge is on it leaves first (a network in use stays).
        link = f"sum-{slug}.edge"
        on_link = docker("network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", link, check=False)
        for name in on_link.stdout.split():
            docker("network", "disconnect", "--force", link, name, check=False)
        docker("network", "rm", f"sum-{slug}", link, check=False)


# Its own edge, so tests never touch a demo's or a real site's; a second test session
# running beside this one (another checkout) sets SUMBG_TEST_EDGE to its own name.
EDGE = os.environ.get("SUMBG_TEST_EDGE", "sum-edge-test")


def _hold_the_test_edge():
    """One live session per test edge. The kernel drops the lock when its holder dies, however
    it dies, so a session killed mid-run never blocks the next one (a root dir left in /tmp
    proves nothing: pytest keeps old roots)."""
    lock = open(Path(tempfile.gettempdir()) / f"{EDGE}.session.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        pytest.fail(
            f"another live test session is using the test edge {EDGE}; "
            "set SUMBG_TEST_EDGE to run a second one beside it",
            pytrace=False,
        )
    return lock


def _remove_stale_edge(host: Host) -> None:
    """Everything an earlier, killed session left on this edge: its sites' stacks, volumes and
    networks (their old passwords would break a new site of the same slug) and the edge itself."""
    projects = set()
    for line in docker(
        "ps", "-a", "--filter", f"network={EDGE}", "--format", '{{.Label "com.docker.compose.project"}}', check=False
    ).stdout.split():
        projects.add(line)
    slugs = {p[len("sum-") :].rsplit("-", 1)[0] for p in projects if p.startswith("sum-") and p.count("-") >= 2}
    # Sites on the address plan meet the edge on links of their own, labelled for it.
    links = docker("network", "ls", "--filter", f"label=sumbg.edge-link={EDGE}", "--format", "{{.Name}}", check=False)
    slugs |= {name[len("sum-") : -len(".edge")] for name in links.stdout.split() if name.endswith(".edge")}
    for slug in sorted(slugs):
        host.teardown_site(slug)
    docker("rm", "-f", f"{EDGE}-caddy", check=False)
    docker("network", "rm", EDGE, check=False)


def new_host(root: Path, edge: str, repo: Path) -> Host:
    """A sumbg root of its own: free loopback ports, TLS off, the local images."""
    http_port, https_port, preview_port = free_port(), free_port(), free_port()
    local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
    (root / "sumbg.toml").write_text(
        local + "\n[edge]\n"
        f"http_port = {http_port}\nhttps_port = {https_port}\npreview_port = {preview_port}\n"
        f'bind = "127.0.0.1"\ntls = "off"\nname = "{edge}"\n'
    )
    return Host(root, http_port, preview_port, repo)


@pytest.fixture(scope="session")
def engine() -> None:
    info = docker("info", check=False)
    if info.returncode != 0:
        pytest.fail("no Docker engine answers; run `make setup` (end-to-end tests never skip)", pytrace=False)
    if docker("compose", "version", check=False).returncode != 0:
        pytest.fail("docker compose v2 is missing; run `make setup`", pytrace=False)


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("example") / "acme-repo"
    subprocess.run(
        [sys.executable, str(REPO / "examples/sum-site/build_repo.py"), str(dest)], check=True, capture_output=True
    )
    return dest


@pytest.fixture(scope="session")
def host(engine, example_repo, tmp_path_factory) -> Host:
    lock = _hold_the_test_edge()
    the_host = new_host(tmp_path_factory.mktemp("sumbg-root"), EDGE, example_repo)
    _remove_stale_edge(the_host)
    yield the_host
    for site_toml in the_host.root.glob("*/site.toml"):
        the_host.teardown_site(site_toml.parent.name)
    docker("rm", "-f", f"{EDGE}-caddy", check=False)
    docker("volume", "rm", f"{EDGE}-caddy-data", f"{EDGE}-caddy-config", check=False)
    docker("network", "rm", EDGE, check=False)
    lock.close()


def http_get(
    port: int,
    domain: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict | None = None,
    timeout: float = 10,
):
    """One request through the edge with the site's Host header; returns (status, headers, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": domain, "X-Forwarded-Proto": "https", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def wait_until(predicate, timeout: float = 30, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def snapshot_tree(path: Path, exclude: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under path (relative name -> bytes), for before/after comparisons."""
    files = {}
    for item in sorted(path.rglob("*")):
        rel = str(item.relative_to(path))
        if item.is_file() and not any(rel == e or rel.startswith(e + "/") for e in exclude):
            files[rel] = item.read_bytes()
    return files


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
