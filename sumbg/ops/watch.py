"""The watch after an upgrade's switch: probes the live site and counts the 5xx answers Caddy gave
real visitors; reverts through `switch_live` when the site's `[watch]` thresholds say the failure persists,
or at once when the new release's worker does not stay up (web and worker go back together)."""

from __future__ import annotations

import os
import time
from typing import Any, NoReturn

from sumbg.adapters.probe import Target, live_target
from sumbg.config import WatchSettings
from sumbg.errors import CheckFailed, NeedsOperator, WorkerNotReady
from sumbg.ops.context import Context
from sumbg.ops.executor import Run
from sumbg.ops.hooks import HookCall, run_post_hook
from sumbg.ops.seams import HttpProber, SiteStacks
from sumbg.ops.switch import say_degraded, switch_live
from sumbg.ops.workers import move_worker
from sumbg.site.site import Site
from sumbg.site.state import colour_version
from sumbg.site.worker import RESTARTING, STOPPED, WorkerView

# Tests inject isolated failed probes into a watch with this (a count), to show that one
# unlucky probe does not revert a good release.
INJECT_PROBE_FAILURES = "SUMBG_INJECT_PROBE_FAILURES"
WATCH_FAILED = "the site failed its watch"


def watch_verdict(policy: WatchSettings, probes: list[str | None], visitors: tuple[int, int] | None) -> str | None:
    """Why the watch must revert now (a persisting failure), or None.

    `probes`: one entry per probe so far, None for a pass or the problem seen.
    `visitors`: (requests, 5xx answers) Caddy counted for the site's host since the switch.
    """
    streak = 0
    for problem in reversed(probes):
        if problem is None:
            break
        streak += 1
    if streak >= policy.consecutive_failures:
        return f"{streak} probes in a row failed, the last: {probes[-1]}"
    failed = sum(1 for p in probes if p is not None)
    if len(probes) >= policy.min_probes and failed / len(probes) > policy.max_failed_ratio:
        last = next(p for p in reversed(probes) if p is not None)
        return f"{failed} of {len(probes)} probes failed (more than {policy.max_failed_ratio:.0%}), the last: {last}"
    if visitors is not None:
        requests, errors = visitors
        if errors >= policy.max_visitor_5xx and errors > policy.max_visitor_5xx_ratio * requests:
            return (
                f"Caddy answered {errors} of {requests} requests for the site with 5xx "
                f"(limit {policy.max_visitor_5xx} and {policy.max_visitor_5xx_ratio:.0%})"
            )
    return None


def watch_live(ctx: Context, site: Site, run: Run, seconds: float, *, new: str, old: str) -> dict[str, Any]:
    """Watch the live site (and its worker) after a switch; on a persisting failure, or a worker
    that does not stay up, flip back to `old` and fail."""
    policy = site.config.watch
    target = live_target(ctx.host.edge, site.config)
    expect = colour_version(run.state.record(new))
    injected = int(os.environ.get(INJECT_PROBE_FAILURES, "0") or 0)
    stacks = ctx.stacks(site)
    worker = stacks.worker_view(new) if site.config.worker_command else None
    probes: list[str | None] = []
    visitors: tuple[int, int] | None = None
    summary: dict[str, Any] = {}
    degraded: dict[str, str] = {}
    with ctx.prober() as prober:
        baseline = prober.visitor_counts(ctx.host.edge, site.config.domain)
        deadline = time.monotonic() + seconds
        while True:  # at least one probe, however short the watch
            problem, failing = _probe(prober, target, site, expect)
            if problem is None and len(probes) < injected:
                problem = f"injected failure ({INJECT_PROBE_FAILURES})"
            probes.append(problem)
            if problem:
                run.say(f"watch: probe {len(probes)} failed: {problem}")
            if failing and failing != degraded:
                say_degraded(run, "watch", failing)
            degraded = failing or degraded
            now = prober.visitor_counts(ctx.host.edge, site.config.domain)
            if baseline is not None and now is not None:
                visitors = (now[0] - baseline[0], now[1] - baseline[1])
            run.notes["watch"] = summary = {
                "probes": len(probes),
                "failed_probes": sum(1 for p in probes if p),
                "visitor_requests": visitors[0] if visitors else None,
                "visitor_5xx": visitors[1] if visitors else None,
                **({"degraded": degraded} if degraded else {}),
            }
            if worker is not None:
                down = _worker_down(stacks, new, worker)
                if down:
                    revert_after_switch(
                        ctx,
                        site,
                        run,
                        down,
                        new=new,
                        old=old,
                        evidence=_worker_evidence(stacks, new),
                        what="its worker did not stay up",
                    )
            reason = watch_verdict(policy, probes, visitors)
            if reason:
                revert_after_switch(ctx, site, run, reason, new=new, old=old)
            if time.monotonic() >= deadline:
                break
            time.sleep(policy.interval)
    return {"seconds": seconds, **summary}


