"""BENCHMARKS.md, the timeline plot and the console summary, from results.json's numbers only."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path

import builds as builds_figure
import stats

WORKER_SLUG = "bench-wrk"  # figure 12's site (bench/run.py)

UPGRADE_KEYS = [
    "sent",
    "failed",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "rate_per_s",
    "window_seconds",
    "window_sent",
    "window_failed",
    "window_p50_ms",
    "window_p99_ms",
    "flip_seconds",
    "upgrade_seconds",
    "all_new_after_start_s",
]
BASELINE_KEYS = [
    "sent",
    "failed",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "rate_per_s",
    "window_seconds",
    "window_sent",
    "window_failed",
    "window_p50_ms",
    "window_p99_ms",
    "deploy_seconds",
    "all_new_after_start_s",
]
ROLLBACK_KEYS = [
    "sent",
    "failed",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "rate_per_s",
    "flip_seconds",
    "rollback_seconds",
    "wall_seconds",
    "all_old_after_start_s",
    "last_new_after_start_s",
]
BASELINE_ROLLBACK_KEYS = [
    "sent",
    "failed",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "rate_per_s",
    "restart_seconds",
    "wall_seconds",
    "all_old_after_start_s",
    "last_new_after_start_s",
]
OFFSITE_KEYS = [
    "sumbg_first_s",
    "sumbg_second_s",
    "raw_first_s",
    "raw_second_s",
    "raw_first_dump_s",
    "raw_second_dump_s",
    "sumbg_first_data_added",
    "sumbg_second_data_added",
    "repo_first_bytes",
    "repo_second_bytes",
    "sumbg_first_local_bytes",
    "raw_first_bytes",
    "raw_second_bytes",
    "ratio_first",
    "ratio_second",
]
BACKUP_KEYS = [
    "sumbg_s",
    "sumbg_reported_s",
    "raw_dump_s",
    "ratio",
    "verify_s",
    "verify_share",
    "sumbg_bytes",
    "raw_bytes",
    "raw_list_s",
    "raw_sha256_s",
]
ADOPTION_KEYS = [
    "window_s",
    "sent",
    "answered_503",
    "refused",
    "failed_other",
    "writes_acknowledged",
    "writes_lost",
    "adopt_s",
    "stop_old_s",
    "final_import_s",
    "takeover_window_s",
    "takeover_sent",
    "takeover_refused",
    "takeover_failed_other",
]
REHEARSAL_KEYS = [
    "with_s",
    "without_s",
    "added_s",
    "added_share",
    "with_wall_s",
    "without_wall_s",
    "rehearsal_s",
    "restore_s",
    "start_s",
    "migrate_s",
    "after_switch_s",
    "other_s",
    "database_mb",
    "applied",
]


WORKER_KEYS = [
    "wall_seconds",
    "traffic_flipped_after_start_s",
    "flip_seconds",
    "all_old_after_start_s",
    "first_task_after_flip_s",
    "old_worker_drain_s",
    "old_worker_exit_after_command_s",
    "p50_ms",
    "p99_ms",
    "rate_per_s",
]
WORKER_TARGET_S = 1.0  # issue 18: the rollback command, start to exit, with a busy worker


def worker_summary(d: dict) -> dict:
    """Figure 12 per arm (the worker moved in the background, and --wait-worker): medians over the
    repetitions, requests and tasks summed, the target's verdict."""
    out: dict = {
        "rate": d.get("rate"),
        "slow_tasks": d.get("slow_tasks"),
        "slow_seconds": d.get("slow_seconds"),
        "target_s": WORKER_TARGET_S,
    }
    for arm, wait in (("background", False), ("wait", True)):
        runs = [r for r in d.get("runs") or [] if r.get("wait_worker") is wait]
        if not runs:
            continue
        out[arm] = {
            "n": len(runs),
            **stats.medians(runs, WORKER_KEYS),
            "max_wall_seconds": max(r["wall_seconds"] for r in runs),
            **{
                f"{key}_total": sum(r.get(key) or 0 for r in runs)
                for key in ("sent", "failed", "tasks_queued", "tasks_run_once", "tasks_missing", "tasks_run_twice")
            },
        }
    background = out.get("background") or {}
    if background:
        out["target_met"] = background.get("max_wall_seconds", 99) <= WORKER_TARGET_S
    return out


def _runs(results: dict, key: str) -> list[dict]:
    return (results.get(key) or {}).get("runs") or []


def summarise(results: dict) -> dict:
    out: dict = {}
    for key, keys in (
        ("upgrade", UPGRADE_KEYS),
        ("baseline", BASELINE_KEYS),
        ("rollback", ROLLBACK_KEYS),
        ("baseline_rollback", BASELINE_ROLLBACK_KEYS),
    ):
        runs = _runs(results, key)
        if runs:
            out[key] = {"n": len(runs), **stats.medians(runs, keys)}
    builds = _runs(results, "build")
    if builds:
        out["build"] = {}
        for kind in ("warm", "cold"):
            runs = [r for r in builds if r["kind"] == kind]
            if not runs:
                continue
            names = list(dict.fromkeys(n for r in runs for n in r["steps"]))
            flat = [{**r["steps"], "upgrade_seconds": r["upgrade_seconds"]} for r in runs]
            out["build"][kind] = {"n": len(runs), **stats.medians(flat, names + ["upgrade_seconds"])}
    backup = results.get("backup") or {}
    if backup.get("runs"):
        out["backup"] = {
            "n": len(backup["runs"]),
            "db_bytes": backup["db_bytes"],
            "pgbench_scale": backup["pgbench_scale"],
            **stats.medians(backup["runs"], BACKUP_KEYS),
            "verify_source": backup["runs"][0]["verify_source"],
        }
    rehearsal = {}
    for label, record in (results.get("rehearsal") or {}).items():
        runs = (record or {}).get("runs") or []
        if runs:
            rehearsal[label] = {
                "n": len(runs),
                "db_bytes": record.get("db_bytes"),
                **({"pgbench_scale": record["pgbench_scale"]} if "pgbench_scale" in record else {}),
                **stats.medians(runs, REHEARSAL_KEYS),
                "verdicts": sorted({str(r.get("verdict")) for r in runs}),
                "policies": sorted({str(r.get("policy")) for r in runs}),
            }
    if rehearsal:
        out["rehearsal"] = rehearsal
    adoption = _runs(results, "adoption")
    if adoption:
        out["adoption"] = {
            "n": len(adoption),
            **stats.medians(adoption, ADOPTION_KEYS),
            "max_window_s": max(r["window_s"] for r in adoption),
            "writes_lost_total": sum(r["writes_lost"] for r in adoption),
            "failed_other_total": sum(r["failed_other"] for r in adoption),
            "certificates_kept": sum(1 for r in adoption if r["certificate_kept"]),
        }
    mem = _runs(results, "memory")
    if mem:
        flat = [
            {
                "idle_stats_mib": m["idle"]["stats_mib"],
                "idle_rss_mib": m["idle"]["rss_sum_mib"],
                "live_stats_mib": m["live"]["stats_mib"],
                "live_rss_mib": m["live"]["rss_sum_mib"],
            }
            for m in mem
        ]
        out["memory"] = {"n": len(mem), **stats.medians(flat, list(flat[0]))}
    offsite = results.get("offsite") or {}
    if offsite.get("runs"):
        runs = offsite["runs"]
        steps = {}
        for which in ("first", "second"):
            flat = [r.get(f"sumbg_{which}_steps") or {} for r in runs]
            names = list(dict.fromkeys(n for f in flat for n in f))
            steps[which] = stats.medians(flat, names) if names else {}
        out["offsite"] = {
            "n": len(runs),
            **{k: offsite.get(k) for k in ("pgbench_scale", "db_bytes", "media_files", "media_bytes")},
            **stats.medians(runs, OFFSITE_KEYS),
            "steps": steps,
        }
    if results.get("density"):
        out["density"] = density_summary(results["density"])
    if (results.get("latency") or {}).get("rate"):
        out["latency"] = latency_summary(results["latency"])
    if (results.get("worker") or {}).get("runs"):
        out["worker"] = worker_summary(results["worker"])
    if (results.get("builds") or {}).get("runs"):
        out["builds"] = builds_figure.summary(results["builds"])
    return out


def _median(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(values), 2) if values else None


