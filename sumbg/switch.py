"""Every change of a site's live colour, in one place.

- `switch_live`: the one flip used by upgrade, rollback, the watch's revert,
  recover and restore. It rewrites the live file (Caddy reads it per request),
  confirms through Caddy that the expected version answers, and if it does not,
  puts the previous live file back and confirms *that*. It never returns, and
  never raises, with traffic on a colour nobody confirmed: either the target is
  confirmed (returns), or the previous colour is confirmed again (FlipFailed,
  exit 1), or neither answers (NeedsOperator, exit 3, naming the command to run).
- `watch_live`: after an upgrade's switch, probes the live site and counts the
  5xx answers Caddy gave real visitors; reverts through `switch_live` when the
  site's `[watch]` thresholds say the failure persists.
- `rollback_target`: which colour a rollback may go to (never a failed release
  unless forced), as a pure decision.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import failpoints, naming
from .config import WatchSettings
from .context import Context
from .errors import CheckFailed, NeedsOperator, SumbgError, UsageError
from .executor import Run
from .migration_policy import rollback_needs_restore
from .records import recorded
from .runtime import Site
from .smoke import live_target, preview_target
from .util import utc_now

SWITCH_CONFIRM_SECONDS = 15.0
# Tests inject isolated failed probes into a watch with this (a count), to show that one
# unlucky probe does not revert a good release.
INJECT_PROBE_FAILURES = "SUMBG_INJECT_PROBE_FAILURES"


class FlipFailed(CheckFailed):
    """Traffic did not move: the target did not answer, and the previous colour was confirmed again."""


def colour_version(record: dict) -> dict:
    """What /health/ reports for a recorded release (sumbg sets GIT_SHA and BUILD_ID)."""
    return {"build": record.get("ref"), "git_sha": record.get("commit")}


def describe(state: dict, colour: str | None) -> str:
    record = recorded(state, colour)
    return f"{colour} ({record.get('ref') or 'unknown release'})"


# ---------------------------------------------------------------- release outcomes


def mark_failed(state: dict, colour: str, reason: str) -> None:
    record = state.setdefault("colours", {}).get(colour)
    if record is not None:
        record.update({"outcome": "failed", "reason": reason, "failed_at": utc_now()})


def mark_healthy(state: dict, colour: str) -> None:
    record = state.setdefault("colours", {}).get(colour)
    if record is not None:
        record["outcome"] = "healthy"
        for key in ("reason", "failed_at"):
            record.pop(key, None)


def is_failed(record: dict) -> bool:
    return record.get("outcome") == "failed"


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


# ---------------------------------------------------------------- the one flip


@dataclass(frozen=True)
class Flip:
    to: str
    came_from: str | None
    seconds: float


def switch_live(
    ctx: Context, site: Site, run: Run, to: str, *, before_confirm=None, confirm_seconds: float = SWITCH_CONFIRM_SECONDS
) -> Flip:
    """Move the site's live traffic to `to` and confirm it, or put it back and confirm that.

    On success the records follow: live/previous, the colours' status, the preview file
    pointing at the colour just left. On failure `to` is recorded as failed with the reason.
    """
    slug, files = site.slug, ctx.edge.files
    state = run.state
    came_from = files.read_colour(slug, "live")
    expect = colour_version(recorded(state, to))
    target = live_target(ctx.host.edge, site.config)
    started = time.monotonic()
    if came_from and came_from != to:
        # The preview names Caddy's fallback upstream: while the flip is confirmed, a
        # visitor whose request cannot reach `to` is served by the colour being left.
        files.write_colour(slug, "preview", came_from)
    files.write_colour(slug, "live", to)
    failpoints.reached("switch:after-write")
    if before_confirm:
        before_confirm()
    try:
        with ctx.prober() as prober:
            answer = prober.wait_healthy(target, confirm_seconds, expect_version=expect)
    except CheckFailed as failure:
        reason = f"{to} did not answer as {expect.get('build')} through Caddy after the flip: {failure.message}"
        mark_failed(state, to, reason)
        run.save_state()
        run.notes.setdefault("flips", []).append({"to": to, "outcome": "failed", "reason": reason})
        _put_back(ctx, site, run, to=to, came_from=came_from, reason=reason)
        raise  # unreachable: _put_back always raises
    seconds = round(time.monotonic() - started, 3)
    state["live"] = to
    colours = state.setdefault("colours", {})
    if to in colours:
        colours[to]["status"] = "live"
    if came_from and came_from != to:
        state["previous"] = came_from
        if colours.get(came_from, {}).get("status") == "live":  # a half-started candidate stays one
            colours[came_from]["status"] = "idle"
    run.save_state()
    run.notes.setdefault("flips", []).append(
        {"to": to, "outcome": "confirmed", "seconds": seconds, "version": answer.version}
    )
    give_live_weight(ctx, site, run, to)
    return Flip(to=to, came_from=came_from, seconds=seconds)


def give_live_weight(ctx: Context, site: Site, run: Run, live: str) -> None:
    """The live colour's CPU weight follows the traffic. Best effort: a confirmed flip stands
    even if Docker refuses, and the run says so."""
    try:
        ctx.stacks(site).apply_cpu_weights(live)
    except SumbgError as exc:
        run.say(f"warning: the CPU weights were not moved to {live}: {exc.message}")


def _put_back(ctx: Context, site: Site, run: Run, *, to: str, came_from: str | None, reason: str) -> None:
    slug = site.slug
    recover_hint = f"run `sumbg recover {slug}` once a colour is healthy (see `sumbg status {slug}`)"
    if not came_from or came_from == to:
        raise NeedsOperator(f"{reason}; there was no other colour to put back: {recover_hint}", site=slug, colour=to)
    ctx.edge.files.write_colour(slug, "live", came_from)
    ctx.edge.files.write_colour(slug, "preview", to)
    expect = colour_version(recorded(run.state, came_from))
    try:
        with ctx.prober() as prober:
            prober.wait_healthy(live_target(ctx.host.edge, site.config), SWITCH_CONFIRM_SECONDS, expect_version=expect)
    except CheckFailed as second:
        run.notes["flips"].append({"to": came_from, "outcome": "failed", "reason": second.message})
        raise NeedsOperator(
            f"{reason}; putting {came_from} back did not confirm either ({second.message}); "
            f"the live file names {came_from}: {recover_hint}",
            site=slug,
            colour=to,
        ) from None
    run.notes["flips"].append({"to": came_from, "outcome": "confirmed (put back)"})
    raise FlipFailed(
        f"{reason}; traffic is back on {describe(run.state, came_from)}, confirmed through Caddy", site=slug, colour=to
    )


def move_workers(ctx: Context, site: Site, *, to: str, came_from: str | None) -> dict:
    stacks = ctx.stacks(site)
    stopped = bool(came_from) and came_from != to and stacks.stop_worker(came_from)
    started = stacks.start_worker(to)
    return {"stopped": came_from if stopped else None, "started": to if started else None}


# ---------------------------------------------------------------- the rollback target


def start_release(ctx: Context, site: Site, colour: str, record: dict) -> None:
    """Start a recorded release in `colour` from its image (static files first) and wait until
    it answers its version through the preview listener; a failure carries its web log tail."""
    stacks = ctx.stacks(site)
    stacks.collectstatic(colour, record["image"])
    stacks.start_web(colour, record["image"])
    ctx.edge.files.write_colour(site.slug, "preview", colour)
    with ctx.prober() as prober:
        try:
            prober.wait_healthy(
                preview_target(ctx.host.edge, site.config.domain),
                site.config.health_timeout,
                expect_version=colour_version(record),
            )
        except CheckFailed as exc:
            exc.output_tail = ((exc.output_tail or "") + "\n" + stacks.web_logs(colour)).strip()
            raise


def restart_rollback_target(ctx: Context, site: Site, run: Run) -> dict | None:
    """An upgrade that failed (or was killed) after removing the idle colour, the rollback
    target, to make room for the new release: start that release again from its recorded
    image, so `sumbg rollback` stays instant. Never raises: a target that cannot be started
    again is reported (the rollback is then not instant), it does not fail the operation."""
    displaced = run.state.pop("displaced", None)
    if not displaced:
        return None
    colour, record = displaced["colour"], displaced["record"]
    if run.state.get("live") == colour:
        run.say(f"not restarting {record.get('ref')} in {colour}: traffic is on {colour}")
        run.save_state()
        return None
    started = time.monotonic()
    try:
        ctx.stacks(site).remove_colour(colour)
        start_release(ctx, site, colour, record)
    except SumbgError as exc:
        run.save_state()
        outcome = {"restored": False, "ref": record.get("ref"), "error": exc.message}
        run.say(
            f"could not start the previous release {record.get('ref')} again in {colour} "
            f"({exc.message}); `sumbg rollback` will not be instant"
        )
    else:
        seconds = round(time.monotonic() - started, 3)
        run.state.setdefault("colours", {})[colour] = {**record, "status": "idle"}
        run.state["previous"] = colour
        run.save_state()
        outcome = {"restored": True, "ref": record.get("ref"), "colour": colour, "seconds": seconds}
        run.say(
            f"started the previous release {record.get('ref')} again in {colour} in {seconds:.1f}s: "
            "`sumbg rollback` stays instant"
        )
    run.notes["rollback_target"] = outcome
    return outcome


# ---------------------------------------------------------------- the watch


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


def watch_live(ctx: Context, site: Site, run: Run, seconds: float, *, new: str, old: str) -> dict:
    """Watch the live site after a switch; on a persisting failure flip back to `old` and fail."""
    policy = site.config.watch
    target = live_target(ctx.host.edge, site.config)
    expect = colour_version(recorded(run.state, new))
    injected = int(os.environ.get(INJECT_PROBE_FAILURES, "0") or 0)
    probes: list[str | None] = []
    visitors = None
    deadline = time.monotonic() + seconds
    with ctx.prober() as prober:
        baseline = prober.visitor_counts(ctx.host.edge, site.config.domain)
        while time.monotonic() < deadline:
            problem = _probe(prober, target, site, expect)
            if problem is None and len(probes) < injected:
                problem = f"injected failure ({INJECT_PROBE_FAILURES})"
            probes.append(problem)
            if problem:
                run.say(f"watch: probe {len(probes)} failed: {problem}")
            now = prober.visitor_counts(ctx.host.edge, site.config.domain)
            if baseline is not None and now is not None:
                visitors = (now[0] - baseline[0], now[1] - baseline[1])
            run.notes["watch"] = summary = {
                "probes": len(probes),
                "failed_probes": sum(1 for p in probes if p),
                "visitor_requests": visitors[0] if visitors else None,
                "visitor_5xx": visitors[1] if visitors else None,
            }
            reason = watch_verdict(policy, probes, visitors)
            if reason:
                mark_failed(run.state, new, f"failed its watch: {reason}")
                run.save_state()
                if recorded(run.state, new).get("breaks_previous"):
                    _cover_instead_of_reverting(ctx, site, run, reason, new=new, old=old)
                run.say(f"watch: {reason}; rolling back to {old}")
                flip = switch_live(ctx, site, run, old)
                run.notes["reverted"] = {"reason": reason, "flip_seconds": flip.seconds}
                move_workers(ctx, site, to=old, came_from=new)
                raise CheckFailed(
                    f"after the switch the site failed its watch ({reason}); rolled back to "
                    f"{describe(run.state, old)} by itself in {flip.seconds:.3f}s",
                    colour=new,
                )
            time.sleep(policy.interval)
    return {"seconds": seconds, **summary} if probes else {"seconds": seconds, "probes": 0}


def _cover_instead_of_reverting(ctx: Context, site: Site, run: Run, reason: str, *, new: str, old: str) -> None:
    """A release whose migrations break the one before it fails its watch: flipping back would
    serve visitors errors from a release that cannot read the schema, so the maintenance page
    covers the site instead (503 with Retry-After) and the operator chooses."""
    ctx.edge.files.set_maintenance(site.slug, True)
    run.notes["reverted"] = {"reason": reason, "flipped": False, "maintenance": True}
    run.say(f"watch: {reason}; not flipping back to {old}: it cannot serve {new}'s schema")
    raise NeedsOperator(
        f"after the switch the site failed its watch ({reason}); {describe(run.state, old)} cannot serve the "
        f"schema {describe(run.state, new)} migrated to, so traffic was not flipped back: the maintenance page "
        f"covers the site (503). To go back with the pre-upgrade database (writes since the upgrade are lost): "
        f"sumbg rollback {site.slug} --restore-db; or upgrade to a fixed release with --maintenance",
        site=site.slug,
        colour=new,
    )


def _probe(prober, target, site: Site, expect: dict) -> str | None:
    health = prober.health(target)
    if not health.passing:
        return f"/health/ through Caddy: {health.answer.describe()}"
    if any(health.version.get(key) != value for key, value in expect.items()):
        return (
            f"/health/ through Caddy answers version {health.version.get('build')!r}, expected {expect.get('build')!r}"
        )
    for check in site.config.smoke_checks:
        if check.method != "GET":
            continue
        try:
            prober.check(target, check)
        except CheckFailed as exc:
            return exc.message
    return None
