"""`sumbg fleet`: every site on every host of a fleet file, and upgrading them to a new sum-core.

sumbg on each host does the work; this module only decides and drives, over SSH
(remote.py), reading each host's `--json` answers:

- status: every host's `sumbg status --json`, side by side; a host that does not
  answer is shown as such and hides nothing else.
- upgrade: for each site, the release to deploy is the newest tag of its client repo
  whose sum-core pin is the asked version (`sumbg releases --json` on its host). The
  canary sites go first, one at a time; then the rest, at most `parallel` at a time per
  host and `max_parallel` in the fleet. The first failure stops new upgrades (running
  ones finish). Every move is recorded in a run file, so `--resume` continues a stopped
  or killed run.

The plan and the schedule are pure (unit-tested with small fakes); `FleetDriver` is the
one place with side effects.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sumbg.adapters.ssh import HostLink
from sumbg.config import FleetConfig, FleetHost
from sumbg.errors import EXIT_NEEDS_OPERATOR, HostUnreachable, SumbgError, UsageError
from sumbg.lock import SiteLock
from sumbg.ops import reports
from sumbg.util import atomic_write, utc_now, utc_stamp

STATUS_TIMEOUT = 300.0
RELEASES_TIMEOUT = 900.0
FLEET_MATRIX_COLUMNS = ("Host", *reports.MATRIX_COLUMNS)


# ================================================================== gathering


@dataclass(frozen=True)
class HostView:
    """What one host answered (its `status --json`), or why it did not."""

    host: FleetHost
    status: dict | None = None
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def sites(self) -> list[dict]:
        return (self.status or {}).get("sites", [])


def gather(
    fleet: FleetConfig, ask: Callable[[FleetHost], dict], hosts: list[FleetHost] | None = None
) -> list[HostView]:
    """Ask every host at once; an unreachable one becomes a HostView with its error."""

    def one(host: FleetHost) -> HostView:
        try:
            return HostView(host, status=ask(host))
        except SumbgError as exc:
            return HostView(host, error=exc.message)

    targets = hosts if hosts is not None else list(fleet.hosts)
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(one, targets))


# ================================================================== the status table and matrix


def site_row(host: str, site: dict) -> dict:
    """One line of `fleet status`: what an operator looks at across the fleet."""
    health = site.get("health") or {}
    rollback = site.get("rollback") or {}
    problems = (site.get("agreement") or {}).get("problems") or []
    if site.get("interrupted"):
        state = "interrupted: run sumbg recover"
    elif problems:
        state = "disagrees: " + problems[0]
    else:
        state = ""
    return {
        "host": host,
        "site": site["site"],
        "domains": site.get("domains") or [site.get("domain")],
        "live": site.get("live"),
        "ref": site.get("ref"),
        "sum_core": site.get("sum_core"),
        "health": health.get("status") or health.get("error") or health.get("http_status"),
        "last": site.get("last_deploy_outcome"),
        "rollback": ("instant" if rollback.get("instant") else "restart") if rollback.get("possible") else "none",
        "rollback_to": rollback.get("ref"),
        "problem": state,
    }


def status_document(views: list[HostView]) -> dict:
    return {
        "hosts": [
            {
                "name": v.host.name,
                "ssh": v.host.ssh,
                "reachable": v.reachable,
                "error": v.error,
                "sumbg": (v.status or {}).get("sumbg"),
                "sites": [site_row(v.host.name, s) for s in v.sites],
            }
            for v in views
        ]
    }


def status_lines(views: list[HostView]) -> list[str]:
    header = ("HOST", "SITE", "DOMAINS", "LIVE", "SUM-CORE", "HEALTH", "ROLLBACK", "LAST OPERATION")
    rows = []
    notes = []
    for view in views:
        if not view.reachable:
            rows.append((view.host.name, "-", "-", "-", "-", "UNREACHABLE", "-", "-"))
            notes.append(f"{view.host.name}: {view.error}")
            continue
        if not view.sites:
            rows.append((view.host.name, "(no sites)", "", "", "", "", "", ""))
        for site in view.sites:
            row = site_row(view.host.name, site)
            rows.append(
                (
                    view.host.name,
                    row["site"],
                    ",".join(row["domains"]),
                    row["ref"] or "-",
                    row["sum_core"] or "-",
                    str(row["health"] or "-"),
                    f"{row['rollback']}" + (f" ({row['rollback_to']})" if row["rollback_to"] else ""),
                    row["last"] or "-",
                )
            )
            if row["problem"]:
                notes.append(f"{view.host.name}/{row['site']}: {row['problem']}")
    return _table(header, rows) + notes


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=False)).rstrip()
        for row in (header, *rows)
    ]


def matrix(views: list[HostView]) -> str:
    rows = []
    for view in views:
        if not view.reachable:
            rows.append((view.host.name, None, None, None, None, None, None, f"UNREACHABLE: {view.error}"))
        for site in view.sites:
            rows.append(
                (
                    view.host.name,
                    site.get("domain"),
                    site.get("environment"),
                    site["site"],
                    site.get("ref"),
                    site.get("deployed_at"),
                    site.get("last_deploy_outcome"),
                    site.get("notes"),
                )
            )
    return reports.matrix_markdown(FLEET_MATRIX_COLUMNS, rows, source="`sumbg fleet status` on every host")


# ================================================================== selection and plan (pure)


def select(fleet: FleetConfig, views: list[HostView], names: tuple[str, ...]) -> list[str]:
    """The sites named (slug, host/slug or a group of them), as host/slug, in fleet order;
    all sites when none is named. A name matching nothing is an error."""
    everything = [f"{v.host.name}/{s['site']}" for v in views for s in v.sites]
    if not names:
        return everything
    unreachable = [v.host.name for v in views if not v.reachable]
    wanted: list[str] = []
    for name in _expand_groups(fleet, names):
        if "/" in name:
            host, _, slug = name.partition("/")
            fleet.host(host)
            matches = [name] if name in everything or host in unreachable else []
        else:
            matches = [site for site in everything if site.split("/", 1)[1] == name]
        if not matches:
            hint = f" (unreachable: {', '.join(unreachable)}; name it as HOST/{name})" if unreachable else ""
            raise UsageError(f"no site {name!r} on any host of {fleet.path.name}{hint}")
        wanted += [m for m in matches if m not in wanted]
    return [site for site in everything if site in wanted] + [site for site in wanted if site not in everything]


def _expand_groups(fleet: FleetConfig, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part:
                out += list(fleet.groups.get(part, (part,)))
    return out


def choose_release(tags: list[dict], core: str) -> dict | None:
    """The newest tag (tags come newest first) whose requirements pin sum-core `core`."""
    wanted = core.removeprefix("v")
    return next((tag for tag in tags if tag.get("sum_core") == wanted), None)


@dataclass(frozen=True)
class Move:
    """One site's part in a fleet upgrade: where it goes, or why it does not."""

    site: str  # host/slug
    from_ref: str | None = None
    from_core: str | None = None
    to_ref: str | None = None
    to_commit: str | None = None
    canary: bool = False
    skip: str | None = None  # why it is not upgraded (then to_ref is None)
    current: bool = False  # skipped because it already runs the version

    @property
    def host(self) -> str:
        return self.site.split("/", 1)[0]

    @property
    def slug(self) -> str:
        return self.site.split("/", 1)[1]


