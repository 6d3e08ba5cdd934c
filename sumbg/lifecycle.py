"""Retiring the idle colour, recovering a site after sumbg itself was killed, and applying
edited site settings to the edge Caddy."""

from __future__ import annotations

import datetime as dt

from . import adoption, agreement, naming
from .context import Context, refuse_if_interrupted
from .errors import CheckFailed, LockHeld, NeedsOperator, UsageError
from .executor import Plan, Run, Step
from .records import recorded
from .runtime import Site
from .smoke import preview_target
from .switch import colour_version, move_workers, restart_rollback_target, switch_live
from .util import utc_now


def _age_seconds(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    then = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def retire(
    ctx: Context, slug: str, *, min_age: float, force: bool, lock_timeout: float = 0.0, reason: str | None = None
) -> dict:
    site = ctx.site(slug)
    stacks = ctx.stacks(site)
    with site.lock().acquire(timeout=lock_timeout, command=f"sumbg retire {slug}"):
        state = site.records.load_state()
        refuse_if_interrupted(site, state)
        live = state.get("live")
        if not live:
            raise UsageError(f"site {slug} has no live colour yet")
        idle = naming.other_colour(live)
        if not stacks.colour_exists(idle):
            site.records.append({"event": "noop", "operation": "retire", "reason": f"{idle} is not running"})
            ctx.reporter.line(f"{idle} is not running; nothing to retire")
            return {"operation": "retire", "outcome": "noop", "reason": f"{idle} is not running"}
        age = _age_seconds(recorded(state, live).get("deployed_at"))
        if state.get("previous") == idle and age < min_age and not force:
            raise UsageError(
                f"{idle} is {slug}'s only rollback target and {live} went live {age:.0f}s ago "
                f"(less than --min-age {min_age:.0f}s); pass --force to retire it anyway"
            )

        def stop(run: Run):
            stacks.remove_colour(idle)
            if idle in run.state.get("colours", {}):
                run.state["colours"][idle]["status"] = "retired"
            run.save_state()
            return {"retired": naming.app_project(slug, idle)}

        plan = Plan(
            "retire",
            slug,
            (Step("retire", f"stop and remove {naming.app_project(slug, idle)}", stop),),
            facts={"colour": idle, **({"reason": reason} if reason else {})},
        )
        return ctx.execute(plan, site, f"retire {slug}")


def soak_period(ctx: Context, config) -> float:
    """How long a site's idle colour is kept after an upgrade went live (0: kept)."""
    return config.retire_idle_after if config.retire_idle_after is not None else ctx.host.retire_idle_after


def soak_decision(state: dict, soak: float, *, idle_running: bool, age: float) -> str | None:
    """Why an idle colour is kept, or None when its soak period is over (pure: unit-tested)."""
    live = state.get("live")
    if not soak:
        return "kept: no soak period is set (upgrade.retire_idle_after)"
    if not live:
        return "never deployed"
    if state.get("operation"):
        return f"an operation ({state['operation'].get('kind')}) is running or was interrupted"
    if not idle_running:
        return f"{naming.other_colour(live)} is not running"
    if age < soak:
        return f"soaking: {live} went live {_duration(age)} ago, kept for {_duration(soak)}"
    return None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def retire_due(ctx: Context) -> dict:
    """Retire every idle colour whose soak period is over and whose live colour answers healthy
    through Caddy; a site that is busy, unhealthy or disagreeing keeps its rollback target."""
    results = []
    for config in ctx.site_configs():
        site = Site(ctx.host, config)
        state = site.records.load_state()
        live = state.get("live")
        age = _age_seconds(recorded(state, live).get("deployed_at")) if live else 0.0
        soak = soak_period(ctx, config)
        kept = soak_decision(
            state, soak, age=age, idle_running=bool(live) and ctx.stacks(site).colour_exists(naming.other_colour(live))
        )
        if kept is None:
            agreed, health = agreement.probe_and_check(ctx, site, state)
            if agreed.problems:
                kept = "kept: records and what serves disagree: " + "; ".join(agreed.problems)
            elif not health.passing:
                kept = f"kept: the live colour is not healthy through Caddy ({health.status or health.answer.status})"
        if kept is not None:
            results.append({"site": config.slug, "outcome": "kept", "reason": kept})
            continue
        reason = f"soaked {_duration(age)} (retire_idle_after {_duration(soak)})"
        try:
            outcome = retire(ctx, config.slug, min_age=0, force=False, reason=reason)
        except LockHeld as exc:
            results.append({"site": config.slug, "outcome": "kept", "reason": f"busy: {exc.message}"})
            continue
        results.append({"site": config.slug, "outcome": "retired", "reason": reason, "result": outcome})
    for item in results:
        ctx.reporter.line(f"{item['site']}: {item['outcome']}: {item['reason']}")
    return {"operation": "retire-due", "sites": results}


# =================================================================== recover


def recover(ctx: Context, slug: str) -> dict:
    """Bring a site whose operation was interrupted to a consistent, serving state."""
    site = ctx.site(slug)
    with site.lock().acquire(command=f"sumbg recover {slug}") as lock:
        state = site.records.load_state()
        interrupted = state.get("operation")
        if not state.get("live") and (state.get("adoption") or {}).get("status") in ("importing", "cutting-over"):
            ctx.engine.ping()
            return ctx.execute(adoption.recover_plan(ctx, site, state), site, f"recover {slug}")
        if not state.get("live"):
            raise UsageError(f"site {slug} was never deployed; re-run `sumbg init`")
        ctx.engine.ping()
        plan = Plan(
            "recover", slug, recover_steps(ctx, site), facts={"interrupted": interrupted, "stale_lock": lock.took_over}
        )
        return ctx.execute(plan, site, f"recover {slug}")


def recover_steps(ctx: Context, site: Site) -> tuple[Step, ...]:
    slug = site.slug
    stacks = ctx.stacks(site)
    files = ctx.edge.files
    engine = ctx.engine

    def leftovers(run: Run):
        removed = []
        for colour in naming.COLOURS:
            project = naming.app_project(slug, colour)
            for container in engine.project_containers(project):
                if container.labels.get("com.docker.compose.oneoff") == "True":
                    engine.remove_container(container.name)
                    removed.append(container.name)
        if stacks.remove_rehearsal():
            removed.append(f"{naming.app_project(slug, naming.REHEARSAL)} (an upgrade's rehearsal)")
        if not stacks.data_running():
            stacks.start_data()
            removed.append("restarted the data stack")
        # Also drops the scratch copy an interrupted rehearsal was migrating.
        repaired = stacks.database().repair_interrupted_swap()
        if run.state.pop("rehearsal", None) is not None:
            run.save_state()
        # A backup or restore killed mid-way leaves a hidden partial dump or restore copy.
        for partial in [*site.backups_dir.glob(".*.partial"), *site.backups_dir.glob(".restore-*")]:
            partial.unlink(missing_ok=True)
            removed.append(f"backups/{partial.name}")
        return {"removed": removed, "database": repaired}

    def choose(run: Run):
        recorded = run.state["live"]
        preview = preview_target(ctx.host.edge, site.config.domain)
        for colour in (recorded, naming.other_colour(recorded)):
            record = running_record(ctx, site, run, colour)
            if record is None:
                continue
            files.write_colour(slug, "preview", colour)
            with ctx.prober() as prober:
                try:
                    prober.wait_healthy(preview, 30, expect_version=colour_version(record))
                except CheckFailed as exc:
                    run.say(f"{colour} is not healthy: {exc.message}")
                    continue
            run.notes["chosen"] = colour
            run.state.setdefault("colours", {})[colour] = {**record, "status": "live"}
            return {"live": colour, "ref": record.get("ref")}
        raise NeedsOperator(
            f"neither colour of {slug} is running and healthy; start one by hand "
            f"(see `docker ps -a --filter name=sum-{slug}-`) and run `sumbg recover {slug}` again"
        )

    def route(run: Run):
        chosen = run.notes["chosen"]
        files.set_maintenance(slug, False)
        with ctx.edge.lock().acquire(timeout=60):
            changed = ctx.edge.apply(ctx.all_sites())
            ctx.edge.ensure_up()
        flip = switch_live(ctx, site, run, chosen, confirm_seconds=30)
        files.write_colour(slug, "preview", naming.other_colour(chosen))
        return {"caddy_changed": changed, "flip_seconds": flip.seconds}

    def tidy(run: Run):
        chosen = run.notes["chosen"]
        other = naming.other_colour(chosen)
        colours = run.state.setdefault("colours", {})
        record = colours.get(other)
        actions = []
        running = engine.container(site.web_container(other))
        half_started = record is None or record.get("status") == "candidate"
        if running and (half_started or running.image != record.get("image")):
            # A colour sumbg was starting when it died: not a rollback target, remove it.
            stacks.remove_colour(other)
            actions.append(f"removed half-started {naming.app_project(slug, other)}")
            running = None
        if half_started:
            colours.pop(other, None)
            record = None
        if record is not None:
            record["status"] = "idle" if running and running.running else "retired"
        run.state["live"] = chosen
        run.state["previous"] = other if record is not None else None
        run.save_state()
        restarted = restart_rollback_target(ctx, site, run)
        if restarted:
            actions.append(
                f"rollback target {restarted['ref']} "
                f"{'started again' if restarted['restored'] else 'could not be started again'}"
            )
        moved = move_workers(ctx, site, to=chosen, came_from=other)
        if moved["stopped"]:
            actions.append(f"stopped {other}'s worker")
        if moved["started"]:
            actions.append(f"{chosen}'s worker running")
        return {"actions": actions}

    return (
        Step("leftovers", "remove one-off containers, repair an interrupted database swap", leftovers),
        Step("choose", "find a healthy colour, the recorded live one first", choose),
        Step("route", "point traffic at it, maintenance off, Caddy config as rendered", route),
        Step("tidy", "remove a half-started colour, workers, state.json", tidy),
    )


def running_record(ctx: Context, site: Site, run: Run, colour: str) -> dict | None:
    """What a colour's running web container serves, from state.json or else its image labels."""
    container = ctx.engine.container(site.web_container(colour))
    if container is None or not container.running:
        return None
    record = recorded(run.state, colour)
    if record and record.get("image") == container.image:
        return record
    labels = ctx.engine.image_labels(container.image) or {}
    return {
        "image": container.image,
        "ref": labels.get("sumbg.ref"),
        "commit": labels.get("sumbg.commit"),
        "sum_core": labels.get("sumbg.sum-core") or None,
        "deployed_at": utc_now(),
    }


# =================================================================== apply


def apply_edge(ctx: Context) -> dict:
    """Render the edge config from every live site's site.toml, validate it with `caddy
    validate`, and reload Caddy only if something changed (a reload can close idle
    kept-alive connections, so it is never done for nothing)."""
    ctx.engine.ping()
    sites = ctx.all_sites(strict=True)
    with ctx.edge.lock().acquire(timeout=60):
        changed = ctx.edge.apply(sites)
        ctx.edge.ensure_up()
    for slug in sites:
        ctx.site(slug).write_app_env()
    ctx.reporter.line(
        f"edge: {', '.join(changed)} changed, validated and reloaded" if changed else "edge: nothing changed; no reload"
    )
    return {"operation": "apply", "sites": sorted(sites), "changed": changed}
