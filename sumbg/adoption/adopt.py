"""`sumbg adopt`: take over a site deployed the runbook way, and `sumbg adopt --undo`.

Nothing on the old host changes until sumbg's first colour runs the commit the old app
runs, on an imported copy of its database and media, and has passed its checks through
the edge's preview listener. Then, in one measured window, the host Caddy answers the
site with a 503 page (Retry-After), the old units stop, the last writes are dumped and
imported, rows and media files are compared exactly, and the host Caddy's site file
becomes a reverse proxy to the edge (TLS and certificates stay where they are). Any
failure before that reload is confirmed puts the old site back as it was. The old
deployment is stopped and disabled, never deleted: `--undo` copies sumbg's data back
into it and starts it again.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sumbg import naming
from sumbg.adapters import build, caddy, gitrepo, pydeps
from sumbg.adapters.docker import Engine, ExecResult
from sumbg.adapters.probe import Target, live_target, preview_target, served_certificate, unix_socket_target
from sumbg.adoption.runbook_host import (
    CaddyRunner,
    Deployment,
    RunbookPaths,
    RunbookServices,
    carried_env,
    probe_address,
    read_deployment,
    read_host_caddy,
)
from sumbg.config import CaddySettings, SiteConfig, load_host, render_site_toml, set_edge_settings, set_site_settings
from sumbg.errors import BackupError, CheckFailed, SumbgError, UsageError, tail
from sumbg.ops.context import Context, refuse_if_interrupted
from sumbg.ops.executor import Plan, Run, Step
from sumbg.ops.init import first_colour_steps, refuse_a_foreign_database, refuse_domains_of_other_sites
from sumbg.site.database import ROW_COUNTS_SQL, parse_row_counts
from sumbg.site.site import APP_UID, Site
from sumbg.site.stacks import sha256_file
from sumbg.site.state import (
    ADOPTION_ADOPTED,
    ADOPTION_CUTTING_OVER,
    ADOPTION_FAILED,
    ADOPTION_IMPORTING,
    AdoptionRecord,
    SiteState,
    colour_version,
    expected_version,
    release_record,
)
from sumbg.util import atomic_write, sync_tree, tree_stats, utc_now, utc_stamp

COLOUR = naming.COLOURS[0]
KEPT_DIR = "adoption"  # under the site folder: the host Caddy site file sumbg replaced
MANAGED_MARK = "# Managed by sumbg"  # the first line of every host Caddy site file sumbg writes
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:@+,%~=-]*$")


@dataclass(frozen=True)
class AdoptOptions:
    source: Path
    domains: tuple[str, ...] = ()
    dump_file: Path | None = None  # a backup_db.sh file instead of a fresh dump (writes after it are lost)
    paths: RunbookPaths = RunbookPaths()
    undo_days: float = 14.0
    dry_run: bool = False


# =================================================================== the old host's database


class SourceDatabase:
    """The runbook host's PostgreSQL, reached as the old app reached it: the host network,
    with the credentials from its .env (the password by environment, never in argv)."""

    def __init__(self, engine: Engine, image: str, deployment: Deployment) -> None:
        self.engine = engine
        self.image = image
        self.db = deployment.database

    def _run(self, argv: list[str], backups: Path | None = None, extra_env: dict | None = None) -> ExecResult:
        volumes = [(str(backups), "/backups", "rw")] if backups else []
        host = self.db.host
        if host.startswith("/"):  # a Unix socket folder, as Django's HOST may name one
            volumes.append((host, host, "rw"))
        return self.engine.run_oneoff(
            self.image,
            argv,
            volumes=volumes,
            network="host",
            env={"PGPASSWORD": self.db.password, "PGCONNECT_TIMEOUT": "5", **(extra_env or {})},
        )

    def _target(self) -> list[str]:
        return ["-h", self.db.host, "-p", str(self.db.port), "-U", self.db.user, "-d", self.db.name]

    def check_readable(self) -> None:
        result = self._run(["psql", "-X", "-q", "-t", "-A", *self._target(), "-c", "SELECT 1"])
        if result.returncode != 0 or result.stdout.strip() != "1":
            raise UsageError(
                f"cannot read the database {self.db.describe()} with the credentials in the .env: "
                f"{_first_error(result.output)}"
            )

    def row_counts(self) -> dict[str, int]:
        result = self._run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", *self._target(), "-c", ROW_COUNTS_SQL]
        )
        if result.returncode != 0:
            raise BackupError(f"counting rows in {self.db.describe()} failed", output_tail=tail(result.output))
        return parse_row_counts(result.stdout)

    def dump(self, backups: Path, name: str, *, count: bool = False) -> dict[str, int]:
        """pg_dump into the site's backups folder; with `count`, the rows per table counted just
        before, in the same container (one start fewer inside the cutover window)."""
        partial = f".{name}.partial"
        counting = 'psql -X -q -t -A -v ON_ERROR_STOP=1 "$@" -c "$SUMBG_COUNT_SQL" && ' if count else ""
        result = self._run(
            [
                "sh",
                "-c",
                f"umask 077 && {counting}pg_dump --format=custom --no-owner "
                f'--no-privileges --no-password "$@" -f "/backups/{partial}"',
                "pg_dump",
                *self._target(),
            ],
            backups,
            extra_env={"SUMBG_COUNT_SQL": ROW_COUNTS_SQL},
        )
        if result.returncode != 0:
            (backups / partial).unlink(missing_ok=True)
            raise BackupError(
                f"pg_dump of {self.db.describe()} failed",
                command=["pg_dump", "..."],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        final = backups / name
        os.replace(backups / partial, final)
        atomic_write(final.with_name(final.name + ".sha256"), f"{sha256_file(final)}  {final.name}\n", mode=0o600)
        return parse_row_counts(result.stdout)

    def load(self, backups: Path, name: str) -> None:
        """Replace the old database's contents with a dump, in one transaction: all or nothing."""
        result = self._run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                *self._target(),
                f"/backups/{name}",
            ],
            backups,
        )
        if result.returncode != 0:
            raise BackupError(
                f"loading {name} into {self.db.describe()} failed; it was not changed",
                command=["pg_restore", "..."],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )


class SourceBroker:
    """The old host's Celery broker (Redis): the task messages still queued when its worker
    stopped go to sumbg's broker, so no task the old site accepted is dropped."""

    # Every list in the broker's database but kombu's own bookkeeping, one "key message" line per
    # queued message, both base64 (the output passes through text decoding on its way back).
    SCRIPT = r"""
set -e
cli() { redis-cli -h "$SUMBG_HOST" -p "$SUMBG_PORT" -n "$SUMBG_DB" "$@"; }
b64() { printf '%s' "$1" | base64 -w0; }
for key in $(cli --scan); do
  case "$key" in _kombu*|unacked*) continue;; esac
  [ "$(cli TYPE "$key")" = list ] || continue
  cli --raw LRANGE "$key" 0 -1 > /tmp/messages
  while IFS= read -r message; do
    echo "$(b64 "$key") $(b64 "$message")"
  done < /tmp/messages
done
"""

    def __init__(self, engine: Engine, image: str, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.engine, self.image = engine, image
        self.env = {
            "SUMBG_HOST": parts.hostname or "localhost",
            "SUMBG_PORT": str(parts.port or 6379),
            "SUMBG_DB": (parts.path.strip("/") or "0"),
        }
        if parts.password:
            self.env["REDISCLI_AUTH"] = parts.password

    def queued(self) -> list[tuple[bytes, bytes]]:
        """(queue, message) of every message still queued, oldest first per queue."""
        import base64

        result = self.engine.run_oneoff(self.image, ["sh", "-c", self.SCRIPT], volumes=[], network="host", env=self.env)
        if result.returncode != 0:
            raise BackupError("reading the old Celery broker failed", output_tail=tail(result.output))
        return [
            tuple(base64.b64decode(part) for part in line.split(" ", 1))  # type: ignore[misc]
            for line in result.stdout.splitlines()
            if " " in line
        ]

    def drop(self, keys: list[str]) -> None:
        result = self.engine.run_oneoff(
            self.image,
            ["sh", "-c", 'redis-cli -h "$SUMBG_HOST" -p "$SUMBG_PORT" -n "$SUMBG_DB" DEL "$@"', "sh", *keys],
            volumes=[],
            network="host",
            env=self.env,
        )
        if result.returncode != 0:
            raise BackupError("removing the moved messages from the old broker failed", output_tail=tail(result.output))


def as_rpush_commands(messages: list[tuple[bytes, bytes]]) -> bytes:
    """The messages as RPUSH commands in Redis's protocol, for `redis-cli --pipe` (binary-safe)."""

    def bulk(value: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)

    return b"".join(b"*3\r\n" + bulk(b"RPUSH") + bulk(key) + bulk(message) for key, message in messages)


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "fatal" in line.lower():
            return line
    return lines[-1] if lines else "no answer"


# =================================================================== pure decisions


def compare_counts(
    source: dict[str, int], target: dict[str, int], *, source_after: dict[str, int] | None = None
) -> list[str]:
    """What differs between the old database and the imported copy. With `source_after`
    (counted again after the dump of a live site), a table that changed meanwhile may hold
    anything between its two counts; otherwise the counts must be equal."""
    problems = []
    for table in sorted(set(source) | set(target)):
        if table not in target:
            problems.append(f"{table} is missing from the copy")
            continue
        if table not in source:
            problems.append(f"{table} is in the copy but not in the old database")
            continue
        low, high = source[table], source[table]
        if source_after is not None and table in source_after:
            low, high = min(low, source_after[table]), max(high, source_after[table])
        if not low <= target[table] <= high:
            expected = f"{low}" if low == high else f"{low}..{high}"
            problems.append(f"{table}: {target[table]} rows in the copy, {expected} in the old database")
    return problems


def wsgi_of(exec_start: str) -> str | None:
    for arg in shlex.split(exec_start)[1:]:
        module, sep, attribute = arg.partition(":")
        if sep and re.fullmatch(r"[A-Za-z_][\w.]*", module) and re.fullmatch(r"[A-Za-z_]\w*", attribute):
            return arg
    return None


_HOST_ONLY_OPTIONS = ("--pidfile", "--logfile", "-f", "--statedb", "--schedule", "-s")


def worker_command_of(deployment: Deployment) -> str:
    """The Celery units' command as the container runs it: the program from the image's PATH,
    without options naming host files (logs go to the container's output), a beat unit as
    the worker's embedded beat (`--beat`), since sumbg runs one worker per site."""
    unit = deployment.worker_unit or deployment.beat_unit
    if unit is None:
        return ""
    args, kept = shlex.split(unit.exec_start), []
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
            continue
        if arg in _HOST_ONLY_OPTIONS:
            skip = True
            continue
        if arg.split("=", 1)[0] in _HOST_ONLY_OPTIONS or arg == "--detach":
            continue
        kept.append(arg)
    if deployment.worker_unit and deployment.beat_unit and "--beat" not in kept and "-B" not in kept:
        kept.append("--beat")
    return shlex.join([Path(args[0]).name, *kept])


def secrets_body(deployment: Deployment, site_config: SiteConfig, password: str) -> str:
    """The site's .env: every variable of the old .env the containers keep, plus the new database's."""
    carried, _ = carried_env(deployment.env)
    values = dict(carried)
    if "DATABASE_URL" in deployment.env:
        values["DATABASE_URL"] = (
            f"postgres://{site_config.db_user}:{quote(password, safe='')}@postgres:5432/{site_config.db_name}"
        )
    values["DJANGO_DB_PASSWORD"] = password
    values["POSTGRES_PASSWORD"] = password
    lines = [
        "# Secrets for this site's containers. Never printed by sumbg.",
        f"# Carried over by `sumbg adopt` from {deployment.source / '.env'} (values unchanged).",
    ]
    for key, value in values.items():
        if "\n" in value:
            raise UsageError(f"{key} in the old .env spans several lines; sumbg cannot carry it over")
        if _SAFE_ENV_VALUE.fullmatch(value):
            lines.append(f"{key}={value}")
        elif "'" not in value:
            lines.append(f"{key}='{value}'")  # a literal for Compose: no $ interpolation
        else:
            raise UsageError(
                f"{key} in the old .env contains both a single quote and other special characters; "
                "sumbg cannot hand it to Compose unchanged (change the value, then adopt)"
            )
    return "\n".join(lines) + "\n"


def runbook_constraints(venv: Path) -> build.Constraints | None:
    """The image of an adopted site installs what the runbook deployment runs: its venv's versions as
    constraints (and its git dependencies' commits). A version this image's Python cannot take is
    released and said, as with [build] lock = "live"."""
    installed = pydeps.venv_dependencies(venv) if venv.is_dir() else []
    if not installed:
        return None
    origin = f"the versions installed in {venv} (the runbook deployment)"
    return build.Constraints(
        pins=tuple(pydeps.pins(installed, origin)),
        source=origin,
        relax=True,
        git_commits=tuple((d.key, d.commit) for d in installed if d.commit and len(d.commit) == 40),
    )


def edge_address(ctx: Context) -> str:
    bind = ctx.host.edge.bind
    return f"{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{ctx.host.edge.http_port}"


def host_caddy_target(https_port: int, domain: str) -> Target:
    return Target("host Caddy", f"https://127.0.0.1:{https_port}", domain, sni=True)


def old_app_target(app_address: str, domain: str) -> Target:
    """The old app server itself (not through any Caddy), as the host Caddy reached it."""
    if app_address.startswith("unix:"):
        return unix_socket_target("old app", app_address[len("unix:") :], domain)
    return Target("old app", f"http://{probe_address(app_address)}", domain)


def caddy_runner(ctx: Context) -> CaddyRunner:
    """Caddy as sumbg ships it (the edge's image), run once in a throwaway container to read the
    host Caddy's configuration: whatever Caddy the host runs, the reading is the same."""

    def run(script: str, args: list[str], scratch: Path, mount_at: Path) -> tuple[int, str, str]:
        result = ctx.engine.run_oneoff(
            ctx.host.images.caddy, ["sh", "-c", script, "sh", *args], volumes=[(str(scratch), str(mount_at), "rw")]
        )
        return result.returncode, result.stdout, result.stderr

    return run


# =================================================================== adopt


@dataclass
class Window:
    """The cutover window: from the 503 page going up until sumbg answers through the host Caddy."""

    started: float | None = None
    seconds: float | None = None


def adopt(ctx: Context, slug: str, options: AdoptOptions) -> dict:
    naming.validate_slug(slug)
    for name in options.domains:
        naming.validate_domain(name)
    named_site_file = options.paths.caddy_dir / "sites-enabled" / f"sum-{slug}.caddy"
    if named_site_file.is_file() and MANAGED_MARK in named_site_file.read_text(errors="replace"):
        raise _written_by_sumbg(named_site_file, slug)
    ctx.engine.ping()  # the host Caddy's files are read by Caddy in a container
    deployment = read_deployment(options.source, slug, options.paths, caddy=caddy_runner(ctx), domains=options.domains)
    for name in deployment.domains:
        naming.validate_domain(name)
    if deployment.checkout.changed:
        raise UsageError(
            f"{deployment.source / 'app'} has local edits not in any commit "
            f"({', '.join(deployment.checkout.changed[:5])}): sumbg would deploy "
            f"{deployment.checkout.commit[:12]} without them; commit and push them, then adopt"
        )
    if MANAGED_MARK in deployment.caddy_site_file.read_text():
        raise _written_by_sumbg(deployment.caddy_site_file, slug)
    if options.dump_file and not options.dump_file.is_file():
        raise UsageError(f"--dump {options.dump_file} is not a file")
    site_dir = ctx.host.site_dir(slug)
    if (site_dir / "state.json").exists() and ctx.site(slug).records.load_state().live:
        raise UsageError(f"site {slug} is already served by sumbg; nothing to adopt")
    refuse_domains_of_other_sites(ctx, slug, deployment.domains)
    if ctx.host.edge.http_port in deployment.caddy_ports:
        raise UsageError(
            f"the edge's http_port {ctx.host.edge.http_port} is the host Caddy's own port; the host "
            "Caddy stays in front, so give the edge other ports in sumbg.toml [edge]"
        )
    source_db = SourceDatabase(ctx.engine, ctx.host.images.postgres, deployment)
    if not options.dump_file:
        source_db.check_readable()
    if not (site_dir / ".env").exists():
        refuse_a_foreign_database(ctx, slug)
    ctx.check_repo_reachable(deployment.checkout.origin)

    ctx.host.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".adopt-{slug}-", dir=ctx.host.root))
    try:
        mirror = ctx.scratch_mirror(scratch / "repo.git", deployment.checkout.origin)
        mirror.sync()
        try:
            resolved = mirror.resolve(deployment.checkout.commit)
        except SumbgError:
            raise UsageError(
                f"the deployed commit {deployment.checkout.commit[:12]} is not in its origin "
                f"{deployment.checkout.origin}: push it, then adopt"
            ) from None
        files = mirror.list_files(resolved.commit)
        project = gitrepo.detect_project(files)
        if not project:
            raise UsageError(
                f"cannot find the Django project in {deployment.checkout.commit[:12]} "
                "(manage.py beside <project>/wsgi.py)"
            )
        config = SiteConfig(
            slug=slug,
            domain=deployment.domains[0],
            aliases=deployment.domains[1:],
            repo=gitrepo.normalise_repo(deployment.checkout.origin),
            project=project,
            settings_module=deployment.settings_module or f"{project}.settings.production",
            wsgi=wsgi_of(deployment.web_unit.exec_start) or f"{project}.wsgi:application",
            worker_command=worker_command_of(deployment),
            caddy=CaddySettings(behind_proxy=True),
            notes=f"adopted from {deployment.source} ({deployment.checkout.commit[:12]})",
        )
        pin = gitrepo.sum_core_pin(mirror.read_file(resolved.commit, "requirements.txt"))
        tags = mirror.tags_at(resolved.commit)
        # The release's name when the deployed commit is exactly one tag, so upgrades read "v1.0.0 -> v1.1.0".
        ref = tags[0] if len(tags) == 1 else f"adopted-{resolved.commit[:12]}"
        site = Site(ctx.host, config)
        if not options.dry_run:
            site.prepare_dirs()
            site.replace_mirror(scratch / "repo.git")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _, warnings = carried_env(deployment.env)
    warnings += [
        f"{deployment.caddy_site_file.name}: {what} is not kept in the file sumbg writes in its place"
        for what in (deployment.caddy_site.not_kept if deployment.caddy_site else ())
    ]
    image = build.image_spec(slug, gitrepo.Resolved(ref=ref, commit=resolved.commit), pin)
    plan = adopt_plan(ctx, site, deployment, image, source_db, options)
    if options.dry_run:
        described = plan.describe()
        described.update({"dry_run": True, "warnings": warnings, "deployment": deployment.facts()})
        ctx.reporter.line(f"sumbg adopt {slug} --dry-run: {len(plan.steps)} steps, nothing changed")
        ctx.reporter.line(
            f"  the old app: {', '.join(u.name for u in deployment.units)}; it answers on "
            f"{deployment.app_address}, behind {deployment.caddy_site_file} ({', '.join(deployment.domains)})"
        )
        for step in plan.steps:
            ctx.reporter.line(f"  {step.name}: {step.summary}")
        for warning in warnings:
            ctx.reporter.line(f"  warning: {warning}")
        return described
    for warning in warnings:
        ctx.reporter.line(f"warning: {warning}")
    atomic_write(site.dir / "site.toml", render_site_toml(config))
    existing = site.read_secrets() if site.secrets_file.exists() else {}
    password = existing.get("POSTGRES_PASSWORD") or secrets.token_urlsafe(24)
    atomic_write(site.secrets_file, secrets_body(deployment, config, password), mode=0o600)
    site.write_app_env()
    with site.lock().acquire(command=f"sumbg adopt {slug}"):
        refuse_if_interrupted(site, site.records.load_state())
        result = ctx.execute(plan, site, f"adopt {slug} --from {deployment.source}")
    window = result.get("cutover_window_seconds")
    ctx.reporter.line(
        f"{slug} is served by sumbg ({COLOUR}); cutover window {window:.2f}s. The old deployment "
        f"is stopped and disabled, not deleted: `sumbg adopt --undo {slug}` puts it back"
    )
    return result


