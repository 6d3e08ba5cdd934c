"""The sumbg command line (a contract: see README.md)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sumbg import __version__
from sumbg.config import load_host
from sumbg.errors import (
    EXIT_ABORTED,
    EXIT_NEEDS_OPERATOR,
    EXIT_USAGE,
    NeedsOperator,
    SumbgError,
    UsageError,
)
from sumbg.ops.executor import Reporter

if TYPE_CHECKING:
    from sumbg.adapters.build import Constraints
    from sumbg.config import FleetConfig
    from sumbg.ops.context import Context
    from sumbg.ops.executor import Plan

F = TypeVar("F", bound=Callable[..., Any])


class Obj:
    def __init__(self, root: str | None, verbose: bool) -> None:
        self.root = root
        self.verbose = verbose

    def context(self, quiet: bool = False) -> Context:
        from pathlib import Path

        from sumbg.ops.context import Context

        host = load_host(Path(self.root) if self.root else None)
        context = Context(host=host, reporter=Reporter(quiet=quiet))
        command = click.get_current_context(silent=True)
        if command is not None:
            # Notifications still being delivered are waited for (bounded) when the command ends,
            # whatever its outcome; they never change its exit code.
            command.call_on_close(context.close)
        return context


# The documented exit codes (README, "Commands"): the first class that matches wins.
EXIT_CODES: tuple[tuple[type[SumbgError], int], ...] = (
    (NeedsOperator, EXIT_NEEDS_OPERATOR),
    (UsageError, EXIT_USAGE),
    (SumbgError, EXIT_ABORTED),
)


def exit_code_of(error: SumbgError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def show_error(error: SumbgError) -> None:
    click.echo(f"sumbg: error: {error.format_message()}", err=True)
    if error.output_tail:
        click.echo("\n".join("    " + line for line in error.output_tail.rstrip().splitlines()), err=True)


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


# A runbook host's Caddy (adopt, takeover): the Debian package's folder by default.
caddy_dir_option = click.option(
    "--caddy-dir",
    default="/etc/caddy",
    show_default=True,
    help="The host Caddy's config folder (Caddyfile, sites-enabled/).",
)


def run_reporting(as_json: bool, action: Callable[[], Any]) -> Any:
    """Run an operation; with --json, print its result (or its failure) as the one stdout document."""
    try:
        result = action()
    except SumbgError as exc:
        if as_json:
            emit_json(
                {
                    "outcome": "failed",
                    "exit_code": exit_code_of(exc),
                    **exc.evidence(),
                    **({"result": exc.result} if exc.result is not None else {}),
                }
            )
        raise
    if as_json:
        emit_json(result)
    return result


# `sumbg` alone and `sumbg --help` list the commands in these groups, in this order.
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Deploy", ("init", "upgrade", "releases", "retire", "apply", "makefile")),
    ("Recover", ("rollback", "recover", "status", "history", "logs")),
    ("Data", ("backup", "backups", "restore", "manage", "shell", "psql")),
    ("Fleet", ("fleet",)),
    ("Host", ("doctor", "schedule", "notify", "adopt", "takeover", "completion")),
)


class GroupedCommands(click.Group):
    """Lists its commands under the headings of COMMAND_GROUPS (any other under "Other")."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = {name for _, names in COMMAND_GROUPS for name in names}
        groups = [*COMMAND_GROUPS, ("Other", tuple(sorted(set(self.commands) - listed)))]
        longest = max((len(name) for name in self.commands), default=0)
        width = formatter.width - 6 - longest
        for title, names in groups:
            rows = [
                (name.ljust(longest), self.commands[name].get_short_help_str(width))
                for name in names
                if name in self.commands and not self.commands[name].hidden
            ]
            if rows:
                with formatter.section(f"{title} commands"):
                    formatter.write_dl(rows)


@click.group(
    cls=GroupedCommands,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="sumbg")
@click.option("--root", envvar="SUMBG_ROOT", help="Host root (default /srv/sum, or $SUMBG_ROOT).")
@click.option("--verbose", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, root: str | None, verbose: bool) -> None:
    """Zero-downtime blue/green upgrades of SUM client sites behind Caddy."""
    ctx.obj = Obj(root, verbose)
    if verbose:
        os.environ["SUMBG_VERBOSE"] = "1"
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


@cli.command()
@click.argument("slug")
@click.option("--repo", required=True, help="Client repository: a path or a git URL.")
@click.option(
    "--domain",
    "domains",
    required=True,
    multiple=True,
    help="The site's domain; repeat for more names (the first is canonical).",
)
@click.option("--ref", default=None, help="Git ref to deploy first (default: the repo's HEAD).")
@click.option("--project", default=None, help="Django project package (default: detected).")
@click.option("--worker", is_flag=True, help="Run the site's Celery worker as SUM does: celery -A <project> worker.")
@click.option("--worker-command", default=None, help="Another shell command for the background worker.")
@click.option(
    "--db-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Publish Postgres on 127.0.0.1:PORT for diagnosis (default: not published).",
)
@click.option("--environment", default=None, help="Label for the sites matrix (default: production).")
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    help="A non-secret setting for the app's environment (repeatable; secrets go in <slug>/.env).",
)
@click.option(
    "--from-backup",
    "from_backup",
    default=None,
    metavar="REPOSITORY",
    help="Disaster recovery: build the release the latest backup of SLUG in this restic repository "
    "recorded, then restore its database and media (credentials: sumbg.toml [backup]).",
)
@json_option
@click.pass_obj
def init(
    obj: Obj,
    slug: str,
    repo: str,
    domains: tuple[str, ...],
    ref: str | None,
    project: str | None,
    worker: bool,
    worker_command: str | None,
    db_port: int | None,
    environment: str | None,
    env: tuple[str, ...],
    from_backup: str | None,
    as_json: bool,
) -> None:
    """Register a site and deploy it for the first time (colour blue).

    Re-run after a failure, it keeps the site.toml the first run wrote, with your edits.
    With --from-backup, the release and data come from the site's latest offsite backup.
    """
    from sumbg.ops.init import init as do_init
    from sumbg.ops.offsite import recover_site

    pairs = []
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or "\n" in value:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE on one line", param_hint="--env")
        pairs.append((key, value))
    ctx = obj.context()

    def deploy(at_ref: str | None, constraints: Constraints | None = None) -> dict[str, Any]:
        return do_init(
            ctx,
            slug,
            repo,
            list(domains),
            at_ref,
            project=project,
            worker=worker,
            worker_command=worker_command,
            db_publish_port=db_port,
            environment=environment,
            env=tuple(pairs),
            constraints=constraints,
        )

    if from_backup:
        run_reporting(as_json, lambda: recover_site(ctx, slug, from_backup, deploy, ref))
        return
    run_reporting(as_json, lambda: deploy(ref))


