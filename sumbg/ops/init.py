"""`sumbg init`: register a site and deploy its first colour (blue)."""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters import build, gitrepo
from sumbg.adapters.probe import live_target
from sumbg.config import SiteConfig, refuse_changes_to_kept_config, render_site_toml
from sumbg.errors import CertificateFailed, UsageError
from sumbg.ops import dependencies
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.seams import SiteStacks
from sumbg.ops.switch import say_degraded
from sumbg.site.site import Site
from sumbg.site.stacks import applied_count
from sumbg.site.state import WORKER_READY, expected_version, release_record
from sumbg.site.worker import parse_worker_command
from sumbg.util import atomic_write


def init(
    ctx: Context,
    slug: str,
    repo: str,
    domains: list[str] | str,
    ref: str | None,
    *,
    project: str | None = None,
    worker: bool = False,
    worker_command: str | None = None,
    db_publish_port: int | None = None,
    environment: str | None = None,
    env: tuple[tuple[str, str], ...] = (),
    constraints: build.Constraints | None = None,
) -> dict[str, Any]:
    """Register a site and deploy it (blue). Options left None take the defaults, or, when an
    earlier init of this slug failed after writing site.toml, that file's values (edits kept).
    `constraints`: the versions to build with when this host has none recorded (init --from-backup)."""
    naming.validate_slug(slug)
    domains = [domains] if isinstance(domains, str) else list(domains)
    if not domains:
        raise UsageError("give the site's domain with --domain (repeat it for more names)")
    for name in domains:
        naming.validate_domain(name)
    if len(set(domains)) != len(domains):
        raise UsageError("--domain names the same domain twice")
    for key, _ in env:
        naming.validate_env_name(key)
    if worker and worker_command:
        raise UsageError("give --worker (the Celery worker) or --worker-command, not both")
    if ref is not None:
        naming.validate_ref(ref)
    if (ctx.host.site_dir(slug) / "state.json").exists():
        existing = ctx.site(slug)
        live = existing.records.load_state().live
        if live:
            existing.records.append(
                {"event": "noop", "operation": "init", "reason": "site already initialised; nothing changed"}
            )
            ctx.reporter.line(f"site {slug} is already initialised (live colour {live}); nothing changed")
            return {"operation": "init", "site": slug, "outcome": "noop", "reason": "already initialised", "live": live}
    kept = ctx.site(slug).config if (ctx.host.site_dir(slug) / "site.toml").exists() else None
    refuse_domains_of_other_sites(ctx, slug, domains)
    repo = gitrepo.normalise_repo(repo)
    if kept:
        if worker:
            worker_command = celery_worker_command(kept.project)
        refuse_changes_to_kept_config(
            kept,
            repo=repo,
            domains=domains,
            project=project,
            worker_command=worker_command,
            db_publish_port=db_publish_port,
            environment=environment,
            env=env,
        )
    ctx.check_repo_reachable(repo)
    ctx.engine.ping()
    if not (ctx.host.site_dir(slug) / ".env").exists():
        refuse_a_foreign_database(ctx, slug)
    ctx.networks.check_room(slug)  # a pool the host routes, or a full one: refused before anything exists

    # Validate everything about the repo before creating anything under the root.
    ctx.host.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".init-{slug}-", dir=ctx.host.root))
    try:
        mirror = ctx.scratch_mirror(scratch / "repo.git", repo)
        mirror.sync()
        resolved = mirror.resolve(ref or "HEAD")
        files = mirror.list_files(resolved.commit)
        if kept:
            config = kept
        else:
            project = project or gitrepo.detect_project(files)
            if not project:
                raise UsageError(
                    f"cannot find the Django project at {resolved.ref} "
                    "(manage.py beside <project>/wsgi.py); pass --project"
                )
            if not project.isidentifier():
                raise UsageError(f"--project {project!r} is not a Python package name")
            if worker:
                worker_command = celery_worker_command(project)
            config = SiteConfig(
                slug=slug,
                domain=domains[0],
                aliases=tuple(domains[1:]),
                repo=repo,
                environment=environment or "production",
                project=project,
                settings_module=f"{project}.settings.production",
                wsgi=f"{project}.wsgi:application",
                worker_command=worker_command or "",
                db_publish_port=db_publish_port or 0,
                extra_env=tuple(env),
            )
        site = Site(ctx.host, config)
        site.prepare_dirs()
        site.replace_mirror(scratch / "repo.git")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mirror = ctx.mirror(site)
    if kept:
        ctx.reporter.line(f"using {site.dir / 'site.toml'} from the earlier init of {slug} as it is (edits kept)")
    else:
        atomic_write(site.dir / "site.toml", render_site_toml(config))
    domain = config.domain
    if not site.secrets_file.exists():
        site.write_new_secrets()
    site.write_app_env()

    pin = gitrepo.sum_core_pin(mirror.read_file(resolved.commit, "requirements.txt"))
    image = build.image_spec(slug, resolved, pin)
    stacks = ctx.stacks(site)
    colour = naming.COLOURS[0]

    def data(run: Run) -> StepResult:
        stacks.start_data()
        return {}

    first = first_colour_steps(
        ctx,
        site,
        image,
        migrate_note="This is the first deploy: no data existed before.",
        with_worker=True,
        preview=naming.other_colour(colour),
        constraints=constraints,
    )

    def health(run: Run) -> StepResult:
        with ctx.prober() as prober:
            answer = prober.wait_healthy(
                live_target(ctx.host.edge, site.config),
                site.config.health_timeout,
                expect_version=expected_version(image),
                on_wait=certificate_watch(ctx, site.config),
            )
        return {
            "health": answer.status,
            "version": answer.version,
            **say_degraded(run, "health", answer.failing_checks),
        }

    def worker_ready(run: Run) -> StepResult:
        ready = stacks.wait_worker_ready(colour)
        if ready.get("outcome") != "skipped":
            run.notes["worker_ready"] = True
        return ready

    def record(run: Run) -> StepResult:
        run.state.deploy_first(slug, colour, release_record(image, ctx.labelled_dependencies(image.tag)))
        if run.notes.pop("worker_ready", False):
            run.state.note_worker(colour, WORKER_READY)
        run.save_state()
        run.forget_cleanups()
        return {}

    plan = Plan(
        "init",
        slug,
        (
            Step("data", f"start {naming.data_project(slug)} (Postgres, Redis)", data),
            first["build"],
            first["migrate"],
            first["static"],
            first["start"],
            first["edge"],
            Step("health", f"wait for /health/ through Caddy (Host: {domain})", health),
            *(
                (
                    Step(
                        "worker",
                        f"wait until {naming.app_project(slug, colour)}'s worker is ready "
                        f"(running {config.worker.ready_after:g}s without a restart"
                        + (", answering `celery inspect ping`)" if _is_celery_worker(config) else ")"),
                        worker_ready,
                    ),
                )
                if config.worker_command
                else ()
            ),
            Step("record", "write state.json", record),
        ),
        facts={"ref": resolved.ref, "commit": resolved.commit, "sum_core": pin, "colour": colour},
    )
    with site.lock().acquire(command=f"sumbg init {slug}"):
        result = ctx.execute(plan, site, f"init {slug}")
    target = live_target(ctx.host.edge, site.config)
    result["url"] = target.base_url
    ctx.reporter.line(f"{slug} is live: curl -H 'Host: {domain}' -H 'X-Forwarded-Proto: https' {target.base_url}/")
    return result


