"""`sumbg rollback`: flip traffic back to the last release that was live and healthy.

That is the other colour, normally still running since the upgrade (the flip is then
instant), unless its release is recorded as failed. A retired colour is started again
first. `--restore-db` also puts the pre-upgrade backup back, under the maintenance page.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters.probe import preview_target
from sumbg.errors import UsageError, WorkerNotReady
from sumbg.lock import SiteLock
from sumbg.ops import agreement, workers
from sumbg.ops.backups import resolve_backup_file, restore_steps
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.hooks import HookCall, configured, post_hook_step
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.opening import opened
from sumbg.ops.policy import rollback_needs_restore
from sumbg.ops.seams import SiteStacks
from sumbg.ops.switch import say_degraded, start_release, switch_live
from sumbg.site.site import Site
from sumbg.site.state import ColourRecord, SiteState


def rollback_target(
    state: SiteState, slug: str, *, to: str | None = None, force: bool = False, restore_db: bool = False
) -> str:
    """The colour `sumbg rollback` goes to, or UsageError saying why there is none (pure)."""
    live = state.live
    if not live:
        raise UsageError(f"site {slug} was never deployed; nothing to roll back")
    if force and not to:
        raise UsageError("--force needs --to COLOUR: it only flips to a release you name")
    if to is not None and to not in naming.COLOURS:
        raise UsageError(f"--to must be blue or green, not {to!r}")
    target = to or naming.other_colour(live)
    if target == live:
        raise UsageError(f"{state.describe(live)} is already live on site {slug}")
    record = state.record(target)
    if record is None:
        raise UsageError(f"site {slug} has nothing to roll back to ({target} holds no release)")
    if record.failed and not force:
        raise UsageError(
            f"site {slug} has no healthy release to roll back to: {state.describe(target)} failed "
            f"({record.reason or 'no reason recorded'}); the live {state.describe(live)} is the "
            f"last healthy one. To flip to it anyway: sumbg rollback {slug} --to {target} --force"
        )
    needs_restore = rollback_needs_restore(state.record(live))
    if needs_restore and not restore_db and not force:
        raise UsageError(
            f"rolling back from {state.describe(live)} to {state.describe(target)} needs --restore-db: "
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
    wait_worker: bool = False,
) -> dict[str, Any]:
    """`wait_worker`: wait until the target's worker is ready (and fail if it is not) instead of
    moving it in the background once traffic is confirmed."""
    site = ctx.site(slug)
    lock = site.lock()
    with opened(ctx, site, f"rollback {slug}", lock_timeout=lock_timeout, dry_run=dry_run, lock=lock) as state:
        target = rollback_target(state, slug, to=to, force=force, restore_db=restore_db)
        # Checked after the target, so a refusal for the target's own reason comes first.
        agreement.probe_and_check(ctx, site, state)[0].refuse(slug, f"rollback of {slug}")
        live = state.live
        assert live is not None  # rollback_target refuses a site with nothing live
        backup = None
        if restore_db:
            live_record = state.record(live)
            if live_record is None or not live_record.backup:
                raise UsageError(f"no pre-upgrade backup is recorded for {live}'s release; nothing to restore")
            backup = resolve_backup_file(site, live_record.backup)
        plan = rollback_plan(
            ctx,
            site,
            state,
            live=live,
            target=target,
            restore_from=backup,
            forced=force,
            lock=None if wait_worker else lock,
        )
        if dry_run:
            ctx.reporter.dry_run(
                f"dry run: sumbg rollback {slug} would go from {state.describe(live)} to {state.describe(target)}:",
                plan,
            )
            return {**plan.describe(), "dry_run": True}
        return ctx.execute(plan, site, f"rollback {slug}")


@dataclass(frozen=True)
class RollbackRun:
    """What the rollback's steps share."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    live: str
    target: str
    record: ColourRecord
    lock: SiteLock | None = None  # handed to a background `sumbg` that moves the worker; None: moved here


def ready(rb: RollbackRun, run: Run) -> StepResult:
    if rb.stacks.web_running(rb.target):
        return {"outcome": "skipped", "reason": f"{rb.target} is still running: this rollback is instant"}
    # Retired: start it again first; the rollback is then not instant, and says so.
    run.say(f"{rb.target} was retired; starting {rb.record.image} first (this rollback is not instant)")
    run.notes["instant"] = False

    def remove_it() -> None:
        keep_colour_logs(rb.stacks, run, rb.target)
        rb.stacks.remove_colour(rb.target)

    run.on_failure(f"remove {naming.app_project(rb.site.slug, rb.target)}", remove_it)
    start_release(rb.ctx, rb.site, rb.target, rb.record)
    return {"started": rb.target}


