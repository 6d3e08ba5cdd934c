"""A site's background worker across its releases: it follows the traffic, is waited for, and drains.

After a flip the worker of the colour left stops taking tasks and finishes the ones it holds
in the background (SIGTERM: Celery's warm shutdown; SIGKILL after [worker] stop_timeout, the
tasks it still ran named in the history), while the live colour's worker starts beside it at
once: one version consumes new tasks at a time and no operation waits for a long task. A
worker that runs Celery beat is the exception: the live colour's starts once the old one has
exited, so beat never runs in two colours at the same moment.

An operation that starts a worker waits until it is ready (running, not restarted for
[worker] ready_after seconds, answering `celery inspect ping`). A rollback does not wait: it
hands the whole move, and the site's lock with it, to a `sumbg` of its own (`_move-worker`)
and ends as soon as traffic is confirmed; that process records the move in the history.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from sumbg import naming
from sumbg.adapters import background
from sumbg.errors import WorkerNotReady
from sumbg.lock import SiteLock
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.seams import SiteStacks
from sumbg.ops.switch import give_live_weight
from sumbg.site.records import HistoryEntry
from sumbg.site.site import Site
from sumbg.site.state import WORKER_NOT_READY, WORKER_READY, WORKER_STARTING, WORKER_STOPPED

# How long past [worker] stop_timeout a new beat-running worker waits for the old one (its
# drainer SIGKILLs it at stop_timeout).
BEAT_HANDOVER_MARGIN = 30.0


def move_worker(
    ctx: Context, site: Site, run: Run, *, to: str, came_from: str | None = None, wait: bool = True
) -> StepResult:
    """The worker follows the traffic to `to`: every other colour's worker drains in the background,
    `to`'s starts (after the old one has exited, if it runs beat) and, with `wait`, is waited for
    until ready (WorkerNotReady otherwise, with its evidence, recorded on the release)."""
    stacks = ctx.stacks(site)
    command = stacks.worker_command()
    if command is None:
        return {"outcome": "skipped", "reason": "no worker configured"}
    removed = stacks.remove_drained_workers()
    draining: dict[str, str] = {}
    for colour in naming.COLOURS:
        if colour == to:
            continue
        name = stacks.drain_worker(colour)
        if name:
            draining[colour] = name
            run.state.note_worker(colour, WORKER_STOPPED, "finishing its tasks (SIGTERM)")
    if draining:
        run.save_state()
        run.say(f"worker: {', '.join(draining)} finishes its tasks in the background (SIGTERM)")
    if command.beat:
        _wait_for_beat_to_stop(stacks, site, run)
    record = run.state.record(to)
    result: dict[str, Any] = {
        "stopped": came_from if came_from in draining else next(iter(draining), None),
        "started": None,
        "draining": list(draining.values()),
        **({"removed": removed} if removed else {}),
    }
    if record is None or not record.image:
        return {**result, "outcome": "skipped", "reason": f"{to} holds no recorded release"}
    stacks.start_worker(to, record.image, live=True)
    result["started"] = to
    if not wait:
        run.state.note_worker(to, WORKER_STARTING)
        run.save_state()
        return result
    try:
        ready = stacks.wait_worker_ready(to)
    except WorkerNotReady as failure:
        run.state.note_worker(to, WORKER_NOT_READY, failure.message)
        run.save_state()
        raise
    run.state.note_worker(to, WORKER_READY)
    run.save_state()
    run.say(f"worker: {to}'s is ready ({_ready_words(ready)})")
    return {**result, "ready": ready}


def _ready_words(ready: dict[str, Any]) -> str:
    words = f"{ready.get('seconds', 0):.1f}s"
    if ready.get("ping"):
        words += f", {ready['ping']} answered `celery inspect ping`"
    return words


def _wait_for_beat_to_stop(stacks: SiteStacks, site: Site, run: Run) -> None:
    """Celery beat runs in one colour at a time: the old worker (and its beat) must be gone first."""

    def running() -> list[str]:
        return [c.name for c in stacks.draining_workers() if c.running]

    still = running()
    if not still:
        return
    run.say(f"worker: it runs Celery beat; waiting for {', '.join(still)} to finish its tasks first")
    deadline = time.monotonic() + site.config.worker.stop_timeout + BEAT_HANDOVER_MARGIN
    while still:
        if time.monotonic() >= deadline:
            raise WorkerNotReady(
                f"the old worker {', '.join(still)} (with Celery beat) is still running after "
                f"[worker] stop_timeout; a second beat is never started beside it"
            )
        time.sleep(0.5)
        still = running()


# ---------------------------------------------------------------- the rollback's move, in the background


def hand_over_move(ctx: Context, site: Site, run: Run, lock: SiteLock) -> dict[str, Any]:
    """Start the `sumbg` that moves the worker after this rollback, holding the site's lock from
    the moment this process exits (so no operation slips in between) until the move is done."""
    wait_read, _wait_write = background.parent_exit_pipe()  # the write end closes when this process exits
    pid = ctx.start_worker_move(site, lock.hand_over(), wait_read)
    os.close(wait_read)  # the child has its own
    ctx.reports_deferred = True  # it regenerates SITES.md and WHAT-BROKE.md when it ends
    run.state.note_worker(run.state.live or "", WORKER_STARTING, "moved in the background after the rollback")
    run.save_state()
    moving = {"in_background": True, "pid": pid, "log": str(site.run_dir / "workers.log")}
    run.notes["worker"] = moving
    run.say(
        f"worker: moving to {run.state.live} in the background (pid {pid}; `sumbg history {site.slug}` "
        "records when it is ready)"
    )
    return moving


def finish_handed_move(ctx: Context, slug: str, *, lock_fd: int, wait_fd: int) -> HistoryEntry | None:
    """The background side of `hand_over_move`: hold the lock handed over, wait until the rollback
    has exited (its records are then complete), then move the worker to the live colour."""
    site = ctx.site(slug)
    lock = site.lock().adopt(lock_fd, f"sumbg rollback {slug} (moving its worker in the background)")
    try:
        background.await_parent_exit(wait_fd)
        return move_to_live(ctx, site, after="rollback")
    finally:
        lock.release()


def move_to_live(ctx: Context, site: Site, *, after: str) -> HistoryEntry | None:
    """The worker moved to the colour live now, as an operation of its own ("worker") in the history."""
    state = site.records.load_state()
    live = state.live
    if live is None or state.operation is not None:
        # The operation that handed the move over died part way: `sumbg recover` moves the worker.
        return None
    plan = Plan(
        "worker",
        site.slug,
        (
            Step(
                "weights",
                f"the live CPU weight to {live}, the background one to the other colour",
                functools.partial(_weights_to_live, ctx, site, live),
            ),
            Step(
                "workers",
                f"drain every worker but {live}'s, start {live}'s and wait until it is ready",
                functools.partial(_move_to_live, ctx, site, live),
            ),
        ),
        facts={"colour": live, "after": after},
    )
    return ctx.execute(plan, site, f"worker {site.slug} (after the {after})")


def _weights_to_live(ctx: Context, site: Site, live: str, run: Run) -> StepResult:
    give_live_weight(ctx, site, run, live)
    return {}


def _move_to_live(ctx: Context, site: Site, live: str, run: Run) -> StepResult:
    return move_worker(ctx, site, run, to=live, came_from=naming.other_colour(live), wait=True)


# ---------------------------------------------------------------- an old worker's drain


def drain_until_gone(ctx: Context, slug: str, container: str, since: float | None) -> HistoryEntry:
    """The background drainer of one old worker: wait until it has finished its tasks (SIGKILL
    after [worker] stop_timeout), remove it, and say how it ended in the site's history."""
    site = ctx.site(slug)
    drained = ctx.stacks(site).finish_draining(container, since)
    entry: HistoryEntry = {
        "event": "worker-drained",
        "operation": "worker-drain",
        "colour": site.colour_of_worker(container),
        **drained.record(),
    }
    if drained.outcome == "killed":
        held = drained.held_tasks
        entry["reason"] = (
            f"still running after [worker] stop_timeout {site.config.worker.stop_timeout:g}s: SIGKILL"
            + (f"; it held {', '.join(t['name'] + ' ' + t['id'] for t in held)}" if held else "")
            + ("" if held is not None else "; Celery did not say which tasks it held")
        )
    site.records.append(entry)
    return entry


def drainer_args(site: Site, container: str) -> list[str]:
    """The hidden command that drains `container` in the background (see drain_until_gone)."""
    return ["_drain-worker", site.slug, container, "--since", f"{time.time():.3f}"]