def revert_after_switch(
    ctx: Context,
    site: Site,
    run: Run,
    reason: str,
    *,
    new: str,
    old: str,
    evidence: str | None = None,
    what: str = WATCH_FAILED,
) -> NoReturn:
    """A release that failed after the switch (its watch, or its worker) goes back whole: traffic
    flips to `old`, the worker follows, the release is recorded failed with the reason; raises.
    `evidence`: e.g. the worker's last log lines, kept with the error."""
    run.state.mark_failed(new, f"failed its watch: {reason}" if what == WATCH_FAILED else reason)
    run.save_state()
    record = run.state.record(new)
    if record is not None and record.breaks_previous:
        _cover_instead_of_reverting(ctx, site, run, reason, new=new, old=old)
    run.say(f"{'watch' if what == WATCH_FAILED else 'back'}: {reason}; rolling back to {old}")
    flip = switch_live(ctx, site, run, old)
    run.notes["reverted"] = reverted = {"reason": reason, "flip_seconds": flip.seconds}
    try:
        move_worker(ctx, site, run, to=old, came_from=new, wait=True)
    except WorkerNotReady as worker_failure:
        # Traffic is back on the release that worked; its worker is the operator's to look at.
        reverted["worker"] = worker_failure.message
        run.say(f"warning: {worker_failure.message}")
    _after_revert(ctx, site, run, new=new, old=old)
    raise CheckFailed(
        f"after the switch {what} ({reason}); rolled back to "
        f"{run.state.describe(old)} by itself in {flip.seconds:.3f}s",
        colour=new,
        output_tail=evidence,
    )


def _worker_down(stacks: SiteStacks, colour: str, ready: WorkerView) -> str | None:
    """Why the live colour's worker, ready when the watch began, no longer stays up (or None)."""
    now = stacks.worker_view(colour)
    if now.state in (STOPPED, RESTARTING) or now.restart_count > ready.restart_count:
        return f"the worker of {colour} did not stay up: it is {now.describe()}"
    return None


def _worker_evidence(stacks: SiteStacks, colour: str) -> str:
    return "--- last worker log lines ---\n" + (stacks.worker_logs(colour) or "(none)")


def _after_revert(ctx: Context, site: Site, run: Run, *, new: str, old: str) -> None:
    """The post_rollback hook, told the watch reverted (SUMBG_OPERATION=upgrade, SUMBG_OUTCOME=reverted)."""
    back = run.state.record(old)
    call = HookCall(
        "post_rollback",
        "upgrade",
        "reverted",
        from_ref=run.state.ref(new),
        to_ref=run.state.ref(old),
        from_colour=new,
        to_colour=old,
        colour=old,
        image=back.image if back else "",
    )
    run_post_hook(ctx, site, run, call)


def _cover_instead_of_reverting(ctx: Context, site: Site, run: Run, reason: str, *, new: str, old: str) -> NoReturn:
    """A release whose migrations break the one before it fails its watch: flipping back would
    serve visitors errors from a release that cannot read the schema, so the maintenance page
    covers the site instead (503 with Retry-After) and the operator chooses."""
    ctx.edge.files.set_maintenance(site.slug, True)
    run.notes["reverted"] = {"reason": reason, "flipped": False, "maintenance": True}
    run.say(f"watch: {reason}; not flipping back to {old}: it cannot serve {new}'s schema")
    raise NeedsOperator(
        f"after the switch the site failed its watch ({reason}); {run.state.describe(old)} cannot serve the "
        f"schema {run.state.describe(new)} migrated to, so traffic was not flipped back: the maintenance page "
        f"covers the site (503). To go back with the pre-upgrade database (writes since the upgrade are lost): "
        f"sumbg rollback {site.slug} --restore-db; or upgrade to a fixed release with --maintenance",
        site=site.slug,
        colour=new,
    )


def _probe(
    prober: HttpProber, target: Target, site: Site, expect: dict[str, str | None]
) -> tuple[str | None, dict[str, str]]:
    """(what is wrong with the live site now, or None; the checks /health/ reports failing)."""
    health = prober.health(target)
    failing = health.failing_checks if health.passing else {}
    if not health.passing:
        return f"/health/ through Caddy: {health.describe()}", failing
    if any(health.version.get(key) != value for key, value in expect.items()):
        return (
            f"/health/ through Caddy answers version {health.version.get('build')!r}, expected {expect.get('build')!r}"
        ), failing
    for check in site.config.smoke_checks:
        if check.method != "GET":
            continue
        try:
            prober.check(target, check)
        except CheckFailed as exc:
            return exc.message, failing
    return None, failing
