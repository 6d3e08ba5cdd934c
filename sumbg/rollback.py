"""Rollback: flip traffic back to the previous colour, which is still running."""
from __future__ import annotations

import time

from . import naming
from .errors import CheckFailed, UsageError
from .executor import Plan, Run, Step
from .backups import resolve_backup_file, restore_steps
from .operations import Context, refuse_if_interrupted
from .records import recorded
from .runtime import Site
from .smoke import Prober, live_target, preview_target


def colour_version(record: dict) -> dict:
    return {"build": record.get("ref"), "git_sha": record.get("commit")}


def flip_to(ctx: Context, site: Site, run: Run, *, target_colour: str, from_colour: str,
            before_confirm=None) -> float:
    """Point the live file at `target_colour`, confirm through Caddy, move workers; returns the flip time."""
    slug = site.slug
    record = run.state["colours"][target_colour]
    started = time.monotonic()
    ctx.edge.files.write_colour(slug, "live", target_colour)
    if before_confirm:
        before_confirm()
    with Prober() as prober:
        prober.wait_healthy(live_target(ctx.host.edge, site.config.domain), 15.0,
                            expect_version=colour_version(record))
    flip = round(time.monotonic() - started, 3)
    ctx.edge.files.write_colour(slug, "preview", from_colour)
    run.state["live"] = target_colour
    run.state["previous"] = from_colour
    run.state["colours"][target_colour] = {**record, "status": "live"}
    if from_colour in run.state["colours"]:
        run.state["colours"][from_colour] = {**run.state["colours"][from_colour], "status": "idle"}
    run.save_state()
    stacks = ctx.stacks(site)
    stacks.stop_worker(from_colour)
    stacks.start_worker(target_colour)
    return flip


def rollback(ctx: Context, slug: str, *, restore_db: bool = False, lock_timeout: float = 0.0) -> dict:
    site = ctx.site(slug)
    with site.lock().acquire(timeout=lock_timeout, command=f"sumbg rollback {slug}"):
        state = site.records.load_state()
        refuse_if_interrupted(site, state)
        live, previous = state.get("live"), state.get("previous")
        if not live or not previous or previous not in (state.get("colours") or {}):
            raise UsageError(f"site {slug} has nothing to roll back to (no previous colour recorded)")
        backup = None
        if restore_db:
            pre_upgrade = recorded(state, live).get("backup")
            if not pre_upgrade:
                raise UsageError(f"no pre-upgrade backup is recorded for {live}'s release; nothing to restore")
            backup = resolve_backup_file(site, pre_upgrade)
        plan = rollback_plan(ctx, site, live=live, previous=previous, record=state["colours"][previous],
                             live_ref=recorded(state, live).get("ref"), restore_from=backup)
        return ctx.execute(plan, site, f"rollback {slug}")


def rollback_plan(ctx: Context, site: Site, *, live: str, previous: str, record: dict,
                  live_ref: str | None = None, restore_from=None) -> Plan:
    stacks = ctx.stacks(site)
    preview = preview_target(ctx.host.edge, site.config.domain)

    def ready(run: Run):
        if stacks.web_running(previous):
            return {"outcome": "skipped", "reason": f"{previous} is still running: this rollback is instant"}
        # Retired: start it again first; the rollback is then not instant, and says so.
        run.say(f"{previous} was retired; starting {record['image']} first (this rollback is not instant)")
        run.notes["instant"] = False
        run.on_failure(f"remove {naming.app_project(site.slug, previous)}",
                       lambda: stacks.remove_colour(previous))
        stacks.collectstatic(previous, record["image"])
        stacks.start_web(previous, record["image"])
        ctx.edge.files.write_colour(site.slug, "preview", previous)
        with Prober() as prober:
            try:
                prober.wait_healthy(preview, site.config.health_timeout, expect_version=colour_version(record))
            except CheckFailed as exc:
                exc.output_tail = ((exc.output_tail or "") + "\n" + stacks.web_logs(previous)).strip()
                raise
        return {"started": previous}

    def flip(run: Run):
        run.forget_cleanups()
        seconds = flip_to(ctx, site, run, target_colour=previous, from_colour=live)
        run.notes["flip_seconds"] = seconds
        run.notes.setdefault("instant", True)
        ctx.reporter.line(f"     traffic flipped to {previous} in {seconds * 1000:.0f} ms")
        return {"flip_seconds": seconds}

    if restore_from is None:
        steps = (
            Step("ready", f"make sure {previous} ({record.get('ref')}) is running", ready),
            Step("flip", f"point {site.config.domain} at {previous}, confirm {record.get('ref')} through Caddy", flip),
        )
    else:
        def flip_in_maintenance(run: Run, maintenance_off) -> None:
            # The live listener shows the maintenance page until the flip, so the target
            # colour is checked through the preview listener first.
            with Prober() as prober:
                prober.wait_healthy(preview, site.config.health_timeout, expect_version=colour_version(record))
            seconds = flip_to(ctx, site, run, target_colour=previous, from_colour=live,
                              before_confirm=maintenance_off)
            run.notes["flip_seconds"] = seconds

        steps = (Step("ready", f"make sure {previous} ({record.get('ref')}) is running", ready),
                 *restore_steps(ctx, site, restore_from, require_sha=True, then_flip=flip_in_maintenance))
    return Plan("rollback", site.slug, steps, facts={
        "from": live_ref, "to": record.get("ref"), "from_colour": live, "to_colour": previous,
        **({"restore_db": restore_from.name} if restore_from else {})})
