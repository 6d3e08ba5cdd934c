"""An upgrade's rehearsal: the new release's migrations on a copy, and the live release on the result.

1. The backup just taken is restored into a scratch database in the site's Postgres.
2. The LIVE release is started beside the site as `sum-<slug>-rehearsal`, pointed at
   that copy (with its own Redis databases), and must pass the site's smoke checks and
   `[migrations] read_paths` through Caddy (the preview listener's rehearsal route).
3. The NEW release migrates the copy (what would run before the switch), timed.
4. The live release is checked again: every check it now fails is evidence that the
   release is breaking. Then the after-switch migrations run on the copy too, so a
   failure there is found before anything touched the live database.

The scratch database and the stand-in stack are always removed; `state.json` names
them while they exist, so `sumbg recover` removes them after a SIGKILL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg import failpoints, naming
from sumbg.adapters.probe import Target, rehearsal_target
from sumbg.config import SmokeCheck
from sumbg.errors import CheckFailed, MigrationFailed, tail
from sumbg.ops.context import Context
from sumbg.ops.executor import Run
from sumbg.ops.policy import BREAKING, COMPATIBLE, Compatibility, Evidence, error_line
from sumbg.ops.seams import HttpProber, SiteStacks
from sumbg.site.database import REHEARSAL_SUFFIX
from sumbg.site.site import Site
from sumbg.site.stacks import PendingMigrations, applied_count, parse_phases, phase_command
from sumbg.site.state import ColourRecord, RehearsalRecord


def checks_for(site: Site) -> tuple[SmokeCheck, ...]:
    extra = tuple(
        SmokeCheck(path=path)
        for path in site.config.migrations.read_paths
        if all(check.path != path for check in site.config.smoke_checks)
    )
    return (*site.config.smoke_checks, *extra)


@dataclass(frozen=True)
class Rehearsal:
    """What a rehearsal measured."""

    compatibility: Compatibility
    phases: PendingMigrations  # what was pending on the copy (the live database a moment ago)
    applied: int
    checks: tuple[SmokeCheck, ...]
    timings: dict[str, float]

    def record(self) -> dict[str, Any]:
        """For the history: what ran, the checks, and how long each part took."""
        return {"applied": self.applied, "checks": [check.describe() for check in self.checks], **self.timings}


def rehearse(
    ctx: Context,
    site: Site,
    run: Run,
    *,
    new_image: str,
    live: str,
    live_record: ColourRecord,
    backup_file: Path,
) -> Rehearsal:
    stacks = ctx.stacks(site)
    if ctx.edge.files.site(site.slug) in ctx.edge.pending_changes({site.slug: site.config}):
        raise CheckFailed(
            f"the edge's Caddy configuration for {site.slug} is older than this sumbg (it has no "
            f"rehearsal route): run `sumbg apply` (validates, then reloads), or pass --no-rehearsal"
        )
    database = stacks.database()
    copy = database.name + REHEARSAL_SUFFIX
    run.state.rehearsal = RehearsalRecord(database=copy, project=naming.app_project(site.slug, naming.REHEARSAL))
    run.save_state()
    timings: dict[str, float] = {}
    try:
        clock = time.monotonic()
        database.load_into_scratch(f"/backups/{backup_file.name}", REHEARSAL_SUFFIX)
        timings["restore_seconds"] = _since(clock)

        clock = time.monotonic()
        stacks.start_rehearsal_web(live_record.image, copy, live)
        target = rehearsal_target(ctx.host.edge, site.config.domain)
        checks = checks_for(site)
        with ctx.prober() as prober:
            prober.wait_healthy(target, site.config.health_timeout, expect_version=live_record.version)
            before = _failures(prober, target, checks, stacks)
        timings["start_seconds"] = _since(clock)
        if before:
            raise CheckFailed(
                f"the live release {live_record.ref} already fails on an unmigrated copy of its own "
                f"database ({before[0].describe()}), so the rehearsal cannot judge the new migrations; fix the "
                f"check in site.toml ([smoke], [migrations] read_paths) or pass --no-rehearsal",
                output_tail=stacks.rehearsal_logs(20),
            )

        phases = _phases(stacks, new_image, copy, "plan")
        clock = time.monotonic()
        if phases.after_switch:
            output = _manage(stacks, new_image, copy, phase_command("pre"), "before-switch")
        else:
            output = _manage(stacks, new_image, copy, ["migrate", "--noinput"], "")
        timings["migrate_seconds"] = _since(clock)
        failpoints.reached("rehearsal:copy-migrated")
        applied = applied_count(output)

        with ctx.prober() as prober:
            after = _failures(prober, target, checks, stacks)
        compatibility = Compatibility(BREAKING if after else COMPATIBLE, tuple(after))

        if phases.after_switch:
            clock = time.monotonic()
            _manage(stacks, new_image, copy, ["migrate", "--noinput"], "after-switch")
            timings["after_switch_seconds"] = _since(clock)
    finally:
        stacks.remove_rehearsal()
        database.drop_if_exists(copy)
        run.state.rehearsal = None
        run.save_state()
    return Rehearsal(compatibility, phases, applied, checks, timings)


def _since(clock: float) -> float:
    return round(time.monotonic() - clock, 3)


def _failures(prober: HttpProber, target: Target, checks: tuple[SmokeCheck, ...], stacks: SiteStacks) -> list[Evidence]:
    failed = []
    for check in checks:
        _, answer, problem = prober.evaluate(target, check)
        if problem:
            failed.append((check, answer, problem))
    if not failed:
        return []
    line = error_line(stacks.rehearsal_logs(80))
    return [Evidence(check.describe(), answer.status, problem, line) for check, answer, problem in failed]


def _phases(stacks: SiteStacks, image: str, database: str, mode: str) -> PendingMigrations:
    output = _manage(stacks, image, database, phase_command(mode), "listing of the")
    try:
        return parse_phases(output)
    except ValueError:
        raise MigrationFailed(
            "could not list the release's pending migrations in the rehearsal", output_tail=tail(output)
        ) from None


def _manage(stacks: SiteStacks, image: str, database: str, args: list[str], which: str) -> str:
    result = stacks.rehearsal_manage(image, database, args)
    if result.returncode != 0:
        what = f"{which} migrations" if which else "migrations"
        raise MigrationFailed(
            f"the {what} of {image} failed in the rehearsal on a copy of the database; the live database "
            f"was never touched",
            command=["manage.py", *(args[:1])],
            returncode=result.returncode,
            output_tail=tail(result.output),
        )
    return result.stdout
