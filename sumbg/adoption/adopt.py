"""`sumbg adopt`: take over a site deployed the runbook way.

Nothing on the old host changes until sumbg's first colour runs the commit the old app
runs, on an imported copy of its database and media, and has passed its checks through
the edge's preview listener. Then, in one measured window, the host Caddy answers the
site with a 503 page (Retry-After), the old units stop, the last writes are dumped and
imported, rows and media files are compared exactly, and the host Caddy's site file
becomes a reverse proxy to the edge (TLS and certificates stay where they are). Any
failure before that reload is confirmed puts the old site back as it was. The old
deployment is stopped and disabled, never deleted: `sumbg adopt --undo` (undo.py) copies
sumbg's data back into it and starts it again.

The steps are module-level functions over the adoption's run-data (`AdoptionRun`); the old
host is reached through the Context: its systemd (`ctx.runbook_services()`), its Caddy's
configuration (`ctx.caddy_runner()`), its database and broker (source.py, on `ctx.engine`),
the old app and the host Caddy's answers (`ctx.prober()`).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sumbg import naming
from sumbg.adapters import build, caddy, gitrepo, pydeps
from sumbg.adapters.probe import Target, preview_target
from sumbg.adoption.runbook_host import (
    Deployment,
    RunbookPaths,
    carried_env,
    host_caddy_target,
    read_deployment,
)
from sumbg.adoption.source import SourceBroker, SourceDatabase, as_rpush_commands, compare_counts
from sumbg.config import CaddySettings, SiteConfig, render_site_toml
from sumbg.errors import BackupError, CheckFailed, SumbgError, UsageError, tail
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.init import first_colour_steps, refuse_a_foreign_database, refuse_domains_of_other_sites
from sumbg.ops.opening import opened
from sumbg.ops.seams import HostServices, SiteStacks
from sumbg.site.site import APP_UID, Site
from sumbg.site.state import (
    ADOPTION_ADOPTED,
    ADOPTION_CUTTING_OVER,
    ADOPTION_FAILED,
    ADOPTION_IMPORTING,
    AdoptionRecord,
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


# =================================================================== pure decisions


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


def edge_address(ctx: Context) -> str:
    bind = ctx.host.edge.bind
    return f"{'127.0.0.1' if bind in ('0.0.0.0', '::') else bind}:{ctx.host.edge.http_port}"


# =================================================================== adopt


def adopt(ctx: Context, slug: str, options: AdoptOptions) -> dict[str, Any]:
    naming.validate_slug(slug)
    for name in options.domains:
        naming.validate_domain(name)
    named_site_file = options.paths.caddy_dir / "sites-enabled" / f"sum-{slug}.caddy"
    if named_site_file.is_file() and MANAGED_MARK in named_site_file.read_text(errors="replace"):
        raise _written_by_sumbg(named_site_file, slug)
    ctx.engine.ping()  # the host Caddy's files are read by Caddy in a container
    deployment = read_deployment(options.source, slug, options.paths, caddy=ctx.caddy_runner(), domains=options.domains)
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
    source_db = SourceDatabase(ctx.engine, ctx.host.images.postgres, deployment.database)
    if not options.dump_file:
        source_db.check_readable()
    if not (site_dir / ".env").exists():
        refuse_a_foreign_database(ctx, slug)
    ctx.networks.check_room(slug)
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
    with opened(ctx, site, f"adopt {slug}"):
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


@dataclass
class AdoptionRun:
    """What the adoption's steps share; the cutover window, once it opened and closed."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    services: HostServices
    deployment: Deployment
    image: build.ImageSpec
    source_db: SourceDatabase
    options: AdoptOptions
    kept: Path  # where the original host Caddy site file is kept, byte for byte
    owner: tuple[int, int] | None  # who owns the copied media (sumbg's app user, when run as root)
    window_started: float | None = None
    window_seconds: float | None = None

    @property
    def site_file(self) -> Path:
        return self.deployment.caddy_site_file

    @property
    def preview(self) -> Target:
        return preview_target(self.ctx.host.edge, self.site.config.domain)

    @property
    def host_caddy(self) -> Target:
        return host_caddy_target(self.deployment.caddy_ports[1], self.deployment.domains[0])