def density_summary(d: dict) -> dict:
    """Figure 9 from its raw record: medians over the sites, the upgraded site's figures, the projection."""
    out: dict = {
        "sites": d.get("sites"),
        "target": d.get("target"),
        "host_gib": d.get("host_gib"),
        "cores": d.get("cores"),
        "reserve_gib": d.get("reserve_gib"),
        "settle_seconds": d.get("settle_seconds"),
    }
    inits = d.get("inits") or []
    if inits:
        out.update(
            init_first_s=inits[0]["seconds"],
            init_first_build=inits[0].get("build_outcome"),
            init_first_build_s=inits[0].get("build_seconds"),
            init_rest_median_s=_median([i["seconds"] for i in inits[1:]]),
            init_rest_max_s=max((i["seconds"] for i in inits[1:]), default=None),
            init_total_s=round(sum(i["seconds"] for i in inits), 1),
            sites_initialised=len(inits),
            init_last_slug=inits[-1]["slug"],
            init_last_s=inits[-1]["seconds"],
            init_last_steps=inits[-1].get("steps"),
        )
        if len(inits) > 1:
            out.update(init_second_s=inits[1]["seconds"], init_second_steps=inits[1].get("steps"))
    out["stopped"] = d.get("stopped")
    out["measured_by"] = d.get("measured_by")
    answering = d.get("answering") or {}
    if answering:
        out.update(answering=answering.get("answering"), answering_asked=answering.get("asked"))
    out["networks"] = d.get("networks")
    one = d.get("one_site") or {}
    if one:
        out["one_site"] = {
            "reload_median_s": (one.get("reload") or {}).get("reload_median_s"),
            "exec_median_s": (one.get("reload") or {}).get("exec_median_s"),
            "site_blocks": (one.get("reload") or {}).get("site_blocks"),
            "switch_step_s": (one.get("upgrade") or {}).get("switch_step_s"),
            "upgrade_flip_s": (one.get("upgrade") or {}).get("flip_seconds"),
            "rollback_flip_s": (one.get("rollback") or {}).get("flip_seconds"),
        }
    reload_all = d.get("reload_all") or {}
    if reload_all:
        out["all_sites_reload"] = {
            "reload_median_s": reload_all.get("reload_median_s"),
            "exec_median_s": reload_all.get("exec_median_s"),
            "site_blocks": reload_all.get("site_blocks"),
        }
    up = d.get("all_up") or {}
    sites = list((up.get("sites") or {}).values())
    if sites:
        live_only = [site["live_only_mib"] for site in sites]

        def part(name: str):
            return _median([site["containers_mib"].get(name) for site in sites])

        out.update(
            sites_up=len(sites),
            live_only_median_mib=_median(live_only),
            live_only_max_mib=max(live_only),
            live_only_min_mib=min(live_only),
            live_only_total_mib=round(sum(live_only), 1),
            data_median_mib=_median([site["data_mib"] for site in sites]),
            postgres_median_mib=part("data-postgres"),
            redis_median_mib=part("data-redis"),
            live_colour_median_mib=_median([site["colours_mib"][site["live"]] for site in sites]),
            edge_mib=up.get("edge_mib"),
            cpu_percent_sites=up.get("cpu_percent_sites"),
            edge_cpu_percent=up.get("edge_cpu_percent"),
        )
    before, after = d.get("mem_available_before_mib"), d.get("mem_available_after_mib")
    out.update(mem_available_before_mib=before, mem_available_after_mib=after)
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and sites:
        out["mem_available_drop_mib"] = round(before - after, 1)
        out["host_drop_per_site_mib"] = round((before - after - (out.get("edge_mib") or 0)) / len(sites), 1)
    cpu_before, cpu_up = d.get("host_cpu_before_cores"), d.get("host_cpu_all_up_cores")
    out.update(
        host_cpu_before_cores=cpu_before,
        host_cpu_all_up_cores=cpu_up,
        host_cpu_window_seconds=d.get("host_cpu_window_seconds"),
    )
    if isinstance(cpu_before, (int, float)) and isinstance(cpu_up, (int, float)) and sites:
        out["host_cpu_per_site_cores"] = round(max(cpu_up - cpu_before, 0.0) / len(sites), 4)
    upgrade = d.get("upgrade") or {}
    if upgrade:
        out["upgrade"] = {k: upgrade.get(k) for k in UPGRADE_KEYS + ["wall_seconds"]}
        out["upgrade"]["rate_used"] = (d.get("calibration") or {}).get("rate_used")
        out["upgrade"]["switch_step_s"] = (upgrade.get("steps") or {}).get("switch")
    target = d.get("target")
    upgraded = ((d.get("after_upgrade") or {}).get("sites") or {}).get(target)
    if upgraded:
        out.update(
            target_live_plus_idle_mib=upgraded["all_colours_mib"],
            target_live_after_upgrade_mib=upgraded["live_only_mib"],
            idle_colour=d.get("idle_colour"),
            idle_colour_mib=upgraded["colours_mib"].get(d.get("idle_colour")),
        )
    retired = ((d.get("after_retire") or {}).get("sites") or {}).get(target)
    if retired:
        out.update(
            target_live_only_after_retire_mib=retired["live_only_mib"],
            colours_after_retire=sorted(retired["colours_mib"]),
        )
    rollback = d.get("rollback") or {}
    if rollback:
        out.update(
            rollback_wall_s=rollback.get("wall_seconds"),
            rollback_record_s=rollback.get("seconds"),
            rollback_instant=rollback.get("instant"),
            rollback_flip_s=rollback.get("flip_seconds"),
            rollback_ready_s=(rollback.get("steps") or {}).get("ready"),
        )
    out["projection"] = density_projection(out)
    return out


# Figure 10's targets (issue 13): the live site's latency during an upgrade (weights on) over the same load with
# no upgrade.
LATENCY_TARGETS = {"p50_ms": 1.25, "p99_ms": 1.5}
LATENCY_ARMS = ("idle", "on", "off")


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def latency_summary(d: dict) -> dict:
    """Figure 10 from its raw record: per arm (idle, weights on, weights off) medians over the repetitions of
    latency, rate and wall time, failures summed, ratios to the same repetition's idle window (then their
    median), the targets' verdicts, the wall time the weights add."""
    runs = d.get("runs") or []
    out: dict = {
        "rate": d.get("rate"),
        "paths": d.get("paths"),
        "clients": d.get("clients"),
        "primed_seconds": d.get("primed_seconds"),
        "targets": LATENCY_TARGETS,
    }
    paths = d.get("paths") or []
    for arm in LATENCY_ARMS:
        done = [r for r in runs if r.get(arm)]
        if not done:
            continue
        flat = []
        for r in done:
            a, idle = r[arm], r.get("idle") or {}
            row = {
                k: a.get(k)
                for k in (
                    "p50_ms",
                    "p99_ms",
                    "max_ms",
                    "rate_per_s",
                    "sent",
                    "wall_seconds",
                    "upgrade_seconds",
                    "window_seconds",
                    "window_sent",
                    "seconds",
                )
            }
            for key in LATENCY_TARGETS:
                row[f"{key}_ratio"] = _ratio(a.get(key), idle.get(key))
                excluding = a.get("excluding_switch") or {}
                row[f"excl_{key}"] = excluding.get(key)
                row[f"excl_{key}_ratio"] = _ratio(excluding.get(key), idle.get(key))
                for path in paths:
                    mine, base = (a.get("by_path") or {}).get(path) or {}, (idle.get("by_path") or {}).get(path) or {}
                    row[f"{path} {key}"] = mine.get(key)
                    row[f"{path} {key}_ratio"] = _ratio(mine.get(key), base.get(key))
            for path in paths:
                row[f"{path} rate_per_s"] = ((a.get("by_path") or {}).get(path) or {}).get("rate_per_s")
            flat.append(row)
        summary = {
            "n": len(done),
            **stats.medians(flat, list(flat[0])),
            "failed_total": sum(r[arm].get("failed") or 0 for r in done),
            "sent_total": sum(r[arm].get("sent") or 0 for r in done),
            "errors": dict(sum((Counter(r[arm].get("errors") or {}) for r in done), Counter())),
        }
        for path in paths:
            parts = [(r[arm].get("by_path") or {}).get(path) or {} for r in done]
            summary[f"{path} failed_total"] = sum(p.get("failed") or 0 for p in parts)
            summary[f"{path} sent_total"] = sum(p.get("sent") or 0 for p in parts)
        if arm != "idle":
            steps = [r[arm].get("steps") or {} for r in done]
            names = list(dict.fromkeys(n for st in steps for n in st))
            summary["steps"] = stats.medians(steps, names)
            summary["builds"] = dict(Counter(str(r[arm].get("build_outcome")) for r in done))
            summary["previous_cpu_shares"] = sorted(
                {str((r[arm].get("cpu_shares") or {}).get("previous_after")) for r in done}
            )
            summary["targets_met_reps"] = sum(
                1
                for row in flat
                if all(
                    isinstance(row.get(f"{k}_ratio"), (int, float)) and row[f"{k}_ratio"] <= limit
                    for k, limit in LATENCY_TARGETS.items()
                )
            )
        out[arm] = summary
    on = out.get("on") or {}
    out["targets_met"] = (
        {k: on.get(f"{k}_ratio") <= limit for k, limit in LATENCY_TARGETS.items()}
        if all(isinstance(on.get(f"{k}_ratio"), (int, float)) for k in LATENCY_TARGETS)
        else None
    )
    pairs = [(r["on"].get("wall_seconds"), r["off"].get("wall_seconds")) for r in runs if r.get("on") and r.get("off")]
    pairs = [(a, b) for a, b in pairs if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b]
    if pairs:
        out["wall_added_s"] = round(statistics.median(a - b for a, b in pairs), 3)
        out["wall_ratio"] = round(statistics.median(a / b for a, b in pairs), 3)
        out["wall_pairs"] = len(pairs)
    return out


# The share of the host's cores that idle sites may keep busy in the projection: the rest is for
# their visitors and for an upgrade's build, migrations and collectstatic.
DENSITY_IDLE_CPU_SHARE = 0.25


def density_projection(s: dict) -> dict | None:
    """How many example sites a host of `host_gib` holds, from memory alone: (host - reserve - edge - one
    extra colour for the site being upgraded) / live-only memory per site."""
    median, edge = s.get("live_only_median_mib"), s.get("edge_mib")
    if not median or edge is None or not s.get("host_gib"):
        return None
    extra, extra_from = s.get("idle_colour_mib"), "the upgraded site's idle colour, measured"
    if extra is None:
        extra, extra_from = s.get("live_colour_median_mib") or 0, "median live colour (no upgrade measured)"
    budget = s["host_gib"] * 1024 - s["reserve_gib"] * 1024 - edge - extra
    per_site_host = s.get("host_drop_per_site_mib")
    cpu_site, cores = s.get("host_cpu_per_site_cores"), s.get("cores")
    cpu_budget = cores * DENSITY_IDLE_CPU_SHARE if cores else None
    return {
        "budget_mib": round(budget, 1),
        "extra_colour_mib": extra,
        "extra_from": extra_from,
        "idle_cpu_budget_cores": cpu_budget,
        "sites_by_idle_cpu": math.floor(cpu_budget / cpu_site) if cpu_budget and cpu_site else None,
        "sites_at_median": math.floor(budget / median),
        "sites_at_max": math.floor(budget / s["live_only_max_mib"]),
        "sites_from_host_drop": math.floor(budget / per_site_host) if per_site_host and per_site_host > 0 else None,
    }


