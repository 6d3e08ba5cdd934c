"""sumbg benchmarks on the real Docker engine (issue 5).

    .venv/bin/python bench/run.py            # full run: BENCHMARKS.md, bench/results.json, bench/timeline.png
    .venv/bin/python bench/run.py --quick --out /tmp/b   # 1 repetition, short loads, tiny DB; files in /tmp/b only

Everything it creates is named for the site `bench-acme` (containers
`sum-bench-acme-*`, images `sum-bench-acme:*`) and the edge `sum-edge-bench`,
under a temporary SUMBG_ROOT, and is removed at the end, even on failure.
Exits non-zero if anything failed. See BENCHMARKS.md for what is measured.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import stats  # noqa: E402
from load import read_samples  # noqa: E402

SLUG = "bench-acme"
DOMAIN = f"{SLUG}.example.test"
EDGE = "sum-edge-bench"
OLD, NEW = "v1.0.0", "v1.1.0"
PREFIX = f"sum-{SLUG}"
IMAGE_REPO = f"sum-{SLUG}"
DB = SLUG.replace("-", "_")
PG = f"{PREFIX}-data-postgres"
ADOPT_SLUG = "bench-adopt"              # figure 8: a runbook host adopted, under its own root and edge
ADOPT_EDGE = f"{EDGE}-adopt"
LOCAL_HOST_CONF = REPO / "build" / "local-host.toml"
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")

PROFILES = {
    # adopt_reps: 0 in quick mode: the suite's end-to-end tests already adopt a runbook host.
    "quick": dict(reps=1, build_reps=1, backup_reps=1, rehearsal_reps=1, adopt_reps=0, rate=150.0, keepalive=4, fresh=4,
                  warmup=1.0, post=1.5, pg_scale=1, max_load_seconds=120.0),
    "full": dict(reps=5, build_reps=3, backup_reps=3, rehearsal_reps=3, adopt_reps=3, rate=300.0, keepalive=8, fresh=8,
                 warmup=5.0, post=5.0, pg_scale=64, max_load_seconds=600.0),
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
        self.results: dict = {"mode": "quick" if self.quick else "full", "config": self.cfg,
                              "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.timelines: dict = {}
        self.baseline_migrations: dict[str, str] = {}
        self.sumbg_route: str | None = None
        self._loads: list = []

    # ------------------------------------------------------------------ plumbing
    def log(self, message: str) -> None:
        print(f"[bench {time.monotonic() - self.t_start:6.1f}s] {message}", file=sys.stderr, flush=True)

    def fail(self, message: str) -> None:
        self.log(f"FAILED: {message}")
        self.failures.append(message)

    def run(self, argv: list[str], *, env: dict | None = None, timeout: float = 900, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise BenchError(f"`{' '.join(argv[:8])}` exited {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc

    def docker(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.run(["docker", *args], check=check, timeout=timeout)

    def env(self) -> dict:
        return {**os.environ, "SUMBG_ROOT": str(self.root)}

    def sumbg_cmd(self, *args: str, timeout: float = 900) -> dict:
        """Run sumbg; returns rc, the --json document, stderr lines with arrival times, start/end times."""
        lines: list[tuple[float, str]] = []
        started = time.time()
        proc = subprocess.Popen([self.sumbg, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, env=self.env())

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
            raise BenchError(f"sumbg {' '.join(args)} took longer than {timeout}s")
        thread.join(timeout=5)
        ended = time.time()
        document = None
        if stdout.strip():
            try:
                document = json.loads(stdout)
            except ValueError:
                document = None
        result = {"rc": proc.returncode, "json": document, "lines": lines, "start": started, "end": ended,
                  "stdout": stdout}
        return result

    def sumbg_ok(self, *args: str, timeout: float = 900) -> dict:
        result = self.sumbg_cmd(*args, timeout=timeout)
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
        return {"cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(mem_kb / 1024 / 1024, 1),
                "kernel": platform.release(), "python": platform.python_version(),
                "docker": docker_version, "compose": compose_version,
                "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}

    def our_leftovers(self) -> None:
        """Refuse to run beside a live bench; remove what a killed bench left (all named for it)."""
        inspect = self.docker("inspect", f"{EDGE}-caddy", check=False)
        if inspect.returncode == 0:
            owner = json.loads(inspect.stdout)[0]["Config"]["Labels"].get("sumbg.root", "")
            if owner and Path(owner).exists():
                raise BenchError(f"another benchmark (root {owner}) is using the edge {EDGE}; "
                                 f"if it is dead, remove {owner} and run again")
        self.cleanup_docker(quiet=True)

    def cleanup_docker(self, quiet: bool = False) -> None:
        names = self.docker("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in names if n.startswith(f"{PREFIX}-") or n == f"{EDGE}-caddy"]
        if ours:
            self.docker("rm", "-f", "-v", *ours, check=False, timeout=120)
        for volume in (f"{PREFIX}-data-pgdata", f"{PREFIX}-data-redisdata", f"{EDGE}-caddy-data",
                       f"{EDGE}-caddy-config"):
            self.docker("volume", "rm", volume, check=False)
        for network in (PREFIX, EDGE):
            self.docker("network", "rm", network, check=False)
        # Images built for this site: its tags, and untagged builds still carrying its label.
        tagged = self.docker("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split()
        labelled = self.docker("images", "-a", "-q", "--filter", f"label=sumbg.slug={SLUG}", check=False).stdout.split()
        for ref in tagged + sorted(set(labelled)):
            self.docker("rmi", "-f", ref, check=False)
        if ours and not quiet:
            self.log(f"removed {len(ours)} containers: {', '.join(ours)}")

    def ca_nonce(self, label: str) -> None:
        """A CA bundle for this root whose content is unique: fresh build-cache keys from `COPY ca.crt` on."""
        source = self.ca_source
        body = Path(source).read_text() if source else ""
        (self.root / "bench-ca.crt").write_text(body + f"\n# sumbg bench cache nonce {label} {time.time_ns()}\n")

    def make_root(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sumbg-bench-root-"))
        self.repo = Path(tempfile.mkdtemp(prefix="sumbg-bench-repo-")) / "acme-repo"
        self.run([sys.executable, str(REPO / "examples/sum-site/build_repo.py"), str(self.repo)])
        self.ports = {"http": free_port(), "https": free_port(), "preview": free_port()}
        local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
        match = re.search(r'^ca_bundle\s*=\s*"([^"]*)"', local, re.M)
        self.ca_source = (match.group(1) if match and match.group(1) else
                          (str(SYSTEM_CA) if SYSTEM_CA.exists() else ""))
        # Same host config as local-host.toml, except ca_bundle: a copy of the same bundle plus a
        # nonce comment, so the cold build can get fresh cache keys without touching shared cache.
        local = re.sub(r'^ca_bundle\s*=.*$', "", local, flags=re.M)
        local = re.sub(r'^\[build\]\s*$', "", local, flags=re.M)
        self.ca_nonce("init")
        (self.root / "sumbg.toml").write_text(
            local + f'\n[build]\nca_bundle = "{self.root / "bench-ca.crt"}"\n'
            "\n[edge]\n"
            f"http_port = {self.ports['http']}\nhttps_port = {self.ports['https']}\n"
            f"preview_port = {self.ports['preview']}\n"
            f'bind = "127.0.0.1"\ntls = "off"\nname = "{EDGE}"\n')
        self.log(f"root {self.root}, edge on 127.0.0.1:{self.ports['http']}")

    def compose(self, colour: str, *args: str, image: str | None = None, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess:
        """docker compose on sumbg's own app project files and env file, optionally another image."""
        env = dict(os.environ)
        for key in ("SUMBG_IMAGE", "SUMBG_GIT_SHA", "SUMBG_BUILD_ID"):
            env.pop(key, None)
        if image:
            # The shell environment wins over --env-file; the version variables sumbg
            # sets from an image's labels must follow the image.
            labels = json.loads(self.run(["docker", "image", "inspect", image]).stdout)[0]["Config"]["Labels"]
            env.update({"SUMBG_IMAGE": image, "SUMBG_GIT_SHA": labels["sumbg.commit"],
                        "SUMBG_BUILD_ID": labels["sumbg.ref"]})
        project = f"{PREFIX}-{colour}"
        argv = ["docker", "compose", "-p", project, "-f", str(REPO / "compose" / "app.yml"),
                "--env-file", str(self.root / SLUG / "run" / f"{project}.env"), *args]
        return self.run(argv, env=env, timeout=timeout, check=check)

    def manage(self, colour: str, image: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose(colour, "run", "--rm", "--no-deps", "-T", "web", "python", "manage.py", *args,
                            image=image, check=check)

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
    def start_load(self, name: str) -> dict:
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        path = self.samples_dir / f"{name}.csv"
        c = self.cfg
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "load.py"), "--port", str(self.ports["http"]), "--domain", DOMAIN,
             "--rate", str(c["rate"]), "--keepalive", str(c["keepalive"]), "--fresh", str(c["fresh"]),
             "--max-seconds", str(c["max_load_seconds"]), "--out", str(path)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            raise BenchError("the load generator did not start")
        self._loads.append(proc)
        time.sleep(c["warmup"])
        return {"proc": proc, "path": path, "name": name}

    def stop_load(self, load: dict) -> list[dict]:
        time.sleep(self.cfg["post"])
        proc = load["proc"]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError("the load generator did not stop")
        self._loads.remove(proc)
        if proc.returncode != 0:
            raise BenchError(f"the load generator exited {proc.returncode}")
        return read_samples(load["path"])

    def calibrate(self) -> None:
        """Unpaced load for a few seconds: the site's capacity through Caddy on this machine.

        Unless --rate was given, the measured runs then target 80% of it (capped at the
        profile's rate), so the load is steady rather than a saturated queue.
        """
        c = self.cfg
        saved = dict(c)
        c.update(rate=0.0, warmup=2.0 if self.quick else 5.0, post=0.0)
        try:
            samples = self.stop_load(self.start_load("calibration"))
        finally:
            c.update(saved)
        summary = stats.summarise(samples)
        capacity = summary["rate_per_s"] or 0.0
        target = c["rate"] if self.args.rate is not None else round(min(c["rate"], 0.8 * capacity), 1)
        self.results["calibration"] = {"capacity_per_s": capacity, "failed": summary["failed"],
                                       "p50_ms": summary["p50_ms"], "profile_rate": c["rate"],
                                       "rate_used": target, "rate_from": "--rate" if self.args.rate is not None
                                       else "min(profile rate, 80% of capacity)"}
        if summary["failed"]:
            raise BenchError(f"the site failed {summary['failed']} requests before any deploy: {summary['errors']}")
        c["rate"] = max(target, 1.0)
        self.log(f"capacity through Caddy ~{capacity} req/s (p50 {summary['p50_ms']} ms); load target {c['rate']} req/s")

    # ------------------------------------------------------------------ figures
    def step_seconds(self, document: dict) -> dict:
        return {s["name"]: s["seconds"] for s in (document or {}).get("steps", [])}

    def step_start(self, result: dict, name: str) -> float | None:
        for at, line in result["lines"]:
            if line.strip().startswith(f"-> {name}:"):
                return at
        return None

    def memory(self, container: str) -> dict:
        fmt = "{{.MemUsage}}"
        usage = self.docker("stats", "--no-stream", "--format", fmt, container, check=False).stdout.strip()
        top = [line.split() for line in
               self.docker("top", container, "-eo", "pid,rss", check=False).stdout.splitlines()[1:]]
        top = [row for row in top if len(row) == 2 and row[1].isdigit()]
        rss_kb = sum(int(row[1]) for row in top)
        mib = None
        m = re.match(r"([\d.]+)\s*([KMG]i?B)", usage)
        if m:
            factor = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "kB": 1 / 1024, "MB": 1, "GB": 1024}.get(m.group(2), 1)
            mib = round(float(m.group(1)) * factor, 1)
        return {"container": container, "docker_stats": usage, "stats_mib": mib,
                "rss_sum_mib": round(rss_kb / 1024, 1) if top else None, "processes": len(top)}

    def upgrade_under_load(self, rep: int) -> None:
        load = self.start_load(f"upgrade-{rep}")
        result = self.sumbg_cmd("upgrade", SLUG, NEW, "--watch", "0", "--yes", "--json")
        samples = self.stop_load(load)
        if result["rc"] != 0:
            raise BenchError(f"upgrade (rep {rep}) failed: {json.dumps(result['json'])[:1500]}")
        doc = result["json"]
        steps = self.step_seconds(doc)
        w0 = self.step_start(result, "switch")
        if w0 is None or "switch" not in steps:
            raise BenchError("the upgrade's progress shows no switch step")
        w1 = w0 + steps["switch"]
        window = stats.in_window(samples, w0, w1)
        conv = stats.converged(samples, NEW, result["start"])
        run = {"rep": rep, **stats.summarise(samples),
               "window_seconds": round(w1 - w0, 3), "window_sent": len(window),
               "window_failed": sum(1 for s in window if not s["ok"]),
               "window_p50_ms": stats.summarise(window)["p50_ms"] if window else None,
               "window_p99_ms": stats.summarise(window)["p99_ms"] if window else None,
               "flip_seconds": doc.get("flip_seconds"), "upgrade_seconds": doc.get("seconds"),
               "wall_seconds": round(result["end"] - result["start"], 3), "steps": steps,
               "all_new_after_start_s": round(conv["at"] - result["start"], 3) if conv["at"] else None,
               "samples": str(load["path"])}
        self.results.setdefault("upgrade", {"runs": []})["runs"].append(run)
        self.timelines.setdefault("upgrade", []).append(
            {"samples": samples, "origin": result["start"], "window": (w0, w1), "end": result["end"],
             "failed": run["failed"]})
        self.log(f"upgrade rep {rep}: {run['sent']} requests, {run['failed']} failed, p99 {run['p99_ms']} ms, "
                 f"switch window {run['window_seconds']}s ({run['window_sent']} requests, "
                 f"{run['window_failed']} failed), flip {run['flip_seconds']}s")
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
        run = {"rep": rep, **stats.summarise(samples),
               "flip_seconds": doc.get("flip_seconds"), "rollback_seconds": doc.get("seconds"),
               "wall_seconds": round(result["end"] - result["start"], 3),
               "all_old_after_start_s": round(conv["at"] - result["start"], 3) if conv["at"] else None,
               "last_new_after_start_s": (round(conv["last_other"] - result["start"], 3)
                                          if conv["last_other"] else None),
               "steps": self.step_seconds(doc), "samples": str(load["path"])}
        self.results.setdefault("rollback", {"runs": []})["runs"].append(run)
        self.log(f"rollback rep {rep}: {run['sent']} requests, {run['failed']} failed, every request on {OLD} "
                 f"{run['all_old_after_start_s']}s after the command started (flip {run['flip_seconds']}s, "
                 f"command {run['wall_seconds']}s)")

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
            {"rep": rep, "kind": kind, "steps": steps, "upgrade_seconds": doc.get("seconds"),
             "wall_seconds": round(result["end"] - result["start"], 3)})
        self.log(f"{kind} upgrade rep {rep}: {doc.get('seconds')}s, steps {steps}")
        self.sumbg_ok("rollback", SLUG, "--json")

    def runbook_route(self) -> None:
        """The golden path's Caddy proxies to its one app server and fails a request the server
        cannot take; sumbg's live route retries dial errors (on the other colour) for 2 s. The
        runbook baseline gets the golden path's route, so it is measured as the runbook is."""
        path = self.root / "caddy" / "sites" / f"{SLUG}.caddy"
        text = path.read_text()
        plain = re.sub(r"reverse_proxy (\S+/live\}-web:8000) \S+ \{\n(?:\t\t\t[^\n]*\n)+\t\t\}",
                       r"reverse_proxy \1", text)
        if plain == text:
            raise BenchError(f"cannot find sumbg's live route in {path}")
        self.sumbg_route = text
        path.write_text(plain)
        self.docker("exec", f"{EDGE}-caddy", "caddy", "reload", "--config", "/etc/caddy/Caddyfile",
                    "--adapter", "caddyfile")
        self.log("baseline: the site's Caddy route is now the golden path's plain reverse_proxy")

    def restore_route(self) -> None:
        """Put back the Caddy file sumbg wrote (runbook_route replaced its live route): an upgrade's
        rehearsal refuses to run on a site file that differs from sumbg's own."""
        if self.sumbg_route is None:
            return
        path = self.root / "caddy" / "sites" / f"{SLUG}.caddy"
        path.write_text(self.sumbg_route)
        self.docker("exec", f"{EDGE}-caddy", "caddy", "reload", "--config", "/etc/caddy/Caddyfile",
                    "--adapter", "caddyfile")
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
        run = {"rep": rep, **stats.summarise(samples), "window_seconds": round(w1 - w0, 3),
               "window_sent": len(window), "window_failed": sum(1 for s in window if not s["ok"]),
               "window_p50_ms": stats.summarise(window)["p50_ms"] if window else None,
               "window_p99_ms": stats.summarise(window)["p99_ms"] if window else None,
               "deploy_seconds": round(t_end - t0, 3), "steps": times,
               "all_new_after_start_s": round(conv["at"] - t0, 3) if conv["at"] else None,
               "samples": str(load["path"])}
        self.results.setdefault("baseline", {"runs": []})["runs"].append(run)
        self.timelines.setdefault("baseline", []).append(
            {"samples": samples, "origin": t0, "window": (w0, w1), "end": t_end, "failed": run["failed"]})
        self.log(f"baseline rep {rep}: {run['sent']} requests, {run['failed']} failed, p99 {run['p99_ms']} ms, "
                 f"restart window {run['window_seconds']}s ({run['window_sent']} requests, "
                 f"{run['window_failed']} failed)")
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
        run = {"rep": rep, **stats.summarise(samples), "wall_seconds": round(t_end - t0, 3), "steps": times,
               "restart_seconds": round(max(up1, stats.first_ok(samples, OLD, up0) or serving) - up0, 3),
               "all_old_after_start_s": round(conv["at"] - t0, 3) if conv["at"] else None,
               "last_new_after_start_s": round(conv["last_other"] - t0, 3) if conv["last_other"] else None,
               "samples": str(load["path"])}
        self.results.setdefault("baseline_rollback", {"runs": []})["runs"].append(run)
        self.log(f"baseline rollback rep {rep}: {run['sent']} requests, {run['failed']} failed, every request on "
                 f"{OLD} {run['all_old_after_start_s']}s after the start")

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
                    self.docker("exec", "-u", user, PG, "pg_dump", "--format=custom", "--no-password", "-U", DB,
                                "-d", DB, "-f", "/backups/.bench-raw.dump", timeout=3600)
                    run["raw_dump_s"] = round(time.time() - t, 3)
                    raw = backups / ".bench-raw.dump"
                    run["raw_bytes"] = raw.stat().st_size
                    t = time.time()
                    self.docker("exec", "-u", user, PG, "pg_restore", "--list", "/backups/.bench-raw.dump",
                                timeout=3600)
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
                        path.unlink()
            verify = self.reported_verify(run.pop("sumbg_doc"))
            if verify:
                run["verify_s"], run["verify_source"] = verify, "as reported by `sumbg backup --json`"
            else:
                run["verify_s"], run["verify_source"] = (round(run["raw_list_s"] + run["raw_sha256_s"], 3),
                                                         "pg_restore --list + sha256 of the raw dump, timed apart")
            run["ratio"] = round(run["sumbg_s"] / run["raw_dump_s"], 3) if run["raw_dump_s"] else None
            run["verify_share"] = round(run["verify_s"] / run["sumbg_s"], 3) if run["sumbg_s"] else None
            runs.append(run)
            self.log(f"backup rep {rep}: sumbg {run['sumbg_s']}s vs pg_dump {run['raw_dump_s']}s "
                     f"(x{run['ratio']}), verify {run['verify_s']}s")
        self.results["backup"] = {"pgbench_scale": scale, "db_bytes": db_bytes, "generate_seconds": generate,
                                  "runs": runs}

    def rehearsal_upgrade(self, rehearse: bool, timeout: float) -> dict:
        """One upgrade OLD -> NEW without load, with or without the rehearsal, then a rollback.
        NEW's migrations are unapplied first (reset_db), so both migrate the same way."""
        self.reset_db(self.state()["live"])
        args = ["upgrade", SLUG, NEW, "--watch", "0", "--yes", "--json", *(() if rehearse else ("--no-rehearsal",))]
        result = self.sumbg_cmd(*args, timeout=timeout)
        doc = result["json"] or {}
        if result["rc"] != 0:
            tail = "\n".join(line for _, line in result["lines"][-10:])
            raise BenchError(f"sumbg {' '.join(args)} exited {result['rc']} (failed step "
                             f"{doc.get('failed_step')!r}: {json.dumps(doc.get('error'))[:1200]}):\n{tail}")
        step = next((s for s in doc.get("steps") or [] if s.get("name") == "rehearsal"), None)
        if step is None:
            raise BenchError("the upgrade's --json record has no `rehearsal` step")
        if rehearse and step.get("outcome") != "ok":
            raise BenchError(f"the rehearsal did not run ({step.get('outcome')}: {step.get('reason')})")
        if not rehearse and step.get("outcome") != "skipped":
            raise BenchError(f"--no-rehearsal, yet the rehearsal step's outcome is {step.get('outcome')!r}")
        self.sumbg_ok("rollback", SLUG, "--json", timeout=timeout)
        return {"doc": doc, "step": step, "steps": self.step_seconds(doc),
                "wall_s": round(result["end"] - result["start"], 3)}

    def rehearsal_cost(self, label: str) -> None:
        """The rehearsal's cost on the database as it is now: the same upgrade with and without it."""
        timeout = 3600.0
        self.reset_db(self.state()["live"])
        db_bytes = int(self.psql("select pg_database_size(current_database())"))
        runs = []
        for rep in range(self.cfg["rehearsal_reps"]):
            run: dict = {"rep": rep}
            for rehearse in ((True, False) if rep % 2 == 0 else (False, True)):
                done = self.rehearsal_upgrade(rehearse, timeout)
                arm = "with" if rehearse else "without"
                run[f"{arm}_s"] = done["doc"].get("seconds")
                run[f"{arm}_wall_s"] = done["wall_s"]
                run[f"{arm}_steps"] = done["steps"]
                if rehearse:
                    step = done["step"]
                    run.update({"rehearsal_s": step.get("seconds"), "restore_s": step.get("restore_seconds"),
                                "start_s": step.get("start_seconds"), "migrate_s": step.get("migrate_seconds"),
                                "after_switch_s": step.get("after_switch_seconds"),
                                "database_mb": step.get("database_mb"), "applied": step.get("applied"),
                                "verdict": (step.get("compatibility") or {}).get("verdict"),
                                "policy": step.get("policy")})
                else:
                    run["skipped_reason"] = done["step"].get("reason")
            if isinstance(run.get("with_s"), (int, float)) and isinstance(run.get("without_s"), (int, float)):
                run["added_s"] = round(run["with_s"] - run["without_s"], 3)
                run["added_share"] = round(run["added_s"] / run["without_s"], 3) if run["without_s"] else None
            parts = [run.get(k) for k in ("restore_s", "start_s", "migrate_s", "after_switch_s")]
            if isinstance(run.get("rehearsal_s"), (int, float)):
                run["other_s"] = round(run["rehearsal_s"] - sum(x for x in parts if isinstance(x, (int, float))), 3)
            runs.append(run)
            self.log(f"rehearsal ({label}) rep {rep}: upgrade {run.get('with_s')}s with vs {run.get('without_s')}s "
                     f"without; rehearsal {run.get('rehearsal_s')}s (restore {run.get('restore_s')}s, migrate "
                     f"{run.get('migrate_s')}s) on {run.get('database_mb')} MB, verdict {run.get('verdict')}")
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
        names = self.docker("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in names if n.startswith(f"sum-{ADOPT_SLUG}-") or n == f"{ADOPT_EDGE}-caddy"
                or n.startswith(f"sumbg-golden-{ADOPT_SLUG}-")]
        if ours:
            self.docker("rm", "-f", "-v", *ours, check=False, timeout=120)
        for volume in (f"sum-{ADOPT_SLUG}-data-pgdata", f"sum-{ADOPT_SLUG}-data-redisdata",
                       f"{ADOPT_EDGE}-caddy-data", f"{ADOPT_EDGE}-caddy-config"):
            self.docker("volume", "rm", volume, check=False)
        for network in (f"sum-{ADOPT_SLUG}", ADOPT_EDGE):
            self.docker("network", "rm", network, check=False)

    def adoption(self, rep: int) -> None:
        """`sumbg adopt` of a simulated runbook host (tests/golden_host.py) under a visitor that reads on a
        kept-alive connection and sends the contact form every fourth request, then `sumbg takeover`."""
        sys.path.insert(0, str(REPO))
        from sumbg.smoke import served_certificate
        from tests.golden_host import Visitor, start_golden_host
        self.cleanup_adoption()
        base = Path(tempfile.mkdtemp(prefix="sumbg-bench-golden-"))
        root = base / "sumbg-root"
        root.mkdir()
        local = LOCAL_HOST_CONF.read_text() if LOCAL_HOST_CONF.exists() else ""
        (root / "sumbg.toml").write_text(
            local + f"\n[edge]\nhttp_port = {free_port()}\nhttps_port = {free_port()}\n"
            f'preview_port = {free_port()}\nbind = "127.0.0.1"\ntls = "off"\nname = "{ADOPT_EDGE}"\n')
        golden = start_golden_host(base / "host", self.repo, slug=ADOPT_SLUG, domain=f"{ADOPT_SLUG}.example.test",
                                   celery=True)
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
                return {"sent": len(statuses), "answered_503": statuses.count(503),
                        "refused": statuses.count(0),
                        "failed_other": sum(1 for st in statuses if st and not (200 <= st < 400 or st == 503))}

            adopted, visitor = measured("adopt", ADOPT_SLUG, "--from", str(golden.site_dir), "--systemd-dir",
                                        str(golden.systemd_dir), "--caddy-dir", str(golden.caddy_dir))
            stored = set(self.run(["docker", "exec", f"sum-{ADOPT_SLUG}-data-postgres", "psql", "-X", "-At", "-U",
                                   ADOPT_SLUG.replace("-", "_"), "-d", ADOPT_SLUG.replace("-", "_"), "-c",
                                   "SELECT name FROM sum_core_lead"]).stdout.split("\n"))
            steps = {step["name"]: step["seconds"] for step in adopted["steps"]}
            record = {"rep": rep, "window_s": adopted["cutover_window_seconds"], **counts(visitor),
                      "writes_acknowledged": len(visitor.acknowledged),
                      "writes_lost": len(set(visitor.acknowledged) - stored),
                      "adopt_s": adopted["seconds"], "stop_old_s": steps.get("stop-old"),
                      "final_import_s": steps.get("final-import")}
            before = served_certificate("127.0.0.1", golden.https_port, golden.domain)
            took, visitor = measured("takeover", "--caddy-dir", str(golden.caddy_dir),
                                     "--caddy-data", str(golden.caddy_data_dir))
            takeover = counts(visitor)
            record.update({"takeover_window_s": took["takeover_window_seconds"],
                           "takeover_sent": takeover["sent"], "takeover_refused": takeover["refused"],
                           "takeover_failed_other": takeover["failed_other"] + takeover["answered_503"],
                           "certificate_kept": before is not None and before == served_certificate(
                               "127.0.0.1", golden.https_port, golden.domain)})
            self.results.setdefault("adoption", {"runs": []})["runs"].append(record)
            self.log(f"adoption rep {rep}: {record}")
        finally:
            golden.stop()
            self.cleanup_adoption()
            shutil.rmtree(base, ignore_errors=True)

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
        c = self.cfg
        try:
            self.results["machine"] = self.machine()
            self.our_leftovers()
            self.make_root()
            t = time.time()
            self.sumbg_ok("init", SLUG, "--repo", str(self.repo), "--domain", DOMAIN, "--ref", OLD, "--json")
            self.results["init_seconds"] = round(time.time() - t, 1)
            self.results["machine"]["caddy"] = self.docker(
                "exec", f"{EDGE}-caddy", "caddy", "version", check=False).stdout.strip().split(" ")[0]
            self.baseline_migrations = self.applied_migrations("blue", self.image(OLD))
            self.log(f"init {self.results['init_seconds']}s; {OLD} migrations: {self.baseline_migrations}")
            self.calibrate()

            # 1, 3, 6: upgrade under load, memory of the idle colour, rollback under load.
            for rep in range(c["reps"]):
                if rep:
                    self.reset_db(self.state()["live"])
                if not self.section(f"upgrade rep {rep}", lambda: self.upgrade_under_load(rep)):
                    break
                if not self.section(f"rollback rep {rep}", lambda: self.rollback_under_load(rep)):
                    break
            # 4: wall time by step, warm and cold build cache, no load.
            for rep in range(c["build_reps"]):
                for kind in (("warm", "cold") if rep % 2 == 0 else ("cold", "warm")):
                    if not self.section(f"{kind} build rep {rep}", lambda: self.build_timing(rep, kind)):
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
                if not self.section(f"baseline rep {rep}", lambda: self.baseline_restart(rep)):
                    break
            # 5: backup cost, last (a big database would slow every upgrade's backup step).
            self.section("backup", self.backup_cost)
            # 7b: the rehearsal's cost on that generated database (after it: it slows every upgrade).
            self.section("rehearsal (generated database)", self.rehearsal_generated)
            # 8: adopting a runbook host, then the edge taking its ports.
            for rep in range(c["adopt_reps"]):
                if not self.section(f"adoption rep {rep}", lambda: self.adoption(rep)):
                    break
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
            for path in (self.root, self.repo.parent if self.repo else None):
                if path:
                    shutil.rmtree(path, ignore_errors=True)
            left = [n for n in self.docker("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
                    if n.startswith(f"{PREFIX}-") or n.startswith(EDGE)]
            if left:
                self.fail(f"containers left after cleanup: {left}")
        self.results["seconds"] = self.elapsed()
        self.results["failures"] = self.failures
        return self.write_outputs()

    def write_outputs(self) -> int:
        import report
        self.results["summary"] = report.summarise(self.results)
        publish = not self.quick
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
    parser.add_argument("--rehearsal-reps", type=int,
                        help="repetitions of the upgrade with vs without the rehearsal (per database)")
    parser.add_argument("--adopt-reps", type=int, help="repetitions of the adoption and takeover figure")
    parser.add_argument("--rate", type=float, help="target requests/s of the load")
    parser.add_argument("--keepalive", type=int, help="keep-alive clients")
    parser.add_argument("--fresh", type=int, help="new-connection-per-request clients")
    parser.add_argument("--warmup", type=float, help="seconds of load before each measured command")
    parser.add_argument("--post", type=float, help="seconds of load after each measured command")
    parser.add_argument("--pg-scale", type=int, help="pgbench scale for the backup figure (64 ~ 1 GB)")
    parser.add_argument("--max-load-seconds", type=float, help="hard limit of one load run")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(REPO / "bench-out")
    return args


def _terminate(signum, frame):  # a killed run still cleans up (main's finally)
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(Bench(parse_args()).main())
