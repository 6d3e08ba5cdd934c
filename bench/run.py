"""sumbg benchmarks on the real Docker engine (issue 5).

    .venv/bin/python bench/run.py            # full run: BENCHMARKS.md, bench/results.json, bench/timeline.png
    .venv/bin/python bench/run.py --quick --out /tmp/b   # 1 repetition, short loads, tiny DB; files in /tmp/b only

    .venv/bin/python bench/run.py --only density --density-sites 3 --out /tmp/d   # figure 9 alone, in /tmp/d only
    .venv/bin/python bench/run.py --only density --publish   # figure 9 alone, replacing it in BENCHMARKS.md
    .venv/bin/python bench/run.py --only latency --latency-reps 1 --out /tmp/l    # figure 10 alone, in /tmp/l only
    .venv/bin/python bench/run.py --only offsite --backup-reps 1 --out /tmp/o     # figure 11 alone, in /tmp/o only
    .venv/bin/python bench/run.py --only worker --worker-reps 1 --out /tmp/w      # figure 12 alone, in /tmp/w only
    .venv/bin/python bench/run.py --only builds --out /tmp/b13                   # figure 13 alone, in /tmp/b13 only

Everything it creates is named for the site `bench-acme` (containers
`sum-bench-acme-*`, images `sum-bench-acme:*`) and the edge `sum-edge-bench`,
under a temporary SUMBG_ROOT, and is removed at the end, even on failure.
Figure 9 (density) has its own root, its own edge `sum-edge-bench-density` and
its own sites `bench-d01`..`bench-dNN` (containers `sum-bench-dNN-*`, images
`sum-bench-dNN:*`), removed the same way. `--only latency` brings up bench-acme
alone (under its own root, like a full run) for figure 10. `--only` writes only the
--out folder, unless `--publish` is given: then, if it did not fail, its figure replaces the
published one in bench/results.json and BENCHMARKS.md is generated again.
Exits non-zero if anything failed. See BENCHMARKS.md for what is measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import stats  # noqa: E402
from builds import EDGE as BUILDS_EDGE  # noqa: E402
from builds import NAME as BUILDS_NAME  # noqa: E402
from builds import Builds  # noqa: E402
from load import read_samples  # noqa: E402

SLUG = "bench-acme"
DOMAIN = f"{SLUG}.example.test"
EDGE = "sum-edge-bench"
OLD, NEW = "v1.0.0", "v1.1.0"
PREFIX = f"sum-{SLUG}"
IMAGE_REPO = f"sum-{SLUG}"
DB = SLUG.replace("-", "_")
PG = f"{PREFIX}-data-postgres"
ADOPT_SLUG = "bench-adopt"  # figure 8: a runbook host adopted, under its own root and edge
ADOPT_EDGE = f"{EDGE}-adopt"
DENSITY_EDGE = f"{EDGE}-density"  # figure 9: N example sites on one host, under their own root and edge
DENSITY_SLUG = "bench-d{:02d}"  # bench-d01 .. bench-dNN
# Everything named for a density site: containers sum-bench-dNN-*, volumes sum-bench-dNN-data-*,
# networks sum-bench-dNN and sum-bench-dNN.edge, images sum-bench-dNN:<ref>.
DENSITY_NAME = re.compile(r"^sum-bench-d\d{2,}(?:[-:.]|$)")
DENSITY_MIN_AVAILABLE_MIB = 1536  # figure 9 brings up no further site once the host has less than this left
DENSITY_HOST_GIB = 24  # the projection's host: 24 GiB of memory...
DENSITY_RESERVE_GIB = 2  # ...less this for the OS, dockerd and containerd
LATENCY_PATHS = ("/", "/health/")  # figure 10's visitors: the home page and the health check, in turn
# Figure 12: a site with a real Celery worker (init --worker), its tasks counted in its database.
WORKER_SLUG = "bench-wrk"
WORKER_PREFIX = f"sum-{WORKER_SLUG}"
WORKER_DOMAIN = f"{WORKER_SLUG}.example.test"
W_OLD, W_NEW = "v1.15.0-tasks", "v1.16.0-tasks"
WORKER_SLOW_TASKS = 2  # one per Celery process of the worker (2 cores): every process busy at the rollback
WORKER_SLOW_SECONDS = 30
LATENCY_SUSTAINED = 0.95  # figure 10: a rate is sustained if it achieves this share of it, no failure
LOCAL_HOST_CONF = REPO / "build" / "local-host.toml"
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")

PROFILES = {
    # adopt_reps: 0 in quick mode: the suite's end-to-end tests already adopt a runbook host.
    # density_sites: 0 in quick mode (figure 9 skipped): 60 sites take about 10 minutes to bring up.
    # latency_reps: 0 in quick mode (figure 10 skipped): one repetition (the rate search, an idle window and two
    # upgrades, each after unapplying v1.1.0's migration, and two rollbacks) adds about 75 s on 2 cores even with
    # quick mode's short windows; with --latency-reps 1 quick mode runs it with those windows (latency_idle,
    # latency_probe: seconds). Full: 3 repetitions, about 6 minutes.
    "quick": dict(
        reps=1,
        build_reps=1,
        backup_reps=1,
        rehearsal_reps=1,
        adopt_reps=0,
        density_sites=0,
        rate=150.0,
        keepalive=4,
        fresh=4,
        warmup=1.0,
        post=1.5,
        pg_scale=1,
        media_mb=16,
        max_load_seconds=120.0,
        latency_reps=0,
        latency_idle=5.0,
        latency_probe=3.0,
        worker_reps=0,
        builds_reps=0,
        builds_sites=0,
        builds_latency_reps=0,
        builds_idle_seconds=10.0,
    ),
    "full": dict(
        reps=5,
        build_reps=3,
        backup_reps=3,
        rehearsal_reps=3,
        adopt_reps=3,
        density_sites=60,
        rate=300.0,
        keepalive=8,
        fresh=8,
        warmup=5.0,
        post=5.0,
        pg_scale=64,
        media_mb=1024,
        max_load_seconds=600.0,
        latency_reps=3,
        latency_idle=20.0,
        latency_probe=8.0,
        worker_reps=3,
        # Figure 13 (builds): repetitions of the bump with the cache off / cold / warm, the N sites bumped
        # together (N = 10: the totals for N = 1, 5, 10), latency repetitions at 50% and 90% of capacity.
        builds_reps=2,
        builds_sites=10,
        builds_latency_reps=2,
        builds_idle_seconds=30.0,
    ),
}


# --only FIGURE: the profile key that must be 1 or more for it to measure anything, in words.
ONLY = {
    "density": ("density_sites", "site"),
    "latency": ("latency_reps", "repetition"),
    "offsite": ("backup_reps", "repetition"),
    "worker": ("worker_reps", "repetition"),
    "builds": ("builds_reps", "repetition"),
}


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sumbg_bin() -> str:
    candidate = Path(sys.executable).with_name("sumbg")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("sumbg")
    if not found:
        raise BenchError("the sumbg command is not installed in this Python's venv")
    return found


class Bench:
    REPO = REPO
    LOCAL_HOST_CONF = LOCAL_HOST_CONF

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.cfg = dict(PROFILES["quick" if args.quick else "full"])
        for key in self.cfg:
            value = getattr(args, key, None)
            if value is not None:
                self.cfg[key] = value
        self.out = Path(args.out).resolve()
        self.samples_dir = self.out / "samples"
        self.t_start = time.monotonic()
        self.failures: list[str] = []
        self.root: Path | None = None
        self.repo: Path | None = None
        self.sumbg = sumbg_bin()
        self.results: dict = {
            "mode": "quick" if self.quick else "full",
            "config": self.cfg,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        self.timelines: dict = {}
        self.baseline_migrations: dict[str, str] = {}
        self.sumbg_route: str | None = None
        self._loads: list = []
        self.only: str | None = args.only
        if self.only:
            self.results["only"] = self.only
        self.density_root: Path | None = None
        self.ran_density = False
        self.builds: Builds | None = None

    # ------------------------------------------------------------------ plumbing
    def log(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.t_start:6.1f}s] {message}", file=sys.stderr, flush=True)

    def fail(self, message: str) -> None:
        self.log(f"FAILED: {message}")
        self.failures.append(message)

    def run(
        self,
        argv: list[str],
        *,
        env: dict | None = None,
        timeout: float = 900,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise BenchError(
                f"`{' '.join(argv[:8])}` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1500:]}"
            )
        return proc

    def docker(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.run(["docker", *args], check=check, timeout=timeout)

    def env(self, root: Path | None = None) -> dict:
        return {**os.environ, "SUMBG_ROOT": str(root or self.root)}

    def sumbg_cmd(self, *args: str, timeout: float = 900, root: Path | None = None) -> dict:
        """Run sumbg (under `root`, default the bench's own); returns rc, the --json document, stderr lines
        with arrival times, start/end times."""
        lines: list[tuple[float, str]] = []
        started = time.time()
        proc = subprocess.Popen(
            [self.sumbg, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env(root),
        )

        def reader():
            for line in proc.stderr:
                lines.append((time.time(), line.rstrip("\n")))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            stdout = proc.stdout.read()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError(f"sumbg {' '.join(args)} took longer than {timeout}s") from None
        except BaseException:  # interrupted (SIGTERM): stop it before the cleanup removes what it works on
            proc.kill()
            proc.wait(timeout=30)
            raise
        thread.join(timeout=5)
        ended = time.time()
        document = None
        if stdout.strip():
            try:
                document = json.loads(stdout)
            except ValueError:
                document = None
        result = {
            "rc": proc.returncode,
            "json": document,
            "lines": lines,
            "start": started,
            "end": ended,
            "stdout": stdout,
        }
        return result

    def sumbg_ok(self, *args: str, timeout: float = 900, root: Path | None = None) -> dict:
        result = self.sumbg_cmd(*args, timeout=timeout, root=root)
        if result["rc"] != 0:
            tail = "\n".join(line for _, line in result["lines"][-15:])
            raise BenchError(f"sumbg {' '.join(args)} exited {result['rc']}:\n{tail}")
        return result

    def elapsed(self) -> float:
        return round(time.monotonic() - self.t_start, 1)

    # ------------------------------------------------------------------ host and site
    def machine(self) -> dict:
        mem_kb = 0
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
        cpu = ""
        try:
            with open("/proc/cpuinfo") as handle:
                cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
        except OSError:
            pass
        docker_version = self.docker("version", "--format", "{{.Server.Version}}", check=False).stdout.strip()
        compose_version = self.run(["docker", "compose", "version", "--short"], check=False).stdout.strip()
        return {
            "cores": os.cpu_count(),
            "cpu": cpu,
            "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "docker": docker_version,
            "compose": compose_version,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        }

    def live_owner(self, edge: str) -> str | None:
        """The root of the bench whose edge `edge` runs, if that root still exists (a live bench)."""
        inspect = self.docker("inspect", f"{edge}-caddy", check=False)
        if inspect.returncode != 0:
            return None
        owner = json.loads(inspect.stdout)[0]["Config"]["Labels"].get("sumbg.root", "")
        return owner if owner and Path(owner).exists() else None

    @property
    def uses_main(self) -> bool:
        """Whether this run brings up the bench's own root and edge (all but --only density)."""
        return self.only in (None, "latency", "offsite", "worker")

    @property
    def uses_builds(self) -> bool:
        """Whether this run may touch figure 13's sites (a full run with builds_reps, or --only builds)."""
        return self.only in (None, "builds") and bool(self.cfg["builds_reps"])

    @property
    def uses_density(self) -> bool:
        """Whether this run may touch figure 9's sites (a full run, or --only density)."""
        return self.only in (None, "density")

    def our_leftovers(self) -> None:
        """Refuse to run beside a live bench; remove what a killed bench left (all named for it)."""
        edges = (
            ([EDGE] if self.uses_main else [])
            + ([DENSITY_EDGE] if self.uses_density and self.cfg["density_sites"] else [])
            + ([BUILDS_EDGE] if self.uses_builds else [])
        )
        for edge in edges:
            owner = self.live_owner(edge)
            if owner:
                raise BenchError(
                    f"another benchmark (root {owner}) is using the edge {edge}; "
                    f"if it is dead, remove {owner} and run again"
                )
        self.cleanup_docker(quiet=True)

    def remove_ours(self, is_ours, *, volumes=(), networks=(), images=(), slugs=()) -> list[str]:
        """Remove the containers whose name is_ours(), then the volumes, networks and images named, and
        the untagged images still labelled for one of the slugs. Returns the containers removed."""
        names = self.docker("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in names if is_ours(n)]
        if ours:
            self.docker("rm", "-f", "-v", *ours, check=False, timeout=300)
        for volume in volumes:
            self.docker("volume", "rm", volume, check=False)
        for network in networks:
            self.docker("network", "rm", network, check=False)
        labelled = [
            ref
            for slug in slugs
            for ref in self.docker(
                "images", "-a", "-q", "--filter", f"label=sumbg.slug={slug}", check=False
            ).stdout.split()
        ]
        for ref in [*images, *sorted(set(labelled))]:
            self.docker("rmi", "-f", ref, check=False)
        return ours

    def cleanup_docker(self, quiet: bool = False) -> None:
        """What the bench created; with --only, only that section's. Figure 9's sites and edge too,
        unless they belong to another live bench (a run that skips figure 9 never stops one that runs it)."""
        if self.uses_main:
            # Images built for this site: its tags, and untagged builds still carrying its label.
            tagged = self.docker(
                "images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False
            ).stdout.split()
            ours = self.remove_ours(
                lambda n: n.startswith(f"{PREFIX}-") or n == f"{EDGE}-caddy",
                volumes=(
                    f"{PREFIX}-data-pgdata",
                    f"{PREFIX}-data-redisdata",
                    f"{EDGE}-caddy-data",
                    f"{EDGE}-caddy-config",
                ),
                networks=(PREFIX, f"{PREFIX}.edge", EDGE),
                images=tagged,
                slugs=(SLUG,),
            )
            if ours and not quiet:
                self.log(f"removed {len(ours)} containers: {', '.join(ours)}")
            self.cleanup_worker_site(quiet)
        if self.uses_density and self.live_owner(DENSITY_EDGE) in (None, str(self.density_root)):
            self.cleanup_density(quiet=quiet)
        if self.uses_builds and self.live_owner(BUILDS_EDGE) in (None, str(self.builds.root if self.builds else "")):
            (self.builds or Builds(self)).cleanup(quiet=quiet)

    def cleanup_worker_site(self, quiet: bool = False) -> None:
        """Figure 12's site bench-wrk (its old workers still draining included) and its images."""
        tagged = self.docker(
            "images", WORKER_PREFIX, "--format", "{{.Repository}}:{{.Tag}}", check=False
        ).stdout.split()
        ours = self.remove_ours(
            lambda n: n.startswith(f"{WORKER_PREFIX}-"),
            volumes=(f"{WORKER_PREFIX}-data-pgdata", f"{WORKER_PREFIX}-data-redisdata"),
            networks=(WORKER_PREFIX,),
            images=tagged,
            slugs=(WORKER_SLUG,),
        )
        if ours and not quiet:
            self.log(f"worker: removed {len(ours)} containers: {', '.join(ours)}")

    def cleanup_density(self, quiet: bool = False) -> None:
        """Figure 9's sites (found by name: however many a killed run left) and its edge."""
        self.remove_named_sites(DENSITY_NAME, "sum-bench-d*", DENSITY_EDGE, "density", quiet=quiet)

    def remove_named_sites(self, name: re.Pattern[str], image_ref: str, edge: str, figure: str, *, quiet: bool) -> None:
        """A figure's own sites, found by `name` (containers, images, volumes and networks, each
        site's link to the edge included), and its edge."""

        def listed(*argv: str) -> list[str]:
            return [n for n in self.docker(*argv, check=False).stdout.split() if name.match(n)]

        images = listed("images", "--filter", f"reference={image_ref}", "--format", "{{.Repository}}:{{.Tag}}")
        networks = listed("network", "ls", "--format", "{{.Name}}")
        ours = self.remove_ours(
            lambda n: bool(name.match(n)) or n == f"{edge}-caddy",
            volumes=listed("volume", "ls", "-q") + [f"{edge}-caddy-data", f"{edge}-caddy-config"],
            networks=networks + [edge],
            images=images,
            slugs=sorted(
                {n.split(":")[0][len("sum-") :] for n in images}
                | {n[len("sum-") :].removesuffix(".edge") for n in networks}
            ),
        )
        if ours and not quiet:
            self.log(f"{figure}: removed {len(ours)} containers, {len(images)} images")

    def ours_left(self) -> list[str]:
        """Containers of this run's still there (after the cleanup: should be none)."""

        def ours(name: str) -> bool:
            main = self.uses_main and (
                name.startswith(f"{PREFIX}-")
                or name.startswith(f"{WORKER_PREFIX}-")
                or name.startswith(EDGE)
                and not name.startswith(DENSITY_EDGE)
            )
            density = self.ran_density and (DENSITY_NAME.match(name) or name.startswith(DENSITY_EDGE))
            built = self.builds is not None and (BUILDS_NAME.match(name) or name.startswith(BUILDS_EDGE))
            return bool(main or density or built)

        return [n for n in self.docker("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split() if ours(n)]

    def ca_nonce(self, label: str) -> None:
        """A CA bundle for this root whose content is unique: fresh build-cache keys from `COPY ca.crt` on."""
        source = self.ca_source
        body = Path(source).read_text() if source else ""
        (self.root / "bench-ca.crt").write_text(body + f"\n# sumbg bench cache nonce {label} {time.time_ns()}\n")

    def make_repo(self) -> None:
        """The example client repository (releases v1.0.0, v1.1.0, ...), built once for every figure."""
        self.repo = Path(tempfile.mkdtemp(prefix="sumbg-bench-repo-")) / "acme-repo"
        self.run([sys.executable, str(REPO / "examples/sum-site/build_repo.py"), str(self.repo)])

    @staticmethod
    def write_host_config(root: Path, edge: str, local: str | None = None) -> dict:
        """`root`/sumbg.toml: this host's build/local-host.toml (or `local`), then its own edge `edge` on
        loopback, without TLS, on free ports. Returns the ports."""
        if local is None:
            local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
        ports = {"http": free_port(), "https": free_port(), "preview": free_port()}
        (root / "sumbg.toml").write_text(
            local + "\n[edge]\n"
            f"http_port = {ports['http']}\nhttps_port = {ports['https']}\npreview_port = {ports['preview']}\n"
            f'bind = "127.0.0.1"\ntls = "off"\nname = "{edge}"\n'
        )
        return ports

    def make_root(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sumbg-bench-root-"))
        self.make_repo()
        local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
        match = re.search(r'^ca_bundle\s*=\s*"([^"]*)"', local, re.M)
        self.ca_source = match.group(1) if match and match.group(1) else (str(SYSTEM_CA) if SYSTEM_CA.exists() else "")
        # Same host config as local-host.toml, except ca_bundle: a copy of the same bundle plus a
        # nonce comment, so the cold build can get fresh cache keys without touching shared cache.
        local = re.sub(r"^ca_bundle\s*=.*$", "", local, flags=re.M)
        local = re.sub(r"^\[build\]\s*$", "", local, flags=re.M)
        self.ca_nonce("init")
        self.ports = self.write_host_config(
            self.root, EDGE, local + f'\n[build]\nca_bundle = "{self.root / "bench-ca.crt"}"\n'
        )
        self.log(f"root {self.root}, edge on 127.0.0.1:{self.ports['http']}")

    def compose(
        self, colour: str, *args: str, image: str | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess:
        """docker compose on sumbg's own app project files and env file, optionally another image."""
        env = dict(os.environ)
        for key in ("SUMBG_IMAGE", "SUMBG_GIT_SHA", "SUMBG_BUILD_ID"):
            env.pop(key, None)
        if image:
            # The shell environment wins over --env-file; the version variables sumbg
            # sets from an image's labels must follow the image.
            labels = json.loads(self.run(["docker", "image", "inspect", image]).stdout)[0]["Config"]["Labels"]
            env.update(
                {"SUMBG_IMAGE": image, "SUMBG_GIT_SHA": labels["sumbg.commit"], "SUMBG_BUILD_ID": labels["sumbg.ref"]}
            )
        project = f"{PREFIX}-{colour}"
        argv = [
            "docker",
            "compose",
            "-p",
            project,
            "-f",
            str(REPO / "compose" / "app.yml"),
            "--env-file",
            str(self.root / SLUG / "run" / f"{project}.env"),
            *args,
        ]
        return self.run(argv, env=env, timeout=timeout, check=check)

    def manage(self, colour: str, image: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose(
            colour, "run", "--rm", "--no-deps", "-T", "web", "python", "manage.py", *args, image=image, check=check
        )

    def image(self, ref: str) -> str:
        return f"{IMAGE_REPO}:{ref}"

    def applied_migrations(self, colour: str, image: str) -> dict[str, str]:
        """{app: last applied migration} from `showmigrations --plan` run with `image`."""
        out = self.manage(colour, image, "showmigrations", "--plan").stdout
        last: dict[str, str] = {}
        for line in out.splitlines():
            m = re.match(r"\s*\[X\]\s+(\w+)\.(\w+)", line)
            if m:
                last[m.group(1)] = m.group(2)
        return last

    def reset_db(self, colour: str) -> None:
        """Unapply what v1.1.0 migrated, with the v1.1.0 image, so each repetition migrates again."""
        now = self.applied_migrations(colour, self.image(NEW))
        for app, migration in now.items():
            target = self.baseline_migrations.get(app, "zero")
            if migration != target:
                self.manage(colour, self.image(NEW), "migrate", app, target, "--noinput")

    def state(self) -> dict:
        return json.loads((self.root / SLUG / "state.json").read_text())

    def probe(self) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=5)
        try:
            conn.request("GET", "/health/", headers={"Host": DOMAIN, "X-Forwarded-Proto": "https"})
            response = conn.getresponse()
            body = response.read()
            try:
                build = (json.loads(body).get("version") or {}).get("build") or ""
            except ValueError:
                build = ""
            return response.status, build
        except (OSError, http.client.HTTPException):
            return 0, ""
        finally:
            conn.close()

    def wait_serving(self, build: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, seen = self.probe()
            if status == 200 and seen == build:
                return time.time()
            time.sleep(0.1)
        raise BenchError(f"the site did not serve {build} through Caddy within {timeout:.0f}s")

    # ------------------------------------------------------------------ load
    def start_load(
        self,
        name: str,
        *,
        target: tuple[int, str] | None = None,
        rate: float | None = None,
        warmup: float | None = None,
        paths: tuple[str, ...] = ("/health/",),
        keepalive: int | None = None,
        fresh: int | None = None,
    ) -> dict:
        """The load generator on `target` (edge HTTP port, domain; default bench-acme on the bench's edge)
        at `rate` (default the configured one; 0 = unpaced), then `warmup` seconds (default configured).
        Each client takes `paths` in turn; `keepalive` and `fresh` clients (default: configured)."""
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        path = self.samples_dir / f"{name}.csv"
        c = self.cfg
        port, domain = target or (self.ports["http"], DOMAIN)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "load.py"),
                "--port",
                str(port),
                "--domain",
                domain,
                "--rate",
                str(c["rate"] if rate is None else rate),
                "--keepalive",
                str(c["keepalive"] if keepalive is None else keepalive),
                "--fresh",
                str(c["fresh"] if fresh is None else fresh),
                *(a for p in paths for a in ("--path", p)),
                "--max-seconds",
                str(c["max_load_seconds"]),
                "--out",
                str(path),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise BenchError("the load generator did not start")
        self._loads.append(proc)
        time.sleep(c["warmup"] if warmup is None else warmup)
        return {"proc": proc, "path": path, "name": name}

    def stop_load(self, load: dict, *, post: float | None = None) -> list[dict]:
        time.sleep(self.cfg["post"] if post is None else post)
        proc = load["proc"]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError("the load generator did not stop") from None
        self._loads.remove(proc)
        if proc.returncode != 0:
            raise BenchError(f"the load generator exited {proc.returncode}")
        return read_samples(load["path"])

    def probe_load(self, name: str, *, rate: float, seconds: float, **load) -> dict:
        """The load generator alone for `seconds` at `rate` (0 = unpaced: as fast as the clients get answers);
        its summary (stats.summarise) and the same split by path. `load`: start_load's other options."""
        samples = self.stop_load(self.start_load(name, rate=rate, warmup=seconds, **load), post=0.0)
        return {**stats.summarise(samples), "by_path": stats.latency_split(samples)["by_path"]}

    def capacity(self, name: str, target: tuple[int, str] | None = None) -> dict:
        """Unpaced load for a few seconds: the site's capacity through Caddy on this machine.

        Unless --rate was given, the measured runs then target 80% of it (capped at the
        configured rate), so the load is steady rather than a saturated queue.
        """
        c = self.cfg
        summary = self.probe_load(name, target=target, rate=0.0, seconds=2.0 if self.quick else 5.0)
        capacity = summary["rate_per_s"] or 0.0
        rate = c["rate"] if self.args.rate is not None else round(min(c["rate"], 0.8 * capacity), 1)
        if summary["failed"]:
            raise BenchError(f"the site failed {summary['failed']} requests before any deploy: {summary['errors']}")
        self.log(
            f"capacity through Caddy ~{capacity} req/s (p50 {summary['p50_ms']} ms); load target {max(rate, 1.0)} req/s"
        )
        return {
            "capacity_per_s": capacity,
            "failed": summary["failed"],
            "p50_ms": summary["p50_ms"],
            "profile_rate": c["rate"],
            "rate_used": rate,
            "rate_from": "--rate" if self.args.rate is not None else "min(profile rate, 80% of capacity)",
        }

    def calibrate(self) -> None:
        self.results["calibration"] = self.capacity("calibration")
        self.cfg["rate"] = max(self.results["calibration"]["rate_used"], 1.0)

    def sustained_rate(self, name: str, **load) -> dict:
        """Figure 10's rate: the highest rate the site sustains under `load` (start_load's options). First the
        clients unpaced (each sends its next request when the last is answered): their achieved rate is the
        most the site gives them. Then paced runs from 90% of that, 10% lower each time, until one achieves
        LATENCY_SUSTAINED of what it offered with no failure: that rate is used for the whole figure."""
        seconds = float(self.cfg["latency_probe"])
        top = self.probe_load(f"{name}-unpaced", rate=0.0, seconds=seconds, **load)
        if top["failed"] or not top["rate_per_s"]:
            raise BenchError(
                f"the site failed {top['failed']} of {top['sent']} requests before any upgrade: {top['errors']}"
            )
        keys = ("sent", "failed", "p50_ms", "p99_ms", "rate_per_s", "errors")
        record = {
            "probe_seconds": seconds,
            "unpaced": {k: top[k] for k in keys},
            "tries": [],
            "first_share": 0.9,
            "step": 0.9,
            "sustained_share": LATENCY_SUSTAINED,
        }
        offered = round(0.9 * top["rate_per_s"], 1)
        for attempt in range(5):
            got = self.probe_load(f"{name}-{attempt}", rate=offered, seconds=seconds, **load)
            sustained = not got["failed"] and (got["rate_per_s"] or 0) >= LATENCY_SUSTAINED * offered
            record["tries"].append({"offered_per_s": offered, "sustained": sustained, **{k: got[k] for k in keys}})
            self.log(
                f"latency: {offered} req/s offered -> {got['rate_per_s']} achieved, {got['failed']} failed, "
                f"p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms{'' if sustained else ': not sustained'}"
            )
            if sustained:
                record.update(rate_used=offered, share_of_unpaced=round(offered / top["rate_per_s"], 3))
                return record
            offered = round(offered * 0.9, 1)
        raise BenchError(f"the site sustained none of the rates tried: {record['tries']}")

    # ------------------------------------------------------------------ figures
    def step_seconds(self, document: dict) -> dict:
        return {s["name"]: s["seconds"] for s in (document or {}).get("steps", [])}

    def step_start(self, result: dict, name: str) -> float | None:
        for at, line in result["lines"]:
            if line.strip().startswith(f"-> {name}:"):
                return at
        return None

    @staticmethod
    def usage_mib(usage: str) -> float | None:
        """MiB from docker stats' MemUsage ("104.4MiB / 23.5GiB": the first figure)."""
        m = re.match(r"([\d.]+)\s*([kKMG]i?B|B)", usage.strip())
        if not m:
            return None
        factor = {
            "B": 1 / 1024 / 1024,
            "KiB": 1 / 1024,
            "MiB": 1,
            "GiB": 1024,
            "kB": 1 / 1024,
            "MB": 1,
            "GB": 1024,
        }.get(m.group(2), 1)
        return round(float(m.group(1)) * factor, 1)

    def memory(self, container: str) -> dict:
        fmt = "{{.MemUsage}}"
        usage = self.docker("stats", "--no-stream", "--format", fmt, container, check=False).stdout.strip()
        top = [
            line.split()
            for line in self.docker("top", container, "-eo", "pid,rss", check=False).stdout.splitlines()[1:]
        ]
        top = [row for row in top if len(row) == 2 and row[1].isdigit()]
        rss_kb = sum(int(row[1]) for row in top)
        return {
            "container": container,
            "docker_stats": usage,
            "stats_mib": self.usage_mib(usage),
            "rss_sum_mib": round(rss_kb / 1024, 1) if top else None,
            "processes": len(top),
        }

    def measured_upgrade(
        self,
        name: str,
        slug: str = SLUG,
        *,
        root: Path | None = None,
        target: tuple[int, str] | None = None,
        rate: float | None = None,
        **load_options,
    ) -> tuple[dict, list, dict]:
        """`sumbg upgrade SLUG v1.1.0 --watch 0 --yes --json` under the load generator (aimed at `target`;
        `load_options`: start_load's others): the run's figures (requests, failures, latency, the switch
        window), the samples, sumbg's result."""
        load = self.start_load(name, target=target, rate=rate, **load_options)
        result = self.sumbg_cmd("upgrade", slug, NEW, "--watch", "0", "--yes", "--json", root=root)
        samples = self.stop_load(load)
        if result["rc"] != 0:
            raise BenchError(f"upgrade ({name}) failed: {json.dumps(result['json'])[:1500]}")
        doc = result["json"]
        steps = self.step_seconds(doc)
        w0 = self.step_start(result, "switch")
        if w0 is None or "switch" not in steps:
            raise BenchError("the upgrade's progress shows no switch step")
        w1 = w0 + steps["switch"]
        result["window"] = (w0, w1)
        window = stats.in_window(samples, w0, w1)
        # Only /health/ says which release answered.
        conv = stats.converged([s for s in samples if s["path"] == "/health/"], NEW, result["start"])
        run = {
            **stats.summarise(samples),
            "window_seconds": round(w1 - w0, 3),
            "window_sent": len(window),
            "window_failed": sum(1 for s in window if not s["ok"]),
            "window_p50_ms": stats.summarise(window)["p50_ms"] if window else None,
            "window_p99_ms": stats.summarise(window)["p99_ms"] if window else None,
            "flip_seconds": doc.get("flip_seconds"),
            "upgrade_seconds": doc.get("seconds"),
            "wall_seconds": round(result["end"] - result["start"], 3),
            "steps": steps,
            "all_new_after_start_s": round(conv["at"] - result["start"], 3) if conv["at"] else None,
            "samples": str(load["path"]),
        }
        return run, samples, result

    def upgrade_under_load(self, rep: int) -> None:
        run, samples, result = self.measured_upgrade(f"upgrade-{rep}")
        run = {"rep": rep, **run}
        doc = result["json"]
        self.results.setdefault("upgrade", {"runs": []})["runs"].append(run)
        self.timelines.setdefault("upgrade", []).append(
            {
                "samples": samples,
                "origin": result["start"],
                "window": result["window"],
                "end": result["end"],
                "failed": run["failed"],
            }
        )
        self.log(
            f"upgrade rep {rep}: {run['sent']} requests, {run['failed']} failed, p99 {run['p99_ms']} ms, "
            f"switch window {run['window_seconds']}s ({run['window_sent']} requests, "
            f"{run['window_failed']} failed), flip {run['flip_seconds']}s"
        )
        # Figure 6: the idle colour kept for rollback, right after the upgrade.
        idle, live = doc.get("from_colour"), doc.get("to_colour")
        mem = {"rep": rep, "idle": self.memory(f"{PREFIX}-{idle}-web"), "live": self.memory(f"{PREFIX}-{live}-web")}
        self.results.setdefault("memory", {"runs": []})["runs"].append(mem)

    def rollback_under_load(self, rep: int) -> None:
        load = self.start_load(f"rollback-{rep}")
        result = self.sumbg_cmd("rollback", SLUG, "--json")
        samples = self.stop_load(load)
        if result["rc"] != 0:
            raise BenchError(f"rollback (rep {rep}) failed: {json.dumps(result['json'])[:1500]}")
        doc = result["json"]
        conv = stats.converged(samples, OLD, result["start"])
        run = {
            "rep": rep,
            **stats.summarise(samples),
            "flip_seconds": doc.get("flip_seconds"),
            "rollback_seconds": doc.get("seconds"),
            "wall_seconds": round(result["end"] - result["start"], 3),
            "all_old_after_start_s": round(conv["at"] - result["start"], 3) if conv["at"] else None,
            "last_new_after_start_s": (round(conv["last_other"] - result["start"], 3) if conv["last_other"] else None),
            "steps": self.step_seconds(doc),
            "samples": str(load["path"]),
        }
        self.results.setdefault("rollback", {"runs": []})["runs"].append(run)
        self.log(
            f"rollback rep {rep}: {run['sent']} requests, {run['failed']} failed, every request on {OLD} "
            f"{run['all_old_after_start_s']}s after the command started (flip {run['flip_seconds']}s, "
            f"command {run['wall_seconds']}s)"
        )

    def build_timing(self, rep: int, kind: str) -> None:
        # Unapply v1.1.0's migration first: that needs the v1.1.0 image, which is removed next.
        self.reset_db(self.state()["live"])
        if kind == "cold":
            self.ca_nonce(f"cold-{rep}")
            self.docker("rmi", "-f", self.image(NEW), check=False)
        else:
            # Untag only: the layers stay in the builder cache (and the idle colour keeps its image).
            self.docker("rmi", "-f", "--no-prune", self.image(NEW), check=False)
        result = self.sumbg_ok("upgrade", SLUG, NEW, "--watch", "0", "--yes", "--json")
        doc = result["json"]
        steps = self.step_seconds(doc)
        build_info = next((s for s in doc["steps"] if s["name"] == "build"), {})
        if build_info.get("outcome") == "skipped":
            raise BenchError(f"{kind} build rep {rep}: sumbg skipped the build ({build_info.get('reason')})")
        self.results.setdefault("build", {"runs": []})["runs"].append(
            {
                "rep": rep,
                "kind": kind,
                "steps": steps,
                "upgrade_seconds": doc.get("seconds"),
                "wall_seconds": round(result["end"] - result["start"], 3),
            }
        )
        self.log(f"{kind} upgrade rep {rep}: {doc.get('seconds')}s, steps {steps}")
        self.sumbg_ok("rollback", SLUG, "--json")

    def runbook_route(self) -> None:
        """The golden path's Caddy proxies to its one app server and fails a request the server
        cannot take; sumbg's live route retries dial errors (on the other colour) for 2 s. The
        runbook baseline gets the golden path's route, so it is measured as the runbook is."""
        path = self.root / "caddy" / "sites" / f"{SLUG}.caddy"
        text = path.read_text()
        plain = re.sub(
            r"reverse_proxy (\S+/live\}-web:8000) \S+ \{\n(?:\t\t\t[^\n]*\n)+\t\t\}", r"reverse_proxy \1", text
        )
        if plain == text:
            raise BenchError(f"cannot find sumbg's live route in {path}")
        self.sumbg_route = text
        path.write_text(plain)
        self.docker(
            "exec", f"{EDGE}-caddy", "caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"
        )
        self.log("baseline: the site's Caddy route is now the golden path's plain reverse_proxy")

    def restore_route(self) -> None:
        """Put back the Caddy file sumbg wrote (runbook_route replaced its live route): an upgrade's
        rehearsal refuses to run on a site file that differs from sumbg's own."""
        if self.sumbg_route is None:
            return
        path = self.root / "caddy" / "sites" / f"{SLUG}.caddy"
        path.write_text(self.sumbg_route)
        self.docker(
            "exec", f"{EDGE}-caddy", "caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"
        )
        self.sumbg_route = None
        self.log("the site's Caddy route is sumbg's own again")

    def recreate_web(self, colour: str, ref: str, times: dict) -> tuple[float, float]:
        """The runbook's restart: collectstatic, then `up -d --force-recreate web` with REF's image.
        Records both durations in `times`; returns when `up` started and ended."""
        t = time.time()
        self.manage(colour, self.image(ref), "collectstatic", "--noinput", "--clear")
        times["collectstatic"] = round(time.time() - t, 3)
        up0 = time.time()
        self.compose(colour, "up", "-d", "--force-recreate", "--no-deps", "web", image=self.image(ref))
        up1 = time.time()
        times["up_force_recreate"] = round(up1 - up0, 3)
        return up0, up1

    def baseline_restart(self, rep: int) -> None:
        colour = self.state()["live"]
        self.reset_db(colour)
        current = self.docker("inspect", "--format", "{{.Config.Image}}", f"{PREFIX}-{colour}-web").stdout.strip()
        if current != self.image(OLD):
            self.recreate_web(colour, OLD, {})
        self.wait_serving(OLD)
        load = self.start_load(f"baseline-{rep}")
        t0 = time.time()
        times = {}
        try:
            self.manage(colour, self.image(NEW), "migrate", "--noinput")
            times["migrate"] = round(time.time() - t0, 3)
            up0, up1 = self.recreate_web(colour, NEW, times)
            serving = self.wait_serving(NEW)
            times["until_serving_new"] = round(serving - up1, 3)
            t_end = time.time()
        finally:
            samples = self.stop_load(load)
        first_new = stats.first_ok(samples, NEW, up0) or serving
        w0, w1 = up0, max(up1, first_new)
        window = stats.in_window(samples, w0, w1)
        conv = stats.converged(samples, NEW, t0)
        run = {
            "rep": rep,
            **stats.summarise(samples),
            "window_seconds": round(w1 - w0, 3),
            "window_sent": len(window),
            "window_failed": sum(1 for s in window if not s["ok"]),
            "window_p50_ms": stats.summarise(window)["p50_ms"] if window else None,
            "window_p99_ms": stats.summarise(window)["p99_ms"] if window else None,
            "deploy_seconds": round(t_end - t0, 3),
            "steps": times,
            "all_new_after_start_s": round(conv["at"] - t0, 3) if conv["at"] else None,
            "samples": str(load["path"]),
        }
        self.results.setdefault("baseline", {"runs": []})["runs"].append(run)
        self.timelines.setdefault("baseline", []).append(
            {"samples": samples, "origin": t0, "window": (w0, w1), "end": t_end, "failed": run["failed"]}
        )
        self.log(
            f"baseline rep {rep}: {run['sent']} requests, {run['failed']} failed, p99 {run['p99_ms']} ms, "
            f"restart window {run['window_seconds']}s ({run['window_sent']} requests, "
            f"{run['window_failed']} failed)"
        )
        self.baseline_rollback(rep, colour)

    def baseline_rollback(self, rep: int, colour: str) -> None:
        """The runbook's way back: collectstatic and `up -d --force-recreate web` with the old image."""
        load = self.start_load(f"baseline-rollback-{rep}")
        t0 = time.time()
        times = {}
        try:
            up0, up1 = self.recreate_web(colour, OLD, times)
            serving = self.wait_serving(OLD)
            times["until_serving_old"] = round(serving - up1, 3)
            t_end = time.time()
        finally:
            samples = self.stop_load(load)
        conv = stats.converged(samples, OLD, t0)
        run = {
            "rep": rep,
            **stats.summarise(samples),
            "wall_seconds": round(t_end - t0, 3),
            "steps": times,
            "restart_seconds": round(max(up1, stats.first_ok(samples, OLD, up0) or serving) - up0, 3),
            "all_old_after_start_s": round(conv["at"] - t0, 3) if conv["at"] else None,
            "last_new_after_start_s": round(conv["last_other"] - t0, 3) if conv["last_other"] else None,
            "samples": str(load["path"]),
        }
        self.results.setdefault("baseline_rollback", {"runs": []})["runs"].append(run)
        self.log(
            f"baseline rollback rep {rep}: {run['sent']} requests, {run['failed']} failed, every request on "
            f"{OLD} {run['all_old_after_start_s']}s after the start"
        )

    def psql(self, sql: str) -> str:
        return self.docker("exec", PG, "psql", "-U", DB, "-d", DB, "-Atc", sql).stdout.strip()

    @staticmethod
    def reported_verify(doc: dict) -> float | None:
        """Seconds of verification if sumbg's record splits them out (a step, or a *verify*_seconds field)."""
        total = 0.0
        for step in doc.get("steps") or []:
            if "verif" in step.get("name", ""):
                total += step.get("seconds") or 0
            for key, value in step.items():
                if "verif" in key and key.endswith("seconds") and isinstance(value, (int, float)):
                    total += value
        return round(total, 3) or None

    def raw_dump(self, name: str) -> None:
        """The runbook's backup: a bare `pg_dump -Fc` of the site's database into its backups folder
        (as this user, so the bench can read and remove the file)."""
        user = f"{os.getuid()}:{os.getgid()}"
        self.docker(
            "exec", "-u", user, PG, "pg_dump", "--format=custom", "--no-password", "-U", DB, "-d", DB,
            "-f", f"/backups/{name}", timeout=3600,
        )  # fmt: skip

    def backup_cost(self) -> None:
        if self.run([self.sumbg, "backup", "--help"], env=self.env(), check=False).returncode != 0:
            raise BenchError("`sumbg backup` does not exist yet: cannot measure figure 5")
        scale = int(self.cfg["pg_scale"])
        t = time.time()
        self.docker("exec", PG, "pgbench", "-i", "-q", "-s", str(scale), "-U", DB, DB, timeout=3600)
        generate = round(time.time() - t, 1)
        db_bytes = int(self.psql("select pg_database_size(current_database())"))
        self.log(f"pgbench -i -s {scale}: {db_bytes / 1e6:.0f} MB in {generate}s")
        backups = self.root / SLUG / "backups"
        user = f"{os.getuid()}:{os.getgid()}"
        runs = []
        for rep in range(self.cfg["backup_reps"]):
            order = ("raw", "sumbg") if rep % 2 == 0 else ("sumbg", "raw")
            run: dict = {"rep": rep}
            for which in order:
                before = set(backups.iterdir())
                if which == "raw":
                    t = time.time()
                    self.raw_dump(".bench-raw.dump")
                    run["raw_dump_s"] = round(time.time() - t, 3)
                    raw = backups / ".bench-raw.dump"
                    run["raw_bytes"] = raw.stat().st_size
                    t = time.time()
                    self.docker(
                        "exec", "-u", user, PG, "pg_restore", "--list", "/backups/.bench-raw.dump", timeout=3600
                    )
                    run["raw_list_s"] = round(time.time() - t, 3)
                    t = time.time()
                    digest = hashlib.sha256()
                    with raw.open("rb") as handle:
                        for chunk in iter(lambda: handle.read(1 << 20), b""):
                            digest.update(chunk)
                    run["raw_sha256_s"] = round(time.time() - t, 3)
                    raw.unlink()
                else:
                    result = self.sumbg_ok("backup", SLUG, "--json", timeout=3600)
                    doc = result["json"] or {}
                    run["sumbg_s"] = round(result["end"] - result["start"], 3)
                    run["sumbg_reported_s"] = doc.get("seconds")
                    run["sumbg_steps"] = self.step_seconds(doc)
                    run["sumbg_doc"] = doc
                    made = [p for p in set(backups.iterdir()) - before if p.suffix == ".dump"]
                    run["sumbg_bytes"] = sum(p.stat().st_size for p in made)
                    for path in set(backups.iterdir()) - before:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            verify = self.reported_verify(run.pop("sumbg_doc"))
            if verify:
                run["verify_s"], run["verify_source"] = verify, "as reported by `sumbg backup --json`"
            else:
                run["verify_s"], run["verify_source"] = (
                    round(run["raw_list_s"] + run["raw_sha256_s"], 3),
                    "pg_restore --list + sha256 of the raw dump, timed apart",
                )
            run["ratio"] = round(run["sumbg_s"] / run["raw_dump_s"], 3) if run["raw_dump_s"] else None
            run["verify_share"] = round(run["verify_s"] / run["sumbg_s"], 3) if run["sumbg_s"] else None
            runs.append(run)
            self.log(
                f"backup rep {rep}: sumbg {run['sumbg_s']}s vs pg_dump {run['raw_dump_s']}s "
                f"(x{run['ratio']}), verify {run['verify_s']}s"
            )
        self.results["backup"] = {
            "pgbench_scale": scale,
            "db_bytes": db_bytes,
            "generate_seconds": generate,
            "runs": runs,
        }

    # ------------------------------------------------------------------ 11: complete backups, offsite
    def generate_database(self) -> dict:
        """The site's database filled by pgbench (figure 5 does it in a full run; --only offsite here)."""
        if "backup" in self.results:
            return {k: self.results["backup"][k] for k in ("pgbench_scale", "db_bytes", "generate_seconds")}
        scale = int(self.cfg["pg_scale"])
        t = time.time()
        self.docker("exec", PG, "pgbench", "-i", "-q", "-s", str(scale), "-U", DB, DB, timeout=3600)
        return {
            "pgbench_scale": scale,
            "db_bytes": int(self.psql("select pg_database_size(current_database())")),
            "generate_seconds": round(time.time() - t, 1),
        }

    def generate_media(self, media: Path, megabytes: int) -> dict:
        """Media as a Wagtail site holds them: files of 1-8 MiB of random bytes (photos and PDFs do not
        compress), in the folders Wagtail uses."""
        t = time.time()
        total, index, sizes = 0, 0, (1, 2, 4, 8, 3, 6)
        while total < megabytes * 2**20:
            size = min(sizes[index % len(sizes)] * 2**20, megabytes * 2**20 - total)
            folder = media / ("original_images" if index % 3 else "documents") / f"{index // 50:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"file-{index:05d}.bin").open("wb") as handle:
                left = size
                while left:
                    chunk = min(left, 2**22)
                    handle.write(os.urandom(chunk))
                    left -= chunk
            total, index = total + size, index + 1
        return {"media_files": index, "media_bytes": total, "media_generate_seconds": round(time.time() - t, 1)}

    def offsite_cost(self) -> None:
        """Figure 11: `sumbg backup` of the database and media into a restic repository on this host, a
        first run (empty repository) and a second (nothing changed: restic's dedup), against what a
        script does each time: `pg_dump -Fc` + `tar` of the media, written whole every run."""
        if self.run([self.sumbg, "backup", "--help"], env=self.env(), check=False).returncode != 0:
            raise BenchError("`sumbg backup` does not exist: cannot measure figure 11")
        data = self.generate_database()
        media = self.root / "www" / SLUG / "media"
        data.update(self.generate_media(media, int(self.cfg["media_mb"])))
        self.log(
            f"offsite: database {data['db_bytes'] / 1e6:.0f} MB, media {data['media_files']} files "
            f"{data['media_bytes'] / 1e6:.0f} MB"
        )
        backups = self.root / SLUG / "backups"
        password = self.root / "restic-password"
        password.write_text(hashlib.sha256(os.urandom(32)).hexdigest() + "\n")
        os.chmod(password, 0o600)
        repository = self.root / "restic-repo"
        with (self.root / "sumbg.toml").open("a") as handle:
            handle.write(f'\n[backup]\nrepository = "{repository}"\npassword_file = "{password}"\n')
        runs = []
        for rep in range(self.cfg["backup_reps"]):
            shutil.rmtree(repository, ignore_errors=True)  # each repetition's first run starts empty
            run: dict = {"rep": rep}
            for which in ("first", "second"):
                before = set(backups.iterdir())
                result = self.sumbg_ok("backup", SLUG, "--json", timeout=7200)
                doc = result["json"] or {}
                steps = {step["name"]: step for step in doc.get("steps") or []}
                upload = steps.get("upload") or {}
                run[f"sumbg_{which}_s"] = round(result["end"] - result["start"], 3)
                run[f"sumbg_{which}_steps"] = self.step_seconds(doc)
                run[f"sumbg_{which}_data_added"] = upload.get("data_added")
                run[f"sumbg_{which}_files_new"] = upload.get("files_new")
                run[f"repo_{which}_bytes"] = int(self.run(["du", "-sb", str(repository)]).stdout.split()[0])
                run[f"sumbg_{which}_local_bytes"] = sum(
                    p.stat().st_size for p in set(backups.iterdir()) - before if p.suffix == ".dump"
                )
            # The script: a full dump and a full tarball, each run (a second run writes it all again).
            for which in ("first", "second"):
                t = time.time()
                self.raw_dump(f".bench-raw-{which}.dump")
                dumped = time.time()
                tarball = self.root / f"bench-media-{which}.tar"
                self.run(["tar", "-cf", str(tarball), "-C", str(media), "."], timeout=3600)
                run[f"raw_{which}_s"] = round(time.time() - t, 3)
                run[f"raw_{which}_dump_s"] = round(dumped - t, 3)
                run[f"raw_{which}_bytes"] = (
                    backups / f".bench-raw-{which}.dump"
                ).stat().st_size + tarball.stat().st_size
            for which in ("first", "second"):
                (backups / f".bench-raw-{which}.dump").unlink()
                (self.root / f"bench-media-{which}.tar").unlink()
            run["ratio_first"] = round(run["sumbg_first_s"] / run["raw_first_s"], 3)
            run["ratio_second"] = round(run["sumbg_second_s"] / run["raw_second_s"], 3)
            runs.append(run)
            self.log(
                f"offsite rep {rep}: sumbg {run['sumbg_first_s']}s then {run['sumbg_second_s']}s (added "
                f"{run['sumbg_first_data_added']} then {run['sumbg_second_data_added']} B; repository "
                f"{run['repo_second_bytes']} B) vs pg_dump+tar {run['raw_first_s']}s, {run['raw_second_s']}s "
                f"({run['raw_first_bytes']} B each)"
            )
        self.results["offsite"] = {**data, "runs": runs}

    def rehearsal_upgrade(self, rehearse: bool, timeout: float) -> dict:
        """One upgrade OLD -> NEW without load, with or without the rehearsal, then a rollback.
        NEW's migrations are unapplied first (reset_db), so both migrate the same way."""
        self.reset_db(self.state()["live"])
        args = ["upgrade", SLUG, NEW, "--watch", "0", "--yes", "--json", *(() if rehearse else ("--no-rehearsal",))]
        result = self.sumbg_cmd(*args, timeout=timeout)
        doc = result["json"] or {}
        if result["rc"] != 0:
            tail = "\n".join(line for _, line in result["lines"][-10:])
            raise BenchError(
                f"sumbg {' '.join(args)} exited {result['rc']} (failed step "
                f"{doc.get('failed_step')!r}: {json.dumps(doc.get('error'))[:1200]}):\n{tail}"
            )
        step = next((s for s in doc.get("steps") or [] if s.get("name") == "rehearsal"), None)
        if step is None:
            raise BenchError("the upgrade's --json record has no `rehearsal` step")
        if rehearse and step.get("outcome") != "ok":
            raise BenchError(f"the rehearsal did not run ({step.get('outcome')}: {step.get('reason')})")
        if not rehearse and step.get("outcome") != "skipped":
            raise BenchError(f"--no-rehearsal, yet the rehearsal step's outcome is {step.get('outcome')!r}")
        self.sumbg_ok("rollback", SLUG, "--json", timeout=timeout)
        return {
            "doc": doc,
            "step": step,
            "steps": self.step_seconds(doc),
            "wall_s": round(result["end"] - result["start"], 3),
        }

    def rehearsal_cost(self, label: str) -> None:
        """The rehearsal's cost on the database as it is now: the same upgrade with and without it."""
        timeout = 3600.0
        self.reset_db(self.state()["live"])
        db_bytes = int(self.psql("select pg_database_size(current_database())"))
        runs = []
        for rep in range(self.cfg["rehearsal_reps"]):
            run: dict = {"rep": rep}
            for rehearse in (True, False) if rep % 2 == 0 else (False, True):
                done = self.rehearsal_upgrade(rehearse, timeout)
                arm = "with" if rehearse else "without"
                run[f"{arm}_s"] = done["doc"].get("seconds")
                run[f"{arm}_wall_s"] = done["wall_s"]
                run[f"{arm}_steps"] = done["steps"]
                if rehearse:
                    step = done["step"]
                    run.update(
                        {
                            "rehearsal_s": step.get("seconds"),
                            "restore_s": step.get("restore_seconds"),
                            "start_s": step.get("start_seconds"),
                            "migrate_s": step.get("migrate_seconds"),
                            "after_switch_s": step.get("after_switch_seconds"),
                            "database_mb": step.get("database_mb"),
                            "applied": step.get("applied"),
                            "verdict": (step.get("compatibility") or {}).get("verdict"),
                            "policy": step.get("policy"),
                        }
                    )
                else:
                    run["skipped_reason"] = done["step"].get("reason")
            if isinstance(run.get("with_s"), (int, float)) and isinstance(run.get("without_s"), (int, float)):
                run["added_s"] = round(run["with_s"] - run["without_s"], 3)
                run["added_share"] = round(run["added_s"] / run["without_s"], 3) if run["without_s"] else None
            parts = [run.get(k) for k in ("restore_s", "start_s", "migrate_s", "after_switch_s")]
            if isinstance(run.get("rehearsal_s"), (int, float)):
                run["other_s"] = round(run["rehearsal_s"] - sum(x for x in parts if isinstance(x, (int, float))), 3)
            runs.append(run)
            self.log(
                f"rehearsal ({label}) rep {rep}: upgrade {run.get('with_s')}s with vs {run.get('without_s')}s "
                f"without; rehearsal {run.get('rehearsal_s')}s (restore {run.get('restore_s')}s, migrate "
                f"{run.get('migrate_s')}s) on {run.get('database_mb')} MB, verdict {run.get('verdict')}"
            )
        record = {"db_bytes": db_bytes, "runs": runs}
        if label == "generated":
            record["pgbench_scale"] = (self.results.get("backup") or {}).get("pgbench_scale", self.cfg["pg_scale"])
        self.results.setdefault("rehearsal", {})[label] = record

    def rehearsal_generated(self) -> None:
        if "backup" not in self.results:
            raise BenchError("the backup figure did not generate its database: nothing to rehearse on")
        self.restore_route()
        self.rehearsal_cost("generated")

    # ------------------------------------------------------------------ 8: adopting a runbook host
    def cleanup_adoption(self) -> None:
        self.remove_ours(
            lambda n: (
                n.startswith(f"sum-{ADOPT_SLUG}-")
                or n == f"{ADOPT_EDGE}-caddy"
                or n.startswith(f"sumbg-golden-{ADOPT_SLUG}-")
            ),
            volumes=(
                f"sum-{ADOPT_SLUG}-data-pgdata",
                f"sum-{ADOPT_SLUG}-data-redisdata",
                f"{ADOPT_EDGE}-caddy-data",
                f"{ADOPT_EDGE}-caddy-config",
            ),
            networks=(f"sum-{ADOPT_SLUG}", ADOPT_EDGE),
        )

    def adoption(self, rep: int) -> None:
        """`sumbg adopt` of a simulated runbook host (tests/golden_host.py) under a visitor that reads on a
        kept-alive connection and sends the contact form every fourth request, then `sumbg takeover`."""
        sys.path.insert(0, str(REPO))
        from sumbg.adapters.probe import served_certificate
        from tests.golden_host import Visitor, start_golden_host

        self.cleanup_adoption()
        base = Path(tempfile.mkdtemp(prefix="sumbg-bench-golden-"))
        root = base / "sumbg-root"
        root.mkdir()
        self.write_host_config(root, ADOPT_EDGE)
        golden = start_golden_host(
            base / "host", self.repo, slug=ADOPT_SLUG, domain=f"{ADOPT_SLUG}.example.test", celery=True
        )
        try:
            for n in range(3):
                golden.post_lead(f"before {n}")
            golden.make_media(20)
            env = {**golden.path_env(), "SUMBG_ROOT": str(root)}

            def measured(*argv: str) -> tuple[dict, Visitor]:
                visitor = Visitor(golden)
                visitor.start()
                time.sleep(self.cfg["warmup"])
                proc = self.run([self.sumbg, *argv, "--json"], env=env, timeout=900)
                time.sleep(self.cfg["post"])
                visitor.stop()
                return json.loads(proc.stdout), visitor

            def counts(visitor: Visitor) -> dict:
                statuses = [s[2] for s in visitor.samples]
                return {
                    "sent": len(statuses),
                    "answered_503": statuses.count(503),
                    "refused": statuses.count(0),
                    "failed_other": sum(1 for st in statuses if st and not (200 <= st < 400 or st == 503)),
                }

            adopted, visitor = measured(
                "adopt",
                ADOPT_SLUG,
                "--from",
                str(golden.site_dir),
                "--systemd-dir",
                str(golden.systemd_dir),
                "--caddy-dir",
                str(golden.caddy_dir),
            )
            stored = set(
                self.run(
                    [
                        "docker",
                        "exec",
                        f"sum-{ADOPT_SLUG}-data-postgres",
                        "psql",
                        "-X",
                        "-At",
                        "-U",
                        ADOPT_SLUG.replace("-", "_"),
                        "-d",
                        ADOPT_SLUG.replace("-", "_"),
                        "-c",
                        "SELECT name FROM sum_core_lead",
                    ]
                ).stdout.split("\n")
            )
            steps = {step["name"]: step["seconds"] for step in adopted["steps"]}
            record = {
                "rep": rep,
                "window_s": adopted["cutover_window_seconds"],
                **counts(visitor),
                "writes_acknowledged": len(visitor.acknowledged),
                "writes_lost": len(set(visitor.acknowledged) - stored),
                "adopt_s": adopted["seconds"],
                "stop_old_s": steps.get("stop-old"),
                "final_import_s": steps.get("final-import"),
            }
            before = served_certificate("127.0.0.1", golden.https_port, golden.domain)
            took, visitor = measured(
                "takeover", "--caddy-dir", str(golden.caddy_dir), "--caddy-data", str(golden.caddy_data_dir)
            )
            takeover = counts(visitor)
            record.update(
                {
                    "takeover_window_s": took["takeover_window_seconds"],
                    "takeover_sent": takeover["sent"],
                    "takeover_refused": takeover["refused"],
                    "takeover_failed_other": takeover["failed_other"] + takeover["answered_503"],
                    "certificate_kept": before is not None
                    and before == served_certificate("127.0.0.1", golden.https_port, golden.domain),
                }
            )
            self.results.setdefault("adoption", {"runs": []})["runs"].append(record)
            self.log(f"adoption rep {rep}: {record}")
        finally:
            golden.stop()
            self.cleanup_adoption()
            shutil.rmtree(base, ignore_errors=True)

    # ------------------------------------------------------------------ 9: density
    @staticmethod
    def mem_available_mib() -> float:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return round(int(line.split()[1]) / 1024, 1)
        raise BenchError("/proc/meminfo has no MemAvailable")

    @staticmethod
    def host_cpu_cores(seconds: float) -> float:
        """How many cores the whole host kept busy over `seconds` (from /proc/stat): what containers
        cost including dockerd, containerd and runc, which `docker stats` does not count."""

        def busy() -> tuple[int, int]:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:9]]
            idle = fields[3] + fields[4]
            return sum(fields) - idle, sum(fields)

        b0, t0 = busy()
        time.sleep(seconds)
        b1, t1 = busy()
        return round((b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1), 3)

    def container_stats(self, names: list[str]) -> dict[str, dict]:
        """One `docker stats --no-stream` for all `names`: {name: {"mib": memory, "cpu_percent": CPU}}."""
        out = self.docker(
            "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}", *names, timeout=300
        ).stdout
        found = {}
        for line in out.splitlines():
            name, usage, cpu = (line.split("\t") + ["", ""])[:3]
            try:
                percent = float(cpu.strip().rstrip("%"))
            except ValueError:
                percent = None
            found[name.strip()] = {"mib": self.usage_mib(usage), "cpu_percent": percent}
        missing = [n for n in names if found.get(n, {}).get("mib") is None]
        if missing:
            raise BenchError(f"docker stats gave no memory figure for {missing}")
        return found

    def density_snapshot(self, root: Path, slugs: list[str]) -> dict:
        """Memory and CPU of each site's running containers (data stack, each colour) and of the edge, in one
        docker stats call. `live_only_mib` = data stack + the live colour (from the site's state.json)."""
        running = self.docker("ps", "--format", "{{.Names}}").stdout.split()
        per_site = {slug: sorted(n for n in running if n.startswith(f"sum-{slug}-")) for slug in slugs}
        edge = f"{DENSITY_EDGE}-caddy"
        found = self.container_stats([n for names in per_site.values() for n in names] + [edge])
        sites = {}
        for slug, names in per_site.items():
            live = json.loads((root / slug / "state.json").read_text())["live"]
            mib = {n[len(f"sum-{slug}-") :]: found[n]["mib"] for n in names}  # data-postgres, blue-web, ...

            def total(prefix: str, mib: dict = mib) -> float:
                return round(sum(v for k, v in mib.items() if k.startswith(prefix)), 1)

            colours = {c: total(f"{c}-") for c in ("blue", "green") if any(k.startswith(f"{c}-") for k in mib)}
            if live not in colours or not {"data-postgres", "data-redis"} <= set(mib):
                raise BenchError(f"{slug}: expected its data stack and live colour {live} running, found {names}")
            sites[slug] = {
                "live": live,
                "containers_mib": mib,
                "data_mib": total("data-"),
                "colours_mib": colours,
                "live_only_mib": round(total("data-") + colours[live], 1),
                "all_colours_mib": round(total("data-") + sum(colours.values()), 1),
                "cpu_percent": round(sum(found[n]["cpu_percent"] or 0 for n in names), 2),
            }
        return {
            "sites": sites,
            "containers": sum(len(names) for names in per_site.values()),
            "edge_mib": found[edge]["mib"],
            "edge_cpu_percent": found[edge]["cpu_percent"],
            "cpu_percent_sites": round(sum(site["cpu_percent"] for site in sites.values()), 2),
        }

    def edge_reload_seconds(self, times: int = 5) -> dict:
        """Median wall time of `caddy reload --force` in the density edge (through `docker exec`), with the
        median of a `caddy version` there beside it: what `docker exec` itself costs."""
        container = f"{DENSITY_EDGE}-caddy"

        def timed(*argv: str) -> float:
            started = time.monotonic()
            self.docker("exec", container, *argv)
            return time.monotonic() - started

        reload = ("caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile", "--force")
        reloads = [timed(*reload) for _ in range(times)]
        execs = [timed("caddy", "version") for _ in range(times)]
        blocks = len(list((self.density_root / "caddy" / "sites").glob("*.caddy"))) if self.density_root else None
        return {
            "n": times,
            "site_blocks": blocks,
            "reload_median_s": round(statistics.median(reloads), 3),
            "exec_median_s": round(statistics.median(execs), 3),
        }

    def density_one_site(self, root: Path, slug: str) -> dict:
        """On the edge with one site: its reload time, and the flip of an upgrade and of a rollback (no load),
        to set beside the same on the edge with N sites; then its idle colour retired (one colour, like the rest)."""
        figures: dict = {"reload": self.edge_reload_seconds()}
        upgraded = self.sumbg_ok("upgrade", slug, NEW, "--watch", "0", "--yes", "--json", root=root)
        figures["upgrade"] = {
            "switch_step_s": self.step_seconds(upgraded["json"]).get("switch"),
            "flip_seconds": (upgraded["json"] or {}).get("flip_seconds"),
        }
        back = self.sumbg_ok("rollback", slug, "--json", root=root)
        figures["rollback"] = {
            "flip_seconds": (back["json"] or {}).get("flip_seconds"),
            "instant": (back["json"] or {}).get("instant"),
        }
        self.sumbg_ok("retire", slug, "--force", "--json", root=root)
        self.log(
            f"density: one site on the edge: caddy reload {figures['reload']['reload_median_s']}s, upgrade's switch "
            f"step {figures['upgrade']['switch_step_s']}s, rollback flip {figures['rollback']['flip_seconds']}s"
        )
        return figures

    def density_answering(self, port: int, slugs: list[str]) -> dict:
        """Each site's /health/ through the edge: how many answer 200 with the release they run."""
        failing = {}
        for slug in slugs:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/health/", headers={"Host": f"{slug}.example.test", "X-Forwarded-Proto": "https"})
                response = conn.getresponse()
                body = response.read()
                build = (json.loads(body).get("version") or {}).get("build") if response.status == 200 else None
                if build != OLD:
                    failing[slug] = f"HTTP {response.status}, build {build}"
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failing[slug] = f"{type(exc).__name__}: {exc}"
            finally:
                conn.close()
        return {"asked": len(slugs), "answering": len(slugs) - len(failing), "failing": failing}

    def density_networks(self, root: Path) -> dict:
        """The networks sumbg made for the density root (two per site: its own and its link to the edge) and
        how many networks the edge is on."""
        ours = self.docker("network", "ls", "-q", "--filter", f"label=sumbg.root={root}").stdout.split()
        edge = self.docker(
            "inspect", "--format", "{{len .NetworkSettings.Networks}}", f"{DENSITY_EDGE}-caddy"
        ).stdout.strip()
        record = json.loads((root / "networks.json").read_text())["sites"] if (root / "networks.json").exists() else {}
        return {
            "sumbg_networks": len(ours),
            "edge_networks": int(edge) if edge.isdigit() else None,
            "blocks": len(record),
            "all_networks_on_engine": len(self.docker("network", "ls", "-q").stdout.split()),
        }

    def density(self) -> None:
        """Figure 9: N example sites on one host, under their own root and edge: each site's memory, one of
        them upgraded under load, its memory with both colours, after `retire`, and a rollback to the retired
        colour (timed). Everything it created is removed at the end, even on failure."""
        n = int(self.cfg["density_sites"])
        if n < 1:
            raise BenchError("the density figure needs at least 1 site (--density-sites)")
        slugs = [DENSITY_SLUG.format(i) for i in range(1, n + 1)]
        self.ran_density = True
        root = self.density_root = Path(tempfile.mkdtemp(prefix="sumbg-bench-density-"))
        ports = self.write_host_config(root, DENSITY_EDGE)
        settle = 2.0 if self.quick else 10.0
        record: dict = {
            "sites": n,
            "edge": DENSITY_EDGE,
            "host_gib": DENSITY_HOST_GIB,
            "cores": os.cpu_count(),
            "reserve_gib": DENSITY_RESERVE_GIB,
            "settle_seconds": settle,
            "inits": [],
        }
        self.results["density"] = record  # partial figures survive a failure
        try:
            record["mem_available_before_mib"] = self.mem_available_mib()
            cpu_window = 5.0 if self.quick else 30.0
            record["host_cpu_before_cores"] = self.host_cpu_cores(cpu_window)
            for number, slug in enumerate(slugs, 1):
                available = self.mem_available_mib()
                if available < DENSITY_MIN_AVAILABLE_MIB:
                    record["stopped"] = (
                        f"stopped before {slug}: the host had {available} MiB available "
                        f"(under {DENSITY_MIN_AVAILABLE_MIB} MiB)"
                    )
                    self.log(f"density: {record['stopped']}")
                    break
                result = self.sumbg_ok(
                    "init",
                    slug,
                    "--repo",
                    str(self.repo),
                    "--domain",
                    f"{slug}.example.test",
                    "--ref",
                    OLD,
                    "--json",
                    root=root,
                )
                build = next(
                    (step for step in (result["json"] or {}).get("steps") or [] if step.get("name") == "build"), {}
                )
                init = {
                    "slug": slug,
                    "seconds": round(result["end"] - result["start"], 2),
                    "build_seconds": build.get("seconds"),
                    "build_outcome": build.get("outcome"),
                    "steps": self.step_seconds(result["json"]),
                }
                record["inits"].append(init)
                self.log(
                    f"density: init {slug} {init['seconds']}s (build {init['build_outcome']}, {init['build_seconds']}s)"
                )
                if number == 1:
                    record["one_site"] = self.density_one_site(root, slug)
            slugs = [init["slug"] for init in record["inits"]]
            if not slugs:
                raise BenchError(record.get("stopped") or "no site was brought up")
            if not self.results["machine"].get("caddy"):
                self.results["machine"]["caddy"] = (
                    self.docker("exec", f"{DENSITY_EDGE}-caddy", "caddy", "version", check=False)
                    .stdout.strip()
                    .split(" ")[0]
                )
            time.sleep(settle)
            record["answering"] = self.density_answering(ports["http"], slugs)
            record["networks"] = self.density_networks(root)
            record["reload_all"] = self.edge_reload_seconds()
            self.log(
                f"density: {record['answering']['answering']} of {len(slugs)} sites answer through the edge; "
                f"{record['networks']['sumbg_networks']} networks of the address plan, the edge on "
                f"{record['networks']['edge_networks']}; caddy reload {record['reload_all']['reload_median_s']}s"
            )
            record["all_up"] = self.density_snapshot(root, slugs)
            record["mem_available_after_mib"] = self.mem_available_mib()
            record["host_cpu_all_up_cores"] = self.host_cpu_cores(cpu_window)
            record["host_cpu_window_seconds"] = cpu_window
            live = sorted(site["live_only_mib"] for site in record["all_up"]["sites"].values())
            self.log(
                f"density: {n} sites up; live only {live[0]}..{live[-1]} MiB per site, edge "
                f"{record['all_up']['edge_mib']} MiB, CPU {record['all_up']['cpu_percent_sites']}% at idle; "
                f"MemAvailable {record['mem_available_before_mib']} -> {record['mem_available_after_mib']} MiB"
            )

            slug = record["target"] = slugs[-1]
            target = (ports["http"], f"{slug}.example.test")
            record["calibration"] = self.capacity("density-calibration", target)
            run, _, result = self.measured_upgrade(
                "density-upgrade", slug, root=root, target=target, rate=max(record["calibration"]["rate_used"], 1.0)
            )
            record["upgrade"] = run
            record["idle_colour"] = (result["json"] or {}).get("from_colour")
            self.log(
                f"density: upgrade of {slug}: {run['sent']} requests, {run['failed']} failed, p99 "
                f"{run['p99_ms']} ms, switch window {run['window_seconds']}s"
            )
            record["after_upgrade"] = self.density_snapshot(root, [slug])

            # The automatic path: a soak period of 1 s in sumbg.toml, then what cron runs on a host.
            with (root / "sumbg.toml").open("a") as conf:
                conf.write("\n[upgrade]\nretire_idle_after = 1\n")
            time.sleep(1.5)
            retired = self.sumbg_ok("retire", "--due", "--json", root=root)
            outcomes = {item["site"]: item["outcome"] for item in (retired["json"] or {}).get("sites", [])}
            if outcomes.get(slug) != "retired" or list(outcomes.values()).count("retired") != 1:
                raise BenchError(f"retire --due retired {outcomes}, not just {slug}'s idle colour")
            record["retire"] = {"wall_seconds": round(retired["end"] - retired["start"], 3), "by": "retire --due"}
            record["after_retire"] = self.density_snapshot(root, [slug])

            back = self.sumbg_ok("rollback", slug, "--json", root=root)
            doc = back["json"] or {}
            record["rollback"] = {
                "wall_seconds": round(back["end"] - back["start"], 3),
                "seconds": doc.get("seconds"),
                "instant": doc.get("instant"),
                "flip_seconds": doc.get("flip_seconds"),
                "to_colour": doc.get("to_colour"),
                "steps": self.step_seconds(doc),
            }
            self.log(
                f"density: rollback of {slug} to its retired colour {record['rollback']['to_colour']}: "
                f"{record['rollback']['wall_seconds']}s, instant={record['rollback']['instant']}"
            )
        finally:
            self.log("density: removing its sites, edge, volumes, networks and images")
            self.cleanup_density()
            shutil.rmtree(root, ignore_errors=True)
            self.density_root = None

    # ------------------------------------------------------------------ 10: latency during an upgrade
    def cpu_shares(self, colour: str | None) -> int | None:
        """The CPU weight (Docker cpu-shares) of a colour's web container; Docker's 0 means its default, 1024."""
        if not colour:
            return None
        out = self.docker(
            "inspect", "--format", "{{.HostConfig.CpuShares}}", f"{PREFIX}-{colour}-web", check=False
        ).stdout.strip()
        return (int(out) or 1024) if out.isdigit() else None

    def ensure_new_image(self) -> float | None:
        """Figure 10 times upgrades that find the v1.1.0 image built, as figure 1's do after its first: if it
        does not exist yet (--only latency), one upgrade and rollback without load build it (not measured).
        Returns how long that took, or None."""
        if self.docker("image", "inspect", self.image(NEW), check=False).returncode == 0:
            return None
        t = time.time()  # no v1.1.0 image, so no v1.1.0 migration applied: nothing to unapply first
        self.sumbg_ok("upgrade", SLUG, NEW, "--watch", "0", "--yes", "--json")
        self.sumbg_ok("rollback", SLUG, "--json")
        seconds = round(time.time() - t, 1)
        self.log(f"latency: built {self.image(NEW)} by an upgrade and a rollback first, not measured ({seconds}s)")
        return seconds

    def latency_load(self) -> dict:
        c = self.cfg
        return {"paths": LATENCY_PATHS, "keepalive": c["keepalive"], "fresh": 0}

    def latency_idle(self, rep: int, rate: float, seconds: float) -> dict:
        """Figure 10a: the load alone on the live site for `seconds` (after the configured warm-up)."""
        load = self.start_load(f"latency-{rep}-idle", rate=rate, **self.latency_load())
        t0 = time.time()
        time.sleep(seconds)
        t1 = time.time()
        samples = self.stop_load(load, post=0.0)
        return {
            "seconds": round(t1 - t0, 3),
            **stats.latency_split(stats.in_window(samples, t0, t1)),
            "samples": str(load["path"]),
        }

    def latency_upgrade(self, rep: int, weights: str, rate: float) -> dict:
        """Figure 10b/c: an upgrade under the load, with the background CPU weight on (sumbg.toml as sumbg
        writes it: the default) or off (`[upgrade] background_cpu_shares = 1024` for this upgrade only),
        then a rollback to v1.0.0 (with the default), after unapplying v1.1.0's migration."""
        live = self.state()["live"]
        self.reset_db(live)
        conf = self.root / "sumbg.toml"
        text = conf.read_text()
        if weights == "off":
            if re.search(r"^\[upgrade\]", text, re.M):
                raise BenchError(f"{conf} has an [upgrade] table already: cannot add background_cpu_shares")
            conf.write_text(text + "\n[upgrade]\nbackground_cpu_shares = 1024\n")
        live_shares = self.cpu_shares(live)
        try:
            upgrade, samples, result = self.measured_upgrade(
                f"latency-{rep}-{weights}", rate=rate, **self.latency_load()
            )
        finally:
            conf.write_text(text)
        doc = result["json"] or {}
        (w0, w1), start, end = result["window"], result["start"], result["end"]
        during = stats.in_window(samples, start, end)
        build = next((st for st in doc.get("steps") or [] if st.get("name") == "build"), {})
        record = {
            "weights": weights,
            **stats.latency_split(during),
            "excluding_switch": stats.latency_split(stats.outside_window(during, w0, w1)),
            "window_seconds": upgrade["window_seconds"],
            "window_sent": upgrade["window_sent"],
            "window_failed": upgrade["window_failed"],
            "wall_seconds": upgrade["wall_seconds"],
            "upgrade_seconds": upgrade["upgrade_seconds"],
            "steps": upgrade["steps"],
            "build_outcome": build.get("outcome"),
            "build_reason": build.get("reason"),
            "cpu_shares": {
                "live_before": live_shares,
                "live_after": self.cpu_shares(doc.get("to_colour")),
                "previous_after": self.cpu_shares(doc.get("from_colour")),
            },
            "samples": upgrade["samples"],
        }
        self.sumbg_ok("rollback", SLUG, "--json")
        shares = record["cpu_shares"]
        if (
            (shares["previous_after"] == 1024) != (weights == "off")
            or shares["live_after"] != 1024
            or shares["live_before"] != 1024
        ):
            raise BenchError(
                f"weights {weights}, yet the live colour's CPU weight was {shares['live_before']} before "
                f"the upgrade, and after it {shares['live_after']} (live) and "
                f"{shares['previous_after']} (previous colour)"
            )
        return record

    def latency(self) -> None:
        """Figure 10: the live colour's latency under a keep-alive load on / and /health/ at the highest rate the
        site sustains, with no upgrade (idle) and during an upgrade with the background CPU weight on and off;
        the two upgrades alternate order per repetition."""
        c = self.cfg
        record: dict = {
            "paths": list(LATENCY_PATHS),
            "clients": c["keepalive"],
            "warmup": c["warmup"],
            "post": c["post"],
            "runs": [],
        }
        self.results["latency"] = record  # partial figures survive a failure
        record["primed_seconds"] = self.ensure_new_image()
        record["rate"] = self.sustained_rate("latency-rate", **self.latency_load())
        rate = record["rate"]["rate_used"]
        walls: list[float] = []
        for rep in range(int(c["latency_reps"])):
            # An idle window as long as this figure's upgrades so far (the profile's length before the first).
            seconds = (
                float(c["latency_idle"])
                if not walls or self.args.latency_idle is not None
                else float(max(5, round(statistics.median(walls) + 0.5)))
            )
            order = ("on", "off") if rep % 2 == 0 else ("off", "on")
            run: dict = {"rep": rep, "order": list(order)}
            record["runs"].append(run)
            run["idle"] = self.latency_idle(rep, rate, seconds)
            self.log(
                f"latency rep {rep} idle {run['idle']['seconds']}s: {run['idle']['sent']} requests, "
                f"{run['idle']['failed']} failed, p50 {run['idle']['p50_ms']} ms, p99 {run['idle']['p99_ms']} ms"
            )
            for weights in order:
                up = run[weights] = self.latency_upgrade(rep, weights, rate)
                walls.append(up["wall_seconds"])
                self.log(
                    f"latency rep {rep} weights {weights}: {up['sent']} requests, {up['failed']} failed, p50 "
                    f"{up['p50_ms']} ms, p99 {up['p99_ms']} ms, upgrade {up['wall_seconds']}s (build "
                    f"{up['build_outcome']}), CPU weights {up['cpu_shares']}"
                )

    # ------------------------------------------------------------------ 11: the worker across a rollback
    def worker_psql(self, sql: str) -> str:
        db = WORKER_SLUG.replace("-", "_")
        return self.docker("exec", f"{WORKER_PREFIX}-data-postgres", "psql", "-U", db, "-d", db, "-Atc", sql).stdout

    def worker_post(self, fields: dict) -> bool:
        """Queue tasks through the edge (the example's POST /tasks/); True if the site took them."""
        body = "&".join(f"{k}={v}" for k, v in fields.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["http"], timeout=10)
        try:
            conn.request(
                "POST",
                "/tasks/",
                body=body,
                headers={
                    "Host": WORKER_DOMAIN,
                    "X-Forwarded-Proto": "https",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            return conn.getresponse().status == 202
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def container_logs(self, name: str) -> str:
        out = self.docker("logs", name, check=False)
        return out.stdout + out.stderr

    def worker_history(self) -> list[dict]:
        path = self.root / WORKER_SLUG / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def worker_settled(self, timeout: float = 420) -> None:
        """No worker move or drain of the site still running (before a repetition, and after it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            moves = [e for e in self.worker_history() if e.get("operation") == "worker"]
            moving = bool(moves) and moves[-1].get("event") != "finished"
            running = self.docker("ps", "--format", "{{.Names}}").stdout.split()
            draining = [n for n in running if n.startswith(f"{WORKER_PREFIX}-") and "-worker-draining-" in n]
            if not moving and not draining:
                return
            time.sleep(1)
        raise BenchError("the worker site's background worker move or drains did not end")

    def worker_rollback(self, rep: int, wait: bool, rate: float) -> dict:
        """One rollback v1.16.0-tasks -> v1.15.0-tasks of a site whose live worker is busy (every Celery process
        running a 30 s task), under the load and a producer queueing a task every 0.1 s; `wait`: --wait-worker."""
        self.worker_settled()
        self.sumbg_ok("upgrade", WORKER_SLUG, W_NEW, "--watch", "0", "--yes", "--json", "--lock-timeout", "300")
        live = json.loads((self.root / WORKER_SLUG / "state.json").read_text())["live"]
        worker = f"{WORKER_PREFIX}-{live}-worker"
        tag = f"r{rep}-{'wait' if wait else 'bg'}"
        for n in range(WORKER_SLOW_TASKS):
            if not self.worker_post({"kind": "slow", "label": f"{tag}-slow-{n}", "seconds": WORKER_SLOW_SECONDS}):
                raise BenchError("the site did not take the slow tasks")
        deadline = time.monotonic() + 120
        while self.container_logs(worker).count(f"slow task started: {tag}-slow-") < WORKER_SLOW_TASKS:
            if time.monotonic() > deadline:
                raise BenchError(f"{worker} did not start its {WORKER_SLOW_TASKS} slow tasks")
            time.sleep(0.2)
        stop = threading.Event()
        queued: list[str] = []

        def produce() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                if self.worker_post({"kind": "record", "label": f"{tag}-{n}"}):
                    queued.append(f"{tag}-{n}")
                stop.wait(0.1)

        producer = threading.Thread(target=produce, daemon=True)
        load = self.start_load(f"worker-{tag}", target=(self.ports["http"], WORKER_DOMAIN), rate=rate)
        producer.start()
        result = self.sumbg_cmd("rollback", WORKER_SLUG, "--json", *(("--wait-worker",) if wait else ()))
        samples = self.stop_load(load)
        if result["rc"] != 0:
            stop.set()
            raise BenchError(f"rollback ({tag}) failed: {json.dumps(result['json'])[:1500]}")
        flipped = next((at for at, line in result["lines"] if "traffic flipped to" in line), None)
        if flipped is None:
            raise BenchError("the rollback's progress shows no `traffic flipped` line")
        # The new worker's first task: the first run by the rolled-back-to release after the flip.
        first = None
        deadline = time.monotonic() + 180
        while first is None and time.monotonic() < deadline:
            out = self.worker_psql(
                f"SELECT extract(epoch FROM min(started_at)) FROM sum_core_taskrun WHERE release = '{W_OLD}' "
                f"AND label LIKE '{tag}-%' AND started_at > to_timestamp({flipped})"
            ).strip()
            first = float(out) if out else None
            if first is None:
                time.sleep(0.2)
        stop.set()
        producer.join(timeout=30)
        self.worker_settled()
        expected = {*queued, *(f"{tag}-slow-{n}" for n in range(WORKER_SLOW_TASKS))}
        deadline = time.monotonic() + 120
        while True:
            counted = dict(
                line.split("|")
                for line in self.worker_psql(
                    f"SELECT label, count(*) FROM sum_core_taskrun WHERE label LIKE '{tag}-%' GROUP BY label"
                ).split()
            )
            if set(counted) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        doc = result["json"] or {}
        drained = [e for e in self.worker_history() if e.get("event") == "worker-drained" and e.get("colour") == live]
        conv = stats.converged(samples, W_OLD, result["start"])
        run = {
            "rep": rep,
            "wait_worker": wait,
            **stats.summarise(samples),
            "wall_seconds": round(result["end"] - result["start"], 3),
            "rollback_seconds": doc.get("seconds"),
            "flip_seconds": doc.get("flip_seconds"),
            "traffic_flipped_after_start_s": round(flipped - result["start"], 3),
            "all_old_after_start_s": round(conv["at"] - result["start"], 3) if conv["at"] else None,
            "first_task_after_flip_s": round(first - flipped, 3) if first is not None else None,
            "old_worker_drain_s": drained[-1].get("seconds") if drained else None,
            "old_worker_drain_outcome": drained[-1].get("outcome") if drained else None,
            "old_worker_exit_after_command_s": (
                round(drained[-1]["signalled_at"] + drained[-1]["seconds"] - result["end"], 3)
                if drained and drained[-1].get("signalled_at")
                else None
            ),
            "tasks_queued": len(expected),
            "tasks_run_once": sum(1 for label in expected if counted.get(label) == "1"),
            "tasks_missing": len(expected - set(counted)),
            "tasks_run_twice": sum(1 for n in counted.values() if n != "1"),
            "steps": self.step_seconds(doc),
            "samples": str(load["path"]),
        }
        return run

    def worker(self) -> None:
        """Figure 12: `sumbg rollback` of a site whose worker is busy with long tasks, under the load: the
        command's time end to end, traffic's time apart, and the time from the flip to the new worker's first
        task; with the worker moved in the background (the default) and with `--wait-worker`, in turn."""
        record: dict = {
            "site": WORKER_SLUG,
            "releases": [W_NEW, W_OLD],
            "slow_tasks": WORKER_SLOW_TASKS,
            "slow_seconds": WORKER_SLOW_SECONDS,
            "runs": [],
        }
        self.results["worker"] = record  # partial figures survive a failure
        t = time.time()
        self.sumbg_ok(
            "init",
            WORKER_SLUG,
            "--repo",
            str(self.repo),
            "--domain",
            WORKER_DOMAIN,
            "--ref",
            W_OLD,
            "--worker",
            "--json",
        )
        record["init_seconds"] = round(time.time() - t, 1)
        if not self.results["machine"].get("caddy"):
            self.results["machine"]["caddy"] = (
                self.docker("exec", f"{EDGE}-caddy", "caddy", "version", check=False).stdout.strip().split(" ")[0]
            )
        if "calibration" in self.results:
            rate = self.cfg["rate"]
        else:
            record["calibration"] = self.capacity("worker-calibration", (self.ports["http"], WORKER_DOMAIN))
            rate = max(record["calibration"]["rate_used"], 1.0)
        record["rate"] = rate
        for rep in range(int(self.cfg["worker_reps"])):
            for wait in (False, True) if rep % 2 == 0 else (True, False):
                run = self.worker_rollback(rep, wait, rate)
                record["runs"].append(run)
                self.log(
                    f"worker rep {rep} {'--wait-worker' if wait else 'background'}: command {run['wall_seconds']}s "
                    f"(traffic flipped {run['traffic_flipped_after_start_s']}s in, every request on {W_OLD} "
                    f"{run['all_old_after_start_s']}s), new worker's first task {run['first_task_after_flip_s']}s "
                    f"after the flip, old worker drained in {run['old_worker_drain_s']}s; {run['sent']} requests, "
                    f"{run['failed']} failed; tasks {run['tasks_run_once']}/{run['tasks_queued']} run once"
                )

    # ------------------------------------------------------------------ the whole run
    def section(self, name: str, action) -> bool:
        try:
            action()
            return True
        except Exception as exc:  # noqa: BLE001 - record, go on with what can still be measured
            self.fail(f"{name}: {exc}")
            return False

    def main(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self.results["machine"] = self.machine()
            self.our_leftovers()
            if self.only == "density":
                self.make_repo()
                self.section("density", self.density)
            elif self.only == "latency":
                self.setup_site()
                self.section("latency", self.latency)
            elif self.only == "offsite":
                self.setup_site()
                self.section("offsite", self.offsite_cost)
            elif self.only == "worker":
                self.make_root()
                self.section("worker", self.worker)
            elif self.only == "builds":
                self.make_repo()
                self.section("builds", self.builds_figure)
            else:
                self.figures()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - interrupted runs clean up too
            self.fail(f"{type(exc).__name__}: {exc}")
        finally:
            for proc in list(self._loads):
                proc.kill()
            self.log("cleaning up bench containers, volumes, networks, images")
            try:
                self.cleanup_docker()
            except Exception as exc:  # noqa: BLE001
                self.fail(f"cleanup: {exc}")
            for path in (self.root, self.density_root, self.repo.parent if self.repo else None):
                if path:
                    shutil.rmtree(path, ignore_errors=True)
            left = self.ours_left()
            if left:
                self.fail(f"containers left after cleanup: {left}")
        self.results["seconds"] = self.elapsed()
        self.results["failures"] = self.failures
        return self.write_outputs()

    def setup_site(self) -> None:
        """The bench's root, edge and site bench-acme live on v1.0.0; its v1.0.0 migrations noted."""
        self.make_root()
        t = time.time()
        self.sumbg_ok("init", SLUG, "--repo", str(self.repo), "--domain", DOMAIN, "--ref", OLD, "--json")
        self.results["init_seconds"] = round(time.time() - t, 1)
        self.results["machine"]["caddy"] = (
            self.docker("exec", f"{EDGE}-caddy", "caddy", "version", check=False).stdout.strip().split(" ")[0]
        )
        self.baseline_migrations = self.applied_migrations("blue", self.image(OLD))
        self.log(f"init {self.results['init_seconds']}s; {OLD} migrations: {self.baseline_migrations}")

    def figures(self) -> None:
        """Figures 1-7 and 10 on the bench's own site bench-acme, then 8 and 9 (each brings up its own)."""
        c = self.cfg
        self.setup_site()
        self.calibrate()

        # 1, 3, 6: upgrade under load, memory of the idle colour, rollback under load.
        for rep in range(c["reps"]):
            if rep:
                self.reset_db(self.state()["live"])
            if not self.section(f"upgrade rep {rep}", lambda rep=rep: self.upgrade_under_load(rep)):
                break
            if not self.section(f"rollback rep {rep}", lambda rep=rep: self.rollback_under_load(rep)):
                break
        # 10: the live site's latency during an upgrade, CPU weights on and off (the v1.1.0 image exists now,
        # so its upgrades skip the build as figure 1's later ones do; the database is still the example one).
        if c["latency_reps"]:
            self.section("latency", self.latency)
        # 12: a rollback of a site whose worker is busy (its own site, bench-wrk, on the same edge).
        if c["worker_reps"]:
            self.section("worker", self.worker)
        # 4: wall time by step, warm and cold build cache, no load.
        for rep in range(c["build_reps"]):
            for kind in ("warm", "cold") if rep % 2 == 0 else ("cold", "warm"):
                if not self.section(f"{kind} build rep {rep}", lambda rep=rep, kind=kind: self.build_timing(rep, kind)):
                    break
        # 7a: the rehearsal's cost on the example database (before the big one exists).
        self.section("rehearsal (example database)", lambda: self.rehearsal_cost("example"))
        # 2: the restart-based deploy, on one colour (the idle one is removed first).
        live = self.state()["live"]
        idle = "green" if live == "blue" else "blue"
        if (self.root / SLUG / "run" / f"{PREFIX}-{idle}.env").exists():
            self.compose(idle, "down", "--remove-orphans", check=False)
        self.runbook_route()
        for rep in range(c["reps"]):
            if not self.section(f"baseline rep {rep}", lambda rep=rep: self.baseline_restart(rep)):
                break
        # 5: backup cost, last (a big database would slow every upgrade's backup step).
        self.section("backup", self.backup_cost)
        # 7b: the rehearsal's cost on that generated database (after it: it slows every upgrade).
        self.section("rehearsal (generated database)", self.rehearsal_generated)
        # 11: complete backups (that database plus generated media) into a restic repository.
        self.section("offsite", self.offsite_cost)
        # 8: adopting a runbook host, then the edge taking its ports.
        for rep in range(c["adopt_reps"]):
            if not self.section(f"adoption rep {rep}", lambda rep=rep: self.adoption(rep)):
                break
        # 9: density: N more sites on this host, under their own root and edge.
        if c["density_sites"]:
            self.section("density", self.density)
        # 13: builds of a Wagtail-sized client, under their own root and edge (after 9: its sites are gone).
        if c["builds_reps"]:
            self.section("builds", self.builds_figure)

    def builds_figure(self) -> None:
        self.builds = Builds(self)
        try:
            self.builds.run()
        finally:
            self.builds.cleanup()

    def publish_figure(self) -> None:
        """--only FIGURE --publish: this run's figure replaces the published one in bench/results.json, and
        BENCHMARKS.md is generated again from that file; every other figure stays as its own run measured it,
        and the figure's section says when and how it was measured."""
        import report

        published = json.loads((HERE / "results.json").read_text())
        published[self.only] = {
            **self.results[self.only],
            "measured_by": {
                "started_at": self.results["started_at"],
                "command": "bench/run.py " + " ".join(sys.argv[1:]),
                "loadavg_at_start": self.results["machine"].get("loadavg_at_start"),
                "seconds": self.results.get("seconds"),
            },
        }
        published["summary"] = report.summarise(published)
        (HERE / "results.json").write_text(json.dumps(published, indent=2, sort_keys=True, default=str) + "\n")
        # Only that figure's section (and how to reproduce) is written again: results.json keeps no step order,
        # so the other figures' tables are left as their run wrote them.
        number = {"density": 9, "latency": 10, "offsite": 11, "worker": 12, "builds": 13}[self.only]
        markdown = report.replace_sections(
            (REPO / "BENCHMARKS.md").read_text(),
            report.markdown(published, quick=False),
            ["## How to reproduce", f"## {number}. "],
        )
        (REPO / "BENCHMARKS.md").write_text(markdown)
        self.log(f"--only {self.only} --publish: its figure replaced in bench/results.json and BENCHMARKS.md")

    def write_outputs(self) -> int:
        import report

        self.results["summary"] = report.summarise(self.results)
        publish = not self.quick and not self.only  # --only never publishes: its figures are in --out
        results_path = self.out / "results.json"
        results_path.write_text(json.dumps(self.results, indent=2, sort_keys=True, default=str) + "\n")
        plot_path = self.out / "timeline.png"
        try:
            report.plot(self.timelines, plot_path, self.results)
        except Exception as exc:  # noqa: BLE001
            self.fail(f"plot: {exc}")
            self.results["failures"] = self.failures
            results_path.write_text(json.dumps(self.results, indent=2, sort_keys=True, default=str) + "\n")
        markdown = report.markdown(self.results, quick=self.quick)
        (self.out / "BENCHMARKS.md").write_text(markdown)
        if publish and not self.failures:
            shutil.copyfile(results_path, HERE / "results.json")
            shutil.copyfile(plot_path, HERE / "timeline.png")
            (REPO / "BENCHMARKS.md").write_text(markdown)
            self.log("wrote BENCHMARKS.md, bench/results.json, bench/timeline.png")
        elif publish:
            self.log("failures: BENCHMARKS.md and bench/ left unchanged; partial results in " + str(self.out))
        elif self.only and self.args.publish and not self.failures:
            self.publish_figure()
        elif self.only:
            self.log(f"--only {self.only}: BENCHMARKS.md and bench/ left unchanged")
        print(report.console(self.results))
        self.log(f"raw artefacts in {self.out}")
        return 1 if self.failures else 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition, short loads, tiny DB (< 3 min)")
    parser.add_argument("--out", default=None, help="folder for raw artefacts (default bench-out/ in the repo)")
    parser.add_argument("--reps", type=int, help="repetitions of the upgrade/rollback and baseline runs")
    parser.add_argument("--build-reps", type=int, help="repetitions of the warm and cold upgrade timings")
    parser.add_argument("--backup-reps", type=int, help="repetitions of the backup comparison")
    parser.add_argument(
        "--rehearsal-reps", type=int, help="repetitions of the upgrade with vs without the rehearsal (per database)"
    )
    parser.add_argument("--adopt-reps", type=int, help="repetitions of the adoption and takeover figure")
    parser.add_argument(
        "--density-sites",
        type=int,
        help="example sites brought up on this host for the density figure (full: 60; quick: 0, the figure is skipped)",
    )
    parser.add_argument(
        "--latency-reps",
        type=int,
        help="repetitions of the latency figure (idle, upgrade with and without the background CPU "
        "weight; full: 3; quick: 0, the figure is skipped)",
    )
    parser.add_argument(
        "--latency-idle",
        type=float,
        help="seconds of the latency figure's idle window (default: the profile's for the first "
        "repetition, then as long as the figure's upgrades so far)",
    )
    parser.add_argument(
        "--latency-probe", type=float, help="seconds of each load run of the latency figure's rate search"
    )
    parser.add_argument(
        "--worker-reps",
        type=int,
        help="repetitions of the worker figure (a rollback with a busy Celery worker, in the background "
        "and with --wait-worker; full: 3; quick: 0, the figure is skipped)",
    )
    parser.add_argument(
        "--builds-reps",
        type=int,
        help="repetitions of figure 13's sum-core bump with the wheel cache off, cold and warm (full: 2; quick: 0)",
    )
    parser.add_argument("--builds-sites", type=int, help="figure 13: sites bumped to one sum-core together (full: 10)")
    parser.add_argument(
        "--builds-latency-reps", type=int, help="figure 13: repetitions of the latency at 50%% and 90%% (full: 2)"
    )
    parser.add_argument("--builds-idle-seconds", type=float, help="figure 13: seconds of each load window alone")
    parser.add_argument(
        "--only",
        choices=sorted(ONLY),
        help="run that figure alone (density: figure 9; latency: figure 10, on bench-acme; offsite: figure 11, on "
        "bench-acme; worker: figure 12, on bench-wrk; builds: figure 13, its own sites) into the --out folder, not "
        "BENCHMARKS.md or bench/ unless --publish (it still builds the example repo)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="with --only and no failure: replace that figure in bench/results.json and BENCHMARKS.md (the other "
        "figures are kept as published)",
    )
    parser.add_argument("--rate", type=float, help="target requests/s of the load")
    parser.add_argument("--keepalive", type=int, help="keep-alive clients")
    parser.add_argument("--fresh", type=int, help="new-connection-per-request clients")
    parser.add_argument("--warmup", type=float, help="seconds of load before each measured command")
    parser.add_argument("--post", type=float, help="seconds of load after each measured command")
    parser.add_argument("--pg-scale", type=int, help="pgbench scale for the backup figures (64 ~ 1 GB)")
    parser.add_argument("--media-mb", type=int, help="MiB of media generated for figure 11 (full: 1024)")
    parser.add_argument("--max-load-seconds", type=float, help="hard limit of one load run")
    args = parser.parse_args(argv)
    for key, option in (
        ("density_sites", "--density-sites"),
        ("latency_reps", "--latency-reps"),
        ("worker_reps", "--worker-reps"),
        ("builds_reps", "--builds-reps"),
        ("builds_sites", "--builds-sites"),
        ("builds_latency_reps", "--builds-latency-reps"),
    ):
        if getattr(args, key) is not None and getattr(args, key) < 0:
            parser.error(f"{option} must be 0 or more")
    for key, option in (("latency_idle", "--latency-idle"), ("latency_probe", "--latency-probe")):
        if getattr(args, key) is not None and getattr(args, key) <= 0:
            parser.error(f"{option} must be more than 0")
    if args.publish and (not args.only or args.quick):
        parser.error("--publish goes with --only (and not --quick)")
    if args.only:
        key, needs = ONLY[args.only]
        given = getattr(args, key)
        if (given if given is not None else PROFILES["quick" if args.quick else "full"][key]) < 1:
            parser.error(f"--only {args.only} needs at least 1 {needs}: give --{key.replace('_', '-')} N")
    if args.out is None:
        args.out = str(REPO / "bench-out")
    return args


def _terminate(signum, frame):  # a killed run still cleans up (main's finally)
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(Bench(parse_args()).main())