# ---------------------------------------------------------------- formatting
def fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text}{unit}"


def ratio(ours, theirs) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
        return "—"
    if theirs == 0:
        return "— (baseline 0)" if ours else "equal (both 0)"
    return f"{ours / theirs:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def compare(rows: list[tuple], ours: dict, theirs: dict) -> str:
    body = []
    for label, key_ours, key_theirs, unit in rows:
        a, b = ours.get(key_ours), theirs.get(key_theirs)
        body.append([label, fmt(a, unit), fmt(b, unit), ratio(a, b)])
    return body


def markdown(results: dict, *, quick: bool) -> str:
    s = results.get("summary") or {}
    m = results.get("machine") or {}
    cfg = results.get("config") or {}
    up, base = s.get("upgrade") or {}, s.get("baseline") or {}
    rb, brb = s.get("rollback") or {}, s.get("baseline_rollback") or {}
    parts = [
        "# sumbg benchmarks",
        "",
        "Generated by `bench/run.py` "
        + ("**in quick mode (1 repetition, short loads, tiny DB): not for quoting**" if quick else "(full mode)")
        + f" on {results.get('started_at')}; every number below comes from that run "
        + (
            "(raw numbers and per-request samples: `results.json` and `samples/` in the `--out` folder; an `--only` "
            "run is never published). "
            if results.get("only")
            else "(raw numbers: `bench/results.json`, per-request samples in the `--out` folder). "
        )
        + "Medians over the repetitions; *n* is the repetition count.",
        "",
        "## Machine",
        "",
        table(
            ["cores", "memory", "CPU", "kernel", "Docker", "Compose", "Caddy", "load average at start"],
            [
                [
                    fmt(m.get("cores")),
                    fmt(m.get("memory_gb"), " GB"),
                    m.get("cpu") or "—",
                    m.get("kernel") or "—",
                    m.get("docker") or "—",
                    m.get("compose") or "—",
                    m.get("caddy") or "—",
                    " / ".join(str(x) for x in m.get("loadavg_at_start") or []),
                ]
            ],
        ),
        "",
        "## How to reproduce",
        "",
        "    make bench                                  # full run; writes BENCHMARKS.md, bench/results.json, bench/timeline.png",
        "    make bench BENCH_ARGS='--reps 3 --pg-scale 32'",
        "    .venv/bin/python bench/run.py --quick --out /tmp/bench   # < 3 min, files in /tmp/bench only",
        "    .venv/bin/python bench/run.py --only density --density-sites 3 --out /tmp/d   # figure 9 alone: /tmp/d",
        "    .venv/bin/python bench/run.py --only latency --latency-reps 1 --out /tmp/l    # figure 10 alone: /tmp/l",
        "    .venv/bin/python bench/run.py --only offsite --backup-reps 1 --out /tmp/o     # figure 11 alone: /tmp/o",
        "    .venv/bin/python bench/run.py --only worker --worker-reps 1 --out /tmp/w      # figure 12 alone: /tmp/w",
        "    .venv/bin/python bench/run.py --only builds --out /tmp/b13                   # figure 13 alone: /tmp/b13",
        "    .venv/bin/python bench/run.py --only density --publish   # figure 9 alone, replacing it here and in bench/",
        "",
    ]
    only = results.get("only")
    if only:
        number, section = {
            "density": (9, lambda: density_section(s.get("density") or {}, m)),
            "latency": (10, lambda: latency_section(s.get("latency") or {}, cfg, m)),
            "offsite": (11, lambda: offsite_section(s.get("offsite") or {})),
            "worker": (12, lambda: worker_section(s.get("worker") or {}, cfg)),
            "builds": (13, lambda: builds_figure.section(s.get("builds") or {}, m, table, fmt)),
        }[only]
        parts += [f"This run measured figure {number} alone (`--only {only}`).", ""]
        return "\n".join(parts + section() + failures_section(results))
    parts += [
        f"Configuration of this run: {cfg.get('reps')} repetitions of each load run, {cfg.get('build_reps')} of "
        f"each build timing, {cfg.get('backup_reps')} of the backup comparison, {cfg.get('rehearsal_reps')} of "
        f"each rehearsal comparison, {cfg.get('latency_reps', 0)} of figure 10's latency comparison; "
        f"figures 1–3 and 6: load target "
        f"{fmt(cfg.get('rate'))} req/s from {cfg.get('keepalive')} keep-alive clients and {cfg.get('fresh')} "
        f"new-connection-per-request clients (Python, no retries, 10 s timeout) on `GET /health/` through "
        f"Caddy on 127.0.0.1 with `Host: bench-acme.example.test` and `X-Forwarded-Proto: https`; "
        f"{fmt(cfg.get('warmup'))} s of load before and {fmt(cfg.get('post'))} s after each measured command. "
        "A request fails on any status outside 2xx/3xx or any connection error/timeout. Latency percentiles are "
        "nearest-rank over every request (failed ones included).",
        "",
        "The example site is `examples/sum-site` (release v1.0.0, sum-core 0.6.3 → v1.1.0, sum-core 0.7.0: a new "
        "migration and CSS), 2 gunicorn sync workers per colour. Before every repetition the v1.1.0 migration is "
        "unapplied (`manage.py migrate <app> <v1.0.0's last>` with the v1.1.0 image), so every deploy migrates.",
        "",
        "![per-second requests and latency](bench/timeline.png)" if not quick else "![timeline](timeline.png)",
        "",
        "## 1–2. Requests during the deploy: `sumbg upgrade` vs restart-based deploy",
        "",
        "*sumbg upgrade*: `sumbg upgrade bench-acme v1.1.0 --watch 0 --json` with the site live on v1.0.0. "
        "Its switch window runs from the moment the upgrade prints its `switch` step to that step's end "
        "(start + the step's `seconds` in the `--json` record). *Restart deploy* (the manual runbook, in "
        "containers): on the live colour's Compose project, with sumbg's own `compose/app.yml` and env file and "
        "`SUMBG_IMAGE` switched to the v1.1.0 image: `run --rm web manage.py migrate`, `collectstatic --clear`, "
        "then `up -d --force-recreate web`, behind the golden path's plain `reverse_proxy` to the one app "
        "server (for this part the site's Caddy file loses sumbg's retry on the other colour, and is "
        "reloaded); its window runs from the start of `up` to the first successful "
        "answer from v1.1.0 (or the end of `up`, if later). Requests in a window: those in flight at any "
        "moment of it. Ratio = sumbg / restart.",
        "",
        table(
            ["metric", f"sumbg upgrade (n={up.get('n', 0)})", f"restart deploy (n={base.get('n', 0)})", "ratio"],
            compare(
                [
                    ("requests sent", "sent", "sent", ""),
                    ("achieved rate", "rate_per_s", "rate_per_s", " req/s"),
                    ("failed requests", "failed", "failed", ""),
                    ("latency p50, whole run", "p50_ms", "p50_ms", " ms"),
                    ("latency p99, whole run", "p99_ms", "p99_ms", " ms"),
                    ("latency max, whole run", "max_ms", "max_ms", " ms"),
                    ("switch / restart window", "window_seconds", "window_seconds", " s"),
                    ("requests in the window", "window_sent", "window_sent", ""),
                    ("failed in the window", "window_failed", "window_failed", ""),
                    ("latency p50 in the window", "window_p50_ms", "window_p50_ms", " ms"),
                    ("latency p99 in the window", "window_p99_ms", "window_p99_ms", " ms"),
                    (
                        "command start → every new request on v1.1.0",
                        "all_new_after_start_s",
                        "all_new_after_start_s",
                        " s",
                    ),
                    ("whole deploy (sumbg: record `seconds`)", "upgrade_seconds", "deploy_seconds", " s"),
                ],
                up,
                base,
            ),
        ),
        "",
        f"sumbg's flip alone (`flip_seconds`: write the live state file, confirm v1.1.0 through Caddy): "
        f"{fmt(up.get('flip_seconds'), ' s', 3)}. The sumbg upgrade also builds (skipped after the first "
        "repetition: the image exists), backs up the database, and starts and smoke-tests the new colour before "
        "the switch; the restart deploy reuses the image sumbg built and takes no backup.",
        "",
        "## 3. Rollback: `sumbg rollback` vs restart-based rollback",
        "",
        "*sumbg rollback*: `sumbg rollback bench-acme --json` right after an upgrade (v1.0.0 still running "
        "idle). *Restart rollback*: `collectstatic --clear` and `up -d --force-recreate web` with the v1.0.0 image "
        'on the live colour, right after the restart deploy. "Every new request on v1.0.0" = from the command\'s '
        "start to the start of the first request after which every request was answered OK by v1.0.0.",
        "",
        table(
            ["metric", f"sumbg rollback (n={rb.get('n', 0)})", f"restart rollback (n={brb.get('n', 0)})", "ratio"],
            compare(
                [
                    ("requests sent", "sent", "sent", ""),
                    ("failed requests", "failed", "failed", ""),
                    ("latency p50", "p50_ms", "p50_ms", " ms"),
                    ("latency p99", "p99_ms", "p99_ms", " ms"),
                    (
                        "command start → every new request on v1.0.0",
                        "all_old_after_start_s",
                        "all_old_after_start_s",
                        " s",
                    ),
                    ("flip alone (sumbg `flip_seconds`) / restart window", "flip_seconds", "restart_seconds", " s"),
                    ("whole command", "wall_seconds", "wall_seconds", " s"),
                ],
                rb,
                brb,
            ),
        ),
        "",
    ]
    build = s.get("build") or {}
    warm, cold = build.get("warm") or {}, build.get("cold") or {}
    names = list(dict.fromkeys([*warm, *cold]))
    names = [n for n in names if n not in ("n", "upgrade_seconds")]
    rows = [[n, fmt(warm.get(n), " s"), fmt(cold.get(n), " s"), ratio(cold.get(n), warm.get(n))] for n in names]
    rows.append(
        [
            "**whole upgrade**",
            fmt(warm.get("upgrade_seconds"), " s"),
            fmt(cold.get("upgrade_seconds"), " s"),
            ratio(cold.get("upgrade_seconds"), warm.get("upgrade_seconds")),
        ]
    )
    parts += [
        "## 4. Upgrade wall time by step: warm vs cold build cache",
        "",
        "`sumbg upgrade bench-acme v1.1.0 --watch 0` without load, v1.0.0 → v1.1.0 each time. *Warm*: the tag "
        "`sum-bench-acme:v1.1.0` is removed with `docker rmi --no-prune`, so sumbg rebuilds but every layer is "
        "in the (legacy) builder's cache. *Cold*: the image is removed and the bench root's CA bundle "
        "(`[build] ca_bundle`, a copy of the host's bundle) gets a new nonce comment, so every layer from "
        "`COPY .sumbg/ca.crt` on — the pip install of all requirements and the app copy — is rebuilt; only the "
        "base image and the `useradd` layer come from the cache. No shared cache is pruned (the host's other "
        "images stay as they were). For comparison, the restart deploy of figure 2 took "
        f"{fmt(base.get('deploy_seconds'), ' s')} (migrate + collectstatic + restart; no build, no backup). "
        "Ratio = cold / warm.",
        "",
        table(["step", f"warm (n={warm.get('n', 0)})", f"cold (n={cold.get('n', 0)})", "ratio"], rows),
        "",
    ]
    b = s.get("backup") or {}
    parts += [
        "## 5. Backup cost: `sumbg backup` vs raw `pg_dump -Fc`",
        "",
        f"Database filled with `pgbench -i -s {b.get('pgbench_scale', '—')}` in the site's Postgres container: "
        f"{fmt((b.get('db_bytes') or 0) / 1e6 if b.get('db_bytes') else None, ' MB', 0)} "
        "(`pg_database_size`). *sumbg backup*: `sumbg backup bench-acme --json`, timed from the outside "
        "(pg_dump in the container, pg_restore --list, sha256). *Raw*: `docker exec <postgres> pg_dump "
        "--format=custom` to the same backups folder as the same user. The two alternate order per repetition. "
        f"Verify time: {b.get('verify_source', '—')}. Ratio = sumbg / raw.",
        "",
        table(
            ["metric", f"sumbg backup (n={b.get('n', 0)})", "raw pg_dump -Fc", "ratio"],
            [
                ["wall time", fmt(b.get("sumbg_s"), " s"), fmt(b.get("raw_dump_s"), " s"), fmt(b.get("ratio"), "×")],
                [
                    "sumbg's own record (`seconds`, no CLI start-up)",
                    fmt(b.get("sumbg_reported_s"), " s"),
                    fmt(b.get("raw_dump_s"), " s"),
                    ratio(b.get("sumbg_reported_s"), b.get("raw_dump_s")),
                ],
                [
                    "dump size",
                    fmt(b.get("sumbg_bytes"), " B"),
                    fmt(b.get("raw_bytes"), " B"),
                    ratio(b.get("sumbg_bytes"), b.get("raw_bytes")),
                ],
                [
                    "verify (pg_restore --list + sha256)",
                    fmt(b.get("verify_s"), " s"),
                    "—",
                    f"{fmt((b.get('verify_share') or 0) * 100 if b.get('verify_share') is not None else None, '%', 1)}"
                    " of sumbg's time",
                ],
            ],
        ),
        "",
    ]
    mem = s.get("memory") or {}
    total = (mem.get("idle_stats_mib") or 0) + (mem.get("live_stats_mib") or 0)
    parts += [
        "## 6. Memory of the idle colour kept for rollback",
        "",
        "Right after each upgrade: `docker stats --no-stream` of the idle (previous) colour's web container "
        "and of the live one, plus the sum of the processes' RSS (`docker top -eo rss`). A restart deploy keeps "
        "no idle colour (0 extra).",
        "",
        table(
            [
                "metric",
                f"sumbg, idle colour (n={mem.get('n', 0)})",
                "sumbg, live colour",
                "live + idle vs restart deploy (live only)",
            ],
            [
                [
                    "docker stats memory",
                    fmt(mem.get("idle_stats_mib"), " MiB"),
                    fmt(mem.get("live_stats_mib"), " MiB"),
                    ratio(total or None, mem.get("live_stats_mib")),
                ],
                ["sum of RSS", fmt(mem.get("idle_rss_mib"), " MiB"), fmt(mem.get("live_rss_mib"), " MiB"), "—"],
            ],
        ),
        "",
    ]
    parts += rehearsal_section(s.get("rehearsal") or {})
    parts += adoption_section(s.get("adoption") or {})
    parts += density_section(s.get("density") or {}, m)
    parts += latency_section(s.get("latency") or {}, cfg, m)
    parts += offsite_section(s.get("offsite") or {})
    parts += worker_section(s.get("worker") or {}, cfg)
    parts += builds_figure.section(s.get("builds") or {}, m, table, fmt)
    return "\n".join(parts + failures_section(results))


