"""`sumbg recover`: bring a site whose operation was interrupted to a consistent, serving state.

It removes what a killed operation left (one-off containers, a rehearsal's stand-in and
scratch database, an interrupted database swap, partial backups), finds a colour that runs
and answers healthy (the recorded live one first), routes traffic to it through the one
flip, and tidies the records: a half-started colour is removed, a displaced rollback target
started again, the worker moved.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sumbg import naming
from sumbg.adapters.probe import preview_target
from sumbg.errors import CheckFailed, NeedsOperator, UsageError
from sumbg.ops import workers
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.seams import SiteStacks
from sumbg.ops.switch import restart_rollback_target, switch_live
from sumbg.site.site import Site
from sumbg.site.state import CANDIDATE, IDLE, LIVE, RETIRED, ColourRecord, SiteState
from sumbg.util import utc_now

# How an adoption killed half way is put back: adoption's own plan, handed in by the CLI
# (operations never import the adoption package, which builds on them).
HalfAdoptedPlan = Callable[[Context, Site, SiteState], Plan]


def recover(ctx: Context, slug: str, *, half_adopted: HalfAdoptedPlan | None = None) -> dict[str, Any]:
    """Bring a site whose operation was interrupted to a consistent, serving state."""
    site = ctx.site(slug)
    with site.lock().acquire(command=f"sumbg recover {slug}") as lock:
        state = site.records.load_state()
        interrupted = state.operation.to_json() if state.operation else None
        adopting = state.adoption is not None and state.adoption.in_progress
        if not state.live and adopting and half_adopted is not None:
            ctx.engine.ping()
            return ctx.execute(half_adopted(ctx, site, state), site, f"recover {slug}")
        if not state.live:
            raise UsageError(f"site {slug} was never deployed; re-run `sumbg init`")
        ctx.engine.ping()
        plan = Plan(
            "recover", slug, recover_steps(ctx, site), facts={"interrupted": interrupted, "stale_lock": lock.took_over}
        )
        return ctx.execute(plan, site, f"recover {slug}")


@dataclass
class RecoverRun:
    """What recover's steps share: the colour chosen to serve, once `choose` found it."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    chosen: str = ""


def leftovers(rc: RecoverRun, run: Run) -> StepResult:
    engine, stacks, site = rc.ctx.engine, rc.stacks, rc.site
    removed = []
    for colour in naming.COLOURS:
        project = naming.app_project(site.slug, colour)
        for container in engine.project_containers(project):
            # Workers are one-off containers too (`compose run`): tidy moves them, old ones finish their tasks.
            worker = container.labels.get("com.docker.compose.service") == "worker"
            if container.labels.get("com.docker.compose.oneoff") == "True" and not worker:
                engine.remove_container(container.name)
                removed.append(container.name)
    if stacks.remove_rehearsal():
        removed.append(f"{naming.app_project(site.slug, naming.REHEARSAL)} (an upgrade's rehearsal)")
    if not stacks.data_running():
        stacks.start_data()
        removed.append("restarted the data stack")
    # Also drops the scratch copy an interrupted rehearsal was migrating.
    repaired = stacks.database().repair_interrupted_swap()
    if run.state.rehearsal is not None:
        run.state.rehearsal = None
        run.save_state()
    # A backup or restore killed mid-way leaves a hidden partial dump or restore copy.
    for partial in [*site.backups_dir.glob(".*.partial"), *site.backups_dir.glob(".restore-*")]:
        partial.unlink(missing_ok=True)
        removed.append(f"backups/{partial.name}")
    # ...and a backup, drill or restore killed mid-way, its staging or fetched folder.
    for folder in (site.backups_dir / ".offsite", site.backups_dir / ".offsite-restore"):
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(f"backups/{folder.name}/")
    return {"removed": removed, "database": repaired}


