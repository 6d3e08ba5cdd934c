"""BENCHMARKS.md, the timeline plot and the console summary, from results.json's numbers only."""
from __future__ import annotations

from pathlib import Path

import stats

UPGRADE_KEYS = ["sent", "failed", "p50_ms", "p99_ms", "max_ms", "rate_per_s", "window_seconds", "window_sent",
                "window_failed", "window_p50_ms", "window_p99_ms", "flip_seconds", "upgrade_seconds",
                "all_new_after_start_s"]
BASELINE_KEYS = ["sent", "failed", "p50_ms", "p99_ms", "max_ms", "rate_per_s", "window_seconds", "window_sent",
                 "window_failed", "window_p50_ms", "window_p99_ms", "deploy_seconds", "all_new_after_start_s"]
ROLLBACK_KEYS = ["sent", "failed", "p50_ms", "p99_ms", "max_ms", "rate_per_s", "flip_seconds", "rollback_seconds",
                 "wall_seconds", "all_old_after_start_s", "last_new_after_start_s"]
BASELINE_ROLLBACK_KEYS = ["sent", "failed", "p50_ms", "p99_ms", "max_ms", "rate_per_s", "restart_seconds",
                          "wall_seconds", "all_old_after_start_s", "last_new_after_start_s"]
BACKUP_KEYS = ["sumbg_s", "sumbg_reported_s", "raw_dump_s", "ratio", "verify_s", "verify_share", "sumbg_bytes", "raw_bytes",
               "raw_list_s", "raw_sha256_s"]
ADOPTION_KEYS = ["window_s", "sent", "answered_503", "refused", "failed_other", "writes_acknowledged", "writes_lost",
                 "adopt_s", "stop_old_s", "final_import_s", "takeover_window_s", "takeover_sent", "takeover_refused",
                 "takeover_failed_other"]
REHEARSAL_KEYS = ["with_s", "without_s", "added_s", "added_share", "with_wall_s", "without_wall_s", "rehearsal_s",
                  "restore_s", "start_s", "migrate_s", "after_switch_s", "other_s", "database_mb", "applied"]


def _runs(results: dict, key: str) -> list[dict]:
    return (results.get(key) or {}).get("runs") or []


