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
import random
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


# Ports this session hands out come from a range of its own, below the kernel's ephemeral range
# (which outgoing connections and bind(0) draw from), and never twice. With bind(0), a port that a
# module had just released and meant to take back (a takeover's undo restarting the edge on its old
# ports) went to a container of another xdist worker meanwhile.
_PORT_SPAN = 900


def _session_ports():
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw")[2:] or os.getpid())
    base = 20000 + (index % 13) * _PORT_SPAN  # 13 ranges: 20000-31699, below 32768
    start = random.randrange(_PORT_SPAN)  # another session on the same range starts elsewhere
    for step in range(_PORT_SPAN):
        yield base + (start + step) % _PORT_SPAN


_PORTS = _session_ports()


def free_port() -> int:
    """A loopback port nobody listens on now, never handed out before in this session."""
    for port in _PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"this test session used up its {_PORT_SPAN} ports")


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
        _SESSION["removed"].discard(slug)
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

    def sites(self) -> set[str]:
        """The slugs initialised under this root (their folders stay after a teardown)."""
        return {site_toml.parent.name for site_toml in self.root.glob("*/site.toml")}

    def own_containers(self, *slugs: str) -> list[str]:
        """'ID NAME STATE' of every container of this host: its edge, and the stacks of its sites
        and of `slugs` (a command may create them). Other test sessions share the engine (xdist
        workers, other checkouts): their containers come and go meanwhile and are none of ours."""
        prefixes = tuple(f"sum-{slug}-" for slug in self.sites() | set(slugs))
        listing = docker("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}").stdout.splitlines()
        return sorted(
            line
            for line in listing
            if line.split()[1] == f"{self.edge_name}-caddy" or line.split()[1].startswith(prefixes)
        )

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
# running beside this one (another checkout) sets SUMBG_TEST_EDGE to its own name. Under
# pytest-xdist each worker is a session of its own: its own edge (and every edge named after
# it: the fleet's, the ACME test's, the takeover's), its own root and its own ports.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
EDGE = os.environ.get("SUMBG_TEST_EDGE", "sum-edge-test") + (f"-{WORKER}" if WORKER else "")


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


# The session's host once made, and the sites already removed from it (see pytest_runtest_teardown).
_SESSION: dict = {"host": None, "removed": set()}


@pytest.fixture(scope="session")
def host(engine, example_repo, tmp_path_factory) -> Host:
    lock = _hold_the_test_edge()
    the_host = new_host(tmp_path_factory.mktemp("sumbg-root"), EDGE, example_repo)
    _remove_stale_edge(the_host)
    _SESSION["host"] = the_host
    yield the_host
    _SESSION["host"] = None
    for slug in sorted(the_host.sites() - _SESSION["removed"]):
        the_host.teardown_site(slug)
    docker("rm", "-f", f"{EDGE}-caddy", check=False)
    docker("volume", "rm", f"{EDGE}-caddy-data", f"{EDGE}-caddy-config", check=False)
    docker("network", "rm", EDGE, check=False)
    lock.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """When a module ends (its own fixtures torn down), the sites it left on the session's host
    go too: every module uses slugs of its own, and an engine holds only about 30 networks (one
    per site), which a worker running many modules one after the other would otherwise fill."""
    yield
    the_host = _SESSION["host"]
    if the_host is None or (nextitem is not None and nextitem.module is item.module):
        return
    for slug in sorted(the_host.sites() - _SESSION["removed"]):
        the_host.teardown_site(slug)
        _SESSION["removed"].add(slug)


def pytest_runtest_setup(item) -> None:
    if item.get_closest_marker("engine_restart") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.fail(
            "this test restarts the Docker engine under every other test: run it alone "
            "(`make test` runs it in a phase of its own, after the others)",
            pytrace=False,
        )


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


# Seconds each end-to-end module (or test class: `--dist loadscope` gives each class to a worker
# whole, each module's plain functions too) took in a one-session run on a 2-core machine from a
# cold image cache (2026-12-06). Under xdist (`make test`) the workers take them in this order,
# longest first, so that no long one starts last while the others sit idle. Not listed: 60 s;
# unit-test modules: nothing (they fill the gaps at the end).
SCOPE_SECONDS = {
    "test_e2e_migrations.py": 400,
    "test_e2e_build.py": 291,
    "test_e2e_switch.py": 264,
    "test_bench_quick.py": 550,  # measured 2026-12-06 in a whole parallel run (2 cores)
    "test_e2e_workers.py": 300,  # issue 18's module: about half of 605 s beside test_e2e_upgrade.py
    "test_e2e_fleet.py": 201,
    "test_e2e_w22_builds.py": 180,  # issue 22's module: 468 s with test_e2e_build.py
    "test_e2e_upgrade.py::TestBrokenReleases": 167,
    "test_e2e_adopt.py": 155,
    "test_e2e_rollback.py::TestCrashRecovery": 137,
    "test_e2e_networks.py": 88,  # measured 2026-12-06 beside test_e2e_init.py, warm image cache
    "test_e2e_upgrade.py": 74,
    "test_e2e_takeover.py": 72,
    "test_e2e_acme.py": 66,
    "test_e2e_restart.py": 58,
    "test_e2e_rollback.py": 44,
    "test_e2e_rollback.py::TestRollback": 43,
    "test_e2e_own_dockerfile.py": 37,
    "test_e2e_upgrade.py::TestZeroDowntimeUpgrade": 36,
    "test_e2e_golden_path.py": 32,
    "test_e2e_init.py": 26,
    "test_e2e_upgrade.py::TestLockingAndInput": 22,
}


def pytest_collection_modifyitems(config, items) -> None:
    if not WORKER:
        return  # one session: the files' own order

    def seconds(item) -> float:
        name = item.path.name
        scope = f"{name}::{item.cls.__name__}" if item.cls else name
        return SCOPE_SECONDS.get(scope, 60.0 if name.startswith(("test_e2e_", "test_bench_")) else 0.0)

    items.sort(key=lambda item: -seconds(item))  # a stable sort: each scope's tests keep their order