def plan_moves(
    core: str, selected: list[str], views: list[HostView], releases: dict[str, dict], canaries: tuple[str, ...]
) -> list[Move]:
    """Every selected site's move, canaries first (in the order named), then fleet order.
    `releases`: host/slug -> that site's `sumbg releases --json` entry (or {"error": ...})."""
    by_site = {f"{v.host.name}/{s['site']}": s for v in views for s in v.sites}
    down = {v.host.name: v.error for v in views if not v.reachable}
    moves = []
    for name in selected:
        host = name.split("/", 1)[0]
        site = by_site.get(name)
        canary = name in canaries
        if site is None:
            moves.append(Move(name, canary=canary, skip=f"host unreachable: {down.get(host) or 'no answer'}"))
            continue
        base = Move(name, from_ref=site.get("ref"), from_core=site.get("sum_core"), canary=canary)
        found = releases.get(name) or {}
        tag = choose_release(found.get("tags") or [], core)
        problems = (site.get("agreement") or {}).get("problems") or []
        current = False
        if site.get("operation"):
            why = f"an operation ({site['operation'].get('kind')}) is running or was interrupted on it"
        elif problems:
            why = f"its records and what serves it disagree ({problems[0]}): run `sumbg recover` on its host"
        elif not site.get("live"):
            why = "it has no live release"
        elif site.get("sum_core") == core.removeprefix("v"):
            why, current = f"already on sum-core {site['sum_core']} ({site.get('ref')})", True
        elif found.get("error"):
            why = f"its releases could not be read: {found['error']}"
        elif tag is None:
            why = f"no tag of its repo pins sum-core {core.removeprefix('v')}" + (
                f" ({found['note']})" if found.get("note") else ""
            )
        else:
            why = None
        moves.append(
            replace(base, skip=why, current=current)
            if why
            else replace(base, to_ref=tag["tag"], to_commit=tag.get("commit"))
        )
    order = {name: index for index, name in enumerate(canaries)}
    return sorted(moves, key=lambda m: (0, order[m.site]) if m.canary else (1, 0))


