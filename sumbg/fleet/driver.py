"""The fleet's one place with side effects: asking every host over its link, running the
upgrades the Schedule allows in threads, saving the run after every change, and writing
the fleet's sites matrix. `upgrade_fleet` is `sumbg fleet upgrade` from plan to record."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from sumbg.adapters.ssh import HostLink, HostLinkProtocol
from sumbg.config import FleetConfig, FleetHost
from sumbg.errors import EXIT_NEEDS_OPERATOR, HostUnreachable, SumbgError, UsageError
from sumbg.fleet.answers import SiteReleases, read_releases
from sumbg.fleet.plan import Move, Schedule, plan_lines, plan_moves, select
from sumbg.fleet.run import (
    FleetRun,
    Outcome,
    OutcomeState,
    RunOptions,
    RunStore,
    exit_code,
    new_run_id,
    passed,
    resume_options,
    run_lines,
)
from sumbg.fleet.view import HostView, matrix
from sumbg.util import atomic_write, utc_now

STATUS_TIMEOUT = 300.0
RELEASES_TIMEOUT = 900.0


class FleetDriver:
    """Drives the fleet's hosts, each through its link (HostLinkProtocol: ssh's HostLink, or a
    test's fake); `say` takes the progress lines, from any thread."""

    def __init__(
        self,
        fleet: FleetConfig,
        say: Callable[[str], None],
        link: Callable[[FleetHost], HostLinkProtocol] | None = None,
    ) -> None:
        self.fleet = fleet
        self.say = say
        self.link: Callable[[FleetHost], HostLinkProtocol] = link or (lambda host: HostLink(fleet, host))
        self._say_lock = threading.Lock()

    def status(self, hosts: Sequence[FleetHost] | None = None) -> list[HostView]:
        """Every host's `sumbg status`, all at once; one that does not answer (or answers what
        cannot be read) becomes a view with its error and hides nothing else."""

        def one(host: FleetHost) -> HostView:
            try:
                # Exit 1 with its document: the host answered, and some site has a backup problem.
                return HostView.answered(
                    host, self.link(host).query(["status"], timeout=STATUS_TIMEOUT, answered_exits=(0, 1))
                )
            except SumbgError as exc:
                return HostView(host, error=exc.message)

        targets = list(hosts if hosts is not None else self.fleet.hosts)
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            return list(pool.map(one, targets))

    def write_matrix(self, views: Sequence[HostView]) -> Path:
        atomic_write(self.fleet.matrix, matrix(views))
        return self.fleet.matrix

    def releases(self, views: Sequence[HostView], selected: Sequence[str]) -> dict[str, SiteReleases]:
        """Each selected site's tags, one `sumbg releases` per host, all hosts at once."""
        wanted: dict[str, list[str]] = {}
        for name in selected:
            host, _, slug = name.partition("/")
            if any(v.host.name == host and v.reachable for v in views):
                wanted.setdefault(host, []).append(slug)

        def one(host_name: str) -> dict[str, SiteReleases]:
            try:
                doc = self.link(self.fleet.host(host_name)).query(
                    ["releases", *wanted[host_name]], timeout=RELEASES_TIMEOUT
                )
                found = read_releases(host_name, doc)
            except SumbgError as exc:
                return {f"{host_name}/{slug}": SiteReleases(error=exc.message) for slug in wanted[host_name]}
            return {f"{host_name}/{slug}": releases for slug, releases in found.items()}

        found: dict[str, SiteReleases] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            for part in pool.map(one, list(wanted)):
                found.update(part)
        return found

    def plan(
        self,
        core: str,
        names: Sequence[str],
        canaries: Sequence[str],
        *,
        already: Container[str] = frozenset(),
    ) -> tuple[list[Move], list[HostView]]:
        views = self.status()
        selected = select(self.fleet, views, names)
        canary_sites = tuple(c for c in select(self.fleet, views, canaries) if c not in already) if canaries else ()
        missing = [c for c in canary_sites if c not in selected]
        if missing:
            raise UsageError(f"canary {missing[0]} is not among the sites to upgrade")
        return plan_moves(core, selected, views, self.releases(views, selected), canary_sites), views

    def upgrade(self, run: FleetRun, moves: Sequence[Move], store: RunStore, *, watch: float | None) -> FleetRun:
        for move in moves:
            if move.site not in run.moves or run.moves[move.site].state != "upgraded":
                run.moves[move.site] = Outcome(
                    move.site, "skipped" if move.skip else "planned", move.from_ref, move.to_ref, move.canary, move.skip
                )
        store.save(run)
        schedule = Schedule(moves, per_host=run.options.parallel, fleet_limit=run.options.max_parallel)
        finished: queue.Queue[tuple[Move, Outcome]] = queue.Queue()
        while not schedule.finished:
            for move in schedule.start_now():
                run.moves[move.site] = replace(run.moves[move.site], state="running")
                store.save(run)
                self.say(f"{move.site}: upgrading {move.from_ref} -> {move.to_ref}{' (canary)' if move.canary else ''}")
                threading.Thread(target=self._upgrade_into, args=(finished, move, watch), daemon=True).start()
            move, outcome = finished.get()
            run.moves[move.site] = outcome
            schedule.done(move, outcome.state == "upgraded")
            store.save(run)
            self.say(f"{move.site}: {outcome.state}" + (f": {outcome.reason}" if outcome.reason else ""))
            if schedule.stopped and schedule.running:
                self.say(f"stopping: no new upgrades; waiting for {', '.join(m.site for m in schedule.running)}")
        for move in schedule.not_tried():
            run.moves[move.site] = replace(
                run.moves[move.site], state="not-tried", reason="the run stopped at the first failure"
            )
        run.outcome = "stopped" if schedule.stopped or run.unreachable else "done"
        run.finished_at = utc_now()
        store.save(run)
        return run

    def _upgrade_into(self, finished: queue.Queue[tuple[Move, Outcome]], move: Move, watch: float | None) -> None:
        try:
            outcome = self._upgrade_one(move, watch)
        except Exception as exc:  # noqa: BLE001 - a thread that dies silently would hang the whole run
            outcome = Outcome(
                move.site,
                "lost",
                move.from_ref,
                move.to_ref,
                move.canary,
                reason=f"unexpected {type(exc).__name__}: {exc}; the upgrade may have gone on there: "
                "`sumbg fleet status` tells, `sumbg fleet upgrade --resume` goes on",
            )
        finished.put((move, outcome))

    def _upgrade_one(self, move: Move, watch: float | None) -> Outcome:
        base = Outcome(move.site, "failed", move.from_ref, move.to_ref, move.canary)
        if move.to_ref is None:  # never planned so (a skipped move is not started); an outcome, not a hung run
            return replace(base, reason="it has no release to go to")
        args = ["upgrade", move.slug, move.to_ref, "--yes", "--json"]
        if watch is not None:
            args += ["--watch", f"{watch:g}"]
        started = time.monotonic()

        def progress(line: str) -> None:
            with self._say_lock:
                self.say(f"  [{move.site}] {line}")

        try:
            reply = self.link(self.fleet.host(move.host)).call(args, on_line=progress)
        except (HostUnreachable, OSError) as exc:
            # Whatever broke the link, the run must hear of it (a silent thread would hang it).
            message = exc.message if isinstance(exc, HostUnreachable) else f"{type(exc).__name__}: {exc}"
            return replace(
                base,
                state="lost",
                seconds=round(time.monotonic() - started, 1),
                reason=f"{message}; the upgrade may have gone on there: `sumbg fleet status` "
                f"tells, `sumbg fleet upgrade --resume` goes on",
            )
        seconds = round(time.monotonic() - started, 1)
        doc = reply.document or {}
        if reply.returncode == 0:
            return replace(base, state="upgraded", exit_code=0, seconds=seconds)
        reason = doc.get("message") or (reply.stderr_tail.splitlines() or ["no output"])[-1]
        if doc.get("step"):
            reason = f"step {doc['step']}: {reason}"
        state: OutcomeState = "needs-operator" if reply.returncode == EXIT_NEEDS_OPERATOR else "failed"
        return replace(base, state=state, exit_code=reply.returncode, seconds=seconds, reason=reason)


