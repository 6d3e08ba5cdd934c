"""Figure 13 (issue 22): builds of a realistic client, and the live site while one runs.

A client with Wagtail-sized dependencies (the example's v1.9.0-pillow-source plus wagtail: 51
distributions, Pillow compiled from source with [build] build_packages, sum-core pinned from
git) under a root and an edge of its own (`sum-edge-bench-builds`), sites `bench-b01`..`bench-bNN`
(containers `sum-bench-bNN-*`, images `sum-bench-bNN:*`), removed at the end. The bench adds
sum-core tags v0.9.3, v0.9.4, ... to a copy of the example's sum-core repository and one client
tag per bump (`bench-t1`, ...), so every measured upgrade is a sum-core pin bump never built before:

a. one site's sum-core bump with the wheel cache off ([build] wheel_cache_max_gb = 0: every wheel
   downloaded and Pillow compiled, as every build did before the cache);
b. the same with a cold cache: an empty wheel cache and a new toolchain (a CA bundle with a nonce
   gives new cache keys from the toolchain's first layer: a new host, bar the base images);
c. the same with a warm cache (what the previous bump left);
d. N sites on the host all bumped to the same new sum-core, one after the other: each one's build;
e. the live site's latency under a keep-alive load at 50% and 90% of what it sustains, alone and
   during a warm sum-core bump (CPU weights on, the default).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import stats

EDGE = "sum-edge-bench-builds"
SLUG = "bench-b{:02d}"
NAME = re.compile(r"^sum-bench-b\d{2,}(?:[-:.]|$)")  # "." for its link to the edge, sum-bench-bNN.edge
PIN_HOST = "https://git.sum-core.invalid/acme/"
BUILD_PACKAGES = ("gcc", "libc6-dev", "python3-dev", "libjpeg-dev", "zlib1g-dev")
PACKAGES = ("libjpeg62-turbo",)
WAGTAIL = "wagtail==6.3.2"
BASE = "v1.9.0-pillow-source"  # sum-core 0.9.2 from git, --no-binary pillow
LOAD_PATHS = ("/", "/health/")


def git(repo: Path, *args: str) -> str:
    env = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}
    ident = ["-c", "user.name=bench", "-c", "user.email=bench@example.test"]
    done = subprocess.run(["git", *ident, "-C", str(repo), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


class Builds:
    def __init__(self, bench) -> None:
        self.b = bench
        self.cfg = bench.cfg
        self.root: Path | None = None
        self.ports: dict = {}
        self.tags: list[str] = []
        self.next_tag = 1
        self.sites: list[str] = []
        self.record: dict = {}

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        b = self.b
        self.root = Path(tempfile.mkdtemp(prefix="sumbg-bench-builds-"))
        local = b.LOCAL_HOST_CONF.read_text() if b.LOCAL_HOST_CONF.exists() else ""
        match = re.search(r'^ca_bundle\s*=\s*"([^"]*)"', local, re.M)
        self.ca_source = match.group(1) if match else ""
        local = re.sub(r"^ca_bundle\s*=.*$", "", local, flags=re.M)
        local = re.sub(r"^\[build\]\s*$", "", local, flags=re.M)
        bumps = 3 * int(self.cfg["builds_reps"]) + 2 * int(self.cfg["builds_latency_reps"]) + 3
        core = self.make_core(bumps)
        self.host_toml = local + (
            f'\n[build]\nca_bundle = "{self.root / "ca.crt"}"\n'
            f'git_url_rewrites = {{ "{PIN_HOST}" = "file://{core}/" }}\n'
        )
        self.nonce("start")
        self.ports = b.write_host_config(self.root, EDGE, self.host_toml)
        self.repo = self.make_repo(bumps)
        b.log(f"builds: root {self.root}, edge on 127.0.0.1:{self.ports['http']}, {bumps} sum-core bumps prepared")

    def nonce(self, label: str) -> None:
        """The root's CA bundle, with a comment that makes it unique: new toolchain cache keys."""
        body = Path(self.ca_source).read_text() if self.ca_source else ""
        (self.root / "ca.crt").write_text(body + f"\n# sumbg bench builds {label} {time.time_ns()}\n")

    def make_core(self, bumps: int) -> Path:
        """The example's sum-core repository plus v0.9.3, v0.9.4, ... (one version bump each)."""
        sys.path.insert(0, str(self.b.REPO / "examples" / "sum-site"))
        import build_repo  # noqa: PLC0415 - the example's own builder

        bare = self.root / "core" / "acme" / "sum-core.git"
        build_repo.build_core_repo(bare, quiet=True)
        work = self.root / "core-work"
        git(self.root, "clone", "-q", str(bare), str(work))
        git(work, "checkout", "-q", "v0.9.2")
        init = work / "core" / "sum_core" / "__init__.py"
        for index in range(bumps):
            version = f"0.9.{3 + index}"
            init.write_text(re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text()))
            git(work, "commit", "-q", "-am", f"sum-core {version}")
            git(work, "tag", f"v{version}")
        git(work, "push", "-q", "origin", "--tags")
        return self.root / "core" / "acme"

    def make_repo(self, bumps: int) -> Path:
        """The example client at BASE plus wagtail (bench-t0), then one sum-core bump per tag bench-tN."""
        work = self.root / "client"
        git(self.root, "clone", "-q", str(self.b.repo), str(work))
        git(work, "checkout", "-q", BASE)
        requirements = work / "requirements.txt"
        requirements.write_text(requirements.read_text() + f"# A Wagtail site's dependencies\n{WAGTAIL}\n")
        git(work, "commit", "-q", "-am", "wagtail")
        git(work, "tag", "bench-t0")
        for index in range(bumps):
            text = re.sub(r"sum-core\.git@v[0-9.]+#", f"sum-core.git@v0.9.{3 + index}#", requirements.read_text())
            requirements.write_text(text)
            git(work, "commit", "-q", "-am", f"sum-core 0.9.{3 + index}")
            git(work, "tag", f"bench-t{index + 1}")
        return work

    def site_toml(self, slug: str) -> None:
        """site.toml written before `init`, as an operator would: build packages for Pillow from source."""
        from sumbg.config import BuildSettings, SiteConfig, render_site_toml

        folder = self.root / slug
        folder.mkdir(exist_ok=True)
        config = SiteConfig(
            slug=slug,
            domain=f"{slug}.example.test",
            repo=str(self.repo),
            project="acme",
            settings_module="acme.settings.production",
            wsgi="acme.wsgi:application",
            build=BuildSettings(build_packages=BUILD_PACKAGES, packages=PACKAGES),
        )
        (folder / "site.toml").write_text(render_site_toml(config))

    def init(self, index: int, ref: str) -> dict:
        slug = SLUG.format(index)
        self.site_toml(slug)
        t = time.time()
        done = self.b.sumbg_ok(
            "init",
            slug,
            "--repo",
            str(self.repo),
            "--domain",
            f"{slug}.example.test",
            "--ref",
            ref,
            "--json",
            root=self.root,
            timeout=1800,
        )
        self.sites.append(slug)
        return self.upgrade_record(done, time.time() - t)

    def bump(self) -> str:
        tag = f"bench-t{self.next_tag}"
        self.next_tag += 1
        return tag

    def upgrade(self, slug: str, ref: str, *, cache: bool = True) -> dict:
        toml = self.root / "sumbg.toml"
        text = toml.read_text()
        if not cache:
            toml.write_text(text.replace("\n[build]\n", "\n[build]\nwheel_cache_max_gb = 0\n", 1))
        try:
            t = time.time()
            done = self.b.sumbg_ok(
                "upgrade", slug, ref, "--yes", "--watch", "0", "--json", root=self.root, timeout=1800
            )
            return self.upgrade_record(done, time.time() - t)
        finally:
            toml.write_text(text)

    @staticmethod
    def upgrade_record(done: dict, wall: float) -> dict:
        doc = done["json"] or {}
        build = next((s for s in doc.get("steps") or [] if s.get("name") == "build"), {})
        return {
            "wall_seconds": round(wall, 2),
            "seconds": doc.get("seconds"),
            "steps": {s["name"]: s["seconds"] for s in doc.get("steps") or []},
            "skipped": [s["name"] for s in doc.get("steps") or [] if s.get("outcome") == "skipped"],
            "build_timings": build.get("timings") or {},
            "wheels": build.get("wheels") or {},
            "distributions": len(build.get("dependencies") or []),
            "toolchain": build.get("toolchain"),
            "start": done["start"],
            "end": done["end"],
        }

    def cold(self, toolchain: str | None) -> None:
        """A new host for the builds: no wheel cache, no toolchain (fresh cache keys from its first layer)."""
        shutil.rmtree(self.root / ".cache", ignore_errors=True)
        if toolchain:
            self.b.docker("rmi", "-f", toolchain, check=False)
        self.nonce(f"cold {self.next_tag}")

    # ------------------------------------------------------------------ the figure
    def run(self) -> dict:
        c, b = self.cfg, self.b
        rec = self.record = {
            "base": BASE,
            "wagtail": WAGTAIL,
            "build_packages": list(BUILD_PACKAGES),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": b.results.get("machine"),
            "runs": [],
        }
        b.results["builds"] = rec
        self.prepare()
        rec["init"] = first = self.init(1, "bench-t0")
        b.log(
            f"builds: init bench-b01 {first['wall_seconds']}s (build {first['steps'].get('build')}s, "
            f"{first['distributions']} distributions, cold)"
        )
        site = SLUG.format(1)
        toolchain = first["toolchain"]
        for rep in range(int(c["builds_reps"])):
            order = ("off", "cold", "warm") if rep % 2 == 0 else ("cold", "warm", "off")
            for kind in order:
                if kind == "cold":
                    self.cold(toolchain)
                got = self.upgrade(site, self.bump(), cache=kind != "off")
                toolchain = got["toolchain"] or toolchain
                rec["runs"].append({"rep": rep, "kind": kind, **got})
                b.log(
                    f"builds rep {rep} {kind}: upgrade {got['seconds']}s, build {got['steps'].get('build')}s "
                    f"({got['build_timings']}), wheels {got['wheels'].get('from_cache')} cached / "
                    f"{got['wheels'].get('fetched')} fetched, skipped {got['skipped']}"
                )
        if int(c["builds_latency_reps"]):
            b.section("builds latency", self.latency)
        if int(c["builds_sites"]):
            b.section("builds sites", self.many_sites)
        return rec

    def many_sites(self) -> None:
        """N sites on the bench-t0 line, then all bumped to one new sum-core, one after the other."""
        c, b = self.cfg, self.b
        n = int(c["builds_sites"])
        line = self.record.setdefault("sites", {"n": n, "inits": [], "upgrades": []})
        current = self.current_ref(SLUG.format(1))
        for index in range(2, n + 1):
            line["inits"].append(self.init(index, current))
        target = self.bump()
        for slug in [SLUG.format(i) for i in range(1, n + 1)]:
            got = self.upgrade(slug, target)
            line["upgrades"].append({"site": slug, **got})
            b.log(f"builds sites: {slug} -> {target}: build {got['steps'].get('build')}s, upgrade {got['seconds']}s")

    def current_ref(self, slug: str) -> str:
        state = json.loads((self.root / slug / "state.json").read_text())
        return state["colours"][state["live"]]["ref"]

    def latency(self) -> None:
        """The live site (bench-b01) under a keep-alive load at 50% and 90% of the rate it sustains: a window
        alone, then a warm sum-core bump under the same load; p50/p99 of each and their ratios."""
        b, c = self.b, self.cfg
        site = SLUG.format(1)
        target = (self.ports["http"], f"{site}.example.test")
        load = {"paths": LOAD_PATHS, "keepalive": c["keepalive"], "fresh": 0, "target": target}
        rates = b.sustained_rate("builds-rate", **load)
        record = self.record["latency"] = {"rate": rates, "paths": list(LOAD_PATHS), "runs": []}
        for rep in range(int(c["builds_latency_reps"])):
            for share in (0.5, 0.9):
                rate = round(share * rates["rate_used"], 1)
                got = {"rep": rep, "share": share, "rate": rate}
                idle = b.start_load(f"builds-{rep}-{share}-idle", rate=rate, **load)
                t0 = time.time()
                time.sleep(float(c["builds_idle_seconds"]))
                t1 = time.time()
                samples = b.stop_load(idle, post=0.0)
                got["idle"] = stats.latency_split(stats.in_window(samples, t0, t1))
                running = b.start_load(f"builds-{rep}-{share}-upgrade", rate=rate, **load)
                upgrade = self.upgrade(site, self.bump())
                samples = b.stop_load(running, post=0.0)
                during = stats.in_window(samples, upgrade["start"], upgrade["end"])
                got["upgrade"] = {**stats.latency_split(during), **{k: upgrade[k] for k in ("seconds", "steps")}}
                got["p50_ratio"] = ratio(got["upgrade"].get("p50_ms"), got["idle"].get("p50_ms"))
                got["p99_ratio"] = ratio(got["upgrade"].get("p99_ms"), got["idle"].get("p99_ms"))
                record["runs"].append(got)
                b.log(
                    f"builds latency rep {rep} at {int(share * 100)}% ({rate} req/s): idle p50/p99 "
                    f"{got['idle'].get('p50_ms')}/{got['idle'].get('p99_ms')} ms, during the upgrade "
                    f"{got['upgrade'].get('p50_ms')}/{got['upgrade'].get('p99_ms')} ms (p99 x{got['p99_ratio']}), "
                    f"{got['upgrade'].get('failed')} failed, upgrade {upgrade['seconds']}s"
                )

    # ------------------------------------------------------------------ cleanup
    def cleanup(self, quiet: bool = False) -> None:
        self.b.remove_named_sites(NAME, "sum-bench-b*", EDGE, "builds", quiet=quiet)
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


