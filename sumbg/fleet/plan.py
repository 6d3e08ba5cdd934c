"""A fleet upgrade's plan, pure: which sites (names and groups), the release each goes to
(the newest tag pinning the asked sum-core), each site's Move or why it stays, and the
Schedule that says which upgrades may start now."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sumbg.config import FleetConfig
from sumbg.errors import UsageError
from sumbg.fleet.answers import SiteReleases, Tag
from sumbg.fleet.view import HostView, site_names, text_table


def select(fleet: FleetConfig, views: Sequence[HostView], names: Sequence[str]) -> list[str]:
    """The sites named (slug, host/slug or a group of them), as host/slug, in fleet order;
    all sites when none is named. A name matching nothing is an error."""
    everything = list(site_names(views))
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


def _expand_groups(fleet: FleetConfig, names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        for part in name.split(","):
            part = part.strip()
            if part:
                out += list(fleet.groups.get(part, (part,)))
    return out


def choose_release(tags: Sequence[Tag], core: str) -> Tag | None:
    """The newest tag (tags come newest first) whose requirements pin sum-core `core`."""
    wanted = core.removeprefix("v")
    return next((tag for tag in tags if tag.sum_core == wanted), None)


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
    core: str,
    selected: Sequence[str],
    views: Sequence[HostView],
    releases: Mapping[str, SiteReleases],
    canaries: Sequence[str],
) -> list[Move]:
    """Every selected site's move, canaries first (in the order named), then fleet order.
    `releases`: host/slug -> that site's tags (or why they could not be read)."""
    by_site = site_names(views)
    down = {v.host.name: v.error for v in views if not v.reachable}
    moves = []
    for name in selected:
        host = name.split("/", 1)[0]
        site = by_site.get(name)
        canary = name in canaries
        if site is None:
            moves.append(Move(name, canary=canary, skip=f"host unreachable: {down.get(host) or 'no answer'}"))
            continue
        base = Move(name, from_ref=site.ref, from_core=site.sum_core, canary=canary)
        found = releases.get(name, SiteReleases())
        tag = choose_release(found.tags, core)
        current = False
        if site.operation:
            why = f"an operation ({site.operation}) is running or was interrupted on it"
        elif site.problems:
            why = f"its records and what serves it disagree ({site.problems[0]}): run `sumbg recover` on its host"
        elif not site.live:
            why = "it has no live release"
        elif site.sum_core == core.removeprefix("v"):
            why, current = f"already on sum-core {site.sum_core} ({site.ref})", True
        elif found.error:
            why = f"its releases could not be read: {found.error}"
        elif tag is None:
            why = f"no tag of its repo pins sum-core {core.removeprefix('v')}" + (
                f" ({found.note})" if found.note else ""
            )
        else:
            moves.append(replace(base, to_ref=tag.tag, to_commit=tag.commit))
            continue
        moves.append(replace(base, skip=why, current=current))
    order = {name: index for index, name in enumerate(canaries)}
    return sorted(moves, key=lambda m: (0, order[m.site]) if m.canary else (1, 0))


class Schedule:
    """Which upgrades may start now. Canaries one at a time, each passed before the next;
    then the rest, at most `per_host` per host and `fleet_limit` in all. After a failure
    nothing new starts."""

    def __init__(self, moves: Sequence[Move], *, per_host: int, fleet_limit: int) -> None:
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


def plan_lines(core: str, moves: Sequence[Move], unreachable: Mapping[str, str]) -> list[str]:
    """The dry run's table: each site's action, from and to, and why a site is skipped."""
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
    lines += text_table(("HOST", "SITE", "ACTION", "FROM", "TO", "WHY NOT"), rows)
    lines += [f"{host}: UNREACHABLE: {error} (its sites are not in the plan)" for host, error in unreachable.items()]
    return lines
