"""Every change of a site's live colour, in one place.

`switch_live` is the one flip used by upgrade, rollback, the watch's revert, recover
and restore. It rewrites the live file (Caddy reads it per request), confirms through
Caddy that the expected version answers, and if it does not, puts the previous live
file back and confirms *that*. It never returns, and never raises, with traffic on a
colour nobody confirmed: either the target is confirmed (returns), or the previous
colour is confirmed again (FlipFailed, exit 1), or neither answers (NeedsOperator,
exit 3, naming the command to run).

Also here, because they go with a flip: the CPU weight that follows the traffic, the
worker that moves with it, and starting a recorded release again (a retired rollback
target, or one an upgrade displaced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sumbg import failpoints
from sumbg.adapters.probe import live_target, preview_target
from sumbg.errors import CheckFailed, NeedsOperator, SumbgError
from sumbg.ops.context import Context
from sumbg.ops.executor import Run
from sumbg.ops.logs import keep_colour_logs
from sumbg.site.site import Site
from sumbg.site.state import ColourRecord, colour_version

SWITCH_CONFIRM_SECONDS = 15.0


class FlipFailed(CheckFailed):
    """Traffic did not move: the target did not answer, and the previous colour was confirmed again."""


@dataclass(frozen=True)
class Flip:
    to: str
    came_from: str | None
    seconds: float
    degraded: dict[str, str] = field(default_factory=dict)  # checks /health/ reported failing at the confirmation


def switch_live(
    ctx: Context,
    site: Site,
    run: Run,
    to: str,
    *,
    before_confirm: Callable[[], None] | None = None,
    confirm_seconds: float = SWITCH_CONFIRM_SECONDS,
    weights: bool = True,
) -> Flip:
    """Move the site's live traffic to `to` and confirm it, or put it back and confirm that.

    On success the records follow: live/previous, the colours' status, the preview file
    pointing at the colour just left. On failure `to` is recorded as failed with the reason.
    `weights`: give `to` the live CPU weight now (False: whoever continues the operation does).
    """
    slug, files = site.slug, ctx.edge.files
    state = run.state
    came_from = files.read_colour(slug, "live")
    expect = colour_version(state.record(to))
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
        state.mark_failed(to, reason)
        run.save_state()
        run.notes.setdefault("flips", []).append({"to": to, "outcome": "failed", "reason": reason})
        _put_back(ctx, site, run, to=to, came_from=came_from, reason=reason)
    seconds = round(time.monotonic() - started, 3)
    state.flip(to, came_from)
    run.save_state()
    degraded = answer.failing_checks
    run.notes.setdefault("flips", []).append(
        {
            "to": to,
            "outcome": "confirmed",
            "seconds": seconds,
            "version": answer.version,
            **({"degraded": degraded} if degraded else {}),
        }
    )
    if weights:
        give_live_weight(ctx, site, run, to)
    return Flip(to=to, came_from=came_from, seconds=seconds, degraded=degraded)


def say_degraded(run: Run, where: str, failing: dict[str, str]) -> dict[str, Any]:
    """Every check /health/ reports failing while the site answers "degraded" (which passes): said,
    and returned for the step's record in the history."""
    if not failing:
        return {}
    for name, detail in failing.items():
        run.say(f"{where}: /health/ is degraded: check {name} fails: {detail}")
    return {"degraded": failing}


def give_live_weight(ctx: Context, site: Site, run: Run, live: str) -> None:
    """The live colour's CPU weight follows the traffic. Best effort: a confirmed flip stands
    even if Docker refuses, and the run says so."""
    try:
        ctx.stacks(site).apply_cpu_weights(live)
    except SumbgError as exc:
        run.say(f"warning: the CPU weights were not moved to {live}: {exc.message}")


def _put_back(ctx: Context, site: Site, run: Run, *, to: str, came_from: str | None, reason: str) -> NoReturn:
    """Traffic back on `came_from`, confirmed; always raises (FlipFailed, or NeedsOperator)."""
    slug = site.slug
    recover_hint = f"run `sumbg recover {slug}` once a colour is healthy (see `sumbg status {slug}`)"
    if not came_from or came_from == to:
        raise NeedsOperator(f"{reason}; there was no other colour to put back: {recover_hint}", site=slug, colour=to)
    ctx.edge.files.write_colour(slug, "live", came_from)
    ctx.edge.files.write_colour(slug, "preview", to)
    expect = colour_version(run.state.record(came_from))
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
        f"{reason}; traffic is back on {run.state.describe(came_from)}, confirmed through Caddy",
        site=slug,
        colour=to,
    )


# ---------------------------------------------------------------- the rollback target


def start_release(ctx: Context, site: Site, colour: str, record: ColourRecord) -> dict[str, str]:
    """Start a recorded release in `colour` from its image (static files first) and wait until
    it answers its version through the preview listener; a failure carries its web log tail."""
    stacks = ctx.stacks(site)
    stacks.collectstatic(colour, record.image)
    stacks.start_web(colour, record.image)
    ctx.edge.files.write_colour(site.slug, "preview", colour)
    with ctx.prober() as prober:
        try:
            answer = prober.wait_healthy(
                preview_target(ctx.host.edge, site.config.domain, site.config.required_checks),
                site.config.health_timeout,
                expect_version=record.version,
            )
        except CheckFailed as exc:
            raise exc.refined(output_tail=((exc.output_tail or "") + "\n" + stacks.web_logs(colour)).strip()) from exc
    return answer.failing_checks


def restart_rollback_target(ctx: Context, site: Site, run: Run) -> dict[str, Any] | None:
    """An upgrade that failed (or was killed) after removing the idle colour, the rollback
    target, to make room for the new release: start that release again from its recorded
    image, so `sumbg rollback` stays instant. Never raises: a target that cannot be started
    again is reported (the rollback is then not instant), it does not fail the operation."""
    displaced = run.state.take_displaced()
    if displaced is None:
        return None
    colour, record = displaced.colour, displaced.record
    if run.state.live == colour:
        run.say(f"not restarting {record.ref} in {colour}: traffic is on {colour}")
        run.save_state()
        return None
    started = time.monotonic()
    outcome: dict[str, Any]
    try:
        keep_colour_logs(ctx.stacks(site), run, colour)
        ctx.stacks(site).remove_colour(colour)
        start_release(ctx, site, colour, record)
    except SumbgError as exc:
        run.save_state()
        outcome = {"restored": False, "ref": record.ref, "error": exc.message}
        run.say(
            f"could not start the previous release {record.ref} again in {colour} "
            f"({exc.message}); `sumbg rollback` will not be instant"
        )
    else:
        seconds = round(time.monotonic() - started, 3)
        run.state.return_displaced(displaced)
        run.save_state()
        outcome = {"restored": True, "ref": record.ref, "colour": colour, "seconds": seconds}
        run.say(
            f"started the previous release {record.ref} again in {colour} in {seconds:.1f}s: "
            "`sumbg rollback` stays instant"
        )
    run.notes["rollback_target"] = outcome
    return outcome