def offsite_section(o: dict) -> list[str]:
    if not o:
        return []
    mb = 1e6
    first, second = (o.get("steps") or {}).get("first") or {}, (o.get("steps") or {}).get("second") or {}
    rows = [
        [
            "wall time",
            fmt(o.get("sumbg_first_s"), " s"),
            fmt(o.get("sumbg_second_s"), " s"),
            fmt(o.get("raw_first_s"), " s"),
            fmt(o.get("raw_second_s"), " s"),
        ],
        *[
            [f"· step `{name}`", fmt(first.get(name), " s"), fmt(second.get(name), " s"), "—", "—"]
            for name in dict.fromkeys([*first, *second])
        ],
        [
            "· of which pg_dump -Fc",
            "(in `dump`)",
            "(in `dump`)",
            fmt(o.get("raw_first_dump_s"), " s"),
            fmt(o.get("raw_second_dump_s"), " s"),
        ],
        [
            "written to the backup store by this run",
            fmt((o.get("sumbg_first_data_added") or 0) / mb, " MB", 1),
            fmt((o.get("sumbg_second_data_added") or 0) / mb, " MB", 1),
            fmt((o.get("raw_first_bytes") or 0) / mb, " MB", 1),
            fmt((o.get("raw_second_bytes") or 0) / mb, " MB", 1),
        ],
        [
            "backup store size after the run",
            fmt((o.get("repo_first_bytes") or 0) / mb, " MB", 1),
            fmt((o.get("repo_second_bytes") or 0) / mb, " MB", 1),
            fmt((o.get("raw_first_bytes") or 0) / mb, " MB", 1),
            fmt(((o.get("raw_first_bytes") or 0) + (o.get("raw_second_bytes") or 0)) / mb, " MB", 1),
        ],
        [
            "ratio of wall times (sumbg / script)",
            fmt(o.get("ratio_first"), "×"),
            fmt(o.get("ratio_second"), "×"),
            "",
            "",
        ],
    ]
    return [
        "## 11. Complete backups offsite: `sumbg backup` (database + media → restic) vs `pg_dump -Fc` + `tar`",
        "",
        f"The site's database filled with `pgbench -i -s {o.get('pgbench_scale', '—')}` "
        f"({fmt((o.get('db_bytes') or 0) / mb, ' MB', 0)}, `pg_database_size`) and "
        f"{fmt(o.get('media_files'))} media files of 1–8 MiB of random bytes "
        f"({fmt((o.get('media_bytes') or 0) / mb, ' MB', 0)}: photos and PDFs do not compress). *sumbg backup*: "
        "`sumbg backup bench-acme --json` with `[backup] repository` a restic repository on this host's disk "
        "(so the figure is restic's work and sumbg's, not a network's): dump, verify and count its rows, a "
        "hard-link copy of the media and the manifest, upload (restic backup, then the snapshot checked), "
        "retention. The first run starts from an empty repository; the second follows with nothing changed "
        "(restic's deduplication: only what differs is written). *Script*: `pg_dump -Fc` in the container plus "
        "`tar -cf` of the media folder, which writes everything again on every run. "
        f"Medians of n={o.get('n', 0)}.",
        "",
        table(["metric", "sumbg, first", "sumbg, second", "script, first", "script, second"], rows),
        "",
        f"Here the copy is a dump ({fmt((o.get('sumbg_first_local_bytes') or 0) / mb, ' MB', 1)}) plus hard links "
        "to the media (no bytes copied); the script's store keeps every run whole.",
        "",
    ]


def failures_section(results: dict) -> list[str]:
    if not results.get("failures"):
        return []
    return ["## Failures in this run", ""] + [f"- {f}" for f in results["failures"]] + [""]