# ================================================================== the schedule (pure)


class Schedule:
    """Which upgrades may start now. Canaries one at a time, each passed before the next;
    then the rest, at most `per_host` per host and `fleet_limit` in all. After a failure
    nothing new starts."""

    def __init__(self, moves: list[Move], *, per_host: int, fleet_limit: int) -> None:
        self.canaries = [m for m in moves if m.canary and not m.skip]
        self.rest = [m for m in moves if not m.canary and not m.skip]
        self.per_host = per_host
        self.fleet_limit = fleet_limit
        self.running: list[Move] = []
        self.failed: list[Move] = []

    @property
    def stopped(self) -> bool:
        return bool(self.failed)

    @property
    def finished(self) -> bool:
        return not self.running and (self.stopped or not (self.canaries or self.rest))

    def not_tried(self) -> list[Move]:
        return self.canaries + self.rest if self.stopped else []

    def start_now(self) -> list[Move]:
        if self.stopped:
            return []
        if self.canaries:
            if self.running:
                return []
            move = self.canaries.pop(0)
            self.running.append(move)
            return [move]
        if any(m.canary for m in self.running):
            return []
        started = []
        for move in list(self.rest):
            if len(self.running) >= self.fleet_limit:
                break
            if sum(1 for m in self.running if m.host == move.host) >= self.per_host:
                continue
            self.rest.remove(move)
            self.running.append(move)
            started.append(move)
        return started

    def done(self, move: Move, ok: bool) -> None:
        self.running.remove(move)
        if not ok:
            self.failed.append(move)


# ================================================================== the run record


@dataclass
class Outcome:
    """How one site's move ended (or that it did not start)."""

    site: str
    state: str  # upgraded | failed | needs-operator | lost | skipped | not-tried | planned | running
    from_ref: str | None = None
    to_ref: str | None = None
    canary: bool = False
    reason: str | None = None
    exit_code: int | None = None
    seconds: float | None = None


@dataclass
class FleetRun:
    id: str
    core: str
    options: dict
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    outcome: str = "running"  # running (or killed) | done | stopped
    moves: dict[str, Outcome] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    def document(self) -> dict:
        return {
            "id": self.id,
            "core": self.core,
            "options": self.options,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "unreachable": self.unreachable,
            "moves": [asdict(o) for o in self.moves.values()],
        }

    @classmethod
    def from_document(cls, doc: dict) -> FleetRun:
        run = cls(
            id=doc["id"],
            core=doc["core"],
            options=doc["options"],
            started_at=doc["started_at"],
            finished_at=doc.get("finished_at"),
            outcome=doc.get("outcome", "running"),
            unreachable=doc.get("unreachable") or {},
        )
        run.moves = {m["site"]: Outcome(**m) for m in doc.get("moves", [])}
        return run