def import_database(ad: AdoptionRun, run: Run, *, final: bool) -> StepResult:
    """A dump of the old database imported into sumbg's, rows per table compared: while the old
    site serves (a table may change between the counts before and after the dump), or, `final`,
    once nothing writes any more (the counts must be equal)."""
    site, options = ad.site, ad.options
    name = f"{site.slug}_{utc_stamp()}_adopted{'' if final else '-first'}"
    before: dict[str, int] | None
    after: dict[str, int] | None
    if options.dump_file:
        if final:
            return {"reason": f"imported {options.dump_file.name} already; writes after it are not carried"}
        name += _dump_suffix(options)
        shutil.copy2(options.dump_file, site.backups_dir / name)
        before = after = None
    else:
        name += ".dump"
        if final:  # nothing writes any more: one count, in the same container as the dump
            before = after = ad.source_db.dump(site.backups_dir, name, count=True)
        else:
            before = ad.source_db.row_counts()
            ad.source_db.dump(site.backups_dir, name)
            after = ad.source_db.row_counts()
    database = ad.stacks.database()
    database.swap_in(database.load_into_scratch(f"/backups/{name}"))
    copy = database.row_counts()
    checked: StepResult = {"backup": name, "tables": len(copy), "rows": sum(copy.values())}
    if before is not None and after is not None:
        problems = compare_counts(before, copy, source_after=None if final else after)
        if problems:
            raise CheckFailed(
                f"the imported copy differs from {ad.deployment.database.describe()}: {problems[0]}",
                output_tail="\n".join(problems[:20]),
            )
        checked["changing_tables"] = sorted(t for t in before if after.get(t) != before[t])
    if run.state.adoption is not None:
        run.state.adoption.backup = name
        run.save_state()
    return checked


def import_media(ad: AdoptionRun, *, final: bool) -> StepResult:
    """The old media folder copied into sumbg's; `final`: files and bytes must then be equal."""
    old, ours = ad.deployment.media_dir, ad.site.media_dir
    copied = sync_tree(old, ours, owner=ad.owner) if old.is_dir() else (0, 0)
    source, target = tree_stats(old), tree_stats(ours)
    if final and source != target:
        raise CheckFailed(
            f"media differ after the copy: {source[0]} files ({source[1]} bytes) in "
            f"{old}, {target[0]} ({target[1]} bytes) in {ours}"
        )
    return {"copied_files": copied[0], "copied_bytes": copied[1], "files": target[0], "bytes": target[1]}


def check_preview(ad: AdoptionRun, run: Run) -> StepResult:
    ad.ctx.edge.files.write_colour(ad.site.slug, "preview", COLOUR)
    with ad.ctx.prober() as prober:
        health = prober.wait_healthy(
            ad.preview, ad.site.config.health_timeout, expect_version=expected_version(ad.image)
        )
        checks = [prober.check(ad.preview, check) for check in ad.site.config.smoke_checks]
    return {"health": health.status, "checks": len(checks)}


# ---------------------------------------------------------------- before the old site is touched


def record(ad: AdoptionRun, run: Run) -> StepResult:
    deployment, paths = ad.deployment, ad.options.paths
    run.state.slug = ad.site.slug
    run.state.stand_down()
    run.state.adoption = AdoptionRecord(
        status=ADOPTION_IMPORTING,
        source=str(deployment.source),
        commit=deployment.checkout.commit,
        mode="proxy",
        caddy_site_file=str(ad.site_file),
        kept=str(ad.kept),
        units=[u.name for u in deployment.units],
        app_address=deployment.app_address,
        database=deployment.database.describe(),
        media=str(deployment.media_dir),
        caddy_ports=list(deployment.caddy_ports),
        systemd_dir=str(paths.systemd_dir.absolute()),
        caddy_dir=str(paths.caddy_dir.absolute()),
    )
    run.save_state()
    run.on_failure("record the adoption as failed (the old site serves as before)", functools.partial(mark_failed, run))
    return {"units": [u.name for u in deployment.units]}