def rehearsal_section(r: dict) -> list[str]:
    ex, gen = r.get("example") or {}, r.get("generated") or {}

    def mb(b: dict):
        return b["db_bytes"] / 1e6 if b.get("db_bytes") else None

    def row(label: str, key: str, unit: str = " s", digits: int = 2) -> list[str]:
        return [label, fmt(ex.get(key), unit, digits), fmt(gen.get(key), unit, digits)]

    def share(b: dict) -> str:
        return fmt(b["added_share"] * 100, "%", 1) if b.get("added_share") is not None else "—"

    rows = [
        ["database size (`pg_database_size`, before the runs)", fmt(mb(ex), " MB", 1), fmt(mb(gen), " MB", 1)],
        row("database size the rehearsal checked against `rehearsal_max_mb`", "database_mb", " MB", 1),
        row("upgrade with the rehearsal (record `seconds`)", "with_s"),
        row("upgrade with `--no-rehearsal` (record `seconds`)", "without_s"),
        row("**added by the rehearsal** (with − without, per repetition)", "added_s"),
        ["added, as a share of the upgrade without it", share(ex), share(gen)],
        row("upgrade with the rehearsal, wall time (CLI start-up included)", "with_wall_s"),
        row("upgrade with `--no-rehearsal`, wall time", "without_wall_s"),
        row("rehearsal step (its `seconds`)", "rehearsal_s"),
        row("· restore the backup into a scratch database (`restore_seconds`)", "restore_s"),
        row("· start the live release on the copy, check it (`start_seconds`)", "start_s"),
        row("· migrate the copy with the new release (`migrate_seconds`)", "migrate_s"),
        row("· after-switch migrations on the copy (`after_switch_seconds`)", "after_switch_s"),
        row(
            "· the rest, not split out by sumbg (listing the pending migrations, checking the live release on "
            "the migrated copy, removing the copy): step − parts",
            "other_s",
        ),
        row("migrations applied on the copy", "applied", ""),
        [
            "compatibility verdict / policy",
            " / ".join([", ".join(ex.get("verdicts") or ["—"]), ", ".join(ex.get("policies") or ["—"])]) if ex else "—",
            " / ".join([", ".join(gen.get("verdicts") or ["—"]), ", ".join(gen.get("policies") or ["—"])])
            if gen
            else "—",
        ],
    ]
    scale = gen.get("pgbench_scale", "—")
    return [
        "## 7. Rehearsal cost: `sumbg upgrade` with vs without the rehearsal",
        "",
        "`sumbg upgrade bench-acme v1.1.0 --watch 0 --yes --json` without load, v1.0.0 → v1.1.0, once with the "
        "rehearsal (the default: the backup just taken is restored into a scratch database, v1.0.0 is started on "
        "it and checked through Caddy, the copy is migrated with v1.1.0, v1.0.0 is checked again, all of it "
        "removed) and once with `--no-rehearsal`; the two alternate order per repetition. Before each upgrade the "
        "v1.1.0 migration is unapplied, after it `sumbg rollback` returns to v1.0.0; the v1.1.0 image exists, so "
        "both skip the build. *Example database*: the site as it is, measured before the restart-deploy figure; "
        f"*generated database*: the same site after figure 5's `pgbench -i -s {scale}`, measured last. "
        "Step figures are the rehearsal step's record in the `--json` document.",
        "",
        table(
            [
                "metric",
                f"example database (n={ex.get('n', 0)})",
                f"generated database, pgbench -s {scale} (n={gen.get('n', 0)})",
            ],
            rows,
        ),
        "",
        "The rehearsal's time grows with the database: its restore is a full `pg_restore` of the backup into "
        "the copy (its migrate part depends on what the migrations touch; v1.1.0's adds a column to the small "
        "leads table). An upgrade "
        "with `--no-rehearsal`, or on a database above `[migrations] rehearsal_max_mb` (default 2048 MB), "
        "is shorter by that time but does not measure whether the live release still works on the migrated "
        "schema (its compatibility is recorded as not measured), so a breaking release is not refused. "
        "Choose `rehearsal_max_mb` from the added time you accept at your database's size, on your machine.",
        "",
    ]


def adoption_section(a: dict) -> list[str]:
    if not a:
        return []
    n = a.get("n", 0)
    return [
        "## 8. Adopting a runbook site: `sumbg adopt`, then `sumbg takeover`",
        "",
        "A simulated runbook host (tests/golden_host.py: Debian's PostgreSQL, Redis and Caddy 2.6 with "
        "`tls internal`, gunicorn and Celery under a supervisor standing in for systemd, the golden-path "
        "layout; 3 leads and 21 media files) is adopted under a visitor that reads `/` on one kept-alive "
        "connection every 30 ms through the host Caddy (HTTPS) and sends the contact form on a connection of "
        "its own every fourth request; then the edge takes the host Caddy's ports with the same visitor. A "
        "fresh host each repetition. The window is sumbg's own measure (`cutover_window_seconds`, "
        "`takeover_window_seconds`).",
        "",
        table(
            ["metric", f"median of {n}"],
            [
                [
                    "**adoption: cutover window** (503 page up → `/health/` through the host Caddy reports sumbg's release)",
                    fmt(a.get("window_s"), " s"),
                ],
                ["· of which: stopping gunicorn and Celery together", fmt(a.get("stop_old_s"), " s")],
                ["· of which: final count, dump, import and exact comparison", fmt(a.get("final_import_s"), " s")],
                ["longest window of the runs", fmt(a.get("max_window_s"), " s")],
                ["requests sent during the adoption", fmt(a.get("sent"), "", 0)],
                ["· answered with the 503 page (`Retry-After`) in the window", fmt(a.get("answered_503"), "", 0)],
                ["· refused connections", fmt(a.get("refused"), "", 0)],
                ["· any other failure (all runs together)", str(a.get("failed_other_total"))],
                ["writes acknowledged (302) during the adoption", fmt(a.get("writes_acknowledged"), "", 0)],
                [
                    "acknowledged writes missing from sumbg's database (all runs together)",
                    str(a.get("writes_lost_total")),
                ],
                [
                    "whole `sumbg adopt` (record `seconds`, image cached after the first run)",
                    fmt(a.get("adopt_s"), " s"),
                ],
                [
                    "**takeover: window** (host Caddy stopping → the edge answers over TLS on its ports)",
                    fmt(a.get("takeover_window_s"), " s"),
                ],
                ["requests sent during the takeover", fmt(a.get("takeover_sent"), "", 0)],
                ["· refused connections (nothing listens in the window)", fmt(a.get("takeover_refused"), "", 0)],
                ["· any other failure", fmt(a.get("takeover_failed_other"), "", 0)],
                [
                    "runs where the edge served the host Caddy's very certificate after the takeover",
                    f"{a.get('certificates_kept')} of {n}",
                ],
            ],
        ),
        "",
        "Most of the adoption's window is the old units' own shutdown (Celery's warm shutdown, gunicorn's "
        "graceful stop) and the final dump and import; it grows with the database (the dump and import are "
        "full). The takeover's window is the host Caddy's shutdown and the edge's start: no visitor request "
        "can be answered while neither listens, so they are refused, not answered wrongly.",
        "",
    ]