def _written_by_sumbg(site_file: Path, slug: str) -> UsageError:
    return UsageError(
        f"{site_file} was written by sumbg (an adoption that did not finish, or a "
        f"site already adopted): run `sumbg recover {slug}` or `sumbg status {slug}`"
    )


def adopt_plan(
    ctx: Context,
    site: Site,
    deployment: Deployment,
    image: build.ImageSpec,
    source_db: SourceDatabase,
    options: AdoptOptions,
) -> Plan:
    slug = site.slug
    stacks = ctx.stacks(site)
    services = RunbookServices()
    preview = preview_target(ctx.host.edge, site.config.domain)
    host_caddy = host_caddy_target(deployment.caddy_ports[1], deployment.domains[0])
    site_file = deployment.caddy_site_file
    kept = site.dir / KEPT_DIR / site_file.name
    window = Window()
    owner = (APP_UID, APP_UID) if os.geteuid() == 0 else None

    def import_database(run: Run, final: bool) -> dict:
        name = f"{slug}_{utc_stamp()}_adopted{'' if final else '-first'}"
        if options.dump_file:
            if final:
                return {"reason": f"imported {options.dump_file.name} already; writes after it are not carried"}
            name += _dump_suffix(options)
            shutil.copy2(options.dump_file, site.backups_dir / name)
            before = after = None
        else:
            name += ".dump"
            if final:  # nothing writes any more: one count, in the same container as the dump
                before = after = source_db.dump(site.backups_dir, name, count=True)
            else:
                before = source_db.row_counts()
                source_db.dump(site.backups_dir, name)
                after = source_db.row_counts()
        database = stacks.database()
        database.swap_in(database.load_into_scratch(f"/backups/{name}"))
        copy = database.row_counts()
        checked = {"backup": name, "tables": len(copy), "rows": sum(copy.values())}
        if before is not None:
            problems = compare_counts(before, copy, source_after=None if final else after)
            if problems:
                raise CheckFailed(
                    f"the imported copy differs from {deployment.database.describe()}: {problems[0]}",
                    output_tail="\n".join(problems[:20]),
                )
            checked["changing_tables"] = sorted(t for t in before if after.get(t) != before[t])
        if run.state.adoption is not None:
            run.state.adoption.backup = name
            run.save_state()
        return checked

    def import_media(final: bool) -> dict:
        copied = (
            sync_tree(deployment.media_dir, site.media_dir, owner=owner) if deployment.media_dir.is_dir() else (0, 0)
        )
        source, target = tree_stats(deployment.media_dir), tree_stats(site.media_dir)
        if final and source != target:
            raise CheckFailed(
                f"media differ after the copy: {source[0]} files ({source[1]} bytes) in "
                f"{deployment.media_dir}, {target[0]} ({target[1]} bytes) in {site.media_dir}"
            )
        return {"copied_files": copied[0], "copied_bytes": copied[1], "files": target[0], "bytes": target[1]}

    def check_preview(run: Run) -> dict:
        ctx.edge.files.write_colour(slug, "preview", COLOUR)
        with ctx.prober() as prober:
            health = prober.wait_healthy(preview, site.config.health_timeout, expect_version=expected_version(image))
            checks = [prober.check(preview, check) for check in site.config.smoke_checks]
        return {"health": health.status, "checks": len(checks)}

    # ---------------------------------------------------------------- before the old site is touched
    def record(run: Run):
        run.state.slug = slug
        run.state.stand_down()
        run.state.adoption = adoption = AdoptionRecord(
            status=ADOPTION_IMPORTING,
            source=str(deployment.source),
            commit=deployment.checkout.commit,
            mode="proxy",
            caddy_site_file=str(site_file),
            kept=str(kept),
            units=[u.name for u in deployment.units],
            app_address=deployment.app_address,
            database=deployment.database.describe(),
            media=str(deployment.media_dir),
            caddy_ports=list(deployment.caddy_ports),
            systemd_dir=str(options.paths.systemd_dir.absolute()),
            caddy_dir=str(options.paths.caddy_dir.absolute()),
        )
        run.save_state()

        def mark_failed() -> None:
            adoption.status = ADOPTION_FAILED
            run.save_state()

        run.on_failure("record the adoption as failed (the old site serves as before)", mark_failed)
        return {"units": [u.name for u in deployment.units]}

    def data(run: Run):
        run.on_failure(
            f"remove {naming.data_project(slug)} and its volumes (an imported copy)",
            lambda: ctx.engine.compose_down(site.data_project(), volumes=True),
        )
        stacks.start_data()

    def first_import(run: Run):
        return import_database(run, final=False)

    def first_media(run: Run):
        return import_media(final=False)

    first = first_colour_steps(
        ctx,
        site,
        image,
        with_worker=False,
        preview=COLOUR,
        migrate_note="The database is an imported copy; the old one is untouched.",
        constraints=runbook_constraints(deployment.source / "venv"),
    )

    # ---------------------------------------------------------------- the window
    def maintenance(run: Run):
        kept.parent.mkdir(parents=True, exist_ok=True)
        if MANAGED_MARK not in site_file.read_text():  # never keep our own 503 page as "the original"
            shutil.copy2(site_file, kept)
        assert run.state.adoption is not None  # the record step wrote it
        run.state.adoption.status = ADOPTION_CUTTING_OVER
        run.save_state()
        run.on_failure(
            f"put back {site_file} and reload the host Caddy",
            lambda: (shutil.copy2(kept, site_file), services.reload_caddy()),
        )
        window.started = time.monotonic()
        atomic_write(
            site_file, caddy.render_host_maintenance(slug, deployment.domains, deployment.tls_lines, kept=str(kept))
        )
        services.reload_caddy()
        with ctx.prober() as prober:
            answer = prober.request(host_caddy, "/")
        if answer.status != 503:
            raise CheckFailed(f"the host Caddy does not show the maintenance page: {answer.describe()}")
        return {"host_caddy": answer.status}

    def stop_old(run: Run):
        names = [u.name for u in deployment.units]
        for name in names:
            run.on_failure(f"start {name} again", lambda name=name: services.start(name))
        services.stop(*names)
        return {"stopped": names}

    def final_import(run: Run):
        return import_database(run, final=True)

    def final_media(run: Run):
        return import_media(final=True)

    def recheck(run: Run):
        return check_preview(run)

    def cutover(run: Run):
        atomic_write(
            site_file,
            caddy.render_host_proxy(
                slug,
                deployment.domains,
                deployment.tls_lines,
                edge_address=edge_address(ctx),
                kept=str(kept),
                since=utc_now(),
                encodings=deployment.caddy_site.encodings if deployment.caddy_site else (),
                headers=deployment.caddy_site.headers if deployment.caddy_site else (),
            ),
        )
        services.reload_caddy()
        with ctx.prober() as prober:
            health = prober.wait_healthy(host_caddy, 30, expect_version=expected_version(image))
        window.seconds = round(time.monotonic() - window.started, 3)
        run.notes["cutover_window_seconds"] = window.seconds
        run.forget_cleanups(durable_too=True)  # visitors are on sumbg now: never put the old site back
        return {"host_caddy": health.answer.status, "window_seconds": window.seconds}

    def settle(run: Run):
        disabled = []
        for unit in deployment.units:
            try:
                services.disable(unit.name)
                disabled.append(unit.name)
            except SumbgError as exc:
                run.say(f"could not disable {unit.name}: {exc.message}; it may start again at boot")
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=options.undo_days)
        run.state.deploy_first(slug, COLOUR, release_record(image, ctx.labelled_dependencies(image.tag)))
        adoption = run.state.adoption
        assert adoption is not None  # the record step wrote it
        adoption.mark(ADOPTION_ADOPTED)
        adoption.undo_until = until.strftime("%Y-%m-%dT%H:%M:%SZ")
        adoption.cutover_window_seconds = window.seconds
        adoption.disabled = disabled
        run.save_state()
        return {"disabled": disabled, "undo_until": adoption.undo_until}

    def move_queued_tasks(run: Run) -> dict:
        url = deployment.env.get("CELERY_BROKER_URL", "")
        if not (deployment.worker_unit or deployment.beat_unit) or not url.startswith(("redis://", "rediss://")):
            return {"outcome": "skipped", "reason": "no Celery worker on a Redis broker"}
        moved: dict[str, int] = {}
        try:
            broker = SourceBroker(ctx.engine, ctx.host.images.redis, url)
            messages = broker.queued()
            for key, _ in messages:
                moved[key.decode()] = moved.get(key.decode(), 0) + 1
            if moved:
                pushed = ctx.engine.exec(
                    site.redis_container, ["redis-cli", "-n", "1", "--pipe"], input=as_rpush_commands(messages)
                )
                if pushed.returncode != 0 or "errors: 0" not in pushed.stdout:
                    raise BackupError(
                        "sumbg's broker did not take the queued messages", output_tail=tail(pushed.output)
                    )
                broker.drop(sorted(moved))
        except SumbgError as exc:
            run.say(
                f"the Celery tasks queued in the old broker were not moved: {exc.message}; they are still "
                f"there ({url.split('@')[-1]})"
            )
            return {"outcome": "warning", "reason": exc.message}
        return {"moved": moved}

    def tasks(run: Run):
        try:
            return move_queued_tasks(run)
        finally:
            # Started once its queue holds what the old worker left: nothing runs twice, nothing never.
            stacks.start_worker(COLOUR, image.tag, live=True)

    src = deployment.source
    return Plan(
        "adopt",
        slug,
        (
            Step("record", f"note in state.json what is adopted from {src}", record),
            Step("data", f"start {naming.data_project(slug)} (Postgres, Redis)", data),
            first["build"],
            Step(
                "import",
                f"dump {deployment.database.describe()} (the site stays up) and import it; compare rows per table",
                first_import,
            ),
            Step("media", f"copy {deployment.media_dir} into {site.media_dir}", first_media),
            first["migrate"],
            first["static"],
            first["start"],
            first["edge"],
            Step(
                "check",
                "health and smoke checks through the preview listener, before the old site is touched",
                check_preview,
            ),
            Step(
                "maintenance",
                f"cutover window opens: {site_file.name} answers 503 (Retry-After); the host Caddy reloads gracefully",
                maintenance,
            ),
            Step("stop-old", f"stop {', '.join(u.name for u in deployment.units)} (no more writes)", stop_old),
            Step("final-import", "dump the last writes and import them; rows per table must be equal", final_import),
            Step("final-media", "copy media added since; files and bytes must be equal", final_media),
            Step("recheck", "health and smoke checks through the preview listener again", recheck),
            Step(
                "cutover",
                f"{site_file.name} becomes a reverse proxy to the edge ({edge_address(ctx)}); confirmed "
                "through the host Caddy: the window closes",
                cutover,
            ),
            Step("settle", "record the site as adopted; disable the old units (kept, never deleted)", settle),
            Step("tasks", "move the Celery tasks still queued in the old broker to sumbg's; start the worker", tasks),
        ),
        facts={
            "from": str(src),
            "commit": deployment.checkout.commit,
            "domains": list(deployment.domains),
            "colour": COLOUR,
            "mode": "proxy",
        },
    )