def summarise(results: dict) -> dict:
    out: dict = {}
    for key, keys in (("upgrade", UPGRADE_KEYS), ("baseline", BASELINE_KEYS), ("rollback", ROLLBACK_KEYS),
                      ("baseline_rollback", BASELINE_ROLLBACK_KEYS)):
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
        out["backup"] = {"n": len(backup["runs"]), "db_bytes": backup["db_bytes"],
                         "pgbench_scale": backup["pgbench_scale"], **stats.medians(backup["runs"], BACKUP_KEYS),
                         "verify_source": backup["runs"][0]["verify_source"]}
    rehearsal = {}
    for label, record in (results.get("rehearsal") or {}).items():
        runs = (record or {}).get("runs") or []
        if runs:
            rehearsal[label] = {"n": len(runs), "db_bytes": record.get("db_bytes"),
                                **({"pgbench_scale": record["pgbench_scale"]} if "pgbench_scale" in record else {}),
                                **stats.medians(runs, REHEARSAL_KEYS),
                                "verdicts": sorted({str(r.get("verdict")) for r in runs}),
                                "policies": sorted({str(r.get("policy")) for r in runs})}
    if rehearsal:
        out["rehearsal"] = rehearsal
    adoption = _runs(results, "adoption")
    if adoption:
        out["adoption"] = {"n": len(adoption), **stats.medians(adoption, ADOPTION_KEYS),
                           "max_window_s": max(r["window_s"] for r in adoption),
                           "writes_lost_total": sum(r["writes_lost"] for r in adoption),
                           "failed_other_total": sum(r["failed_other"] for r in adoption),
                           "certificates_kept": sum(1 for r in adoption if r["certificate_kept"])}
    mem = _runs(results, "memory")
    if mem:
        flat = [{"idle_stats_mib": m["idle"]["stats_mib"], "idle_rss_mib": m["idle"]["rss_sum_mib"],
                 "live_stats_mib": m["live"]["stats_mib"], "live_rss_mib": m["live"]["rss_sum_mib"]} for m in mem]
        out["memory"] = {"n": len(mem), **stats.medians(flat, list(flat[0]))}
    return out


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
        "Generated by `bench/run.py` " + ("**in quick mode (1 repetition, short loads, tiny DB): not for quoting**"
                                          if quick else "(full mode)")
        + f" on {results.get('started_at')}; every number below comes from that run "
          "(raw numbers: `bench/results.json`, per-request samples in the `--out` folder). "
          "Medians over the repetitions; *n* is the repetition count.",
        "",
        "## Machine",
        "",
        table(["cores", "memory", "CPU", "kernel", "Docker", "Compose", "Caddy", "load average at start"],
              [[fmt(m.get("cores")), fmt(m.get("memory_gb"), " GB"), m.get("cpu") or "—", m.get("kernel") or "—",
                m.get("docker") or "—", m.get("compose") or "—", m.get("caddy") or "—",
                " / ".join(str(x) for x in m.get("loadavg_at_start") or [])]]),
        "",
        "## How to reproduce",
        "",
        "    make bench                                  # full run; writes BENCHMARKS.md, bench/results.json, bench/timeline.png",
        "    make bench BENCH_ARGS='--reps 3 --pg-scale 32'",
        "    .venv/bin/python bench/run.py --quick --out /tmp/bench   # < 3 min, files in /tmp/bench only",
        "",
        f"Configuration of this run: {cfg.get('reps')} repetitions of each load run, {cfg.get('build_reps')} of "
        f"each build timing, {cfg.get('backup_reps')} of the backup comparison, {cfg.get('rehearsal_reps')} of "
        f"each rehearsal comparison; load target "
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
        table(["metric", f"sumbg upgrade (n={up.get('n', 0)})", f"restart deploy (n={base.get('n', 0)})", "ratio"],
              compare([
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
                  ("command start → every new request on v1.1.0", "all_new_after_start_s",
                   "all_new_after_start_s", " s"),
                  ("whole deploy (sumbg: record `seconds`)", "upgrade_seconds", "deploy_seconds", " s"),
              ], up, base)),
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
        "on the live colour, right after the restart deploy. \"Every new request on v1.0.0\" = from the command's "
        "start to the start of the first request after which every request was answered OK by v1.0.0.",
        "",
        table(["metric", f"sumbg rollback (n={rb.get('n', 0)})", f"restart rollback (n={brb.get('n', 0)})", "ratio"],
              compare([
                  ("requests sent", "sent", "sent", ""),
                  ("failed requests", "failed", "failed", ""),
                  ("latency p50", "p50_ms", "p50_ms", " ms"),
                  ("latency p99", "p99_ms", "p99_ms", " ms"),
                  ("command start → every new request on v1.0.0", "all_old_after_start_s",
                   "all_old_after_start_s", " s"),
                  ("flip alone (sumbg `flip_seconds`) / restart window", "flip_seconds", "restart_seconds", " s"),
                  ("whole command", "wall_seconds", "wall_seconds", " s"),
              ], rb, brb)),
        "",
    ]
    build = s.get("build") or {}
    warm, cold = build.get("warm") or {}, build.get("cold") or {}
    names = list(dict.fromkeys([*warm, *cold]))
    names = [n for n in names if n not in ("n", "upgrade_seconds")]
    rows = [[n, fmt(warm.get(n), " s"), fmt(cold.get(n), " s"), ratio(cold.get(n), warm.get(n))] for n in names]
    rows.append(["**whole upgrade**", fmt(warm.get("upgrade_seconds"), " s"), fmt(cold.get("upgrade_seconds"), " s"),
                 ratio(cold.get("upgrade_seconds"), warm.get("upgrade_seconds"))])
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
        table(["metric", f"sumbg backup (n={b.get('n', 0)})", "raw pg_dump -Fc", "ratio"], [
            ["wall time", fmt(b.get("sumbg_s"), " s"), fmt(b.get("raw_dump_s"), " s"), fmt(b.get("ratio"), "×")],
            ["sumbg's own record (`seconds`, no CLI start-up)", fmt(b.get("sumbg_reported_s"), " s"),
             fmt(b.get("raw_dump_s"), " s"), ratio(b.get("sumbg_reported_s"), b.get("raw_dump_s"))],
            ["dump size", fmt(b.get("sumbg_bytes"), " B"), fmt(b.get("raw_bytes"), " B"),
             ratio(b.get("sumbg_bytes"), b.get("raw_bytes"))],
            ["verify (pg_restore --list + sha256)", fmt(b.get("verify_s"), " s"), "—",
             f"{fmt((b.get('verify_share') or 0) * 100 if b.get('verify_share') is not None else None, '%', 1)}"
             " of sumbg's time"],
        ]),
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
        table(["metric", f"sumbg, idle colour (n={mem.get('n', 0)})", "sumbg, live colour",
               "live + idle vs restart deploy (live only)"], [
            ["docker stats memory", fmt(mem.get("idle_stats_mib"), " MiB"), fmt(mem.get("live_stats_mib"), " MiB"),
             ratio(total or None, mem.get("live_stats_mib"))],
            ["sum of RSS", fmt(mem.get("idle_rss_mib"), " MiB"), fmt(mem.get("live_rss_mib"), " MiB"), "—"],
        ]),
        "",
    ]
    parts += rehearsal_section(s.get("rehearsal") or {})
    parts += adoption_section(s.get("adoption") or {})
    if results.get("failures"):
        parts += ["## Failures in this run", ""] + [f"- {f}" for f in results["failures"]] + [""]
    return "\n".join(parts)


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
        row("· the rest, not split out by sumbg (listing the pending migrations, checking the live release on "
            "the migrated copy, removing the copy): step − parts", "other_s"),
        row("migrations applied on the copy", "applied", ""),
        ["compatibility verdict / policy", " / ".join([", ".join(ex.get("verdicts") or ["—"]),
                                                     ", ".join(ex.get("policies") or ["—"])]) if ex else "—",
         " / ".join([", ".join(gen.get("verdicts") or ["—"]),
                     ", ".join(gen.get("policies") or ["—"])]) if gen else "—"],
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
        table(["metric", f"example database (n={ex.get('n', 0)})",
               f"generated database, pgbench -s {scale} (n={gen.get('n', 0)})"], rows),
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
        table(["metric", f"median of {n}"], [
            ["**adoption: cutover window** (503 page up → `/health/` through the host Caddy reports sumbg's release)",
             fmt(a.get("window_s"), " s")],
            ["· of which: stopping gunicorn and Celery together", fmt(a.get("stop_old_s"), " s")],
            ["· of which: final count, dump, import and exact comparison", fmt(a.get("final_import_s"), " s")],
            ["longest window of the runs", fmt(a.get("max_window_s"), " s")],
            ["requests sent during the adoption", fmt(a.get("sent"), "", 0)],
            ["· answered with the 503 page (`Retry-After`) in the window", fmt(a.get("answered_503"), "", 0)],
            ["· refused connections", fmt(a.get("refused"), "", 0)],
            ["· any other failure (all runs together)", str(a.get("failed_other_total"))],
            ["writes acknowledged (302) during the adoption", fmt(a.get("writes_acknowledged"), "", 0)],
            ["acknowledged writes missing from sumbg's database (all runs together)", str(a.get("writes_lost_total"))],
            ["whole `sumbg adopt` (record `seconds`, image cached after the first run)", fmt(a.get("adopt_s"), " s")],
            ["**takeover: window** (host Caddy stopping → the edge answers over TLS on its ports)",
             fmt(a.get("takeover_window_s"), " s")],
            ["requests sent during the takeover", fmt(a.get("takeover_sent"), "", 0)],
            ["· refused connections (nothing listens in the window)", fmt(a.get("takeover_refused"), "", 0)],
            ["· any other failure", fmt(a.get("takeover_failed_other"), "", 0)],
            ["runs where the edge served the host Caddy's very certificate after the takeover",
             f"{a.get('certificates_kept')} of {n}"],
        ]),
        "",
        "Most of the adoption's window is the old units' own shutdown (Celery's warm shutdown, gunicorn's "
        "graceful stop) and the final dump and import; it grows with the database (the dump and import are "
        "full). The takeover's window is the host Caddy's shutdown and the edge's start: no visitor request "
        "can be answered while neither listens, so they are refused, not answered wrongly.",
        "",
    ]