@dataclass(frozen=True)
class FirstColour:
    """A site's first colour (blue), as init and adopt deploy it."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    image: build.ImageSpec
    migrate_note: str
    with_worker: bool
    preview: str  # what the preview file names once the edge routes the site
    colour: str = naming.COLOURS[0]
    # adopt: the versions the runbook deployment runs; init --from-backup: those the backup recorded
    constraints: build.Constraints | None = None


def build_first(fc: FirstColour, run: Run) -> StepResult:
    """The first image: the site's [build] lock still applies (a lock file; nothing is live to lock to),
    and a commit this site built before (a re-run init) is rebuilt with its recorded versions."""
    ctx, site, image = fc.ctx, fc.site, fc.image
    mirror = ctx.mirror(site)
    recorded = dependencies.recorded_build(run.state, site.records.history(), image.commit)
    constraints = fc.constraints if fc.constraints is not None and recorded is None else None
    constraints = constraints or dependencies.constraints_for(
        image,
        lock=site.config.build.lock or ctx.host.build_lock,
        recorded=recorded,
        mirror=mirror,
        live=None,
        live_ref=None,
        live_requirements=None,
        new_requirements=mirror.read_file(image.commit, "requirements.txt") or "",
    )
    if constraints.source:
        run.say(f"resolving against {constraints.source}")
    return fc.ctx.build_image(fc.site, fc.image, constraints=constraints).record


def migrate_first(fc: FirstColour, run: Run) -> StepResult:
    return {"applied": applied_count(fc.stacks.migrate(fc.colour, fc.image.tag, fc.migrate_note))}


def collect_static(fc: FirstColour, run: Run) -> StepResult:
    return {"summary": fc.stacks.collectstatic(fc.colour, fc.image.tag)}


def start_first(fc: FirstColour, run: Run) -> StepResult:
    def remove_it() -> None:
        keep_colour_logs(fc.stacks, run, fc.colour)
        fc.stacks.remove_colour(fc.colour)

    run.on_failure(f"remove {naming.app_project(fc.site.slug, fc.colour)}", remove_it)
    fc.stacks.start_web(fc.colour, fc.image.tag)
    if fc.with_worker:
        fc.stacks.start_worker(fc.colour, fc.image.tag, live=False)
    fc.stacks.apply_cpu_weights(fc.colour)  # the site's only colour: it is the one to keep fast
    return {}


def route_on_edge(fc: FirstColour, run: Run) -> StepResult:
    ctx, slug = fc.ctx, fc.site.slug
    ctx.edge.files.write_colour(slug, "live", fc.colour)
    ctx.edge.files.write_colour(slug, "preview", fc.preview)
    with ctx.edge.lock().acquire(timeout=60):
        changed = ctx.edge.apply({**ctx.all_sites(), slug: fc.site.config})
        run.on_failure(f"remove {slug} from the edge Caddy", lambda: ctx.edge.remove_site(slug))
        ctx.edge.ensure_up()
    return {"changed": changed}


def first_colour_steps(
    ctx: Context,
    site: Site,
    image: build.ImageSpec,
    *,
    migrate_note: str,
    with_worker: bool,
    preview: str,
    constraints: build.Constraints | None = None,
) -> dict[str, Step]:
    """A site's first colour (blue): build, migrate, static, start, edge; by name, for init and adopt."""
    fc = FirstColour(ctx, site, ctx.stacks(site), image, migrate_note, with_worker, preview, constraints=constraints)
    slug, colour = site.slug, fc.colour
    commit = image.labels["sumbg.commit"]
    worker = "" if with_worker else " (its worker later)"
    return {
        "build": Step(
            "build",
            f"build {image.tag} from {image.labels['sumbg.ref']} ({commit[:12]})",
            functools.partial(build_first, fc),
        ),
        "migrate": Step(
            "migrate", f"migrate in a one-off container of {image.tag}", functools.partial(migrate_first, fc)
        ),
        "static": Step(
            "static", f"collectstatic into {site.static_dir(colour)}", functools.partial(collect_static, fc)
        ),
        "start": Step("start", f"start {naming.app_project(slug, colour)}{worker}", functools.partial(start_first, fc)),
        "edge": Step(
            "edge",
            f"route {site.config.domain} through the edge Caddy to {colour}",
            functools.partial(route_on_edge, fc),
        ),
    }