def ratio(a, b) -> float | None:
    return round(a / b, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def summary(d: dict) -> dict:
    """Figure 13 from its raw record: medians by kind, the N sites' builds, the latency ratios."""
    out: dict = {"base": d.get("base"), "wagtail": d.get("wagtail"), "measured_at": d.get("measured_at")}
    init = d.get("init") or {}
    out["init"] = {k: init.get(k) for k in ("wall_seconds", "seconds", "distributions")} | {
        "build": (init.get("steps") or {}).get("build")
    }
    kinds = {}
    for kind in ("off", "cold", "warm"):
        runs = [r for r in d.get("runs") or [] if r["kind"] == kind]
        if not runs:
            continue
        flat = [
            {
                "build": r["steps"].get("build"),
                "upgrade": r["seconds"],
                "resolve": r["build_timings"].get("resolve"),
                "toolchain": r["build_timings"].get("toolchain"),
                "image": r["build_timings"].get("image"),
                "fetched": r["wheels"].get("fetched"),
                "from_cache": r["wheels"].get("from_cache"),
                "rehearsal_skipped": int("rehearsal" in r["skipped"]),
            }
            for r in runs
        ]
        kinds[kind] = {"n": len(runs), **stats.medians(flat, list(flat[0]))}
    out["kinds"] = kinds
    sites = d.get("sites") or {}
    builds = [u["steps"].get("build") for u in sites.get("upgrades") or []]
    if builds:
        out["sites"] = {
            "n": len(builds),
            "builds": builds,
            "totals": {str(n): round(sum(builds[:n]), 1) for n in (1, 5, 10) if n <= len(builds)},
            "last": builds[-1],
        }
    lat = d.get("latency") or {}
    if lat.get("runs"):
        shares = {}
        for share in (0.5, 0.9):
            runs = [r for r in lat["runs"] if r["share"] == share]
            flat = [
                {
                    "rate": r["rate"],
                    "idle_p50_ms": r["idle"].get("p50_ms"),
                    "idle_p99_ms": r["idle"].get("p99_ms"),
                    "upgrade_p50_ms": r["upgrade"].get("p50_ms"),
                    "upgrade_p99_ms": r["upgrade"].get("p99_ms"),
                    "p50_ratio": r["p50_ratio"],
                    "p99_ratio": r["p99_ratio"],
                    "upgrade_seconds": r["upgrade"].get("seconds"),
                }
                for r in runs
            ]
            failed = sum((r["upgrade"].get("failed") or 0) + (r["idle"].get("failed") or 0) for r in runs)
            shares[str(share)] = {"n": len(runs), **stats.medians(flat, list(flat[0])), "failed": failed}
        out["latency"] = {"rate_used": (lat.get("rate") or {}).get("rate_used"), "shares": shares}
    out["targets"] = targets(out)
    return out


# The targets (idle machine): a warm sum-core bump builds in 15 s and upgrades in 30 s plus the watch;
# the 10th site bumped to the same sum-core builds in under 10 s; the live site's p99 during the bump within
# 1.5x of the same load alone at 50% of capacity, 2x at 90%.
TARGETS = {"warm_build_s": 15.0, "warm_upgrade_s": 30.0, "tenth_site_build_s": 10.0, "p99_50": 1.5, "p99_90": 2.0}


def targets(s: dict) -> dict:
    warm = (s.get("kinds") or {}).get("warm") or {}
    sites = s.get("sites") or {}
    shares = (s.get("latency") or {}).get("shares") or {}

    def within(value, limit, strict=False):
        if not isinstance(value, (int, float)):
            return None
        return value < limit if strict else value <= limit

    return {
        "warm_build": within(warm.get("build"), TARGETS["warm_build_s"]),
        "warm_upgrade": within(warm.get("upgrade"), TARGETS["warm_upgrade_s"]),
        "tenth_site_build": within(sites.get("last"), TARGETS["tenth_site_build_s"], strict=True)
        if sites.get("n", 0) >= 10
        else None,
        "p99_at_50": within((shares.get("0.5") or {}).get("p99_ratio"), TARGETS["p99_50"]),
        "p99_at_90": within((shares.get("0.9") or {}).get("p99_ratio"), TARGETS["p99_90"]),
    }


def section(s: dict, machine: dict, table, fmt) -> list[str]:
    """Figure 13 in BENCHMARKS.md."""
    if not s:
        return []
    kinds = s.get("kinds") or {}
    names = {"off": "wheel cache off (as before the cache)", "cold": "cold cache (new host)", "warm": "warm cache"}
    rows = [
        [
            names[k],
            fmt(v.get("n")),
            fmt(v.get("build"), " s"),
            fmt(v.get("resolve"), " s"),
            fmt(v.get("toolchain"), " s"),
            fmt(v.get("image"), " s"),
            f"{fmt(v.get('from_cache'))} / {fmt(v.get('fetched'))}",
            fmt(v.get("upgrade"), " s"),
        ]
        for k, v in kinds.items()
    ]
    parts = [
        "## 13. Builds: a sum-core bump of a Wagtail-sized client (issue 22)",
        "",
        f"The example's `{s.get('base')}` plus `{s.get('wagtail')}` ({fmt((s.get('init') or {}).get('distributions'))} "
        "distributions; Pillow compiled from source with `[build] build_packages`; sum-core pinned from git), one "
        "sum-core pin bump per upgrade, each to a sum-core version never built before; `--watch 0`, no load. The "
        "upgrade's seconds are its whole run without the watch (the bump has no migration: the rehearsal and "
        f"migrate are skipped). The site's first build (init, everything cold): {fmt((s.get('init') or {}).get('build'), ' s')}. "
        f"Measured {s.get('measured_at')}.",
        "",
        table(
            ["bump", "n", "build", "resolve", "toolchain", "image build", "wheels cached / fetched", "upgrade"], rows
        ),
        "",
    ]
    sites = s.get("sites") or {}
    if sites:
        parts += [
            f"{sites['n']} sites of that client on this host, all bumped to one new sum-core, one after the other "
            f"(the first compiles sum-core's wheel and fills Docker's cache; the others reuse both): build seconds "
            f"{', '.join(fmt(x) for x in sites['builds'])}; total "
            + ", ".join(f"N = {n}: {fmt(t, ' s')}" for n, t in sites["totals"].items())
            + f"; the last site's build {fmt(sites['last'], ' s')}.",
            "",
        ]
    lat = s.get("latency") or {}
    if lat:
        rows = [
            [
                f"{int(float(share) * 100)}% ({fmt(v.get('rate'))} req/s)",
                fmt(v.get("n")),
                f"{fmt(v.get('idle_p50_ms'))} / {fmt(v.get('idle_p99_ms'))} ms",
                f"{fmt(v.get('upgrade_p50_ms'))} / {fmt(v.get('upgrade_p99_ms'))} ms",
                f"{fmt(v.get('p99_ratio'))}x",
                fmt(v.get("failed")),
                fmt(v.get("upgrade_seconds"), " s"),
            ]
            for share, v in lat["shares"].items()
        ]
        parts += [
            f"The live site's latency (keep-alive clients on `/` and `/health/`) at 50% and 90% of the rate it "
            f"sustains ({fmt(lat.get('rate_used'))} req/s), with no upgrade and during a warm sum-core bump "
            "(CPU weights on, the default); medians over the repetitions:",
            "",
            table(
                ["load", "n", "alone p50 / p99", "during the upgrade p50 / p99", "p99 ratio", "failed", "upgrade"], rows
            ),
            "",
        ]
    met = s.get("targets") or {}
    words = {True: "met", False: "**not met**", None: "not measured"}
    parts += [
        "Targets (issue 22, idle machine): warm build ≤ 15 s: "
        f"{words[met.get('warm_build')]}; warm upgrade ≤ 30 s plus the watch: {words[met.get('warm_upgrade')]}; "
        f"the 10th site's build < 10 s: {words[met.get('tenth_site_build')]}; p99 during the upgrade ≤ 1.5x at 50%: "
        f"{words[met.get('p99_at_50')]}, ≤ 2x at 90%: {words[met.get('p99_at_90')]}.",
        "",
    ]
    return parts
