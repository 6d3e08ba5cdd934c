"""Rollback: flip traffic back to the last release that was live and healthy (still running)."""

from __future__ import annotations

from sumbg import naming
from sumbg.adapters.probe import preview_target
from sumbg.errors import UsageError
from sumbg.ops import agreement
from sumbg.ops.backups import resolve_backup_file, restore_steps
from sumbg.ops.context import Context, refuse_if_interrupted
from sumbg.ops.executor import Plan, Run, Step
from sumbg.ops.policy import rollback_needs_restore
from sumbg.ops.switch import describe, is_failed, move_workers, start_release, switch_live
from sumbg.site.records import recorded
from sumbg.site.site import Site
from sumbg.site.state import colour_version


def rollback_target(
    state: dict, slug: str, *, to: str | None = None, force: bool = False, restore_db: bool = False
) -> str:
    """The colour `sumbg rollback` goes to, or UsageError saying why there is none."""
    live = state.get("live")
    if not live:
        raise UsageError(f"site {slug} was never deployed; nothing to roll back")
    if force and not to:
        raise UsageError("--force needs --to COLOUR: it only flips to a release you name")
    if to is not None and to not in naming.COLOURS:
        raise UsageError(f"--to must be blue or green, not {to!r}")
    target = to or naming.other_colour(live)
    if target == live:
        raise UsageError(f"{describe(state, live)} is already live on site {slug}")
    record = recorded(state, target)
    if not record:
        raise UsageError(f"site {slug} has nothing to roll back to ({target} holds no release)")
    if is_failed(record) and not force:
        raise UsageError(
            f"site {slug} has no healthy release to roll back to: {describe(state, target)} failed "
            f"({record.get('reason') or 'no reason recorded'}); the live {describe(state, live)} is the "
            f"last healthy one. To flip to it anyway: sumbg rollback {slug} --to {target} --force"
        )
    needs_restore = rollback_needs_restore(recorded(state, live))
    if needs_restore and not restore_db and not force:
        raise UsageError(
            f"rolling back from {describe(state, live)} to {describe(state, target)} needs --restore-db: "
            f"{needs_restore}. `sumbg rollback {slug} --restore-db` puts the pre-upgrade backup back (writes "
            f"since the upgrade are lost); `--to {target} --force` flips without it"
        )
    return target


def rollback(
    ctx: Context,
    slug: str,
    *,
    restore_db: bool = False,
    lock_timeout: float = 0.0,
    to: str | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> dict:
    site = ctx.site(slug)
    lock = site.lock()
    if not dry_run:
        lock.acquire(timeout=lock_timeout, command=f"sumbg rollback {slug}")
    try:
        state = site.records.load_state()
        if not dry_run:
            refuse_if_interrupted(site, state)
        target = rollback_target(state, slug, to=to, force=force, restore_db=restore_db)
        live = state["live"]
        agreement.probe_and_check(ctx, site, state)[0].refuse(slug, f"rollback of {slug}")
        backup = None
        if restore_db:
            pre_upgrade = recorded(state, live).get("backup")
            if not pre_upgrade:
                raise UsageError(f"no pre-upgrade backup is recorded for {live}'s release; nothing to restore")
            backup = resolve_backup_file(site, pre_upgrade)
        plan = rollback_plan(ctx, site, state, live=live, target=target, restore_from=backup, forced=force)
        if dry_run:
            return dry_run_report(ctx, site, plan, state, target)
        return ctx.execute(plan, site, f"rollback {slug}")
    finally:
        lock.release()


def dry_run_report(ctx: Context, site: Site, plan: Plan, state: dict, target: str) -> dict:
    ctx.reporter.line(
        f"dry run: sumbg rollback {site.slug} would go from {describe(state, state['live'])} "
        f"to {describe(state, target)}:"
    )
    for index, step in enumerate(plan.steps, 1):
        ctx.reporter.line(f"  {index}. {step.name}: {step.summary}")
    return {**plan.describe(), "dry_run": True}


def rollback_plan(
    ctx: Context, site: Site, state: dict, *, live: str, target: str, restore_from=None, forced: bool = False
) -> Plan:
    stacks = ctx.stacks(site)
    record = state["colours"][target]
    preview = preview_target(ctx.host.edge, site.config.domain)

    def ready(run: Run):
        if stacks.web_running(target):
            return {"outcome": "skipped", "reason": f"{target} is still running: this rollback is instant"}
        # Retired: start it again first; the rollback is then not instant, and says so.
        run.say(f"{target} was retired; starting {record['image']} first (this rollback is not instant)")
        run.notes["instant"] = False
        run.on_failure(f"remove {naming.app_project(site.slug, target)}", lambda: stacks.remove_colour(target))
        start_release(ctx, site, target, record)
        return {"started": target}

    def flip(run: Run):
        run.forget_cleanups()
        seconds = switch_live(ctx, site, run, target).seconds
        move_workers(ctx, site, to=target, came_from=live)
        run.notes["flip_seconds"] = seconds
        run.notes.setdefault("instant", True)
        ctx.reporter.line(f"     traffic flipped to {target} in {seconds * 1000:.0f} ms")
        return {"flip_seconds": seconds}

    ref = record.get("ref")
    if restore_from is None:
        steps = (
            Step("ready", f"make sure {target} ({ref}) is running", ready),
            Step(
                "flip",
                f"point {site.config.domain} at {target}, confirm {ref} through Caddy "
                f"(if it does not answer, put {live} back and confirm it)",
                flip,
            ),
        )
    else:

        def flip_in_maintenance(run: Run, maintenance_off) -> None:
            # The live listener shows the maintenance page until the flip, so the target
            # colour is checked through the preview listener first.
            with ctx.prober() as prober:
                prober.wait_healthy(preview, site.config.health_timeout, expect_version=colour_version(record))
            seconds = switch_live(ctx, site, run, target, before_confirm=maintenance_off).seconds
            move_workers(ctx, site, to=target, came_from=live)
            run.notes["flip_seconds"] = seconds

        steps = (
            Step("ready", f"make sure {target} ({ref}) is running", ready),
            *restore_steps(ctx, site, restore_from, require_sha=True, then_flip=flip_in_maintenance),
        )
    return Plan(
        "rollback",
        site.slug,
        steps,
        facts={
            "from": recorded(state, live).get("ref"),
            "to": ref,
            "from_colour": live,
            "to_colour": target,
            **({"forced": True} if forced else {}),
            **({"restore_db": restore_from.name} if restore_from else {}),
        },
    )
