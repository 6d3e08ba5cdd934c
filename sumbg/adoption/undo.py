"""`sumbg adopt --undo`: put an adopted site's old deployment back, with sumbg's data; and the
plan that puts back an adoption killed half way (handed to `sumbg recover` by the CLI).

The undo copies sumbg's database and the media added since into the old deployment under the
host Caddy's 503 page, starts and enables the old units, puts back the host Caddy's original
site file, and stands sumbg's side of the site down (its data volume and records are kept).
The steps are module-level functions over `UndoRun` (and `HalfAdoptionRun` for recover); the
old host is reached through the Context, as adopt.py reaches it.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters import caddy
from sumbg.adapters.probe import Target
from sumbg.adoption.runbook_host import Deployment, RunbookPaths, host_caddy_target, old_app_target, read_deployment
from sumbg.adoption.source import SourceDatabase, compare_counts
from sumbg.errors import CheckFailed, UsageError
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.opening import opened
from sumbg.ops.seams import HostServices, SiteStacks
from sumbg.site.site import Site
from sumbg.site.state import ADOPTION_ADOPTED, ADOPTION_CUTTING_OVER, AdoptionRecord, ColourRecord, SiteState
from sumbg.util import atomic_write, sync_tree, utc_now


def undo(ctx: Context, slug: str, *, force: bool = False) -> dict[str, Any]:
    site = ctx.site(slug)
    with opened(ctx, site, f"adopt --undo {slug}") as state:
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
        if not kept.is_file():
            raise UsageError(f"{kept} (the host Caddy site file sumbg replaced) is missing; cannot undo")
        ctx.engine.ping()
        # Read as it was before the adoption: the original site file in place of sumbg's.
        deployment = read_deployment(
            Path(adoption.source or ""),
            slug,
            RunbookPaths(systemd_dir=Path(adoption.systemd_dir or ""), caddy_dir=Path(adoption.caddy_dir or "")),
            caddy=ctx.caddy_runner(),
            domains=site.config.domains,
            replaced={site_file: kept.read_bytes()},
        )
        source_db = SourceDatabase(ctx.engine, ctx.host.images.postgres, deployment.database)
        source_db.check_readable()
        live = state.live
        assert live is not None and live_record is not None  # adopted: a colour is live
        plan = undo_plan(ctx, site, deployment, source_db, live=live, live_record=live_record, kept=kept)
        return ctx.execute(plan, site, f"adopt --undo {slug}")


@dataclass(frozen=True)
class UndoRun:
    """What the undo's steps share."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    services: HostServices
    deployment: Deployment
    source_db: SourceDatabase
    live: str
    live_record: ColourRecord
    kept: Path  # the original host Caddy site file, kept by the adoption

    @property
    def site_file(self) -> Path:
        return self.deployment.caddy_site_file

    @property
    def proxy_copy(self) -> Path:
        """sumbg's proxy site file, kept while the data goes back (put back if that fails)."""
        return self.kept.parent / f"{self.site_file.name}.sumbg-proxy"

    @property
    def host_caddy(self) -> Target:
        return host_caddy_target(self.deployment.caddy_ports[1], self.deployment.domains[0])


def maintenance(ud: UndoRun, run: Run) -> StepResult:
    deployment = ud.deployment
    run.on_failure(f"point {ud.site_file.name} at the edge again", functools.partial(point_at_the_edge, ud))
    shutil.copy2(ud.site_file, ud.proxy_copy)
    atomic_write(
        ud.site_file,
        caddy.render_host_maintenance(ud.site.slug, deployment.domains, deployment.tls_lines, kept=str(ud.kept)),
    )
    ud.services.reload_caddy()
    return {}


def point_at_the_edge(ud: UndoRun) -> None:
    shutil.copy2(ud.proxy_copy, ud.site_file)
    ud.services.reload_caddy()


def stop_workers(ud: UndoRun, run: Run) -> StepResult:
    for colour in naming.COLOURS:
        keep_colour_logs(ud.stacks, run, colour, ("worker",))
    stopped = [c for c in naming.COLOURS if ud.stacks.stop_worker(c)]
    run.on_failure("start the worker again", lambda: ud.stacks.start_worker(ud.live, ud.live_record.image, live=True))
    return {"stopped": stopped}


def copy_back(ud: UndoRun, run: Run) -> StepResult:
    taken = ud.stacks.backup(ud.stacks.backup_name("undo-adopt"))
    copy = ud.stacks.database().row_counts()
    ud.source_db.load(ud.site.backups_dir, taken.path.name)
    problems = compare_counts(copy, ud.source_db.row_counts())
    if problems:
        raise CheckFailed(
            f"the old database differs from sumbg's after the copy back: {problems[0]}",
            output_tail="\n".join(problems[:20]),
        )
    return {"backup": taken.path.name, "tables": len(copy), "rows": sum(copy.values())}


def media_back(ud: UndoRun, run: Run) -> StepResult:
    media = ud.deployment.media_dir
    stat = media.stat() if media.exists() else None
    owner = (stat.st_uid, stat.st_gid) if stat and os.geteuid() == 0 else None
    files, size = sync_tree(ud.site.media_dir, media, owner=owner)
    return {"copied_files": files, "copied_bytes": size}