def choose(rc: RecoverRun, run: Run) -> StepResult:
    ctx, site = rc.ctx, rc.site
    recorded = run.state.live
    assert recorded is not None  # recover refuses a site never deployed
    preview = preview_target(ctx.host.edge, site.config.domain, site.config.required_checks)
    for colour in (recorded, naming.other_colour(recorded)):
        record = running_record(ctx, site, run.state, colour)
        if record is None:
            continue
        ctx.edge.files.write_colour(site.slug, "preview", colour)
        with ctx.prober() as prober:
            try:
                prober.wait_healthy(preview, 30, expect_version=record.version)
            except CheckFailed as exc:
                run.say(f"{colour} is not healthy: {exc.message}")
                continue
        rc.chosen = run.notes["chosen"] = colour
        record.status = LIVE
        run.state.colours[colour] = record
        return {"live": colour, "ref": record.ref}
    raise NeedsOperator(
        f"neither colour of {site.slug} is running and healthy; start one by hand "
        f"(see `docker ps -a --filter name=sum-{site.slug}-`) and run `sumbg recover {site.slug}` again"
    )


def route(rc: RecoverRun, run: Run) -> StepResult:
    ctx, site = rc.ctx, rc.site
    ctx.edge.files.set_maintenance(site.slug, False)
    with ctx.edge.lock().acquire(timeout=60):
        changed = ctx.edge.apply(ctx.all_sites())
        ctx.edge.ensure_up()
    flip = switch_live(ctx, site, run, rc.chosen, confirm_seconds=30)
    ctx.edge.files.write_colour(site.slug, "preview", naming.other_colour(rc.chosen))
    return {"caddy_changed": changed, "flip_seconds": flip.seconds}


def tidy(rc: RecoverRun, run: Run) -> StepResult:
    ctx, site, stacks, chosen = rc.ctx, rc.site, rc.stacks, rc.chosen
    other = naming.other_colour(chosen)
    record = run.state.record(other)
    actions = []
    running = ctx.engine.container(site.web_container(other))
    half_started = record is None or record.status == CANDIDATE
    if running and (record is None or half_started or running.image != record.image):
        # A colour sumbg was starting when it died: not a rollback target, remove it.
        keep_colour_logs(stacks, run, other)
        stacks.remove_colour(other)
        actions.append(f"removed half-started {naming.app_project(site.slug, other)}")
        running = None
    if half_started:
        run.state.colours.pop(other, None)
        record = None
    if record is not None:
        record.status = IDLE if running and running.running else RETIRED
    run.state.live = chosen
    run.state.previous = other if record is not None else None
    run.save_state()
    restarted = restart_rollback_target(ctx, site, run)
    if restarted:
        actions.append(
            f"rollback target {restarted['ref']} "
            f"{'started again' if restarted['restored'] else 'could not be started again'}"
        )
    moved = workers.move_worker(ctx, site, run, to=chosen, came_from=other, wait=True)
    if moved.get("removed"):
        actions.append(f"removed old workers left behind: {', '.join(moved['removed'])}")
    if moved.get("draining"):
        actions.append(f"{', '.join(moved['draining'])} finishing its tasks in the background")
    if moved.get("started"):
        actions.append(f"{chosen}'s worker ready")
    return {"actions": actions}


def recover_steps(ctx: Context, site: Site) -> tuple[Step, ...]:
    rc = RecoverRun(ctx, site, ctx.stacks(site))
    return (
        Step(
            "leftovers",
            "remove one-off containers, repair an interrupted database swap",
            functools.partial(leftovers, rc),
        ),
        Step("choose", "find a healthy colour, the recorded live one first", functools.partial(choose, rc)),
        Step("route", "point traffic at it, maintenance off, Caddy config as rendered", functools.partial(route, rc)),
        Step(
            "tidy",
            "remove a half-started colour, move the worker to the live colour (and wait until it is ready), state.json",
            functools.partial(tidy, rc),
        ),
    )


def running_record(ctx: Context, site: Site, state: SiteState, colour: str) -> ColourRecord | None:
    """What a colour's running web container serves, from state.json or else its image labels."""
    container = ctx.engine.container(site.web_container(colour))
    if container is None or not container.running:
        return None
    record = state.record(colour)
    if record is not None and record.image == container.image:
        return record
    labels = ctx.engine.image_labels(container.image) or {}
    return ColourRecord(
        image=container.image,
        ref=labels.get("sumbg.ref"),
        commit=labels.get("sumbg.commit"),
        sum_core=labels.get("sumbg.sum-core") or None,
        deployed_at=utc_now(),
    )