def flip(rb: RollbackRun, run: Run) -> StepResult:
    run.forget_cleanups()
    # With the worker moved in the background, the CPU weights move there too: nothing but the
    # flip itself stands between the command's start and its end.
    handing_over = rb.lock is not None and bool(rb.site.config.worker_command)
    flipped = switch_live(rb.ctx, rb.site, run, rb.target, weights=not handing_over)
    seconds = flipped.seconds
    run.notes["flip_seconds"] = seconds
    run.notes.setdefault("instant", True)
    # Traffic is confirmed and said first; the worker never delays it.
    rb.ctx.reporter.line(f"     traffic flipped to {rb.target} in {seconds * 1000:.0f} ms")
    degraded = say_degraded(run, "flip", flipped.degraded)
    return {"flip_seconds": seconds, **degraded, **follow_with_worker(rb, run)}


def follow_with_worker(rb: RollbackRun, run: Run) -> StepResult:
    """The worker follows the traffic: handed to a background `sumbg` with the site's lock (the
    rollback ends now), or, without a lock to hand over (`--wait-worker`), moved and waited for
    here: a worker that is not ready then fails the rollback, traffic staying where it went."""
    if not rb.site.config.worker_command:
        return {}
    if rb.lock is not None:
        return {"worker": workers.hand_over_move(rb.ctx, rb.site, run, rb.lock)}
    try:
        return {"worker": workers.move_worker(rb.ctx, rb.site, run, to=rb.target, came_from=rb.live, wait=True)}
    except WorkerNotReady as failure:
        raise failure.refined(
            message=f"traffic is on {run.state.describe(rb.target)} as asked, but {failure.message}"
        ) from failure


def flip_in_maintenance(rb: RollbackRun, run: Run, maintenance_off: Callable[[], None]) -> None:
    """With --restore-db: the live listener shows the maintenance page until the flip, so the
    target colour is checked through the preview listener first."""
    ctx, site = rb.ctx, rb.site
    with ctx.prober() as prober:
        prober.wait_healthy(
            preview_target(ctx.host.edge, site.config.domain, site.config.required_checks),
            site.config.health_timeout,
            expect_version=rb.record.version,
        )
    flipped = switch_live(ctx, site, run, rb.target, before_confirm=maintenance_off)
    run.notes["flip_seconds"] = flipped.seconds
    say_degraded(run, "flip", flipped.degraded)
    follow_with_worker(replace(rb, lock=None), run)


def rollback_plan(
    ctx: Context,
    site: Site,
    state: SiteState,
    *,
    live: str,
    target: str,
    restore_from: Path | None = None,
    forced: bool = False,
    lock: SiteLock | None = None,
) -> Plan:
    """`lock`: the site's lock, held, for a background `sumbg` to go on holding while it moves the
    worker (None: the worker is moved, and waited for, in the plan)."""
    record = state.record(target)
    assert record is not None  # rollback_target checked it
    rb = RollbackRun(ctx, site, ctx.stacks(site), live, target, record, lock)
    ref = record.ref
    ready_step = Step("ready", f"make sure {target} ({ref}) is running", functools.partial(ready, rb))
    steps: tuple[Step, ...]
    if restore_from is None:
        steps = (
            ready_step,
            Step(
                "flip",
                f"point {site.config.domain} at {target}, confirm {ref} through Caddy "
                f"(if it does not answer, put {live} back and confirm it)"
                + (
                    ""
                    if not site.config.worker_command
                    else f"; then {target}'s worker starts and {live}'s finishes its tasks"
                    + (" in the background" if lock is not None else ", waited for")
                ),
                functools.partial(flip, rb),
            ),
        )
    else:
        steps = (
            ready_step,
            *restore_steps(
                ctx, site, restore_from, require_sha=True, then_flip=functools.partial(flip_in_maintenance, rb)
            ),
        )
    if configured(site, "post_rollback"):
        call = HookCall(
            "post_rollback",
            "rollback",
            "succeeded",
            from_ref=state.ref(live),
            to_ref=ref,
            from_colour=live,
            to_colour=target,
            colour=target,
            image=record.image,
        )
        hook = "the post_rollback hook (a failure is reported; the rollback stands)"
        steps = (*steps, post_hook_step(ctx, site, call, f"{hook}: {configured(site, 'post_rollback')}"))
    return Plan(
        "rollback",
        site.slug,
        steps,
        facts={
            "from": state.ref(live),
            "to": ref,
            "from_colour": live,
            "to_colour": target,
            **({"forced": True} if forced else {}),
            **({"restore_db": restore_from.name} if restore_from else {}),
        },
    )
