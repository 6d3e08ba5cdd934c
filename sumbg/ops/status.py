"""The read-only views of a host: `sumbg status` (what runs and answers) and `sumbg releases`
(which tags a site could move to). `sumbg fleet` reads both, as JSON, over SSH."""

from __future__ import annotations

import re
import socket
from typing import Any

from sumbg import __version__, naming
from sumbg.adapters import gitrepo
from sumbg.adapters.gitdeps import redact_url
from sumbg.errors import LockHeld, NotFound, SumbgError, UsageError
from sumbg.lock import is_held
from sumbg.ops import agreement, offsite, reports
from sumbg.ops.context import Context
from sumbg.ops.dependencies import RecordedBuild, recorded_build
from sumbg.ops.rollback import rollback_target
from sumbg.site.site import Site
from sumbg.site.state import SiteState
from sumbg.site.worker import worker_problem


def status(ctx: Context, slug: str | None) -> list[dict[str, Any]]:
    if slug:
        slugs = [ctx.site(slug).slug]
    else:
        slugs = [path.parent.name for path in sorted(ctx.host.root.glob("*/site.toml"))]
    return [site_status(ctx, ctx.site(s)) for s in slugs]


def host_status(ctx: Context) -> dict[str, Any]:
    """Every site of this host, with what identifies the host (for the fleet's table)."""
    return {
        "sumbg": __version__,
        "host": socket.gethostname(),
        "root": str(ctx.host.root),
        "sites": status(ctx, None),
        "undelivered_events": undelivered_events(ctx, None),
        "network": host_network(ctx),
    }


def undelivered_events(ctx: Context, slug: str | None) -> list[dict[str, Any]]:
    """Notifications of the last days that did not reach a target (a site's, or the host's own:
    a fleet run's), newest first."""
    log = ctx.events.log
    return log.undelivered(site=slug) if slug else log.undelivered(host_only=True)


def host_network(ctx: Context) -> dict[str, Any]:
    """The address plan's settings and what is wrong with the plan itself."""
    plan = ctx.host.network
    return {"pool": plan.pool, "site_prefix": plan.site_prefix, "problems": ctx.networks.host_problems()}


def site_status(ctx: Context, site: Site) -> dict[str, Any]:
    state = site.records.load_state()
    live = state.live
    record = state.record(live)
    health: dict[str, Any] = {}
    agreed = agreement.Agreement()
    if live:
        agreed, answer = agreement.probe_and_check(ctx, site, state)
        health = {
            "http_status": answer.answer.status,
            "status": answer.status,
            "version": answer.version,
            "error": answer.answer.error or None,
            "failing_checks": answer.failing_checks,
        }
    operation = state.operation.to_json() if state.operation else None
    busy = is_held(site.dir / ".lock")
    interrupted = bool(operation) and not busy
    last = reports.last_deploy(site.records.history())
    workers, worker_problem = workers_view(ctx, site, live, busy=busy)
    backup = offsite.backup_status(ctx, site, state)
    return {
        "site": site.slug,
        "domain": site.config.domain,
        "domains": list(site.config.domains),
        "environment": site.config.environment,
        "notes": site.config.notes,
        "live": live,
        "previous": state.previous,
        "image": record.image if record else None,
        "ref": record.ref if record else None,
        "commit": record.commit if record else None,
        "sum_core": record.sum_core if record else None,
        "deployed_at": record.deployed_at if record else None,
        "colours": {colour: r.to_json() for colour, r in state.colours.items()},
        "health": health,
        "agreement": agreed.describe(),
        "caddy": {
            "live": ctx.edge.files.read_colour(site.slug, "live"),
            "preview": ctx.edge.files.read_colour(site.slug, "preview"),
        },
        "operation": operation,
        "interrupted": interrupted,
        "maintenance": ctx.edge.files.maintenance_on(site.slug),
        "last_deploy": {key: last.get(key) for key in ("operation", "outcome", "at", "from", "to", "reason")}
        if last
        else None,
        "last_deploy_outcome": reports.deploy_outcome(last),
        "rollback": rollback_view(ctx, site, state),
        "backup": backup,
        "undelivered_events": undelivered_events(ctx, site.slug),
        "workers": workers,
        "worker_problem": worker_problem,
        # What needs the operator: `sumbg status` exits 1 when a site it shows has any.
        "problems": [*agreed.problems, *([worker_problem] if worker_problem else []), *backup["problems"]],
        "network": ctx.networks.site_view(site.slug),
    }


def workers_view(ctx: Context, site: Site, live: str | None, *, busy: bool) -> tuple[dict[str, Any], str | None]:
    """Each colour's worker as Docker has it, and what is wrong with the live one's (nothing while
    an operation holds the site, e.g. a rollback's worker move in the background)."""
    stacks = ctx.stacks(site)
    views = {colour: stacks.worker_view(colour) for colour in naming.COLOURS}
    problem = worker_problem(views[live], live) if live and not busy else None
    return {colour: view.to_json() for colour, view in views.items()}, problem