@cli.command()
@click.argument("slug")
@click.argument("ref")
@click.option("--dry-run", is_flag=True, help="Print the exact plan and change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-same-core", is_flag=True, help="Upgrade even if the sum-core pin is unchanged.")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for another operation on the site to finish.",
)
@click.option(
    "--watch",
    type=click.FloatRange(0),
    default=None,
    help="Seconds to watch the site after the switch (default: site.toml upgrade.watch; 0 disables).",
)
@click.option(
    "--no-rehearsal",
    is_flag=True,
    help="Skip the rehearsal of the migrations on a copy of the database (compatibility unmeasured).",
)
@click.option(
    "--maintenance",
    is_flag=True,
    help="Show the maintenance page (503, Retry-After) from migrate until the new release is "
    "confirmed live: the way to deploy a release whose migrations break the live one.",
)
@click.option(
    "--accept-breaking",
    is_flag=True,
    help="Deploy a release the rehearsal measured as breaking the live one, without a maintenance "
    "page: visitors may get errors until the switch (recorded).",
)
@json_option
@click.pass_obj
def upgrade(
    obj: Obj,
    slug: str,
    ref: str,
    dry_run: bool,
    yes: bool,
    allow_same_core: bool,
    lock_timeout: float,
    watch: float | None,
    no_rehearsal: bool,
    maintenance: bool,
    accept_breaking: bool,
    as_json: bool,
) -> None:
    """Blue/green upgrade of SLUG to git REF.

    Before `migrate` touches the live database, the migrations are rehearsed on a
    copy of it, and the live release is checked on the migrated copy. A release
    whose migrations break the live one is refused unless `--maintenance` or
    `--accept-breaking` is given. Migrations marked `run_after_switch = True` run
    only after the new release is live and its watch passed.
    """
    from sumbg.ops.upgrade import MigrationChoices
    from sumbg.ops.upgrade import upgrade as do_upgrade

    ctx = obj.context()

    def ask(plan: Plan) -> bool:
        facts = plan.facts
        click.echo(
            f"upgrade {slug}: {facts['from']} -> {facts['to']} (sum-core {facts['sum_core']['from']} -> "
            f"{facts['sum_core']['to']}), traffic {facts['from_colour']} -> {facts['to_colour']}",
            err=True,
        )
        return click.confirm("Proceed?", default=True, err=True)

    # Asked only at a terminal: scripts, CI and make targets run unattended (an upgrade aborts cleanly).
    confirm = ask if not yes and sys.stdin.isatty() and not as_json else None
    run_reporting(
        as_json,
        lambda: do_upgrade(
            ctx,
            slug,
            ref,
            dry_run=dry_run,
            allow_same_core=allow_same_core,
            lock_timeout=lock_timeout,
            watch=watch,
            confirm=confirm,
            migrations=MigrationChoices(not no_rehearsal, maintenance, accept_breaking),
        ),
    )


