"""`sumbg manage`, `sumbg shell` and `sumbg psql`: one-off containers of a site's release (or of
its Postgres image, for psql) with this process's terminal or pipes, the exit code passed
through, and one line in the site's history naming the command, never its arguments (they may
hold secrets).

They take no lock: like `docker exec` on a runbook host, they run beside whatever else happens
to the site (an upgrade's own migrations included), and they move no traffic.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from sumbg import naming
from sumbg.errors import NotFound, UsageError
from sumbg.ops.context import Context
from sumbg.ops.logs import resolve_colour
from sumbg.site.site import Site
from sumbg.site.state import SiteState

# A command's name as the history may hold it: a word, or an option without a value.
_COMMAND_NAME = re.compile(r"-{0,2}[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Release:
    colour: str
    image: str
    ref: str | None


def release_of(slug: str, state: SiteState, choice: str, image_exists: bool | None = None) -> Release:
    """The release a one-off command runs (pure: unit-tested). `choice`: live, idle, blue or
    green; `image_exists`: whether that release's image is still on the host (None: not known)."""
    colour = resolve_colour(slug, state, choice)
    record = state.record(colour)
    if record is None or not record.image:
        raise NotFound(f"the {colour} colour of {slug} holds no release (it was never deployed, or was forgotten)")
    if image_exists is False:
        raise NotFound(
            f"the image {record.image} of {colour} ({record.ref or 'unknown release'}) is no longer on this host"
        )
    return Release(colour, record.image, record.ref)


def command_name(args: list[str]) -> str:
    """What the history records of `manage.py ARGS`: the command's name, never its arguments."""
    first = args[0] if args else ""
    return first if _COMMAND_NAME.fullmatch(first) else "(unnamed)"


def check_env_names(names: tuple[str, ...], environ: dict[str, str]) -> None:
    """--env passes variables of sumbg's own environment by name: a value never reaches argv."""
    for name in names:
        if "=" in name:
            raise UsageError(
                f"--env {name.split('=', 1)[0]}=...: give only the NAME of a variable you exported "
                "(its value would show in the process list)"
            )
        naming.validate_env_name(name)
        if name not in environ:
            raise UsageError(f"--env {name}: no such variable in sumbg's environment (export it first)")


def manage(
    ctx: Context,
    slug: str,
    args: list[str],
    *,
    colour: str = "live",
    tty: bool,
    env_names: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> int:
    """`python manage.py ARGS` in a one-off container of the live (or `colour`'s) release."""
    if not args:
        raise UsageError("give the manage.py command after --, e.g. `sumbg manage SLUG -- migrate --plan`")
    check_env_names(env_names, environ if environ is not None else {})
    site, release = _release(ctx, slug, colour)
    return _recorded(
        site,
        "manage",
        command_name(args),
        release,
        lambda: ctx.stacks(site).run_attached(
            release.colour, release.image, ["python", "manage.py", *args], tty=tty, env_names=env_names
        ),
    )


def shell(ctx: Context, slug: str, args: list[str], *, colour: str = "live", tty: bool) -> int:
    """A shell (bash where the image has it) in a one-off container of a release; with `args`,
    that command instead."""
    site, release = _release(ctx, slug, colour)
    argv = args or ["sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh"]
    return _recorded(
        site,
        "shell",
        "shell",
        release,
        lambda: ctx.stacks(site).run_attached(release.colour, release.image, argv, tty=tty),
    )


def psql(ctx: Context, slug: str, args: list[str], *, tty: bool) -> int:
    """psql on the site's database as its own role (extra `args` go to psql, e.g. -c 'SELECT 1')."""
    site = ctx.site(slug)
    state = site.records.load_state()
    if not state.live:
        raise NotFound(f"site {slug} has no live colour yet")
    if not ctx.stacks(site).data_running():
        raise NotFound(f"site {slug}'s database ({site.postgres_container}) is not running: run `sumbg recover {slug}`")
    return _recorded(site, "psql", "psql", None, lambda: ctx.stacks(site).psql_attached(args, tty=tty))


def _release(ctx: Context, slug: str, colour: str) -> tuple[Site, Release]:
    site = ctx.site(slug)
    state = site.records.load_state()
    release = release_of(slug, state, colour)
    return site, release_of(slug, state, colour, ctx.engine.image_labels(release.image) is not None)


def _recorded(site: Site, operation: str, command: str, release: Release | None, action: Callable[[], int]) -> int:
    """Run it, then append one line to the site's history (also when Ctrl-C ends it: exit 130)."""
    started = time.monotonic()

    def record(code: int) -> None:
        where = f" in {release.colour} ({release.ref or 'unknown release'})" if release else ""
        site.records.append(
            {
                "event": "ran",
                "operation": operation,
                "command": command,
                **({"colour": release.colour, "ref": release.ref} if release else {}),
                "exit_code": code,
                "outcome": f"exit {code}",
                "reason": f"{command}{where}",
                "seconds": round(time.monotonic() - started, 3),
            }
        )

    try:
        code = action()
    except KeyboardInterrupt:
        record(130)  # what a shell reports for a command ended by SIGINT
        raise
    record(code)
    return code