def network_problems(ctx: Context) -> list[str]:
    """Every way this host's networks stray from the address plan, one line each, for a host check (a
    doctor): a pool the host routes, a site outside the plan or whose networks differ from its record.
    `status` shows the same, per site and for the host."""
    problems = list(ctx.networks.host_problems())
    for path in sorted(ctx.host.root.glob("*/site.toml")):
        slug = path.parent.name
        problems += [f"{slug}: {problem}" for problem in ctx.networks.site_view(slug)["problems"]]
    return problems


def rollback_view(ctx: Context, site: Site, state: SiteState) -> dict[str, Any]:
    """Where `sumbg rollback` would go, and whether it is instant (its colour still runs)."""
    try:
        target = rollback_target(state, site.slug)
    except UsageError as exc:
        return {"possible": False, "instant": False, "reason": exc.message}
    running = ctx.stacks(site).web_running(target)
    return {
        "possible": True,
        "colour": target,
        "ref": state.ref(target),
        "instant": running,
        **({} if running else {"reason": f"{target} was retired: a rollback starts it again first"}),
    }


# ------------------------------------------------------------------ releases

_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*)")


def release_key(tag: str, date: int) -> tuple[bool, tuple[int, ...], int]:
    """Newest first by version number (v1.10.0 after v1.9.0), then by tag date; a tag with no
    number sorts by its date below the numbered ones."""
    match = _VERSION.match(tag)
    number = tuple(int(part) for part in match.group(1).split(".")) if match else ()
    return (bool(number), number, date)


def releases(ctx: Context, slugs: list[str] | None, *, fetch: bool = True) -> list[dict[str, Any]]:
    """Each site's tags with the sum-core version each pins, newest first, after fetching its repo
    (a site busy with an operation is read from the copy sumbg already has, and says so)."""
    names = slugs or [config.slug for config in ctx.site_configs()]
    return [site_releases(ctx, ctx.site(slug), fetch=fetch) for slug in names]


def site_releases(ctx: Context, site: Site, *, fetch: bool) -> dict[str, Any]:
    live = site.records.load_state().live_record
    mirror = ctx.mirror(site)
    note = None
    if fetch:
        lock = site.lock()
        try:
            lock.acquire(timeout=0, command=f"sumbg releases {site.slug}")
        except LockHeld as exc:
            note = f"not fetched: {exc.message}"
        else:
            try:
                mirror.sync()
            except SumbgError as exc:
                note = f"not fetched: {exc.message}"
            finally:
                lock.release()
    tags: list[dict[str, Any]] = []
    pins: dict[str, str | None] = {}
    if mirror.exists():
        for tag, commit, date in mirror.tags():
            if commit not in pins:  # several tags often name one commit
                pins[commit] = gitrepo.sum_core_pin(mirror.read_file(commit, "requirements.txt"))
            tags.append({"tag": tag, "commit": commit, "date": date, "sum_core": pins[commit]})
    elif note is None:
        note = "no copy of the repository yet"
    tags.sort(key=lambda t: release_key(t["tag"], t["date"]), reverse=True)
    return {
        "site": site.slug,
        "repo": redact_url(site.config.repo),
        "live": {
            "ref": live.ref if live else None,
            "commit": live.commit if live else None,
            "sum_core": live.sum_core if live else None,
        },
        "fetched": fetch and note is None,
        "note": note,
        "tags": tags,
    }


def release_dependencies(ctx: Context, slug: str, ref: str) -> dict[str, Any]:
    """`sumbg releases SLUG --deps REF`: what REF's image holds, as this host recorded it when it built it
    (its colour's record, else the history's build step), else as its image's label says."""
    naming.validate_ref(ref)
    site = ctx.site(slug)
    state = site.records.load_state()
    commit = None
    mirror = ctx.mirror(site)
    if mirror.exists():
        try:
            commit = mirror.resolve(ref).commit
        except SumbgError:
            commit = None
    tag = naming.image_tag(site.slug, ref)
    found = recorded_build(state, site.records.history(), commit) if commit else None
    if found is None:
        labelled = ctx.labelled_dependencies(tag)
        if labelled is not None:
            found = RecordedBuild(labelled, ref, f"the label of {tag}")
    if found is None:
        raise NotFound(
            f"no dependencies are recorded for {ref} of {site.slug}: this host has not built it since sumbg records "
            f"them (an upgrade to it builds it; `sumbg upgrade {site.slug} {ref} --dry-run` shows the diff once "
            "its image exists)"
        )
    return {
        "site": site.slug,
        "ref": ref,
        "commit": commit,
        "image": tag,
        "recorded_in": found.where,
        "dependencies": [d.to_json() for d in found.dependencies],
    }
