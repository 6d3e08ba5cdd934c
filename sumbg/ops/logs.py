"""`sumbg logs`: a site's web or worker logs, from the running colour through the engine, or
from the logs kept when sumbg removed a colour (`keep_colour_logs`, called wherever a colour's
containers are removed: retire, an upgrade replacing its idle colour, every undo, recover,
adopt --undo).
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from sumbg import naming
from sumbg.errors import NotFound, SumbgError, UsageError
from sumbg.ops.context import Context
from sumbg.ops.executor import Run
from sumbg.ops.seams import SiteStacks
from sumbg.site.logs import SERVICES, KeptLog, file_ref, line_time
from sumbg.site.state import SiteState

COLOUR_CHOICES = ("live", "idle", *naming.COLOURS)


def keep_colour_logs(stacks: SiteStacks, run: Run, colour: str, services: tuple[str, ...] = SERVICES) -> list[str]:
    """Keep the logs of `colour`'s containers before they are removed: the one call every place
    that removes a colour (or its worker) makes first. Never fails the operation: a log that could
    not be kept is said and noted, and the removal goes on. The names kept go into the history
    (`kept_logs`), which WHAT-BROKE.md links to."""
    try:
        kept = stacks.keep_logs(colour, services)
    except (SumbgError, OSError) as exc:
        message = exc.message if isinstance(exc, SumbgError) else str(exc)
        run.say(f"could not keep the logs of {colour}: {message}")
        run.notes.setdefault("kept_logs_failed", []).append({"colour": colour, "error": message})
        return []
    if kept:
        run.notes.setdefault("kept_logs", []).extend(kept)
    return kept


# ---------------------------------------------------------------- which logs a request reads


@dataclass(frozen=True)
class LogsRequest:
    worker: bool = False
    colour: str | None = None  # live, idle, blue or green; None: live (unless release is given)
    release: str | None = None
    follow: bool = False
    since: float | None = None  # Unix time
    tail: int | None = None

    @property
    def service(self) -> str:
        return "worker" if self.worker else "web"


@dataclass(frozen=True)
class FromContainer:
    container: str
    colour: str
    ref: str | None


@dataclass(frozen=True)
class FromKept:
    files: tuple[KeptLog, ...]


def choose_source(
    slug: str,
    state: SiteState,
    request: LogsRequest,
    *,
    running: dict[str, set[str]],
    kept: list[KeptLog],
    has_worker: bool,
) -> FromContainer | FromKept:
    """Where the requested logs are (pure: unit-tested). `running`: {colour: the services whose
    container exists}; `kept`: the site's kept logs, oldest first."""
    service = request.service
    if request.release and request.colour:
        raise UsageError("give --colour or --release, not both")
    if request.worker and not has_worker and not request.release:
        raise NotFound(f"site {slug} runs no background worker (site.toml: app.worker_command is empty)")
    if request.release:
        for colour in naming.COLOURS:
            if state.ref(colour) == request.release and service in running.get(colour, set()):
                return FromContainer(_container(slug, colour, service), colour, request.release)
        files = tuple(e for e in kept if e.ref == file_ref(request.release) and e.service == service)
        if not files:
            releases = sorted({e.ref for e in kept if e.service == service})
            raise NotFound(
                f"no {service} logs of release {request.release} of {slug}: no colour runs it and none were kept"
                + (f" (kept: {', '.join(releases)})" if releases else "")
            )
        if request.follow:
            raise UsageError(f"release {request.release} of {slug} no longer runs: --follow reads a running colour")
        return FromKept(files)
    colour = resolve_colour(slug, state, request.colour or "live")
    if service not in running.get(colour, set()):
        ref = state.ref(colour)
        gone = [e for e in kept if e.colour == colour and e.service == service]
        hint = ""
        if gone:
            hint = f"; its logs were kept when it was removed: `sumbg logs {slug} --release {gone[-1].ref}`"
        elif ref:
            hint = f" (it last held {ref})"
        raise NotFound(f"the {colour} colour of {slug} has no {service} container: it no longer exists{hint}")
    return FromContainer(_container(slug, colour, service), colour, state.ref(colour))


def resolve_colour(slug: str, state: SiteState, choice: str) -> str:
    """live/idle/blue/green -> the colour it names now."""
    if choice not in COLOUR_CHOICES:
        raise UsageError(f"--colour must be one of {', '.join(COLOUR_CHOICES)}, not {choice!r}")
    if choice in naming.COLOURS:
        return choice
    if not state.live:
        raise NotFound(f"site {slug} has no live colour yet")
    return state.live if choice == "live" else naming.other_colour(state.live)


def _container(slug: str, colour: str, service: str) -> str:
    return f"{naming.app_project(slug, colour)}-{service}"


def kept_lines(files: tuple[KeptLog, ...], *, since: float | None, tail: int | None) -> Iterator[str]:
    """The lines of kept logs, oldest file first, from `since` (Unix time), the last `tail` of them."""

    def selected() -> Iterator[str]:
        limit = dt.datetime.fromtimestamp(since, dt.UTC) if since is not None else None
        for entry in files:
            for line in entry.lines():
                when = line_time(line)
                if limit is None or (when is not None and when >= limit.replace(microsecond=0)):
                    yield line

    if tail is None:
        yield from selected()
    else:
        yield from deque(selected(), maxlen=tail) if tail else ()


# ---------------------------------------------------------------- the command


def show_logs(ctx: Context, slug: str, request: LogsRequest, out: TextIO) -> int:
    """Print the requested logs; returns the exit code (docker's, for a running colour)."""
    site = ctx.site(slug)
    state = site.records.load_state()
    running = {
        colour: {service for service in SERVICES if ctx.engine.container(_container(slug, colour, service)) is not None}
        for colour in naming.COLOURS
    }
    kept = site.kept_logs.entries()
    source = choose_source(
        slug, state, request, running=running, kept=kept, has_worker=bool(site.config.worker_command)
    )
    if isinstance(source, FromContainer):
        ctx.reporter.line(f"{source.container} ({source.ref or 'unknown release'}):")
        return ctx.engine.show_logs(source.container, follow=request.follow, since=request.since, tail=request.tail)
    for entry in source.files:
        ctx.reporter.line(
            f"{entry.path} ({entry.colour} {entry.service}, kept when it was removed at "
            f"{entry.removed_at:%Y-%m-%d %H:%M:%SZ}):"
        )
    for line in kept_lines(source.files, since=request.since, tail=request.tail):
        out.write(line + "\n")
    out.flush()
    return 0