@cli.command()
@click.argument("slug")
@click.option(
    "--from",
    "source",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="The runbook deployment's folder (/srv/sum/<slug>: app/, venv/, media/, .env).",
)
@click.option(
    "--domain",
    "domains",
    multiple=True,
    help="The site's domains (default: the names in its host Caddy site file; the first is canonical).",
)
@click.option(
    "--dump",
    "dump_file",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Import this backup_db.sh file (.sql.gz, .sql or .dump) instead of a fresh dump of the host "
    "PostgreSQL; writes after it was taken are not carried over.",
)
@click.option("--systemd-dir", default="/etc/systemd/system", show_default=True, help="Where the old site's units are.")
@caddy_dir_option
@click.option(
    "--undo-days",
    type=click.FloatRange(0),
    default=14.0,
    show_default=True,
    help="How long `--undo` may put the old deployment back.",
)
@click.option("--undo", is_flag=True, help="Put the old deployment back: sumbg's data is copied into it.")
@click.option("--force", is_flag=True, help="With --undo: even after the undo period.")
@click.option("--dry-run", is_flag=True, help="Read the old deployment, print the plan, change nothing.")
@json_option
@click.pass_obj
def adopt(
    obj: Obj,
    slug: str,
    source: str | None,
    domains: tuple[str, ...],
    dump_file: str | None,
    systemd_dir: str,
    caddy_dir: str,
    undo_days: float,
    undo: bool,
    force: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Move SLUG, deployed the runbook way (systemd, host PostgreSQL and Caddy), onto sumbg.

    The old site keeps serving while sumbg builds the commit it runs, imports its
    database and media, and checks the new colour through the edge's preview
    listener. Then the host Caddy shows a 503 page while the last writes are
    copied and compared, and its site file becomes a reverse proxy to the edge;
    the window is measured. The old units are stopped and disabled, never
    deleted: `sumbg adopt --undo SLUG` puts them back with sumbg's data.
    """
    from pathlib import Path

    from sumbg.adoption.adopt import AdoptOptions
    from sumbg.adoption.adopt import adopt as do_adopt
    from sumbg.adoption.runbook_host import RunbookPaths
    from sumbg.adoption.undo import undo as do_undo

    ctx = obj.context()
    if undo:
        if source or domains or dump_file or dry_run:
            raise click.UsageError("--undo takes only SLUG (and --force)")
        run_reporting(as_json, lambda: do_undo(ctx, slug, force=force))
        return
    if force:
        raise click.UsageError("--force goes with --undo")
    if not source:
        raise click.UsageError("give the old deployment's folder with --from (e.g. /srv/sum/SLUG)")
    options = AdoptOptions(
        source=Path(source),
        domains=tuple(domains),
        dump_file=Path(dump_file) if dump_file else None,
        paths=RunbookPaths(systemd_dir=Path(systemd_dir), caddy_dir=Path(caddy_dir)),
        undo_days=undo_days,
        dry_run=dry_run,
    )
    run_reporting(as_json, lambda: do_adopt(ctx, slug, options))


@cli.command()
@caddy_dir_option
@click.option(
    "--caddy-data",
    default="/var/lib/caddy/.local/share/caddy",
    show_default=True,
    help="The host Caddy's data directory (certificates/, acme/, pki/).",
)
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@json_option
@click.pass_obj
def takeover(obj: Obj, caddy_dir: str, caddy_data: str, dry_run: bool, as_json: bool) -> None:
    """The edge takes the host Caddy's ports, once every site it served was adopted.

    Its certificates, ACME accounts and local CA are copied into the edge's storage
    first (nothing is re-issued). Then the host Caddy stops and the edge starts
    afresh on its ports (a measured window of about a second for every site); a
    failure puts the host Caddy and the edge back as they were.
    """
    from pathlib import Path

    from sumbg.adoption.runbook_host import RunbookPaths
    from sumbg.adoption.takeover import takeover as do_takeover

    ctx = obj.context()
    run_reporting(
        as_json, lambda: do_takeover(ctx, RunbookPaths(caddy_dir=Path(caddy_dir)), Path(caddy_data), dry_run=dry_run)
    )


@cli.command()
@click.argument("slug")
@click.option(
    "--restore-db", is_flag=True, help="Also restore the pre-upgrade backup (maintenance page while it runs)."
)
@click.option(
    "--to",
    "to",
    type=click.Choice(["blue", "green"]),
    default=None,
    help="The colour to flip to (default: the other colour).",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --to: flip even to a release recorded as failed, or without "
    "--restore-db after migrations the target cannot serve.",
)
@click.option("--dry-run", is_flag=True, help="Say which release the rollback would go to; change nothing.")
@click.option("--lock-timeout", type=click.FloatRange(0), default=0.0)
@click.option(
    "--wait-worker",
    is_flag=True,
    help="Wait until the worker is ready (exit 1 if it is not) instead of moving it in the background.",
)
@json_option
@click.pass_obj
def rollback(
    obj: Obj,
    slug: str,
    restore_db: bool,
    to: str | None,
    force: bool,
    dry_run: bool,
    lock_timeout: float,
    wait_worker: bool,
    as_json: bool,
) -> None:
    """Flip SLUG's traffic back to the last release that was live and healthy.

    That is the other colour (still running since the upgrade, so the flip is
    instant), unless state.json records its release as failed (e.g. reverted by
    the watch): then the rollback refuses, and only `--to COLOUR --force` flips to
    it. `--dry-run` names the release it would go to. If the flipped-to release
    does not answer through Caddy, traffic is put back and confirmed (exit 1).
    Leaving a release whose migrations broke the previous one (deployed with
    --maintenance or --accept-breaking, or whose after-switch migrations ran)
    needs `--restore-db`: the pre-upgrade backup goes back, later writes are lost.
    The site's worker follows the traffic in the background once the flip is
    confirmed (the command does not wait for it; `--wait-worker` does).
    """
    from sumbg.ops.rollback import rollback as do_rollback

    ctx = obj.context()
    run_reporting(
        as_json,
        lambda: do_rollback(
            ctx,
            slug,
            restore_db=restore_db,
            lock_timeout=lock_timeout,
            to=to,
            force=force,
            dry_run=dry_run,
            wait_worker=wait_worker,
        ),
    )


@cli.command()
@click.argument("words", nargs=-1, metavar="[verify] SLUG")
@click.option("--all", "every", is_flag=True, help="Every live site, one after the other (what the schedule runs).")
@click.option(
    "--snapshot",
    default="latest",
    show_default=True,
    help="With verify: the offsite snapshot to check (an id, or its first characters).",
)
@click.option("--lock-timeout", type=click.FloatRange(0), default=None, help="Seconds to wait for the site's lock.")
@json_option
@click.pass_obj
def backup(
    obj: Obj, words: tuple[str, ...], every: bool, snapshot: str, lock_timeout: float | None, as_json: bool
) -> None:
    """Back up SLUG now: its database (verified pg_dump) and media, then offsite.

    `sumbg backup SLUG` dumps the database, copies the media beside it, records both
    with the live release, uploads them to [backup] repository (restic) and applies
    the retention here and offsite. `sumbg backup --all` does it for every site.
    `sumbg backup verify SLUG` restores the latest offsite backup into a scratch
    database and folder, compares rows and media with what it recorded, removes them.
    """
    from sumbg.ops.offsite import backup as do_backup
    from sumbg.ops.offsite import backup_all
    from sumbg.ops.offsite import verify as do_verify

    ctx = obj.context()
    if every:
        if words:
            raise click.UsageError("--all backs up every site: no SLUG")
        run_reporting(as_json, lambda: backup_all(ctx, lock_timeout=600.0 if lock_timeout is None else lock_timeout))
        return
    wait = lock_timeout or 0.0
    if len(words) == 2 and words[0] == "verify":
        run_reporting(as_json, lambda: do_verify(ctx, words[1], snapshot, lock_timeout=wait))
        return
    if len(words) != 1:
        raise click.UsageError("usage: sumbg backup SLUG | sumbg backup verify SLUG | sumbg backup --all")
    if snapshot != "latest":
        raise click.UsageError("--snapshot goes with `backup verify`")
    run_reporting(as_json, lambda: do_backup(ctx, words[0], lock_timeout=wait))


@cli.command()
@click.argument("slug")
@json_option
@click.pass_obj
def backups(obj: Obj, slug: str, as_json: bool) -> None:
    """List SLUG's backups: file, size, time, ref, verified, media files, offsite snapshot."""
    import datetime

    from sumbg.ops.backups import list_backups

    found = list_backups(obj.context(), slug)
    if as_json:
        emit_json({"site": slug, "backups": found})
        return
    for item in found:
        when = datetime.datetime.fromtimestamp(item["time"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        verified = {True: "verified", False: "MISMATCH", None: "no sha256"}[item["verified"]]
        media = f"media {item['media']['files']}" if item.get("media") else "no media"
        offsite = f"offsite {item['offsite']['snapshot'][:8]}" if item.get("offsite") else "here only"
        click.echo(
            f"{item['file']:<60} {item['size']:>12} {when}  {item['ref'] or '-':<12} {verified:<9} {media:<12} {offsite}"
        )


@cli.command()
@click.argument("slug")
@click.argument("file", required=False)
@click.option(
    "--from-offsite",
    "snapshot",
    is_flag=False,
    flag_value="latest",
    default=None,
    metavar="[SNAPSHOT|latest]",
    help="Database and media from the [backup] repository: a snapshot id, or latest (the default).",
)
@click.option("--yes", is_flag=True, help="Do not ask (required without a terminal).")
@click.option("--lock-timeout", type=click.FloatRange(0), default=0.0)
@json_option
@click.pass_obj
def restore(
    obj: Obj, slug: str, file: str | None, snapshot: str | None, yes: bool, lock_timeout: float, as_json: bool
) -> None:
    """Restore SLUG's database from FILE (.dump, or .sql/.sql.gz from backup_db.sh), or its
    database and media from the offsite repository (--from-offsite)."""
    from sumbg.ops.backups import restore as do_restore
    from sumbg.ops.offsite import restore_offsite

    ctx = obj.context()
    # Asked only at a terminal; without one, --yes is required.
    confirm = (lambda question: click.confirm(question, err=True)) if sys.stdin.isatty() and not as_json else None
    if snapshot is not None:
        if file:
            raise click.UsageError("give FILE or --from-offsite, not both")
        run_reporting(
            as_json,
            lambda: restore_offsite(ctx, slug, snapshot, yes=yes, lock_timeout=lock_timeout, confirm=confirm),
        )
        return
    if not file:
        raise click.UsageError("give the backup FILE, or --from-offsite [SNAPSHOT|latest]")
    run_reporting(as_json, lambda: do_restore(ctx, slug, file, yes=yes, lock_timeout=lock_timeout, confirm=confirm))


def parse_duration(value: str) -> float:
    from sumbg.util import parse_duration as parse

    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.argument("slug", required=False)
@click.option(
    "--min-age",
    default="1h",
    show_default=True,
    help="Refuse to retire the only rollback target younger than this (90, 30m, 2h, 1d).",
)
@click.option("--force", is_flag=True, help="Retire even a young, only rollback target.")
@click.option(
    "--due",
    is_flag=True,
    help="Every site whose idle colour has soaked for its upgrade.retire_idle_after and whose live "
    "colour is healthy (run it from cron or a systemd timer).",
)
@json_option
@click.pass_obj
def retire(obj: Obj, slug: str | None, min_age: str, force: bool, due: bool, as_json: bool) -> None:
    """Stop and remove SLUG's idle colour once an upgrade has soaked.

    A rollback to a retired colour starts it again first (seconds, not instant).
    """
    from sumbg.ops.retire import retire as do_retire
    from sumbg.ops.retire import retire_due

    ctx = obj.context()
    if due:
        if slug or force:
            raise click.UsageError("--due retires on every site by its own soak period: no SLUG or --force")
        run_reporting(as_json, lambda: retire_due(ctx))
        return
    if not slug:
        raise click.UsageError("name the site (SLUG), or pass --due")
    run_reporting(as_json, lambda: do_retire(ctx, slug, min_age=parse_duration(min_age), force=force))


@cli.command()
@click.argument("slug")
@json_option
@click.pass_obj
def recover(obj: Obj, slug: str, as_json: bool) -> None:
    """Bring SLUG to a consistent, serving state after an interrupted operation."""
    from sumbg.adoption.undo import recover_plan as half_adopted
    from sumbg.ops.recover import recover as do_recover

    ctx = obj.context()
    run_reporting(as_json, lambda: do_recover(ctx, slug, half_adopted=half_adopted))


@cli.command(name="apply")
@json_option
@click.pass_obj
def apply_(obj: Obj, as_json: bool) -> None:
    """Apply edited site.toml settings (domains, [caddy], [env]) to the edge Caddy.

    Renders every site's Caddy file, validates the whole configuration with `caddy
    validate`, and reloads only if something changed. A changed [env] or domain list
    reaches the app containers at their next start (upgrade, rollback of a retired colour).
    """
    from sumbg.ops.apply import apply_edge

    ctx = obj.context()
    run_reporting(as_json, lambda: apply_edge(ctx))


@cli.command()
@click.option("--slug", default=None, help="Also write .sumbg.toml naming this site.")
@click.option(
    "--write",
    "directory",
    type=click.Path(file_okay=False),
    default=None,
    help="Write sumbg.mk (and .sumbg.toml) into this client repo folder instead of printing.",
)
def makefile(slug: str | None, directory: str | None) -> None:
    """Make targets for client repos: make upgrade VERSION=..., rollback, status, backup."""
    from pathlib import Path

    from sumbg import naming
    from sumbg.ops import clientmake

    if slug:
        naming.validate_slug(slug)
    if directory is None:
        click.echo(clientmake.INCLUDE, nl=False)
        return
    for path in clientmake.write(Path(directory), slug):
        click.echo(f"wrote {path}", err=True)


@cli.command()
@click.argument("slug", required=False)
@json_option
@click.pass_obj
def status(obj: Obj, slug: str | None, as_json: bool) -> None:
    """Live colour, versions, health and workers of one site or all.

    Exits 1 when a site has a problem: its records and what serves it disagree, or its
    live colour's worker is down or restarting, or its backups are missing or stale (with --json,
    after printing the document).
    """
    from sumbg.ops.status import host_network, host_status
    from sumbg.ops.status import status as do_status

    ctx = obj.context()
    if as_json:
        document = do_status(ctx, slug)[0] if slug else host_status(ctx)
        emit_json(document)
        if any(site["problems"] for site in ([document] if slug else document["sites"])):
            raise click.exceptions.Exit(1)
        return
    sites = do_status(ctx, slug)
    if not sites:
        click.echo(f"no sites under {ctx.host.root}")
    for problem in host_network(ctx)["problems"]:
        click.echo(f"NETWORK: {problem}")
    for site in sites:
        health = site["health"]
        line = (
            f"{site['site']:<20} {site['domain']:<28} live={site['live'] or '-':<6} "
            f"ref={site['ref'] or '-':<12} sum-core={site['sum_core'] or '-':<8} "
            f"health={health.get('status') or health.get('error') or health.get('http_status') or '-'}"
        )
        click.echo(line)
        if site["interrupted"]:
            op = site["operation"]
            click.echo(
                f"  INTERRUPTED: {op['kind']} stopped during step {op['step']} (started {op['started_at']}); "
                f"run `sumbg recover {site['site']}`"
            )
        if site["maintenance"]:
            click.echo("  maintenance page is ON")
        for problem in site["agreement"]["problems"]:
            click.echo(f"  DISAGREE: {problem}")
        if site["agreement"]["problems"]:
            click.echo(f"  records, Caddy and containers disagree: run `sumbg recover {site['site']}`")
        for note in site["agreement"]["notes"]:
            click.echo(f"  note: {note}")
        rollback = site["rollback"]
        if rollback["possible"] and not rollback["instant"]:
            click.echo(f"  rollback to {rollback['ref']} is not instant: {rollback['reason']}")
        for name, detail in (health.get("failing_checks") or {}).items():
            click.echo(f"  degraded: /health/ check {name} fails: {detail}")
        if any(view["state"] != "none" for view in site["workers"].values()):
            click.echo("  worker: " + "; ".join(worker_words(c, v) for c, v in sorted(site["workers"].items())))
        if site["worker_problem"]:
            container = site["workers"][site["live"]]["container"]
            click.echo(f"  PROBLEM: {site['worker_problem']}" + (f" (docker logs {container})" if container else ""))
        click.echo(f"  backup: {backup_line(site['backup'])}")
        for problem in site["backup"]["problems"]:
            click.echo(f"  BACKUP: {problem}")
        for problem in site["network"]["problems"]:
            click.echo(f"  NETWORK: {problem}")
        show_undelivered(site["undelivered_events"])
    if not slug:
        from sumbg.ops.status import undelivered_events

        show_undelivered(undelivered_events(ctx, None), "  host: ")
    if any(site["problems"] for site in sites):
        raise click.exceptions.Exit(1)


def backup_line(view: dict[str, Any]) -> str:
    """A site's last good backups, as `status` shows them."""

    def age(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / 3600:.1f}h ago"

    local, offsite = view["local"], view["offsite"]
    here = f"here {age(local['age_seconds'])} ({local['backup']})" if local else "here none"
    if view["repository"] is None:
        away = "offsite: no [backup] repository"
    elif offsite:
        away = (
            f"offsite {age(offsite['age_seconds'])} (snapshot {str(offsite['snapshot'])[:8]} in {view['repository']})"
        )
    else:
        away = f"offsite none in {view['repository']}"
    return f"{here}; {away}"


def show_undelivered(items: list[dict[str, Any]], prefix: str = "  ") -> None:
    """Notifications that did not reach their target: how many, and the newest few."""
    if not items:
        return
    click.echo(f"{prefix}UNDELIVERED: {len(items)} notification(s) did not reach their target (events.jsonl)")
    for item in items[:3]:
        click.echo(f"{prefix}  {item['at']}  {item['event']} -> {item['target']}: {item['error']}")


def worker_words(colour: str, view: dict[str, Any]) -> str:
    """One colour's worker in `status` (the JSON's `workers`)."""
    from sumbg.site.worker import WorkerView

    return (
        f"{colour} "
        + WorkerView(
            view["state"],
            restart_count=view["restart_count"],
            exit_code=view["exit_code"],
            up_seconds=view["up_seconds"],
            draining=tuple(view["draining"]),
        ).describe()
    )


@cli.command()
@click.argument("slugs", nargs=-1)
@click.option("--no-fetch", is_flag=True, help="Read the tags sumbg already has; do not fetch the repos.")
@click.option(
    "--deps",
    "deps_ref",
    default=None,
    metavar="REF",
    help="What REF's image holds (one SLUG): each distribution's version, and the git commit of what sumbg fetched.",
)
@json_option
@click.pass_obj
def releases(obj: Obj, slugs: tuple[str, ...], no_fetch: bool, deps_ref: str | None, as_json: bool) -> None:
    """The tags of each site's client repo, newest first, with the sum-core version each pins."""
    from sumbg.ops.status import releases as do_releases

    if deps_ref is not None:
        show_release_dependencies(obj, slugs, deps_ref, as_json)
        return
    found = do_releases(obj.context(), list(slugs) or None, fetch=not no_fetch)
    if as_json:
        emit_json({"sites": found})
        return
    for site in found:
        click.echo(
            f"{site['site']} ({site['repo']}): live {site['live']['ref'] or '-'} "
            f"(sum-core {site['live']['sum_core'] or '-'}){'; ' + site['note'] if site['note'] else ''}"
        )
        for tag in site["tags"]:
            click.echo(f"  {tag['tag']:<28} sum-core {tag['sum_core'] or '-':<10} {tag['commit'][:12]}")


def show_release_dependencies(obj: Obj, slugs: tuple[str, ...], ref: str, as_json: bool) -> None:
    from sumbg.ops.status import release_dependencies

    if len(slugs) != 1:
        raise UsageError("--deps REF takes exactly one SLUG")
    found = run_reporting(as_json, lambda: release_dependencies(obj.context(), slugs[0], ref))
    if as_json:
        return
    commit = f"commit {found['commit'][:12]}, " if found["commit"] else ""
    click.echo(
        f"{found['site']} {found['ref']} ({commit}image {found['image']}): "
        f"{len(found['dependencies'])} distributions, recorded in {found['recorded_in']}"
    )
    width = max((len(d["name"]) for d in found["dependencies"]), default=0)
    for item in found["dependencies"]:
        extra = f"  {item.get('source', '')} {item['commit']}" if item.get("commit") else ""
        extra = extra or (f"  {item['source']}" if item.get("source") else "")
        click.echo(f"  {item['name']:<{width}}  {item['version']}{extra}")


@cli.command()
@click.argument("slug")
@json_option
@click.pass_obj
def history(obj: Obj, slug: str, as_json: bool) -> None:
    """What was done to SLUG, when, and how it ended."""
    ctx = obj.context()
    entries = ctx.site(slug).records.operations()
    if as_json:
        emit_json({"site": slug, "operations": entries})
        return
    for entry in entries:
        steps = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in entry.get("steps", []))
        moved = f" {entry.get('from') or ''} -> {entry.get('to')}" if entry.get("to") else ""
        reason = entry.get("reason") or (entry.get("error") or {}).get("message") or ""
        click.echo(
            f"{entry.get('at')}  {entry.get('operation'):<9} {entry.get('outcome', entry.get('event')):<15}"
            f"{moved}  {reason}".rstrip()
        )
        if steps:
            click.echo(f"    {steps}")


@cli.group()
def schedule() -> None:
    """The host's timers: `sumbg backup --all` daily and `sumbg retire --due` hourly."""


unit_dir_option = click.option(
    "--unit-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write (or look for) the unit files here instead of /etc/systemd/system, and leave systemctl alone.",
)


@schedule.command(name="install")
@unit_dir_option
@json_option
@click.pass_obj
def schedule_install(obj: Obj, unit_dir: str | None, as_json: bool) -> None:
    """Write and enable systemd timers ([backup] schedule); without systemd, print crontab lines."""
    from pathlib import Path

    from sumbg.ops.schedule import install

    ctx = obj.context()
    result = run_reporting(as_json, lambda: install(ctx, Path(unit_dir) if unit_dir else None))
    if as_json:
        return
    if result["mode"] == "cron":
        click.echo("no systemd on this host: put these lines in /etc/cron.d/sumbg", err=True)
        click.echo(result["crontab"], nl=False)
        return
    for path in result["units"]:
        click.echo(f"wrote {path}", err=True)
    for timer in result["enabled"]:
        click.echo(f"enabled {timer}", err=True)


@schedule.command(name="status")
@unit_dir_option
@json_option
@click.pass_obj
def schedule_status(obj: Obj, unit_dir: str | None, as_json: bool) -> None:
    """Which timers are installed, and (with systemd) their next and last run."""
    from pathlib import Path

    from sumbg.ops.schedule import status as do_status

    result = do_status(obj.context(), Path(unit_dir) if unit_dir else None)
    if as_json:
        emit_json(result)
        return
    for timer in result["timers"]:
        state = "installed" if timer["installed"] else "not installed"
        extra = f", {timer['active']}, next {timer['next']}" if timer["active"] else ""
        click.echo(f"{timer['job']:<24} {timer['command']:<14} {timer['on_calendar']:<22} {state}{extra}")
    if not result["systemd"]:
        click.echo("no systemd on this host: `sumbg schedule install` prints the crontab lines", err=True)


@schedule.command(name="remove")
@unit_dir_option
@json_option
@click.pass_obj
def schedule_remove(obj: Obj, unit_dir: str | None, as_json: bool) -> None:
    """Disable and delete the timers `schedule install` wrote."""
    from pathlib import Path

    from sumbg.ops.schedule import remove

    ctx = obj.context()
    result = run_reporting(as_json, lambda: remove(ctx, Path(unit_dir) if unit_dir else None))
    if not as_json:
        for path in result["removed"]:
            click.echo(f"removed {path}", err=True)


@cli.group()
def notify() -> None:
    """Notifications: the [[notify]] targets of sumbg.toml and site.toml."""


@notify.command(name="test")
@click.argument("slug", required=False)
@json_option
@click.pass_obj
def notify_test(obj: Obj, slug: str | None, as_json: bool) -> None:
    """Send a test event to every target: sumbg.toml's, and SLUG's (or every site's).

    Exits 1 if a target did not accept it (each is tried a few times, with backoff).
    """
    from sumbg.ops.notify import send_test

    ctx = obj.context()
    run_reporting(as_json, lambda: send_test(ctx, slug))


@cli.group()
def fleet() -> None:
    """Many hosts at once, over SSH: the sumbg on each host does the work."""


fleet_file_option = click.option(
    "--fleet",
    "fleet_file",
    envvar="SUMBG_FLEET",
    type=click.Path(dir_okay=False),
    default=None,
    help="The fleet file (default $SUMBG_FLEET): its hosts and groups of sites.",
)


def load_fleet_file(fleet_file: str | None) -> FleetConfig:
    from sumbg.config import fleet_path, load_fleet

    return load_fleet(fleet_path(fleet_file))


@fleet.command(name="status")
@fleet_file_option
@json_option
def fleet_status(fleet_file: str | None, as_json: bool) -> None:
    """Every site on every host: live release, sum-core, health, last operation, rollback, backups.

    Also writes the fleet's sites matrix ([fleet] matrix, default SITES.md beside the
    fleet file). Exits 1 when a host does not answer (the others are still shown) or a
    site's last good backup is older than its [backup] max_age (or its last backup failed).
    """
    from sumbg.fleet.driver import FleetDriver
    from sumbg.fleet.view import status_document, status_lines

    fleet_config = load_fleet_file(fleet_file)
    driver = FleetDriver(fleet_config, say=lambda line: click.echo(line, err=True))
    views = driver.status()
    written = driver.write_matrix(views)
    if as_json:
        emit_json({**status_document(views), "matrix": str(written)})
    else:
        for line in status_lines(views):
            click.echo(line)
        click.echo(f"matrix written to {written}", err=True)
    if any(not view.reachable for view in views) or any(site.backup.problems for view in views for site in view.sites):
        raise click.exceptions.Exit(1)


@fleet.command(name="upgrade")
@click.option("--core", default=None, help="The sum-core version to move to (X.Y.Z).")
@click.option(
    "--sites",
    "names",
    multiple=True,
    help="Sites to upgrade: slugs, HOST/SLUG or group names (repeat, or comma-separate; default all).",
)
@click.option(
    "--canary",
    "canaries",
    multiple=True,
    help="A site upgraded (and watched) first, alone; the rest wait for it to pass. Repeatable.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1),
    default=None,
    help="Upgrades at a time on one host (default: [fleet] parallel, 1).",
)
@click.option(
    "--max-parallel",
    type=click.IntRange(1),
    default=None,
    help="Upgrades at a time in the whole fleet (default: [fleet] max_parallel, 4).",
)
@click.option(
    "--watch",
    type=click.FloatRange(0),
    default=None,
    help="Seconds each upgrade watches its site after the switch (default: each site's own).",
)
@click.option("--dry-run", is_flag=True, help="Print the whole plan (site, host, from -> to) and change nothing.")
@click.option("--resume", is_flag=True, help="Go on with the last stopped (or killed) fleet upgrade.")
@fleet_file_option
@json_option
@click.pass_obj
def fleet_upgrade(
    obj: Obj,
    fleet_file: str | None,
    core: str | None,
    names: tuple[str, ...],
    canaries: tuple[str, ...],
    parallel: int | None,
    max_parallel: int | None,
    watch: float | None,
    dry_run: bool,
    resume: bool,
    as_json: bool,
) -> None:
    """Move sites to the newest release of their repo that pins sum-core --core.

    Canaries first, one at a time; then the rest. The first failure stops new upgrades
    (running ones finish; the failed site is left on its previous release by its own
    sumbg); the matrix says what was done, what failed and what was not tried.
    """
    import re

    from sumbg.fleet.driver import upgrade_fleet

    if resume and (core or names or canaries or watch is not None):
        raise click.UsageError(
            "--resume goes on with the stopped run's own --core, --sites, --canary and "
            "--watch; only --parallel and --max-parallel may change"
        )
    if not resume and not core:
        raise click.UsageError("give the sum-core version with --core X.Y.Z (or --resume)")
    if core and not re.fullmatch(r"v?\d+(\.\d+)*([.+-][0-9A-Za-z.+-]+)?", core):
        raise click.BadParameter(f"{core!r} is not a version like 0.7.0", param_hint="--core")
    fleet_config = load_fleet_file(fleet_file)

    def say(line: str) -> None:
        return click.echo(line, err=True)

    document, lines, code = upgrade_fleet(
        fleet_config,
        core,
        names=names,
        canaries=canaries,
        parallel=parallel,
        max_parallel=max_parallel,
        watch=watch,
        dry_run=dry_run,
        resume=resume,
        say=say,
    )
    if as_json:
        emit_json(document)
    for line in lines:
        click.echo(line, err=as_json)
    if not dry_run:
        from sumbg.ops.notify import announce_fleet_run

        announce_fleet_run(obj.context(), document, code)
    if code:
        raise click.exceptions.Exit(code)


@cli.command(name="_drain-worker", hidden=True)
@click.argument("slug")
@click.argument("container")
@click.option("--since", type=float, default=None, help="When it got SIGTERM (epoch seconds).")
@click.pass_obj
def drain_worker(obj: Obj, slug: str, container: str, since: float | None) -> None:
    """(Started by sumbg.) Remove an old worker once it has finished its tasks; record how it ended."""
    from sumbg.ops.workers import drain_until_gone

    entry = drain_until_gone(obj.context(), slug, container, since)
    click.echo(json.dumps(entry, sort_keys=True))


@cli.command(name="_move-worker", hidden=True)
@click.argument("slug")
@click.option("--lock-fd", type=int, required=True, help="The site's lock, handed over by the rollback.")
@click.option("--wait-fd", type=int, required=True, help="A pipe that ends when the rollback has exited.")
@click.pass_obj
def move_worker(obj: Obj, slug: str, lock_fd: int, wait_fd: int) -> None:
    """(Started by `sumbg rollback`.) Move the site's worker to the live colour and wait until it is ready."""
    from sumbg.ops.workers import finish_handed_move

    finish_handed_move(obj.context(), slug, lock_fd=lock_fd, wait_fd=wait_fd)


# ---------------------------------------------------------------- day-2: logs, one-off commands, doctor


def parse_since(value: str | None) -> float | None:
    """--since: a duration back from now (90, 30m, 2h, 1d) or a UTC time (2026-12-06T05:00:00Z)."""
    import datetime
    import time

    from sumbg.util import parse_duration as parse

    if value is None:
        return None
    try:
        return time.time() - parse(value)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (90, 30m, 2h, 1d) nor a time like 2026-12-06T05:00:00Z",
            param_hint="--since",
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


def attached_to_a_terminal() -> bool:
    """A one-off command gets a terminal only when both ends are one: `manage ... > file` gets pipes."""
    return sys.stdin.isatty() and sys.stdout.isatty()


colour_option = click.option(
    "--colour",
    type=click.Choice(["live", "idle", "blue", "green"]),
    default="live",
    show_default=True,
    help="The release to run: the live one, the idle one (the rollback target), or a colour by name.",
)


@cli.command()
@click.argument("slug")
@click.option("--worker", is_flag=True, help="The background worker's logs instead of the web's.")
@click.option(
    "--colour",
    type=click.Choice(["live", "idle", "blue", "green"]),
    default=None,
    help="Whose logs: the live colour (default), the idle one, or a colour by name.",
)
@click.option("--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--since", default=None, help="Only lines from this long ago (90, 30m, 2h, 1d) or this UTC time.")
@click.option("--tail", type=click.IntRange(0), default=None, help="Only the last N lines.")
@click.option(
    "--release",
    default=None,
    help="The logs of this release (git ref): from the colour running it, or kept when sumbg removed it.",
)
@click.pass_obj
def logs(
    obj: Obj,
    slug: str,
    worker: bool,
    colour: str | None,
    follow: bool,
    since: str | None,
    tail: int | None,
    release: str | None,
) -> None:
    """SLUG's web (or worker) logs, from the live colour by default.

    A colour sumbg removed (retire, an upgrade, an undo) had its logs kept first,
    compressed in SLUG/logs/ within [logs] keep_mb: `--release REF` reads them.
    """
    from sumbg.ops.logs import LogsRequest, show_logs

    request = LogsRequest(
        worker=worker, colour=colour, release=release, follow=follow, since=parse_since(since), tail=tail
    )
    ctx = obj.context()
    try:
        code = show_logs(ctx, slug, request, sys.stdout)
    except KeyboardInterrupt:  # the way a --follow ends
        code = 0
    except BrokenPipeError:  # `sumbg logs ... | head`: what was wanted was read
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        code = 0
    if code and code != 128 + 13:  # docker's own SIGPIPE, the same
        raise click.exceptions.Exit(code)


@cli.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("slug")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="-- ARGS...")
@colour_option
@click.option(
    "--env",
    "env_names",
    multiple=True,
    metavar="NAME",
    help="Pass this variable of your environment into the container (by name: its value never shows "
    "in a process list). Repeatable.",
)
@click.pass_obj
def manage(obj: Obj, slug: str, args: tuple[str, ...], colour: str, env_names: tuple[str, ...]) -> None:
    """`python manage.py ARGS` in a one-off container of SLUG's live release.

    The container has the site's environment, network, media and static files and
    runs at the background CPU weight; it is interactive at a terminal
    (createsuperuser, shell, dbshell) and plain pipes otherwise. The exit code is
    passed through; the history records the command's name, never its arguments.
    """
    from sumbg.ops.oneoff import manage as do_manage

    code = do_manage(
        obj.context(),
        slug,
        list(args),
        colour=colour,
        tty=attached_to_a_terminal(),
        env_names=env_names,
        environ=dict(os.environ),
    )
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.argument("slug")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND...]")
@colour_option
@click.pass_obj
def shell(obj: Obj, slug: str, args: tuple[str, ...], colour: str) -> None:
    """A shell in a one-off container of SLUG's live release (or COMMAND instead).

    The same container as `sumbg manage`: the site's environment, network, media and
    static files, at the background CPU weight; the exit code is passed through.
    """
    from sumbg.ops.oneoff import shell as do_shell

    code = do_shell(obj.context(), slug, list(args), colour=colour, tty=attached_to_a_terminal())
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.argument("slug")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[-- PSQL-ARGS...]")
@click.pass_obj
def psql(obj: Obj, slug: str, args: tuple[str, ...]) -> None:
    """psql on SLUG's database, as the site's own role.

    Runs in a one-off container of the site's Postgres image on its network; the
    password reaches it by environment, never in a process's arguments.
    """
    from sumbg.ops.oneoff import psql as do_psql

    code = do_psql(obj.context(), slug, list(args), tty=attached_to_a_terminal())
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@json_option
@click.pass_obj
def doctor(obj: Obj, as_json: bool) -> None:
    """Is this host ready? One line per check, ok, warn or fail, with the fix.

    Engine and Compose versions, the edge Caddy's version, its ports, free disk,
    the clock, and for each site: its domains' DNS, the certificates the edge
    serves, its backups' age, interrupted operations and disagreements. Exits 1
    when any check fails.
    """
    from sumbg.ops.doctor import doctor as do_doctor

    document = do_doctor(obj.context(quiet=True))
    if as_json:
        emit_json(document)
    else:
        rows = document["checks"]
        check_width = max((len(row["check"]) for row in rows), default=5)
        subject_width = max((len(row["subject"]) for row in rows), default=7)
        for row in rows:
            fix = f"  fix: {row['fix']}" if row["fix"] and row["level"] != "ok" else ""
            click.echo(
                f"{row['level']:<5} {row['check']:<{check_width}}  {row['subject']:<{subject_width}}  "
                f"{row['detail']}{fix}"
            )
        counts = document["counts"]
        click.echo(f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    if not document["ok"]:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("shell_name", metavar="SHELL", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell_name: str) -> None:
    """Print the shell completion script for SHELL (commands, options, site slugs, refs).

    \b
    bash: sumbg completion bash > /etc/bash_completion.d/sumbg
    zsh:  sumbg completion zsh > "${fpath[1]}/_sumbg"
    fish: sumbg completion fish > ~/.config/fish/completions/sumbg.fish
    """
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell_name)
    assert completer is not None  # click has all three
    click.echo(completer(cli, {}, "sumbg", COMPLETE_VAR).source())


