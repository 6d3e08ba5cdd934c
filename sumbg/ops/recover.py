"""`sumbg recover`: bring a site whose operation was interrupted to a consistent, serving state."""

from __future__ import annotations

from collections.abc import Callable

from sumbg import naming
from sumbg.adapters.probe import preview_target
from sumbg.errors import CheckFailed, NeedsOperator, UsageError
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step
from sumbg.ops.switch import move_workers, restart_rollback_target, switch_live
from sumbg.site.records import recorded
from sumbg.site.site import Site
from sumbg.site.state import colour_version
from sumbg.util import utc_now

# How an adoption killed half way is put back: adoption's own plan, handed in by the CLI
# (operations never import the adoption package, which builds on them).
HalfAdoptedPlan = Callable[[Context, Site, dict], Plan]


def recover(ctx: Context, slug: str, *, half_adopted: HalfAdoptedPlan | None = None) -> dict:
    """Bring a site whose operation was interrupted to a consistent, serving state."""
    site = ctx.site(slug)
    with site.lock().acquire(command=f"sumbg recover {slug}") as lock:
        state = site.records.load_state()
        interrupted = state.get("operation")
        adopting = (state.get("adoption") or {}).get("status") in ("importing", "cutting-over")
        if not state.get("live") and adopting and half_adopted is not None:
            ctx.engine.ping()
            return ctx.execute(half_adopted(ctx, site, state), site, f"recover {slug}")
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