def density_section(d: dict, machine: dict) -> list[str]:
    if not d:
        return []
    n, target = d.get("sites_up", 0), d.get("target") or "—"
    up = d.get("upgrade") or {}
    proj = d.get("projection") or {}

    def pair(a, b, unit: str = "") -> str:
        return f"{fmt(a, unit)} / {fmt(b, unit)}"

    one = d.get("one_site") or {}
    every = d.get("all_sites_reload") or {}
    nets = d.get("networks") or {}
    second, last = d.get("init_second_steps") or {}, d.get("init_last_steps") or {}
    rows = [
        ["sites brought up and measured (N)", f"{n} of {d.get('sites')}"],
        [
            "sites answering `/health/` through the edge with their release, all N up",
            f"{fmt(d.get('answering'))} of {fmt(d.get('answering_asked'))}",
        ],
        [
            "networks of the address plan (each site's own + its link to the edge) / networks the edge is on",
            pair(nets.get("sumbg_networks"), nets.get("edge_networks")),
        ],
        ["· networks on the engine, all N up (every root and program)", fmt(nets.get("all_networks_on_engine"))],
        [
            (
                f"`sumbg init`, first site (its build step: {d.get('init_first_build') or '—'}, "
                f"{fmt(d.get('init_first_build_s'), ' s')})"
            ),
            fmt(d.get("init_first_s"), " s"),
        ],
        [
            "`sumbg init`, each later site: median / max",
            pair(d.get("init_rest_median_s"), d.get("init_rest_max_s"), " s"),
        ],
        ["all N inits, one after the other", fmt(d.get("init_total_s"), " s")],
        [
            f"`sumbg init` of the 2nd site → of the last ({d.get('init_last_slug') or '—'})",
            f"{fmt(d.get('init_second_s'), ' s')} → {fmt(d.get('init_last_s'), ' s')}",
        ],
        [
            "· its data step (networks, Postgres, Redis) / its edge step (render, validate, reload, join): 2nd → last",
            f"{pair(second.get('data'), second.get('edge'), ' s')} → {pair(last.get('data'), last.get('edge'), ' s')}",
        ],
        [
            "`caddy reload --force` in the edge (median of 5, through `docker exec`): 1 site block → all N",
            f"{fmt(one.get('reload_median_s'), ' s', 3)} → {fmt(every.get('reload_median_s'), ' s', 3)}",
        ],
        [
            "· `docker exec` alone (`caddy version`, median of 5): then → now",
            f"{fmt(one.get('exec_median_s'), ' s', 3)} → {fmt(every.get('exec_median_s'), ' s', 3)}",
        ],
        [
            f"upgrade's `switch` step (flip + confirm through Caddy): the 1-site edge (bench-d01, no load) → the "
            f"N-site edge ({target}, under load)",
            f"{fmt(one.get('switch_step_s'), ' s')} → {fmt(up.get('switch_step_s'), ' s')}",
        ],
        [
            "· its flip (`flip_seconds`): 1-site edge → N-site edge",
            f"{fmt(one.get('upgrade_flip_s'), ' s', 3)} → {fmt(up.get('flip_seconds'), ' s', 3)}",
        ],
        [
            "`sumbg rollback`'s flip (`flip_seconds`): 1-site edge (instant) → N-site edge (to a retired colour)",
            f"{fmt(one.get('rollback_flip_s'), ' s', 3)} → {fmt(d.get('rollback_flip_s'), ' s', 3)}",
        ],
        ["**live only per site** (data stack + live colour): median", fmt(d.get("live_only_median_mib"), " MiB")],
        [
            "· its Postgres / Redis / live web (medians)",
            " / ".join(
                fmt(d.get(k), " MiB") for k in ("postgres_median_mib", "redis_median_mib", "live_colour_median_mib")
            ),
        ],
        ["live only per site: min / max", pair(d.get("live_only_min_mib"), d.get("live_only_max_mib"), " MiB")],
        ["all N sites, live only, together", fmt(d.get("live_only_total_mib"), " MiB")],
        ["edge Caddy", fmt(d.get("edge_mib"), " MiB")],
        [
            "host `MemAvailable` before the first init → with all N up",
            (
                f"{fmt(d.get('mem_available_before_mib'), ' MiB', 0)} → "
                f"{fmt(d.get('mem_available_after_mib'), ' MiB', 0)} "
                f"(−{fmt(d.get('mem_available_drop_mib'), ' MiB', 0)})"
            ),
        ],
        ["· that drop less the edge, per site", fmt(d.get("host_drop_per_site_mib"), " MiB")],
        [
            f"host CPU busy, whole machine over {fmt(d.get('host_cpu_window_seconds'))} s: before the first init → "
            "with all N up and idle (cores)",
            f"{fmt(d.get('host_cpu_before_cores'), '', 3)} → {fmt(d.get('host_cpu_all_up_cores'), '', 3)}",
        ],
        [
            "· per idle site (the difference / N; includes dockerd, containerd and runc)",
            fmt(d.get("host_cpu_per_site_cores"), " cores", 4),
        ],
        [
            "CPU at idle: sum of `docker stats` CPU % of the N sites' containers, one sample (100 % = one core)",
            fmt(d.get("cpu_percent_sites"), " %"),
        ],
        ["· the edge Caddy", fmt(d.get("edge_cpu_percent"), " %")],
        [f"upgrade of {target} under load: requests sent / **failed**", pair(up.get("sent"), up.get("failed"))],
        ["· load target / achieved", pair(up.get("rate_used"), up.get("rate_per_s"), " req/s")],
        ["· latency p50 / p99, whole run", pair(up.get("p50_ms"), up.get("p99_ms"), " ms")],
        [
            "· switch window (requests in it / failed)",
            f"{fmt(up.get('window_seconds'), ' s', 3)} ({fmt(up.get('window_sent'))} / {fmt(up.get('window_failed'))})",
        ],
        ["· whole upgrade (record `seconds`)", fmt(up.get("upgrade_seconds"), " s")],
        [f"{target} **live + idle** right after the upgrade", fmt(d.get("target_live_plus_idle_mib"), " MiB")],
        [f"· the idle colour ({d.get('idle_colour') or '—'}) alone", fmt(d.get("idle_colour_mib"), " MiB")],
        [
            f"{target} live only after `sumbg retire --due` (soak period 1 s)",
            fmt(d.get("target_live_only_after_retire_mib"), " MiB"),
        ],
        [
            "`sumbg rollback` to the retired colour: wall time (record `seconds`)",
            f"{fmt(d.get('rollback_wall_s'), ' s')} ({fmt(d.get('rollback_record_s'), ' s')})",
        ],
        [
            "· of which starting the retired colour again (its `ready` step) / the flip",
            pair(d.get("rollback_ready_s"), d.get("rollback_flip_s"), " s"),
        ],
        [
            "· `instant` in its `--json` record",
            "—" if d.get("rollback_instant") is None else f"`{str(d['rollback_instant']).lower()}`",
        ],
    ]
    measured = d.get("measured_by") or {}
    lines = [
        "## 9. Density: example sites on one host",
        "",
    ]
    if measured:
        lines += [
            (
                f"*Measured apart from the other figures, on {measured.get('started_at')}, by `{measured.get('command')}`"
                f" ({fmt(measured.get('seconds'), ' s', 0)}; load average at its start "
                f"{' / '.join(str(x) for x in measured.get('loadavg_at_start') or [])}: the engine is shared with "
                "other work, which moves the CPU figures).*"
            ),
            "",
        ]
    if d.get("stopped"):
        lines += [f"**Fewer sites than asked:** {d['stopped']}.", ""]
    lines += [
        (
            f"Under a root and an edge of its own (`sum-edge-bench-density`, no TLS, on 127.0.0.1), "
            f"`sumbg init bench-dNN --ref v1.0.0` for N = {d.get('sites')} copies of the example site, one after the "
            "other (no worker, 2 gunicorn sync workers each; each site gets its own image `sum-bench-dNN:v1.0.0`: "
            "the first init builds it, from whatever layers the host's build cache already holds, as its build "
            "time shows; the later ones find every layer there). Each site's networks come from sumbg's address "
            "plan (`[network] pool`, two per site: its own and its link to the edge, which no other site shares), "
            "so the engine's ~30 default-pool networks set no ceiling. Right after the first init, on the edge with "
            "that one site: the edge's reload time, then bench-d01 upgraded to v1.1.0 and rolled back (no load) "
            "for its flip times, and its idle colour retired. With all N up, each site's `/health/` is asked "
            "through the edge, the reload is timed again, and after "
            f"{fmt(d.get('settle_seconds'))} s idle, one `docker stats --no-stream` of every site container and the "
            "edge (its memory figure: the container's memory less the page cache the kernel can drop). *Live only*: "
            "a site's data stack (Postgres + Redis) and its live colour; *live + idle*: also the previous colour, "
            f"kept running after an upgrade for an instant rollback. The last site, {target}, is then upgraded "
            "v1.0.0 → v1.1.0 with `--watch 0 --yes --json` under figure 1's load generator aimed at its domain "
            "(calibrated on it), then `sumbg retire --due` (with `[upgrade] retire_idle_after = 1`) stops its idle "
            "colour and no other site's, then `sumbg rollback` goes back "
            "to that retired colour, which it has to start again first."
        ),
        "",
        table(["metric", "measured"], rows),
        "",
    ]
    if proj:
        lines += [
            (
                f"**Projection, from memory only (not measured).** A {fmt(d.get('host_gib'))} GiB host, less "
                f"{fmt(d.get('reserve_gib'))} GiB for the OS, dockerd and containerd, less the edge "
                f"({fmt(d.get('edge_mib'), ' MiB')}) and one extra colour for the site being upgraded "
                f"({fmt(proj.get('extra_colour_mib'), ' MiB')}: {proj.get('extra_from')}), leaves "
                f"{fmt(proj.get('budget_mib'), ' MiB', 0)}: at the median live-only memory per site "
                f"({fmt(d.get('live_only_median_mib'), ' MiB')}) that is **{proj.get('sites_at_median')} example "
                f"sites**; {proj.get('sites_at_max')} at the largest site measured; "
                f"{fmt(proj.get('sites_from_host_drop'))} from the host-wide `MemAvailable` drop per site (another "
                "measure: it counts what dockerd and containerd spend per container but not the page cache the "
                "kernel can reclaim, and anything else running on the host meanwhile moves it too). What was "
                f"measured is N = {n} sites ({fmt(d.get('answering'))} of them answering through the edge) on this "
                f"{fmt(machine.get('cores'))}-core, "
                f"{fmt(machine.get('memory_gb'), ' GB')} host, with {fmt(up.get('failed'))} failed requests on the one "
                "being upgraded. It counts memory only: not CPU at work (the sites share the cores for their "
                "requests, and an upgrade's build, migrations and collectstatic), nor real sites' databases, caches "
                "and traffic, nor what gunicorn workers grow to over days."
            ),
            "",
            (
                f"**By CPU at idle (also a projection).** Each idle site kept "
                f"{fmt(d.get('host_cpu_per_site_cores'), ' cores', 4)} of the host busy; if idle sites may use a "
                f"quarter of its {fmt(d.get('cores'))} cores ({fmt(proj.get('idle_cpu_budget_cores'))}), that is "
                f"**{fmt(proj.get('sites_by_idle_cpu'))} sites**. The smaller of the two projections is the one that "
                "binds."
            ),
            "",
        ]
    return lines


def worker_section(w: dict, cfg: dict) -> list[str]:
    """Figure 12: the rollback of a site whose worker is busy, the worker moved in the background vs waited for."""
    bg, wait = w.get("background") or {}, w.get("wait") or {}
    if not (bg or wait):
        return []

    def row(label: str, key: str, unit: str = " s", digits: int = 2) -> list[str]:
        return [label, fmt(bg.get(key), unit, digits), fmt(wait.get(key), unit, digits)]

    verdict = (
        "met" if w.get("target_met") else "**not met**"
    ) + f" (slowest of {bg.get('n', 0)}: {fmt(bg.get('max_wall_seconds'), ' s')})"
    return [
        "## 12. Rollback with a busy worker: the command, the traffic and the worker",
        "",
        f"A site of its own, `{WORKER_SLUG}` (`sumbg init --worker`: the example's real Celery worker, `celery -A acme "
        f"worker`, on its Redis), rolled back from v1.16.0-tasks to v1.15.0-tasks right after an upgrade, while "
        f"its live worker runs {w.get('slow_tasks')} tasks of {w.get('slow_seconds')} s (one per Celery process: "
        f"it is busy), under the load of figures 1–3 ({fmt(w.get('rate'))} req/s on `GET /health/`) and a client "
        "queueing a task every 0.1 s (`POST /tasks/`; every task run writes one row, so the tasks are counted). "
        "*Background* is `sumbg rollback` as it is: once traffic is confirmed, the worker move goes to a "
        "`sumbg` of its own with the site's lock. *Waited for* is `sumbg rollback --wait-worker`: the move, and "
        "the new worker's readiness (`[worker] ready_after` 10 s, `celery inspect ping`), inside the command. "
        "The new worker's first task: the first task run by the rolled-back-to release after the flip (its own "
        "`started_at`); the old worker's drain: from SIGTERM until it exited (its tasks finished), as its "
        "drainer recorded it.",
        "",
        table(
            ["", f"background (n={bg.get('n', 0)})", f"--wait-worker (n={wait.get('n', 0)})"],
            [
                row("**command, start to exit**", "wall_seconds"),
                row("traffic flipped (the `traffic flipped` line), after the start", "traffic_flipped_after_start_s"),
                row("flip alone (`flip_seconds`)", "flip_seconds", digits=3),
                row("every request on v1.15.0-tasks, after the start", "all_old_after_start_s"),
                row("flip → the new worker's first task", "first_task_after_flip_s"),
                row("old worker's drain (SIGTERM → exit)", "old_worker_drain_s"),
                row("old worker exited, after the command had", "old_worker_exit_after_command_s"),
                row("latency p99", "p99_ms", " ms"),
                [
                    "requests failed / sent",
                    f"{fmt(bg.get('failed_total'))} / {fmt(bg.get('sent_total'))}",
                    f"{fmt(wait.get('failed_total'))} / {fmt(wait.get('sent_total'))}",
                ],
                [
                    "tasks run exactly once / queued (missing, twice)",
                    f"{fmt(bg.get('tasks_run_once_total'))} / {fmt(bg.get('tasks_queued_total'))} "
                    f"({fmt(bg.get('tasks_missing_total'))}, {fmt(bg.get('tasks_run_twice_total'))})",
                    f"{fmt(wait.get('tasks_run_once_total'))} / {fmt(wait.get('tasks_queued_total'))} "
                    f"({fmt(wait.get('tasks_missing_total'))}, {fmt(wait.get('tasks_run_twice_total'))})",
                ],
            ],
        ),
        "",
        f"Target (issue 18): the rollback command, start to exit, at most {fmt(w.get('target_s'))} s with a busy "
        f"worker: {verdict}.",
        "",
    ]