def _dump_suffix(options: AdoptOptions) -> str:
    name = options.dump_file.name if options.dump_file else ""
    for suffix in (".sql.gz", ".sql", ".dump"):
        if name.endswith(suffix):
            return suffix
    raise UsageError(f"--dump {name}: expected a .dump, .sql or .sql.gz file (backup_db.sh writes .sql.gz)")


# =================================================================== undo


def undo(ctx: Context, slug: str, *, force: bool = False) -> dict:
    site = ctx.site(slug)
    stacks = ctx.stacks(site)
    services = RunbookServices()
    with site.lock().acquire(command=f"sumbg adopt --undo {slug}"):
        state = site.records.load_state()
        refuse_if_interrupted(site, state)
        adoption = state.adoption
        if adoption is None or adoption.status != ADOPTION_ADOPTED:
            raise UsageError(f"site {slug} was not adopted by sumbg (or its adoption was already undone)")
        if not force and (adoption.undo_until or "") < utc_now():
            raise UsageError(
                f"the undo period of {slug} ended at {adoption.undo_until}; pass --force to put the "
                "old deployment back anyway"
            )
        if adoption.mode == "takeover":
            raise UsageError(
                f"the edge took the host Caddy's ports after {slug} was adopted; the host Caddy is "
                "stopped and cannot take the site back: start it by hand first (see README)"
            )
        live_record = state.live_record
        live_commit = live_record.commit if live_record else None
        if live_commit != adoption.commit and not force:
            raise UsageError(
                f"{slug} now runs {live_commit and live_commit[:12]}, not the adopted "
                f"{(adoption.commit or '')[:12]}: the old deployment's code may not work on this "
                f"database's schema; roll back to the adopted release first, or pass --force"
            )
        site_file, kept = Path(adoption.caddy_site_file or ""), Path(adoption.kept or "")
        source = Path(adoption.source or "")
        if not kept.is_file():
            raise UsageError(f"{kept} (the host Caddy site file sumbg replaced) is missing; cannot undo")
        ctx.engine.ping()
        # Read as it was before the adoption: the original site file in place of sumbg's.
        deployment = read_deployment(
            source,
            slug,
            RunbookPaths(systemd_dir=Path(adoption.systemd_dir or ""), caddy_dir=Path(adoption.caddy_dir or "")),
            caddy=caddy_runner(ctx),
            domains=site.config.domains,
            replaced={site_file: kept.read_bytes()},
        )
        source_db = SourceDatabase(ctx.engine, ctx.host.images.postgres, deployment)
        source_db.check_readable()
        live = state.live
        assert live is not None and live_record is not None  # adopted: a colour is live
        host_caddy = host_caddy_target(deployment.caddy_ports[1], deployment.domains[0])

        def maintenance(run: Run):
            run.on_failure(
                f"point {site_file.name} at the edge again",
                lambda: (shutil.copy2(proxy_copy, site_file), services.reload_caddy()),
            )
            shutil.copy2(site_file, proxy_copy)
            atomic_write(
                site_file, caddy.render_host_maintenance(slug, deployment.domains, deployment.tls_lines, kept=str(kept))
            )
            services.reload_caddy()

        def stop_workers(run: Run):
            stopped = [c for c in naming.COLOURS if stacks.stop_worker(c)]
            run.on_failure("start the worker again", lambda: stacks.start_worker(live, live_record.image, live=True))
            return {"stopped": stopped}

        def copy_back(run: Run):
            taken = stacks.backup(stacks.backup_name("undo-adopt"))
            copy = stacks.database().row_counts()
            source_db.load(site.backups_dir, taken.path.name)
            problems = compare_counts(copy, source_db.row_counts())
            if problems:
                raise CheckFailed(
                    f"the old database differs from sumbg's after the copy back: {problems[0]}",
                    output_tail="\n".join(problems[:20]),
                )
            return {"backup": taken.path.name, "tables": len(copy), "rows": sum(copy.values())}

        def media_back(run: Run):
            stat = deployment.media_dir.stat() if deployment.media_dir.exists() else None
            owner = (stat.st_uid, stat.st_gid) if stat and os.geteuid() == 0 else None
            files, size = sync_tree(site.media_dir, deployment.media_dir, owner=owner)
            return {"copied_files": files, "copied_bytes": size}

        def start_old(run: Run):
            for unit in deployment.units:
                services.enable(unit.name)
                services.start(unit.name)
            with ctx.prober() as prober:
                health = prober.wait_healthy(old_app_target(deployment.app_address, deployment.domains[0]), 60)
            return {"started": [u.name for u in deployment.units], "health": health.status}

        def caddy_back(run: Run):
            shutil.copy2(kept, site_file)
            services.reload_caddy()
            with ctx.prober() as prober:
                health = prober.wait_healthy(host_caddy, 30)
            run.forget_cleanups(durable_too=True)
            return {"host_caddy": health.answer.status}

        def retire(run: Run):
            return stand_down(ctx, site, run, status="undone")

        proxy_copy = site.dir / KEPT_DIR / f"{site_file.name}.sumbg-proxy"
        plan = Plan(
            "adopt-undo",
            slug,
            (
                Step("maintenance", f"{site_file.name} answers 503 while the data goes back", maintenance),
                Step("stop-workers", "stop sumbg's worker (no more writes)", stop_workers),
                Step(
                    "copy-back",
                    f"dump sumbg's database and load it into {deployment.database.describe()} "
                    "(one transaction); rows per table must be equal",
                    copy_back,
                ),
                Step("media-back", f"copy media added since into {deployment.media_dir}", media_back),
                Step("start-old", f"enable and start {', '.join(u.name for u in deployment.units)}", start_old),
                Step(
                    "caddy-back",
                    f"put back the original {site_file.name}; confirmed through the host Caddy",
                    caddy_back,
                ),
                Step("retire", "remove sumbg's colours and edge route; keep the data volume and records", retire),
            ),
            facts={"from": str(source), "colour": live},
        )
        return ctx.execute(plan, site, f"adopt --undo {slug}")