def certificate_watch(ctx: Context, config: SiteConfig, every: float = 3.0) -> Callable[[], None] | None:
    """While a new site's first health check waits: stop at once, saying why, when the edge
    logs that it could not get a certificate for one of its domains (Caddy would retry for
    hours; the check would only say it timed out)."""
    if ctx.host.edge.tls != "auto" or config.caddy.behind_proxy:
        return None
    since, last = time.time(), [0.0]

    def look() -> None:
        if time.monotonic() - last[0] < every:
            return
        last[0] = time.monotonic()
        failure = ctx.edge.certificate_failure(config.domains, since)
        if failure:
            raise CertificateFailed(
                f"the edge could not get a TLS certificate for {failure}; check that the "
                f"domain's DNS names this host and that port 80 reaches it "
                f"(the site is taken off the edge; the others keep serving)"
            )

    return look


def refuse_domains_of_other_sites(ctx: Context, slug: str, domains: list[str] | tuple[str, ...]) -> None:
    """One domain, one site on a host: the edge could not route it to two."""
    for other in ctx.site_configs():
        shared = set(domains) & set(other.domains)
        if shared and other.slug != slug:
            raise UsageError(f"domain {sorted(shared)[0]} is already served by site {other.slug}")


def refuse_a_foreign_database(ctx: Context, slug: str) -> None:
    """A database volume left by an earlier site of this slug keeps that site's data and password:
    a new site would neither own the data nor be able to log in, so init stops before creating anything."""
    volume = f"{naming.data_project(slug)}-pgdata"
    if ctx.engine.volume_exists(volume):
        raise UsageError(
            f"a database volume {volume} from an earlier site {slug} exists and this site has no "
            f"secrets for it: put back that site's .env in {ctx.host.site_dir(slug)}, or remove the "
            f"volume (`docker volume rm {volume}`, its data is lost) and init again"
        )


def _is_celery_worker(config: SiteConfig) -> bool:
    return parse_worker_command(config.worker_command).celery_worker


def celery_worker_command(project: str) -> str:
    """The worker as a SUM site runs it (the boilerplate's Celery app is <project>/celery.py)."""
    return f"celery -A {project} worker --loglevel=INFO"