def latency_section(l: dict, cfg: dict, machine: dict) -> list[str]:
    if not l:
        return []
    rate = l.get("rate") or {}
    unpaced = rate.get("unpaced") or {}
    idle, on, off = (l.get(arm) or {} for arm in LATENCY_ARMS)
    paths = l.get("paths") or []

    def times(value, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}×"

    def failed(arm: dict, prefix: str = "") -> str:
        return f"{fmt(arm.get(prefix + 'failed_total'))} / {fmt(arm.get(prefix + 'sent_total'))}" if arm else "—"

    def arm_row(label: str, arm: dict, upgrade: bool) -> list[str]:
        return [
            f"{label} (n={arm.get('n', 0)})",
            fmt(arm.get("p50_ms"), " ms"),
            times(arm.get("p50_ms_ratio")) if upgrade else "1×",
            fmt(arm.get("p99_ms"), " ms"),
            times(arm.get("p99_ms_ratio")) if upgrade else "1×",
            failed(arm),
            fmt(arm.get("rate_per_s"), " req/s", 1),
            fmt(arm.get("wall_seconds"), " s") if upgrade else f"({fmt(arm.get('seconds'), ' s', 1)} window)",
        ]

    tries = "; ".join(
        f"{fmt(t.get('offered_per_s'))} → {fmt(t.get('rate_per_s'))} req/s, {t.get('failed')} failed, "
        f"p99 {fmt(t.get('p99_ms'), ' ms')}{'' if t.get('sustained') else ' (not sustained)'}"
        for t in rate.get("tries") or []
    )
    share = rate.get("share_of_unpaced")
    builds = dict(Counter(on.get("builds") or {}) + Counter(off.get("builds") or {}))
    lines = [
        "## 10. Latency of the live site during an upgrade: background CPU weight on vs off",
        "",
        (
            f"On bench-acme, live on v1.0.0: {fmt(l.get('clients'))} keep-alive clients (Python, no retries, 10 s "
            f"timeout), each requesting {' and '.join(f'`{p}`' for p in paths)} in turn (so each gets half of the "
            "requests), through Caddy on 127.0.0.1, paced together to one rate. *Idle*: that load alone, with no "
            f"upgrade, for a window as long as the figure's upgrades so far ({fmt(cfg.get('latency_idle'))} s in the "
            f"first repetition), after {fmt(cfg.get('warmup'))} s of load. *Upgrade*: `sumbg upgrade bench-acme "
            f"v1.1.0 --watch 0 --yes --json` under the same load ({fmt(cfg.get('warmup'))} s before it and "
            f"{fmt(cfg.get('post'))} s after it, not counted): its figures count every request in flight between "
            "the command's start and its end. *Weights on*: the bench root's `sumbg.toml` without an `[upgrade]` "
            "table, so sumbg's default `background_cpu_shares = 128`: the build, the one-off commands (migrate, "
            "collectstatic, the rehearsal's) and the new colour until it is switched in run at CPU weight 128, while "
            "the live colour, the data stack and the edge keep Docker's 1024. *Weights off*: `[upgrade] "
            "background_cpu_shares = 1024` added to `sumbg.toml` for that upgrade only: everything at 1024, as "
            "before the weights existed. Before each upgrade v1.1.0's migration is unapplied and after it `sumbg "
            "rollback` returns to v1.0.0, so every upgrade does the same work; the two upgrades alternate order "
            "(weights on first in even repetitions). The v1.1.0 image exists before the first measured upgrade ("
            + (
                f"this run built it first with an unmeasured upgrade and rollback, {fmt(l.get('primed_seconds'), ' s', 1)}"
                if l.get("primed_seconds")
                else "figure 1 built it"
            )
            + "), so "
            + (
                "every upgrade measured here skipped the build (the image was cached)"
                if builds and set(builds) == {"skipped"}
                else f"the build step's outcomes were: {', '.join(f'{k} × {v}' for k, v in builds.items()) or '—'}"
            )
            + ". "
            f"The previous colour's CPU weight right after the upgrade (`docker inspect`) shows which setting was "
            f"in force: {', '.join(on.get('previous_cpu_shares') or ['—'])} with the weights on, "
            f"{', '.join(off.get('previous_cpu_shares') or ['—'])} off. Ratios are to the same repetition's idle "
            "window, then the median over the repetitions."
        ),
        "",
        (
            f"**The rate.** First the {fmt(l.get('clients'))} clients unpaced (each sends its next request as soon "
            f"as the last is answered) for {fmt(rate.get('probe_seconds'))} s: **{fmt(unpaced.get('rate_per_s'))} "
            f"req/s** achieved, {fmt(unpaced.get('failed'))} failed (p50 {fmt(unpaced.get('p50_ms'), ' ms')}, p99 "
            f"{fmt(unpaced.get('p99_ms'), ' ms')}): the most the site gives them on this machine. Then paced runs "
            f"of {fmt(rate.get('probe_seconds'))} s from 90% of that, 10% lower each time, until one achieves at "
            f"least {fmt((rate.get('sustained_share') or 0) * 100, '%', 0)} of the rate offered with no failure "
            f"(offered → achieved: {tries or '—'}). **Rate used for the whole figure: {fmt(rate.get('rate_used'))} "
            f"req/s**, {fmt(share * 100 if share else None, '%', 0)} of the unpaced maximum: the highest rate "
            "tried that the site sustained."
        ),
        "",
        table(
            [
                "",
                "latency p50",
                "p50 ÷ idle",
                "latency p99",
                "p99 ÷ idle",
                "failed / sent (all repetitions)",
                "achieved rate",
                "upgrade wall time",
            ],
            [
                arm_row("no upgrade (idle)", idle, False),
                arm_row("**upgrade, weights on**", on, True),
                arm_row("upgrade, weights off", off, True),
            ],
        ),
        "",
    ]
    if on or off:

        def pair(key: str, unit: str = " ms", ratio_key: str | None = None) -> list[str]:
            out = []
            for arm in (idle, on, off):
                value = fmt(arm.get(key), unit)
                if arm is not idle and ratio_key and arm.get(ratio_key) is not None:
                    value += f" ({times(arm.get(ratio_key))})"
                out.append(value if arm else "—")
            return out

        rows = [
            ["latency p50 excluding the switch window", "—", *pair("excl_p50_ms", ratio_key="excl_p50_ms_ratio")[1:]],
            ["latency p99 excluding the switch window", "—", *pair("excl_p99_ms", ratio_key="excl_p99_ms_ratio")[1:]],
            [
                "switch window (requests in it)",
                "—",
                *[
                    f"{fmt(a.get('window_seconds'), ' s', 3)} ({fmt(a.get('window_sent'))})" if a else "—"
                    for a in (on, off)
                ],
            ],
        ]
        for path in paths:
            rows += [
                [f"`{path}` latency p50", *pair(f"{path} p50_ms", ratio_key=f"{path} p50_ms_ratio")],
                [f"`{path}` latency p99", *pair(f"{path} p99_ms", ratio_key=f"{path} p99_ms_ratio")],
                [f"`{path}` failed / sent", *[failed(a, f"{path} ") for a in (idle, on, off)]],
                [f"`{path}` achieved rate", *pair(f"{path} rate_per_s", " req/s")],
            ]
        rows.append(
            [
                "whole upgrade (record `seconds`)",
                "—",
                fmt(on.get("upgrade_seconds"), " s"),
                fmt(off.get("upgrade_seconds"), " s"),
            ]
        )
        names = list(dict.fromkeys([*(on.get("steps") or {}), *(off.get("steps") or {})]))
        rows += [
            [
                f"· step `{name}`",
                "—",
                fmt((on.get("steps") or {}).get(name), " s"),
                fmt((off.get("steps") or {}).get(name), " s"),
            ]
            for name in names
        ]
        lines += [
            "By path, without the switch window, and the upgrade's steps (medians; ratios to idle in brackets):",
            "",
            table(["metric", "idle", "upgrade, weights on", "upgrade, weights off"], rows),
            "",
        ]
    met = l.get("targets_met")
    targets = l.get("targets") or LATENCY_TARGETS

    def verdict(key: str) -> str:
        if met is None:
            return "not measured"
        return "**met**" if met[key] else "**not met**"

    wall_on, wall_off = on.get("wall_seconds"), off.get("wall_seconds")
    added, wall_ratio = l.get("wall_added_s"), l.get("wall_ratio")
    lines += [
        (
            f"**Targets** (during an upgrade with the weights on, over the same load with no upgrade): p99 within "
            f"{fmt(targets.get('p99_ms'))}× — measured {times(on.get('p99_ms_ratio'), 3)}: {verdict('p99_ms')}; median "
            f"within {fmt(targets.get('p50_ms'))}× — measured {times(on.get('p50_ms_ratio'), 3)}: "
            f"{verdict('p50_ms')} (medians over n={on.get('n', 0)}; both targets met in "
            f"{fmt(on.get('targets_met_reps'))} of {on.get('n', 0)} repetitions). With the weights off: p99 "
            f"{times(off.get('p99_ms_ratio'))}, median {times(off.get('p50_ms_ratio'))}. Failed requests during "
            f"the upgrades: {failed(on)} with the weights on, {failed(off)} off (all repetitions)."
        ),
        "",
        (
            f"**The upgrade's wall time** with the weights on: {fmt(wall_on, ' s')} against {fmt(wall_off, ' s')} "
            f"off (medians): "
            + (
                "—"
                if added is None
                else f"{'+' if added >= 0 else '−'}{fmt(abs(added), ' s')} "
                f"({'+' if wall_ratio >= 1 else '−'}{fmt(abs(wall_ratio - 1) * 100, '%', 0)}; "
                f"median over {l.get('wall_pairs')} repetition"
                f"{'' if l.get('wall_pairs') == 1 else 's'} of on − off)"
            )
            + f". The load generator runs on the same {fmt(machine.get('cores'))}-core host, outside Docker, at the "
            "default CPU weight, so it competes for the cores with the upgrade and the live colour too."
        ),
        "",
    ]
    return lines