def start_old(ud: UndoRun, run: Run) -> StepResult:
    deployment = ud.deployment
    for unit in deployment.units:
        ud.services.enable(unit.name)
        ud.services.start(unit.name)
    with ud.ctx.prober() as prober:
        health = prober.wait_healthy(old_app_target(deployment.app_address, deployment.domains[0]), 60)
    return {"started": [u.name for u in deployment.units], "health": health.status}


def caddy_back(ud: UndoRun, run: Run) -> StepResult:
    shutil.copy2(ud.kept, ud.site_file)
    ud.services.reload_caddy()
    with ud.ctx.prober() as prober:
        health = prober.wait_healthy(ud.host_caddy, 30)
    run.forget_cleanups(durable_too=True)
    return {"host_caddy": health.answer.status}


def retire(ud: UndoRun, run: Run) -> StepResult:
    return stand_down(ud.ctx, ud.site, run, status="undone")


def undo_plan(
    ctx: Context,
    site: Site,
    deployment: Deployment,
    source_db: SourceDatabase,
    *,
    live: str,
    live_record: ColourRecord,
    kept: Path,
) -> Plan:
    ud = UndoRun(
        ctx=ctx,
        site=site,
        stacks=ctx.stacks(site),
        services=ctx.runbook_services(),
        deployment=deployment,
        source_db=source_db,
        live=live,
        live_record=live_record,
        kept=kept,
    )

    def step(name: str, summary: str, action: Callable[[UndoRun, Run], StepResult]) -> Step:
        return Step(name, summary, functools.partial(action, ud))

    site_file = deployment.caddy_site_file
    return Plan(
        "adopt-undo",
        site.slug,
        (
            step("maintenance", f"{site_file.name} answers 503 while the data goes back", maintenance),
            step("stop-workers", "stop sumbg's worker (no more writes)", stop_workers),
            step(
                "copy-back",
                f"dump sumbg's database and load it into {deployment.database.describe()} "
                "(one transaction); rows per table must be equal",
                copy_back,
            ),
            step("media-back", f"copy media added since into {deployment.media_dir}", media_back),
            step("start-old", f"enable and start {', '.join(u.name for u in deployment.units)}", start_old),
            step(
                "caddy-back",
                f"put back the original {site_file.name}; confirmed through the host Caddy",
                caddy_back,
            ),
            step("retire", "remove sumbg's colours and edge route; keep the data volume and records", retire),
        ),
        facts={"from": str(deployment.source), "colour": live},
    )


def stand_down(ctx: Context, site: Site, run: Run, *, status: str) -> StepResult:
    """sumbg's side of an adopted site, gone but for its data: colours, edge route and data stack
    removed (the volume kept), state.json saying no colour is live and what became of the adoption."""
    stacks = ctx.stacks(site)
    for colour in naming.COLOURS:
        keep_colour_logs(stacks, run, colour)
        stacks.remove_colour(colour)
    ctx.edge.remove_site(site.slug)
    ctx.engine.compose_down(site.data_project(), volumes=False)
    run.state.stand_down()
    if run.state.adoption is not None:
        run.state.adoption.mark(status)
    run.save_state()
    return {"kept": f"{naming.data_project(site.slug)}-pgdata (volume) and {site.dir}"}


# =================================================================== an adoption killed half way


@dataclass(frozen=True)
class HalfAdoptionRun:
    """What the steps that put back a half-made adoption share."""

    ctx: Context
    site: Site
    services: HostServices
    adoption: AdoptionRecord

    @property
    def site_file(self) -> Path:
        return Path(self.adoption.caddy_site_file or "")

    @property
    def kept(self) -> Path:
        return Path(self.adoption.kept or "")


def old_site_back(ha: HalfAdoptionRun, run: Run) -> StepResult:
    adoption = ha.adoption
    actions = []
    if adoption.status == ADOPTION_CUTTING_OVER:
        for unit in adoption.units or []:
            ha.services.start(unit)
            actions.append(f"started {unit}")
        if ha.kept.is_file():
            shutil.copy2(ha.kept, ha.site_file)
            ha.services.reload_caddy()
            actions.append(f"put back {ha.site_file}")
        if adoption.app_address:
            with ha.ctx.prober() as prober:
                health = prober.wait_healthy(old_app_target(adoption.app_address, ha.site.config.domain), 60)
            actions.append(f"the old app answers on {adoption.app_address} ({health.status})")
    return {"actions": actions}


def stop_ours(ha: HalfAdoptionRun, run: Run) -> StepResult:
    return stand_down(ha.ctx, ha.site, run, status="failed")


def recover_plan(ctx: Context, site: Site, state: SiteState) -> Plan:
    """An adoption that was killed before it finished: the old deployment goes back to serving, as
    it was, and sumbg's half-made site is stopped (its data volume kept: after the cutover began it
    may hold a write or two that reached sumbg)."""
    adoption = state.adoption
    assert adoption is not None  # recover hands over only a site whose adoption is in progress
    ha = HalfAdoptionRun(ctx, site, ctx.runbook_services(), adoption)
    return Plan(
        "recover",
        site.slug,
        (
            Step(
                "old-site",
                "start the old units again, put back the host Caddy site file, confirm the old app answers",
                functools.partial(old_site_back, ha),
            ),
            Step(
                "ours",
                "stop sumbg's half-made colour, remove its edge route (data volume kept)",
                functools.partial(stop_ours, ha),
            ),
        ),
        facts={"interrupted": state.operation.to_json() if state.operation else None, "adoption": adoption.status},
    )