class RunStore:
    """Fleet runs, one JSON file each, beside the fleet file; one fleet upgrade at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def lock(self) -> SiteLock:
        return SiteLock(self.directory / ".lock", "fleet upgrade")

    def save(self, run: FleetRun) -> None:
        atomic_write(
            self.directory / f"{run.id}.json", json.dumps(run.document(), indent=2, sort_keys=True) + "\n", mode=0o600
        )

    def last_unfinished(self) -> FleetRun | None:
        for path in sorted(self.directory.glob("*.json"), reverse=True):
            try:
                run = FleetRun.from_document(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            return run if run.outcome != "done" else None
        return None


def exit_code(run: FleetRun) -> int:
    states = {o.state for o in run.moves.values()}
    if "needs-operator" in states or "lost" in states:
        return EXIT_NEEDS_OPERATOR
    return 1 if states & {"failed", "not-tried"} or run.unreachable else 0


# ================================================================== the driver (side effects)


class FleetDriver:
    def __init__(
        self, fleet: FleetConfig, say: Callable[[str], None], link: Callable[[FleetHost], HostLink] | None = None
    ) -> None:
        self.fleet = fleet
        self.say = say
        self.link = link or (lambda host: HostLink(fleet, host))
        self._say_lock = threading.Lock()

    def status(self, hosts: list[FleetHost] | None = None) -> list[HostView]:
        return gather(self.fleet, lambda host: self.link(host).query(["status"], timeout=STATUS_TIMEOUT), hosts)

    def write_matrix(self, views: list[HostView]) -> Path:
        atomic_write(self.fleet.matrix, matrix(views))
        return self.fleet.matrix

    def releases(self, views: list[HostView], selected: list[str]) -> dict[str, dict]:
        """Each selected site's tags, one `sumbg releases` per host, all hosts at once."""
        wanted: dict[str, list[str]] = {}
        for name in selected:
            host, _, slug = name.partition("/")
            if any(v.host.name == host and v.reachable for v in views):
                wanted.setdefault(host, []).append(slug)

        def one(host_name: str) -> dict[str, dict]:
            try:
                doc = self.link(self.fleet.host(host_name)).query(
                    ["releases", *wanted[host_name]], timeout=RELEASES_TIMEOUT
                )
            except SumbgError as exc:
                return {f"{host_name}/{slug}": {"error": exc.message} for slug in wanted[host_name]}
            return {f"{host_name}/{item['site']}": item for item in doc.get("sites", [])}

        found: dict[str, dict] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            for part in pool.map(one, list(wanted)):
                found.update(part)
        return found

    def plan(
        self, core: str, names: tuple[str, ...], canaries: tuple[str, ...], *, already: set[str] = frozenset()
    ) -> tuple[list[Move], list[HostView]]:
        views = self.status()
        selected = select(self.fleet, views, names)
        canary_sites = tuple(c for c in select(self.fleet, views, canaries) if c not in already) if canaries else ()
        missing = [c for c in canary_sites if c not in selected]
        if missing:
            raise UsageError(f"canary {missing[0]} is not among the sites to upgrade")
        return plan_moves(core, selected, views, self.releases(views, selected), canary_sites), views

    def upgrade(self, run: FleetRun, moves: list[Move], store: RunStore, *, watch: float | None) -> FleetRun:
        for move in moves:
            if move.site not in run.moves or run.moves[move.site].state != "upgraded":
                run.moves[move.site] = Outcome(
                    move.site, "skipped" if move.skip else "planned", move.from_ref, move.to_ref, move.canary, move.skip
                )
        store.save(run)
        schedule = Schedule(moves, per_host=run.options["parallel"], fleet_limit=run.options["max_parallel"])
        finished: queue.Queue = queue.Queue()
        while not schedule.finished:
            for move in schedule.start_now():
                run.moves[move.site].state = "running"
                store.save(run)
                self.say(f"{move.site}: upgrading {move.from_ref} -> {move.to_ref}{' (canary)' if move.canary else ''}")
                threading.Thread(
                    target=lambda m=move: finished.put((m, self._upgrade_one(m, watch))), daemon=True
                ).start()
            move, outcome = finished.get()
            run.moves[move.site] = outcome
            schedule.done(move, outcome.state == "upgraded")
            store.save(run)
            self.say(f"{move.site}: {outcome.state}" + (f": {outcome.reason}" if outcome.reason else ""))
            if schedule.stopped and schedule.running:
                self.say(f"stopping: no new upgrades; waiting for {', '.join(m.site for m in schedule.running)}")
        for move in schedule.not_tried():
            run.moves[move.site].state = "not-tried"
            run.moves[move.site].reason = "the run stopped at the first failure"
        run.outcome = "stopped" if schedule.stopped or run.unreachable else "done"
        run.finished_at = utc_now()
        store.save(run)
        return run

    def _upgrade_one(self, move: Move, watch: float | None) -> Outcome:
        args = ["upgrade", move.slug, move.to_ref, "--yes", "--json"]
        if watch is not None:
            args += ["--watch", f"{watch:g}"]
        started = time.monotonic()

        def progress(line: str) -> None:
            with self._say_lock:
                self.say(f"  [{move.site}] {line}")

        base = Outcome(move.site, "failed", move.from_ref, move.to_ref, move.canary)
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
        state = "needs-operator" if reply.returncode == EXIT_NEEDS_OPERATOR else "failed"
        return replace(base, state=state, exit_code=reply.returncode, seconds=seconds, reason=reason)