def mark_failed(run: Run) -> None:
    if run.state.adoption is not None:
        run.state.adoption.status = ADOPTION_FAILED
    run.save_state()


def start_data(ad: AdoptionRun, run: Run) -> StepResult:
    ctx, site = ad.ctx, ad.site
    run.on_failure(
        f"remove {naming.data_project(site.slug)} and its volumes (an imported copy)",
        lambda: ctx.engine.compose_down(site.data_project(), volumes=True),
    )
    ad.stacks.start_data()
    return {}


def first_import(ad: AdoptionRun, run: Run) -> StepResult:
    return import_database(ad, run, final=False)


def first_media(ad: AdoptionRun, run: Run) -> StepResult:
    return import_media(ad, final=False)


# ---------------------------------------------------------------- the window


def maintenance(ad: AdoptionRun, run: Run) -> StepResult:
    site_file, kept, deployment = ad.site_file, ad.kept, ad.deployment
    kept.parent.mkdir(parents=True, exist_ok=True)
    if MANAGED_MARK not in site_file.read_text():  # never keep our own 503 page as "the original"
        shutil.copy2(site_file, kept)
    assert run.state.adoption is not None  # the record step wrote it
    run.state.adoption.status = ADOPTION_CUTTING_OVER
    run.save_state()
    run.on_failure(f"put back {site_file} and reload the host Caddy", functools.partial(put_back_site_file, ad))
    ad.window_started = time.monotonic()
    atomic_write(
        site_file,
        caddy.render_host_maintenance(ad.site.slug, deployment.domains, deployment.tls_lines, kept=str(kept)),
    )
    ad.services.reload_caddy()
    with ad.ctx.prober() as prober:
        answer = prober.request(ad.host_caddy, "/")
    if answer.status != 503:
        raise CheckFailed(f"the host Caddy does not show the maintenance page: {answer.describe()}")
    return {"host_caddy": answer.status}


def put_back_site_file(ad: AdoptionRun) -> None:
    shutil.copy2(ad.kept, ad.site_file)
    ad.services.reload_caddy()


def stop_old(ad: AdoptionRun, run: Run) -> StepResult:
    names = [u.name for u in ad.deployment.units]
    for name in names:
        run.on_failure(f"start {name} again", functools.partial(ad.services.start, name))
    ad.services.stop(*names)
    return {"stopped": names}


def final_import(ad: AdoptionRun, run: Run) -> StepResult:
    return import_database(ad, run, final=True)


def final_media(ad: AdoptionRun, run: Run) -> StepResult:
    return import_media(ad, final=True)


def cutover(ad: AdoptionRun, run: Run) -> StepResult:
    deployment, served = ad.deployment, ad.deployment.caddy_site
    atomic_write(
        ad.site_file,
        caddy.render_host_proxy(
            ad.site.slug,
            deployment.domains,
            deployment.tls_lines,
            edge_address=edge_address(ad.ctx),
            kept=str(ad.kept),
            since=utc_now(),
            encodings=served.encodings if served else (),
            headers=served.headers if served else (),
        ),
    )
    ad.services.reload_caddy()
    with ad.ctx.prober() as prober:
        health = prober.wait_healthy(ad.host_caddy, 30, expect_version=expected_version(ad.image))
    assert ad.window_started is not None  # the maintenance step opened the window
    ad.window_seconds = round(time.monotonic() - ad.window_started, 3)
    run.notes["cutover_window_seconds"] = ad.window_seconds
    run.forget_cleanups(durable_too=True)  # visitors are on sumbg now: never put the old site back
    return {"host_caddy": health.answer.status, "window_seconds": ad.window_seconds}


def settle(ad: AdoptionRun, run: Run) -> StepResult:
    disabled = []
    for unit in ad.deployment.units:
        try:
            ad.services.disable(unit.name)
            disabled.append(unit.name)
        except SumbgError as exc:
            run.say(f"could not disable {unit.name}: {exc.message}; it may start again at boot")
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=ad.options.undo_days)
    run.state.deploy_first(ad.site.slug, COLOUR, release_record(ad.image, ad.ctx.labelled_dependencies(ad.image.tag)))
    adoption = run.state.adoption
    assert adoption is not None  # the record step wrote it
    adoption.mark(ADOPTION_ADOPTED)
    adoption.undo_until = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    adoption.cutover_window_seconds = ad.window_seconds
    adoption.disabled = disabled
    run.save_state()
    return {"disabled": disabled, "undo_until": adoption.undo_until}