def stand_down(ctx: Context, site: Site, run: Run, *, status: str) -> dict:
    """sumbg's side of an adopted site, gone but for its data: colours, edge route and data stack
    removed (the volume kept), state.json saying no colour is live and what became of the adoption."""
    stacks = ctx.stacks(site)
    for colour in naming.COLOURS:
        stacks.remove_colour(colour)
    ctx.edge.remove_site(site.slug)
    ctx.engine.compose_down(site.data_project(), volumes=False)
    run.state.stand_down()
    if run.state.adoption is not None:
        run.state.adoption.mark(status)
    run.save_state()
    return {"kept": f"{naming.data_project(site.slug)}-pgdata (volume) and {site.dir}"}


# =================================================================== recover


def recover_plan(ctx: Context, site: Site, state: SiteState) -> Plan:
    """An adoption that was killed before it finished: the old deployment goes back to serving, as
    it was, and sumbg's half-made site is stopped (its data volume kept: after the cutover began it
    may hold a write or two that reached sumbg)."""
    adoption = state.adoption
    assert adoption is not None  # recover hands over only a site whose adoption is in progress
    slug = site.slug
    services = RunbookServices()
    site_file, kept = Path(adoption.caddy_site_file or ""), Path(adoption.kept or "")

    def old_site_back(run: Run):
        actions = []
        if adoption.status == ADOPTION_CUTTING_OVER:
            for unit in adoption.units or []:
                services.start(unit)
                actions.append(f"started {unit}")
            if kept.is_file():
                shutil.copy2(kept, site_file)
                services.reload_caddy()
                actions.append(f"put back {site_file}")
            if adoption.app_address:
                with ctx.prober() as prober:
                    health = prober.wait_healthy(old_app_target(adoption.app_address, site.config.domain), 60)
                actions.append(f"the old app answers on {adoption.app_address} ({health.status})")
        return {"actions": actions}

    def stop_ours(run: Run):
        return stand_down(ctx, site, run, status="failed")

    return Plan(
        "recover",
        slug,
        (
            Step(
                "old-site",
                "start the old units again, put back the host Caddy site file, confirm the old app answers",
                old_site_back,
            ),
            Step("ours", "stop sumbg's half-made colour, remove its edge route (data volume kept)", stop_ours),
        ),
        facts={"interrupted": state.operation.to_json() if state.operation else None, "adoption": adoption.status},
    )