def new_run_id(core: str) -> str:
    return f"{utc_stamp()}-core-{core.removeprefix('v')}"


def run_lines(run: FleetRun, views: list[HostView]) -> list[str]:
    """The matrix of a fleet upgrade: what was done, what failed, what was not tried, and what
    each site serves now."""
    live = {f"{v.host.name}/{s['site']}": s.get("ref") for v in views for s in v.sites}
    rows = [
        (
            o.site.split("/", 1)[0],
            o.site.split("/", 1)[1],
            o.from_ref or "-",
            o.to_ref or "-",
            o.state + (" (canary)" if o.canary else ""),
            live.get(o.site) or "?",
            o.reason or "",
        )
        for o in run.moves.values()
    ]
    lines = _table(("HOST", "SITE", "FROM", "TO", "OUTCOME", "LIVE NOW", "WHY"), rows)
    for host, error in run.unreachable.items():
        lines.append(f"{host}: UNREACHABLE: {error}")
    return lines


def resume_options(stored: FleetRun, given: dict) -> dict:
    """A resumed run keeps what it was started with; only the pace may change."""
    options = dict(stored.options)
    for key in ("parallel", "max_parallel"):
        if given.get(key) is not None:
            options[key] = given[key]
    return options


def passed(stored: FleetRun | None) -> set[str]:
    """The sites a resumed run already upgraded: a canary among them is not a canary again."""
    return {site for site, o in stored.moves.items() if o.state == "upgraded"} if stored else set()


def upgrade_fleet(
    fleet: FleetConfig,
    core: str | None,
    *,
    names: tuple[str, ...] = (),
    canaries: tuple[str, ...] = (),
    parallel: int | None = None,
    max_parallel: int | None = None,
    watch: float | None = None,
    dry_run: bool = False,
    resume: bool = False,
    say: Callable[[str], None],
    driver: FleetDriver | None = None,
) -> tuple[dict, list[str], int]:
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
            options = resume_options(stored, {"parallel": parallel, "max_parallel": max_parallel})
            core = stored.core
            say(f"resuming fleet run {stored.id} (sum-core {core}, started {stored.started_at})")
        else:
            options = {
                "sites": list(names),
                "canaries": list(canaries),
                "watch": watch,
                "parallel": parallel or fleet.parallel,
                "max_parallel": max_parallel or fleet.max_parallel,
            }
        moves, views = driver.plan(core, tuple(options["sites"]), tuple(options["canaries"]), already=passed(stored))
        named_hosts = {m.host for m in moves}
        unreachable = {
            v.host.name: v.error
            for v in views
            if not v.reachable and (not options["sites"] or v.host.name in named_hosts)
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
        driver.upgrade(run, moves, store, watch=options["watch"])
        after = driver.status()
        driver.write_matrix(after)
        return run.document(), run_lines(run, after), exit_code(run)
    finally:
        lock.release()


def plan_lines(core: str, moves: list[Move], unreachable: dict[str, str]) -> list[str]:
    rows = [
        (
            m.host,
            m.slug,
            "canary" if m.canary else ("skip" if m.skip else "upgrade"),
            f"{m.from_ref or '-'} (sum-core {m.from_core or '-'})",
            m.to_ref or "-",
            m.skip or "",
        )
        for m in moves
    ]
    lines = [f"dry run: fleet upgrade to sum-core {core.removeprefix('v')}; nothing is changed"]
    lines += _table(("HOST", "SITE", "ACTION", "FROM", "TO", "WHY NOT"), rows)
    lines += [f"{host}: UNREACHABLE: {error} (its sites are not in the plan)" for host, error in unreachable.items()]
    return lines