def section(markdown_text: str, heading: str) -> str:
    """The part of a BENCHMARKS.md that starts with the line `heading` (a "## N. ..." prefix) and runs to
    the next "## " heading."""
    lines = markdown_text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        raise ValueError(f"no section {heading!r}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[start:end])


def replace_sections(published: str, fresh: str, headings: list[str]) -> str:
    """`published` with each of its sections `headings` replaced by the same section of `fresh`; the rest
    (other figures as their own runs measured them) untouched."""
    for heading in headings:
        if any(line.startswith(heading) for line in published.splitlines()):
            published = published.replace(section(published, heading), section(fresh, heading), 1)
        else:  # a figure published for the first time: in its place among the others
            published = insert_section(published, section(fresh, heading), fresh)
    return published


def insert_section(published: str, new: str, fresh: str) -> str:
    """`published` with the section `new` placed before the first section that follows it in `fresh`
    and exists in `published` (at the end if none does)."""
    after = fresh[fresh.index(new) + len(new) :]
    for line in after.splitlines():
        if line.startswith("## ") and line in published.splitlines():
            at = published.index(line + "\n")
            return published[:at] + new + published[at:]
    return published.rstrip("\n") + "\n\n" + new


def console(results: dict) -> str:
    s = results.get("summary") or {}
    only = f", only {results['only']}" if results.get("only") else ""
    lines = [f"bench ({results.get('mode')}{only}) in {results.get('seconds')}s"]
    for key in (
        "upgrade",
        "baseline",
        "rollback",
        "baseline_rollback",
        "build",
        "backup",
        "memory",
        "rehearsal",
        "adoption",
        "offsite",
    ):
        if key in s:
            lines.append(f"  {key}: {s[key]}")
    if s.get("density", {}).get("sites_up"):
        d = s["density"]
        up, proj = d.get("upgrade") or {}, d.get("projection") or {}
        lines.append(
            f"  density: {d.get('sites_up', 0)} sites up ({d.get('answering')} answering through the edge), caddy "
            f"reload {(d.get('one_site') or {}).get('reload_median_s')}s with 1 site -> "
            f"{(d.get('all_sites_reload') or {}).get('reload_median_s')}s with all, live only {d.get('live_only_median_mib')} MiB "
            f"median (max {d.get('live_only_max_mib')}), edge {d.get('edge_mib')} MiB, idle CPU "
            f"{d.get('cpu_percent_sites')}%; upgrade of {d.get('target')}: {up.get('sent')} requests, "
            f"{up.get('failed')} failed, p99 {up.get('p99_ms')} ms; live+idle "
            f"{d.get('target_live_plus_idle_mib')} MiB; rollback to retired {d.get('rollback_wall_s')}s "
            f"(instant={d.get('rollback_instant')}); projection {proj.get('sites_at_median')} sites on "
            f"{d.get('host_gib')} GiB (memory only)"
        )
    if s.get("latency"):
        l = s["latency"]
        idle, on, off = (l.get(arm) or {} for arm in LATENCY_ARMS)
        rate = l.get("rate") or {}
        lines.append(
            f"  latency: {rate.get('rate_used')} req/s (unpaced max "
            f"{(rate.get('unpaced') or {}).get('rate_per_s')}) on {', '.join(l.get('paths') or [])}; "
            f"p50/p99 idle {idle.get('p50_ms')}/{idle.get('p99_ms')} ms, weights on "
            f"{on.get('p50_ms')}/{on.get('p99_ms')} ms ({on.get('p50_ms_ratio')}x/{on.get('p99_ms_ratio')}x), "
            f"off {off.get('p50_ms')}/{off.get('p99_ms')} ms ({off.get('p50_ms_ratio')}x/"
            f"{off.get('p99_ms_ratio')}x); failed on {on.get('failed_total')}/{on.get('sent_total')}, off "
            f"{off.get('failed_total')}/{off.get('sent_total')}; upgrade {on.get('wall_seconds')}s on vs "
            f"{off.get('wall_seconds')}s off; targets met {l.get('targets_met')} (n={on.get('n', 0)})"
        )
    if s.get("worker"):
        w = s["worker"]
        bg, wait = w.get("background") or {}, w.get("wait") or {}
        lines.append(
            f"  worker: rollback with a busy worker {bg.get('wall_seconds')}s end to end (max "
            f"{bg.get('max_wall_seconds')}s; target {w.get('target_s')}s met: {w.get('target_met')}), traffic "
            f"flipped {bg.get('traffic_flipped_after_start_s')}s in, new worker's first task "
            f"{bg.get('first_task_after_flip_s')}s after the flip, old worker drained in "
            f"{bg.get('old_worker_drain_s')}s; --wait-worker {wait.get('wall_seconds')}s end to end; failed "
            f"{bg.get('failed_total')}+{wait.get('failed_total')}, tasks missing "
            f"{bg.get('tasks_missing_total')}+{wait.get('tasks_missing_total')}, twice "
            f"{bg.get('tasks_run_twice_total')}+{wait.get('tasks_run_twice_total')}"
        )
    if s.get("builds"):
        lines.append(f"  builds: {s['builds']}")
    for failure in results.get("failures") or []:
        lines.append(f"  FAILED: {failure}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plot
def _pick(timelines: list[dict]) -> tuple[int, dict]:
    """The repetition with the median failure count (first of equals)."""
    order = sorted(range(len(timelines)), key=lambda i: (timelines[i]["failed"], i))
    index = order[(len(order) - 1) // 2]
    return index, timelines[index]


def plot(timelines: dict, path: Path, results: dict) -> None:
    try:
        import matplotlib
    except ImportError:  # the `bench` extra is not installed: install it into this venv
        import subprocess
        import sys

        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib>=3.8"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (k, label)
        for k, label in (
            ("upgrade", "sumbg upgrade v1.0.0 → v1.1.0"),
            ("baseline", "restart deploy (migrate + up --force-recreate)"),
        )
        if timelines.get(k)
    ]
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    ymax = 0
    prepared = []
    for key, label in panels:
        index, tl = _pick(timelines[key])
        rows = stats.per_second(tl["samples"], tl["origin"])
        ymax = max([ymax] + [r["ok"] + r["failed"] for r in rows])
        prepared.append((key, label, index, tl, rows))
    for ax, (key, label, index, tl, rows) in zip(axes[:, 0], prepared, strict=False):
        t = [r["t"] + 0.5 for r in rows]
        ok = [r["ok"] for r in rows]
        failed = [r["failed"] for r in rows]
        ax.bar(t, ok, width=0.9, color="#3a9d5d", label="ok requests/s")
        ax.bar(t, failed, width=0.9, bottom=ok, color="#d62728", label="failed requests/s")
        w0, w1 = tl["window"]
        ax.axvspan(
            w0 - tl["origin"],
            max(w1 - tl["origin"], w0 - tl["origin"] + 0.05),
            color="orange",
            alpha=0.25,
            zorder=0,
            label="switch / restart window",
        )
        ax.axvline(0, color="black", lw=0.8, ls=":")
        ax.axvline(tl["end"] - tl["origin"], color="black", lw=0.8, ls="--", label="command end")
        ax.set_ylim(0, ymax * 1.15 + 1)
        ax.set_ylabel("requests per second")
        total_failed = sum(failed)
        ax.set_title(f"{label} — repetition {index + 1}: {sum(ok) + total_failed} requests, {total_failed} failed")
        lat = ax.twinx()
        lat.plot(t, [r["p50_ms"] for r in rows], color="#1f77b4", lw=1.2, label="latency p50 (ms)")
        lat.plot(t, [r["p99_ms"] for r in rows], color="#9467bd", lw=1.2, label="latency p99 (ms)")
        lat.set_yscale("log")
        lat.set_ylabel("latency per second (ms, log)")
        handles = ax.get_legend_handles_labels()
        handles2 = lat.get_legend_handles_labels()
        ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], loc="lower left", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("seconds since the deploy command started")
    machine = results.get("machine") or {}
    fig.suptitle(
        f"Per-second request outcomes and latency through Caddy ({machine.get('cores')} cores, "
        f"{machine.get('memory_gb')} GB; {results.get('mode')} run)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