def console(results: dict) -> str:
    s = results.get("summary") or {}
    lines = [f"bench ({results.get('mode')}) in {results.get('seconds')}s"]
    for key in ("upgrade", "baseline", "rollback", "baseline_rollback", "build", "backup", "memory", "rehearsal",
                "adoption"):
        if key in s:
            lines.append(f"  {key}: {s[key]}")
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

    panels = [(k, label) for k, label in (("upgrade", "sumbg upgrade v1.0.0 → v1.1.0"),
                                          ("baseline", "restart deploy (migrate + up --force-recreate)"))
              if timelines.get(k)]
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
    for ax, (key, label, index, tl, rows) in zip(axes[:, 0], prepared):
        t = [r["t"] + 0.5 for r in rows]
        ok = [r["ok"] for r in rows]
        failed = [r["failed"] for r in rows]
        ax.bar(t, ok, width=0.9, color="#3a9d5d", label="ok requests/s")
        ax.bar(t, failed, width=0.9, bottom=ok, color="#d62728", label="failed requests/s")
        w0, w1 = tl["window"]
        ax.axvspan(w0 - tl["origin"], max(w1 - tl["origin"], w0 - tl["origin"] + 0.05), color="orange", alpha=0.25,
                   zorder=0, label="switch / restart window")
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
    fig.suptitle(f"Per-second request outcomes and latency through Caddy ({machine.get('cores')} cores, "
                 f"{machine.get('memory_gb')} GB; {results.get('mode')} run)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