# =================================================================== takeover


def takeover(ctx: Context, paths: RunbookPaths, caddy_data: Path, *, dry_run: bool = False) -> dict:
    """The edge takes the host Caddy's ports once every site the host Caddy serves was adopted:
    the host Caddy's certificates, ACME accounts and local CA go into the edge's storage first,
    so nothing is re-issued; then, in one measured window, the host Caddy stops and the edge
    is started afresh on its ports, ending TLS itself. A failure puts everything back."""
    caddy_dir = paths.caddy_dir.absolute()
    main = caddy_dir / "Caddyfile"
    if not main.is_file():
        raise UsageError(f"{main} does not exist: give the host Caddy's folder with --caddy-dir")
    enabled = sorted(p for p in (caddy_dir / "sites-enabled").glob("*") if p.is_file())
    adopted: dict[Path, tuple[SiteConfig, AdoptionRecord]] = {}
    for config in ctx.site_configs():
        record = Site(ctx.host, config).records.load_state().adoption
        if record is not None and record.status == ADOPTION_ADOPTED and record.mode == "proxy":
            adopted[Path(record.caddy_site_file or "")] = (config, record)
    others = [p.name for p in enabled if p not in adopted]
    if others:
        raise UsageError(
            f"the host Caddy also serves {', '.join(others)}, which sumbg has not adopted: adopt "
            "those first, or keep the host Caddy in front"
        )
    if not adopted:
        raise UsageError(f"no site adopted through {paths.caddy_dir} is live on sumbg (sumbg adopt first)")
    if not caddy_data.is_dir():
        raise UsageError(
            f"--caddy-data {caddy_data} is not a folder (the host Caddy's data directory, with certificates/ and acme/)"
        )
    ctx.engine.ping()
    # The sites' TLS as the host Caddy had it: each adopted site's original file in place of sumbg's.
    kept = {path: Path(record["kept"]) for path, (_, record) in adopted.items()}
    missing = [str(k) for k in kept.values() if not k.is_file()]
    if missing:
        raise UsageError(f"{missing[0]} (the host Caddy site file sumbg replaced) is missing")
    host_caddy = read_host_caddy(
        caddy_dir, caddy_runner(ctx), replaced={path: k.read_bytes() for path, k in kept.items()}
    )
    ports = host_caddy.ports
    if ctx.host.edge.preview_port in ports:
        raise UsageError(f"the edge's preview_port {ctx.host.edge.preview_port} is one of the host Caddy's ports")
    read_sites = [host_caddy.site(path) for path in adopted]
    internal = all(site.tls_mode == "internal" for site in read_sites)
    email = next((site.email for site in read_sites if site.email), "") or host_caddy.email
    settings: dict[str, str | int] = {
        "http_port": ports[0],
        "https_port": ports[1],
        "tls": "internal" if internal else "auto",
    }
    if email and not internal:
        settings["acme_email"] = email
    sites = [config for config, _ in adopted.values()]
    facts = {"ports": list(ports), "edge": settings, "sites": [c.slug for c in sites], "caddy_data": str(caddy_data)}
    if dry_run:
        ctx.reporter.line(
            f"sumbg takeover --dry-run: the edge would take ports {ports[0]}/{ports[1]} "
            f"(tls {settings['tls']}) for {', '.join(c.slug for c in sites)}; nothing changed"
        )
        return {"operation": "takeover", "dry_run": True, **facts}
    services = RunbookServices()
    https = ports[1]
    before = {name: served_certificate("127.0.0.1", https, name) for c in sites for name in c.domains}
    first = ctx.site(sites[0].slug)
    saved: dict[Path, str] = {}
    state = {"window": None, "ctx": ctx}

    def sites_answer_through_the_host_caddy() -> None:
        # The last undo: after the host Caddy and the edge are back, every site must answer again.
        with ctx.prober() as prober:
            for config in sites:
                site = ctx.site(config.slug)
                state_now = site.records.load_state()
                prober.wait_healthy(
                    host_caddy_target(https, config.domain),
                    30,
                    expect_version=colour_version(state_now.live_record),
                )

    def certificates(run: Run):
        run.on_failure("confirm every site answers through the host Caddy again", sites_answer_through_the_host_caddy)
        return {"imported": ctx.edge.import_storage(caddy_data)}

    def stop_host_caddy(run: Run):
        run.on_failure("start the host Caddy again", lambda: services.start("caddy"))
        state["window"] = time.monotonic()
        services.stop("caddy")

    def put_back(*, restart: bool) -> None:
        for path, text in saved.items():
            atomic_write(path, text)
        old = Context(load_host(ctx.host.root), ctx.reporter)
        old.edge.apply(old.all_sites(), reload=False)
        if restart:
            old.edge.recreate()

    def start_edge(run: Run):
        # Undone before the host Caddy starts again: the ports must be free for it.
        run.on_failure("start the edge on its old ports again", lambda: put_back(restart=True))
        state["ctx"].edge.recreate()
        return {"ports": list(ports)}

    def prepare(run: Run):
        run.on_failure("put sumbg.toml, the sites' site.toml and the edge config back", lambda: put_back(restart=False))
        saved[ctx.host.root / "sumbg.toml"] = set_edge_settings(ctx.host.root, settings)
        for config in sites:
            path = ctx.host.site_dir(config.slug) / "site.toml"
            # One key edited in place: the operator's other edits and comments stay.
            saved[path] = set_site_settings(path, {"caddy.behind_proxy": False})
        new = Context(load_host(ctx.host.root), ctx.reporter)
        # Validated and written now, read when the edge starts afresh inside the window: the
        # running edge keeps serving the sites plainly behind the host Caddy until then.
        changed = new.edge.apply(new.all_sites(), reload=False)
        state["ctx"] = new
        return {"changed": changed}

    def confirm(run: Run):
        new = state["ctx"]
        with new.prober() as prober:
            for config in sites:
                site = new.site(config.slug)

                prober.wait_healthy(
                    live_target(new.host.edge, site.config),
                    30,
                    expect_version=colour_version(site.records.load_state().live_record),
                )
        seconds = round(time.monotonic() - state["window"], 3)
        run.notes["takeover_window_seconds"] = seconds
        after = {name: served_certificate("127.0.0.1", https, name) for name in before}
        kept = sorted(name for name in before if before[name] and before[name] == after[name])
        run.notes["certificates_kept"] = kept
        return {
            "window_seconds": seconds,
            "certificates_kept": kept,
            "certificates_new": sorted(set(before) - set(kept)),
        }

    def settle(run: Run):
        run.forget_cleanups(durable_too=True)
        try:
            services.disable("caddy")
        except SumbgError as exc:
            run.say(f"could not disable the host Caddy: {exc.message}; it would fail to start at boot (ports taken)")
        for config in sites:
            site = ctx.site(config.slug)
            record_state = site.records.load_state() if site.slug != first.slug else run.state
            if record_state.adoption is not None:
                record_state.adoption.mode = "takeover"
            if site.slug == first.slug:
                run.save_state()
            else:
                site.records.save_state(record_state)
                site.records.append(
                    {
                        "event": "note",
                        "operation": "takeover",
                        "reason": f"the edge took ports {ports[0]}/{ports[1]} from the host Caddy "
                        f"(recorded in {first.slug}'s history)",
                    }
                )

    plan = Plan(
        "takeover",
        first.slug,
        (
            Step(
                "certificates",
                f"copy certificates/, acme/ and pki/ from {caddy_data} into the edge's storage",
                certificates,
            ),
            Step(
                "prepare",
                f"edge settings {settings} in sumbg.toml, the sites' [caddy] behind_proxy = false; the "
                "edge config rendered and validated, not yet loaded",
                prepare,
            ),
            Step("stop-host-caddy", "the window opens: stop the host Caddy (its ports free)", stop_host_caddy),
            Step("start-edge", "start the edge afresh on those ports, ending TLS itself", start_edge),
            Step(
                "confirm",
                "each site's /health/ through the edge over TLS: the window closes; certificates compared",
                confirm,
            ),
            Step("settle", "disable the host Caddy (kept, not removed)", settle),
        ),
        facts=facts,
    )
    with ctx.edge.lock().acquire(timeout=60):
        result = ctx.execute(plan, first, "takeover")
    ctx.reporter.line(
        f"the edge serves {', '.join(c.slug for c in sites)} on {ports[0]}/{ports[1]}; window "
        f"{result['takeover_window_seconds']:.2f}s; certificates kept: "
        f"{len(result['certificates_kept'])} of {len(before)}"
    )
    return result