def upgrade_fleet(
    fleet: FleetConfig,
    core: str | None,
    *,
    names: Sequence[str] = (),
    canaries: Sequence[str] = (),
    parallel: int | None = None,
    max_parallel: int | None = None,
    watch: float | None = None,
    dry_run: bool = False,
    resume: bool = False,
    say: Callable[[str], None],
    driver: FleetDriver | None = None,
) -> tuple[dict[str, Any], list[str], int]:
    """Plan, then (unless dry_run) run a fleet upgrade; returns (document, matrix lines, exit code)."""
    driver = driver or FleetDriver(fleet, say)
    store = RunStore(fleet.runs_dir)
    lock = store.lock()
    if not dry_run:
        lock.acquire(timeout=0, command="sumbg fleet upgrade")
    try:
        stored = None
        if resume:
            stored = store.last_unfinished()
            if stored is None:
                raise UsageError(f"no stopped fleet run to resume in {fleet.runs_dir}")
            options = resume_options(stored, parallel=parallel, max_parallel=max_parallel)
            core = stored.core
            say(f"resuming fleet run {stored.id} (sum-core {core}, started {stored.started_at})")
        else:
            options = RunOptions(
                sites=tuple(names),
                canaries=tuple(canaries),
                watch=watch,
                parallel=parallel or fleet.parallel,
                max_parallel=max_parallel or fleet.max_parallel,
            )
        if core is None:
            raise UsageError("give the sum-core version with --core X.Y.Z (or --resume)")
        moves, views = driver.plan(core, options.sites, options.canaries, already=passed(stored))
        named_hosts = {m.host for m in moves}
        unreachable = {
            v.host.name: v.error
            for v in views
            if v.error is not None and (not options.sites or v.host.name in named_hosts)
        }
        # A canary already on the version has shown it; one that cannot move shows nothing.
        blocked = [m for m in moves if m.canary and m.skip and not m.current]
        if blocked and not dry_run:
            raise UsageError(
                f"canary {blocked[0].site} cannot be upgraded ({blocked[0].skip}); choose another canary or none"
            )
        if dry_run:
            return (
                {"dry_run": True, "core": core, "moves": [asdict(m) for m in moves], "unreachable": unreachable},
                plan_lines(core, moves, unreachable),
                0,
            )
        run = stored or FleetRun(new_run_id(core), core, options)
        run.options, run.outcome, run.finished_at, run.unreachable = options, "running", None, unreachable
        driver.upgrade(run, moves, store, watch=options.watch)
        after = driver.status()
        driver.write_matrix(after)
        return run.document(), run_lines(run, after), exit_code(run)
    finally:
        lock.release()