# ---------------------------------------------------------------- completion of slugs and refs

COMPLETE_VAR = "_SUMBG_COMPLETE"


def _completion_root(ctx: click.Context) -> Path:
    from sumbg.config import root_from_env

    given = ctx.find_root().params.get("root")
    return Path(given) if given else root_from_env()


if TYPE_CHECKING:
    _TextType = click.ParamType[str]  # generic from click 8.2 on
else:
    _TextType = click.ParamType


class SiteSlug(_TextType):
    """A site's slug: completes from the sites under the root (--root, $SUMBG_ROOT or /srv/sum)."""

    name = "slug"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            slugs = sorted(path.parent.name for path in _completion_root(ctx).glob("*/site.toml"))
        except OSError:
            return []
        return [CompletionItem(slug) for slug in slugs if slug.startswith(incomplete)]


class ReleaseRef(_TextType):
    """A git ref: completes from the tags of the site's mirror (newest first), no fetch."""

    name = "ref"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        from click.shell_completion import CompletionItem

        from sumbg.adapters.gitrepo import Mirror
        from sumbg.ops.status import release_key

        root = _completion_root(ctx)
        slug = ctx.params.get("slug")
        if not isinstance(slug, str):
            # Completing an option's value (`logs acme --release v<TAB>`), click parses none of the
            # words before it: the site is the first word of the line that names one.
            words = os.environ.get("COMP_WORDS", "").split()
            slug = next((word for word in words if (root / word / "site.toml").is_file()), None)
        if not slug or "/" in slug:
            return []
        try:
            tags = Mirror(root / slug / "repo.git", "").tags()
        except (SumbgError, OSError):
            return []
        tags.sort(key=lambda tag: release_key(tag[0], tag[2]), reverse=True)
        return [CompletionItem(tag) for tag, _, _ in tags if tag.startswith(incomplete)]