def move_queued_tasks(ad: AdoptionRun, run: Run) -> StepResult:
    ctx, deployment = ad.ctx, ad.deployment
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
                ad.site.redis_container, ["redis-cli", "-n", "1", "--pipe"], input=as_rpush_commands(messages)
            )
            if pushed.returncode != 0 or "errors: 0" not in pushed.stdout:
                raise BackupError("sumbg's broker did not take the queued messages", output_tail=tail(pushed.output))
            broker.drop(sorted(moved))
    except SumbgError as exc:
        run.say(
            f"the Celery tasks queued in the old broker were not moved: {exc.message}; they are still "
            f"there ({url.split('@')[-1]})"
        )
        return {"outcome": "warning", "reason": exc.message}
    return {"moved": moved}


def tasks(ad: AdoptionRun, run: Run) -> StepResult:
    try:
        return move_queued_tasks(ad, run)
    finally:
        # Started once its queue holds what the old worker left: nothing runs twice, nothing never.
        ad.stacks.start_worker(COLOUR, ad.image.tag, live=True)


def adopt_plan(
    ctx: Context,
    site: Site,
    deployment: Deployment,
    image: build.ImageSpec,
    source_db: SourceDatabase,
    options: AdoptOptions,
) -> Plan:
    slug = site.slug
    site_file = deployment.caddy_site_file
    ad = AdoptionRun(
        ctx=ctx,
        site=site,
        stacks=ctx.stacks(site),
        services=ctx.runbook_services(),
        deployment=deployment,
        image=image,
        source_db=source_db,
        options=options,
        kept=site.dir / KEPT_DIR / site_file.name,
        owner=(APP_UID, APP_UID) if os.geteuid() == 0 else None,
    )
    first = first_colour_steps(
        ctx,
        site,
        image,
        with_worker=False,
        preview=COLOUR,
        migrate_note="The database is an imported copy; the old one is untouched.",
        constraints=runbook_constraints(deployment.source / "venv"),
    )

    def step(name: str, summary: str, action: Callable[[AdoptionRun, Run], StepResult]) -> Step:
        return Step(name, summary, functools.partial(action, ad))

    src = deployment.source
    return Plan(
        "adopt",
        slug,
        (
            step("record", f"note in state.json what is adopted from {src}", record),
            step("data", f"start {naming.data_project(slug)} (Postgres, Redis)", start_data),
            first["build"],
            step(
                "import",
                f"dump {deployment.database.describe()} (the site stays up) and import it; compare rows per table",
                first_import,
            ),
            step("media", f"copy {deployment.media_dir} into {site.media_dir}", first_media),
            first["migrate"],
            first["static"],
            first["start"],
            first["edge"],
            step(
                "check",
                "health and smoke checks through the preview listener, before the old site is touched",
                check_preview,
            ),
            step(
                "maintenance",
                f"cutover window opens: {site_file.name} answers 503 (Retry-After); the host Caddy reloads gracefully",
                maintenance,
            ),
            step("stop-old", f"stop {', '.join(u.name for u in deployment.units)} (no more writes)", stop_old),
            step("final-import", "dump the last writes and import them; rows per table must be equal", final_import),
            step("final-media", "copy media added since; files and bytes must be equal", final_media),
            step("recheck", "health and smoke checks through the preview listener again", check_preview),
            step(
                "cutover",
                f"{site_file.name} becomes a reverse proxy to the edge ({edge_address(ctx)}); confirmed "
                "through the host Caddy: the window closes",
                cutover,
            ),
            step("settle", "record the site as adopted; disable the old units (kept, never deleted)", settle),
            step("tasks", "move the Celery tasks still queued in the old broker to sumbg's; start the worker", tasks),
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
