"""The record of a fleet upgrade: how each site's move ended, the options it was started
with, its file (one JSON document per run, beside the fleet file, read back by `--resume`)
and the exit code it leaves. The run file and `fleet upgrade --json` share one shape."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from sumbg.errors import EXIT_NEEDS_OPERATOR
from sumbg.fleet.view import HostView, site_names, text_table
from sumbg.lock import SiteLock
from sumbg.util import atomic_write, utc_now, utc_stamp

OutcomeState = Literal["upgraded", "failed", "needs-operator", "lost", "skipped", "not-tried", "planned", "running"]
RunState = Literal["running", "done", "stopped"]  # running: still going, or killed (then --resume goes on)


@dataclass(frozen=True)
class Outcome:
    """How one site's move ended (or that it did not start)."""

    site: str
    state: OutcomeState
    from_ref: str | None = None
    to_ref: str | None = None
    canary: bool = False
    reason: str | None = None
    exit_code: int | None = None
    seconds: float | None = None

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Outcome:
        outcome = cls(**doc)
        if outcome.state not in get_args(OutcomeState):
            raise ValueError(f"unknown outcome {outcome.state!r}")
        return outcome


@dataclass(frozen=True)
class RunOptions:
    """What a fleet upgrade was started with; a resumed run keeps them (only the pace may change)."""

    sites: tuple[str, ...]  # as named: slugs, host/slug or groups; none: every site
    canaries: tuple[str, ...]
    watch: float | None  # seconds each upgrade watches its site; None: each site's own
    parallel: int  # upgrades at a time on one host
    max_parallel: int  # upgrades at a time in the fleet

    def document(self) -> dict[str, Any]:
        return {
            "sites": list(self.sites),
            "canaries": list(self.canaries),
            "watch": self.watch,
            "parallel": self.parallel,
            "max_parallel": self.max_parallel,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RunOptions:
        options = cls(
            sites=tuple(doc["sites"]),
            canaries=tuple(doc["canaries"]),
            watch=doc["watch"],
            parallel=doc["parallel"],
            max_parallel=doc["max_parallel"],
        )
        if not all(isinstance(name, str) for name in options.sites + options.canaries):
            raise ValueError("sites and canaries must be names")
        if not isinstance(options.parallel, int) or not isinstance(options.max_parallel, int):
            raise ValueError("parallel and max_parallel must be numbers")
        return options


@dataclass
class FleetRun:
    id: str
    core: str
    options: RunOptions
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    outcome: RunState = "running"
    moves: dict[str, Outcome] = field(default_factory=dict)  # by host/slug, in plan order
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> why

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "core": self.core,
            "options": self.options.document(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "unreachable": self.unreachable,
            "moves": [asdict(o) for o in self.moves.values()],
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> FleetRun:
        outcome = doc.get("outcome", "running")
        if outcome not in get_args(RunState):
            raise ValueError(f"unknown run outcome {outcome!r}")
        run = cls(
            id=doc["id"],
            core=doc["core"],
            options=RunOptions.from_document(doc["options"]),
            started_at=doc["started_at"],
            finished_at=doc.get("finished_at"),
            outcome=outcome,
            unreachable=dict(doc.get("unreachable") or {}),
        )
        run.moves = {m["site"]: Outcome.from_document(m) for m in doc.get("moves", [])}
        return run


def new_run_id(core: str) -> str:
    return f"{utc_stamp()}-core-{core.removeprefix('v')}"


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
        """The newest run, if it did not finish (a file that cannot be read is passed over)."""
        for path in sorted(self.directory.glob("*.json"), reverse=True):
            try:
                run = FleetRun.from_document(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            return run if run.outcome != "done" else None
        return None


def exit_code(run: FleetRun) -> int:
    """3 if a site needs an operator (or may still be upgrading), 1 if anything was not done, else 0."""
    states = {o.state for o in run.moves.values()}
    if "needs-operator" in states or "lost" in states:
        return EXIT_NEEDS_OPERATOR
    return 1 if states & {"failed", "not-tried"} or run.unreachable else 0


def resume_options(stored: FleetRun, *, parallel: int | None, max_parallel: int | None) -> RunOptions:
    """A resumed run keeps what it was started with; only the pace may change."""
    return replace(
        stored.options,
        parallel=stored.options.parallel if parallel is None else parallel,
        max_parallel=stored.options.max_parallel if max_parallel is None else max_parallel,
    )


def passed(stored: FleetRun | None) -> set[str]:
    """The sites a resumed run already upgraded: a canary among them is not a canary again."""
    return {site for site, o in stored.moves.items() if o.state == "upgraded"} if stored else set()


def run_lines(run: FleetRun, views: Sequence[HostView]) -> list[str]:
    """The matrix of a fleet upgrade: what was done, what failed, what was not tried, and what
    each site serves now."""
    live = {name: site.ref for name, site in site_names(views).items()}
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
    lines = text_table(("HOST", "SITE", "FROM", "TO", "OUTCOME", "LIVE NOW", "WHY"), rows)
    for host, error in run.unreachable.items():
        lines.append(f"{host}: UNREACHABLE: {error}")
    return lines