def _complete_from_the_host(group: click.Group) -> None:
    """Every SLUG argument completes from the root's sites, every REF (and --release) from the
    site's mirror: by name, so a command added later gets it too."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            _complete_from_the_host(command)
        for param in command.params:
            if param.name in ("slug", "slugs") and param.type is click.STRING:
                param.type = SiteSlug()
            elif param.name in ("ref", "release") and param.type is click.STRING:
                param.type = ReleaseRef()


_complete_from_the_host(cli)


# ---------------------------------------------------------------- one example in every --help

EXAMPLES: dict[str, str] = {
    "init": "sumbg init acme --repo git@github.com:agency/acme.git --domain acme.example --domain www.acme.example",
    "upgrade": "sumbg upgrade acme v1.2.0",
    "releases": "sumbg releases acme",
    "retire": "sumbg retire acme",
    "apply": "sumbg apply",
    "makefile": "sumbg makefile --slug acme --write ~/src/acme",
    "rollback": "sumbg rollback acme",
    "recover": "sumbg recover acme",
    "status": "sumbg status acme --json",
    "history": "sumbg history acme",
    "logs": "sumbg logs acme --worker --since 30m --follow",
    "backup": "sumbg backup acme",
    "backups": "sumbg backups acme",
    "restore": "sumbg restore acme /srv/sum/acme/backups/acme_20261206T031500Z_v1.1.0.dump --yes",
    "manage": "sumbg manage acme -- createsuperuser",
    "shell": "sumbg shell acme",
    "psql": "sumbg psql acme -- -c 'SELECT count(*) FROM auth_user'",
    "fleet": "sumbg fleet status",
    "fleet status": "sumbg fleet status --fleet ~/fleet.toml",
    "fleet upgrade": "sumbg fleet upgrade --core 0.7.0 --canary acme",
    "doctor": "sumbg doctor",
    "schedule": "sumbg schedule status",
    "schedule install": "sumbg schedule install",
    "schedule status": "sumbg schedule status --json",
    "schedule remove": "sumbg schedule remove",
    "notify": "sumbg notify test",
    "notify test": "sumbg notify test acme",
    "adopt": "sumbg adopt acme --from /srv/sum/acme --dry-run",
    "takeover": "sumbg takeover --dry-run",
    "completion": "sumbg completion bash > /etc/bash_completion.d/sumbg",
}


def _show_examples(group: click.Group, prefix: str = "") -> None:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if path in EXAMPLES:
            command.epilog = f"\b\nExample:\n  {EXAMPLES[path]}"
        if isinstance(command, click.Group):
            _show_examples(command, f"{path} ")


_show_examples(cli)


def main() -> None:
    verbose = "--verbose" in sys.argv or os.environ.get("SUMBG_VERBOSE") == "1"
    try:
        code = cli.main(standalone_mode=False, prog_name="sumbg", complete_var=COMPLETE_VAR)
    except SumbgError as exc:
        if verbose:
            import traceback

            traceback.print_exception(exc)
        show_error(exc)
        sys.exit(exit_code_of(exc))
    except click.exceptions.Abort:
        click.echo("sumbg: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("sumbg: interrupted", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a user never sees a traceback unless they ask
        if verbose:
            raise
        click.echo(f"sumbg: error: unexpected {type(exc).__name__}: {exc} (run with --verbose for details)", err=True)
        sys.exit(1)
    # Outside standalone mode click returns a command's Exit(code) instead of raising it.
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
