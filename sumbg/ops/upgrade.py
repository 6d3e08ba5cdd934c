"""`sumbg upgrade`: the blue/green upgrade of a site to a git ref, as a plan of named steps.

preflight, build, backup, rehearsal (the new release's migrations on a copy of the
database, the live release checked on the result), migrate, start the idle colour
with the new release, smoke-test it through Caddy's preview listener, switch (the one
confirmed flip), move the worker, watch the live site (reverting by itself on a failure
that persists), then the migrations marked to run after the switch. Each step is a
function over the upgrade's run-data (`UpgradeRun`); whoever starts something registers
how to undo it, so a failure at any step leaves traffic on a healthy colour.
"""

from __future__ import annotations

import difflib
import functools
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters import build, gitrepo
from sumbg.adapters.probe import Target, live_target, preview_target
from sumbg.adapters.pydeps import Dependency
from sumbg.errors import (
    BreakingRelease,
    CheckFailed,
    DockerError,
    MigrationFailed,
    SumbgError,
    UsageError,
    WorkerNotReady,
)
from sumbg.ops import dependencies as deps
from sumbg.ops import policy as migration_policy
from sumbg.ops import rehearsal, workers
from sumbg.ops.backups import protected_backups
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.hooks import HookCall, configured, post_hook_step, pre_hook_step
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.opening import opened
from sumbg.ops.seams import SiteStacks
from sumbg.ops.switch import restart_rollback_target, say_degraded, switch_live
from sumbg.ops.watch import revert_after_switch, watch_live
from sumbg.site.site import Site
from sumbg.site.stacks import PendingMigrations, applied_count
from sumbg.site.state import (
    AFTER_SWITCH_FAILED,
    AFTER_SWITCH_PENDING,
    AFTER_SWITCH_RAN,
    AFTER_SWITCH_RUNNING,
    ColourRecord,
    expected_version,
    release_record,
)


@dataclass(frozen=True)
class UpgradeFacts:
    """What the upgrade moves from and to, read before anything changes."""

    live: str
    idle: str
    live_record: ColourRecord
    image: build.ImageSpec
    live_core: str | None
    new_core: str | None

    @property
    def new_ref(self) -> str:
        return str(self.image.labels["sumbg.ref"])

    @property
    def live_ref(self) -> str:
        return self.live_record.ref or self.live


def gather_upgrade(ctx: Context, site: Site, ref: str) -> UpgradeFacts:
    state = site.records.load_state()
    live, live_record = state.live, state.live_record
    if not live or live_record is None:
        raise UsageError(f"site {site.slug} has no live colour yet; run `sumbg init` first")
    mirror = ctx.mirror(site)
    mirror.sync()
    resolved = mirror.resolve(ref)
    new_core = gitrepo.sum_core_pin(mirror.read_file(resolved.commit, "requirements.txt"))
    return UpgradeFacts(
        live=live,
        idle=naming.other_colour(live),
        live_record=live_record,
        image=build.image_spec(site.slug, resolved, new_core),
        live_core=live_record.sum_core,
        new_core=new_core,
    )


@dataclass(frozen=True)
class MigrationChoices:
    """The operator's say in how an upgrade treats its migrations (see policy.py)."""

    rehearsal: bool = True
    maintenance: bool = False
    accept_breaking: bool = False


def upgrade(
    ctx: Context,
    slug: str,
    ref: str,
    *,
    dry_run: bool = False,
    allow_same_core: bool = False,
    lock_timeout: float = 0.0,
    watch: float | None = None,
    confirm: Any = None,
    migrations: MigrationChoices | None = None,
) -> dict[str, Any]:
    """`confirm`: asked with the plan before anything changes (only at a terminal); False cancels."""
    site = ctx.site(slug)
    naming.validate_ref(ref)
    choices = migrations or MigrationChoices()
    if choices.maintenance and choices.accept_breaking:
        raise UsageError("give --maintenance or --accept-breaking, not both")
    with opened(
        ctx,
        site,
        f"upgrade {slug} {ref}",
        lock_timeout=lock_timeout,
        dry_run=dry_run,
        refuse_disagreement=f"upgrade of {slug}",
    ):
        facts = gather_upgrade(ctx, site, ref)
        plan = upgrade_plan(
            ctx,
            site,
            facts,
            allow_same_core=allow_same_core,
            watch=site.config.watch_seconds if watch is None else watch,
            migrations=choices,
        )
        if dry_run:
            return dry_run_report(ctx, site, plan, facts)
        if confirm and not confirm(plan):
            raise SumbgError(f"upgrade of {slug} to {ref} cancelled; nothing was changed")
        return ctx.execute(plan, site, f"upgrade {slug} {ref}")


@dataclass
class UpgradeRun:
    """What the upgrade's steps share: the facts and choices, and what earlier steps found."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    facts: UpgradeFacts
    choices: MigrationChoices
    allow_same_core: bool
    watch: float
    backup_name: str
    # Found along the way.
    decision: migration_policy.Decision | None = None
    phases: PendingMigrations | None = None  # what the rehearsal found pending on the copy
    maintenance_since: float | None = None
    schema_breaks_live: bool = False
    after_switch: list[str] = field(default_factory=list)
    dependencies: list[Dependency] | None = None  # what the new image holds (recorded with the release)
    # What the new image lists as pending against the live database, right after the build; None: not known.
    pending_from_image: PendingMigrations | None = None

    @property
    def slug(self) -> str:
        return self.site.slug

    @property
    def rehearse(self) -> bool:
        return self.choices.rehearsal and self.site.config.migrations.rehearsal

    @property
    def nothing_to_migrate(self) -> str:
        """Why the rehearsal and migrate can be skipped ('' when they cannot): the new image lists no
        pending migration against the live database, so neither would change a thing."""
        known = self.pending_from_image
        if known is None or known.pending:
            return ""
        return f"no pending migration: {self.facts.new_ref}'s image lists none against the live database"

    @property
    def live_target(self) -> Target:
        return live_target(self.ctx.host.edge, self.site.config)

    @property
    def preview(self) -> Target:
        return preview_target(self.ctx.host.edge, self.site.config.domain, self.site.config.required_checks)

    @property
    def backup_path(self) -> Path:
        return self.site.backups_dir / self.backup_name

    @property
    def restore_hint(self) -> str:
        return f"Backup {self.backup_path}; to restore it: sumbg restore {self.slug} {self.backup_path} --yes"

    def web_log_tail(self, output_tail: str | None) -> str:
        return ((output_tail or "") + "\n--- last web log lines ---\n" + self.stacks.web_logs(self.facts.idle)).strip()


# ---------------------------------------------------------------- before anything changes


def preflight(up: UpgradeRun, run: Run) -> StepResult:
    ctx, site, stacks, facts = up.ctx, up.site, up.stacks, up.facts
    ctx.engine.ping()
    if not stacks.web_running(facts.live):
        raise CheckFailed(
            f"the live colour's web ({site.web_container(facts.live)}) is not running; "
            f"{stacks.web_exit_summary(facts.live)}"
        )
    with ctx.prober() as prober:
        health = prober.health(up.live_target)
    if not health.passing:
        raise CheckFailed(f"the live site is not healthy through Caddy: {health.describe()}")
    problems = stacks.free_space_problems(ctx.host.min_free_gb)
    if problems:
        raise CheckFailed("not enough free disk: " + "; ".join(problems))
    core = f"{facts.live_core} -> {facts.new_core}"
    run.say(f"sum-core {core}")
    if facts.live_core == facts.new_core and not up.allow_same_core:
        raise CheckFailed(
            f"sum-core pin is unchanged ({facts.new_core}) between the live release and "
            f"{facts.new_ref}; pass --allow-same-core to upgrade anyway"
        )
    if stacks.colour_exists(facts.idle):
        run.say(
            f"{facts.idle} still holds {stacks.running_image(facts.idle)} (the rollback target); it will be replaced"
        )
    return {"sum_core": core, "health": health.status}


def build_release(up: UpgradeRun, run: Run) -> StepResult:
    """Build (or reuse) the new image; say what it holds against the live release, and whether it has
    migrations to run (known from the image before anything else runs)."""
    ctx, site, facts = up.ctx, up.site, up.facts
    mirror = ctx.mirror(site)
    live = facts.live_record
    live_requirements = mirror.read_file(live.commit, "requirements.txt") if live.commit else None
    new_requirements = mirror.read_file(facts.image.commit, "requirements.txt") or ""
    live_deps = deps.record_dependencies(live)
    if live_deps is None and live.image:
        read = ctx.read_dependencies(live.image)
        live_deps = read[0] if read else None
    constraints = deps.constraints_for(
        facts.image,
        lock=site.config.build.lock or ctx.host.build_lock,
        recorded=deps.recorded_build(run.state, site.records.history(), facts.image.commit),
        mirror=mirror,
        live=live_deps,
        live_ref=facts.live_ref,
        live_requirements=live_requirements,
        new_requirements=new_requirements,
    )
    if constraints.source:
        run.say(f"resolving against {constraints.source}")
    built = ctx.build_image(site, facts.image, constraints=constraints)
    result = dict(built.record)
    for released in result.get("wheels", {}).get("released", ()):
        run.say(f"released the live pin {released['name']}{released['pin']}: {released['why']}")
    up.dependencies = built.dependencies or None
    if built.dependencies and live_deps is not None:
        diff = deps.explain(
            live_deps,
            built.dependencies,
            live_requirements=live_requirements,
            new_requirements=new_requirements,
            environment=built.environment,
            live_ref=facts.live_ref,
            new_ref=facts.new_ref,
        )
        for line in diff.lines():
            run.say(line)
        result["dependency_diff"] = diff.record()
    elif built.dependencies:
        run.say(f"dependencies: the live {facts.live_ref}'s are not known (built before sumbg recorded them)")
    result["pending_migrations"] = _pending_from_image(up, run)
    return result


def _pending_from_image(up: UpgradeRun, run: Run) -> list[str] | None:
    try:
        phases = up.stacks.pending_migrations(up.facts.idle, up.facts.image.tag)
    except SumbgError as exc:
        run.say(f"pending migrations not known yet ({exc.message}); the rehearsal and migrate will tell")
        return None
    up.pending_from_image = phases
    if up.nothing_to_migrate:
        run.say(f"{up.nothing_to_migrate}: the rehearsal and migrate steps will be skipped")
    else:
        run.say(f"pending migrations: {', '.join(phases.pending)}")
    return list(phases.pending)


def take_backup(up: UpgradeRun, run: Run) -> StepResult:
    taken, removed = up.stacks.backup_and_prune(up.backup_name, protected_backups(run.state))
    run.notes["backup"] = taken.path.name
    run.notes["backup_path"] = str(taken.path)
    run.say(f"{taken.path.name}: {taken.size} bytes, {taken.entries} entries, sha256 {taken.sha256[:16]}...")
    return {**taken.record(), "pruned": removed}


def rehearse_migrations(up: UpgradeRun, run: Run) -> StepResult:
    compat, found = _rehearse_or_say_why_not(up, run)
    decision = migration_policy.decide(
        compat,
        maintenance=up.choices.maintenance,
        accept_breaking=up.choices.accept_breaking,
        slug=up.slug,
        new_ref=up.facts.new_ref,
        live_ref=up.facts.live_ref,
    )
    up.decision = decision
    for warning in decision.warnings:
        run.say(f"warning: {warning}")
    result = {**found, **decision.record}
    run.notes["rehearsal"] = dict(result)
    if decision.refusal:
        raise BreakingRelease(decision.refusal)
    if decision.breaks_previous:
        run.say(f"breaking, going ahead with {decision.record['policy']}: {decision.breaks_previous}")
    return result


def _rehearse_or_say_why_not(up: UpgradeRun, run: Run) -> tuple[migration_policy.Compatibility, StepResult]:
    if up.nothing_to_migrate:
        # Nothing will change the schema: the live release runs on the database it runs on now.
        return (
            migration_policy.Compatibility(migration_policy.COMPATIBLE, reason=up.nothing_to_migrate),
            {"outcome": "skipped", "reason": up.nothing_to_migrate},
        )
    if not up.rehearse:
        why = "--no-rehearsal" if not up.choices.rehearsal else "[migrations] rehearsal = false in site.toml"
        return (
            migration_policy.Compatibility(migration_policy.NOT_MEASURED, reason=why),
            {"outcome": "skipped", "reason": why},
        )
    size = up.stacks.database().size_mb()
    limit = up.site.config.migrations.rehearsal_max_mb
    if size > limit:
        why = f"the database is {size:.0f} MB, above [migrations] rehearsal_max_mb = {limit}"
        return (
            migration_policy.Compatibility(migration_policy.NOT_MEASURED, reason=why),
            {"outcome": "skipped", "reason": why, "database_mb": round(size, 1)},
        )
    done = rehearsal.rehearse(
        up.ctx,
        up.site,
        run,
        new_image=up.facts.image.tag,
        live=up.facts.live,
        live_record=up.facts.live_record,
        backup_file=Path(run.notes["backup_path"]),
    )
    # The copy was the live database a moment ago: what was pending there is pending here.
    up.phases = done.phases
    run.say(
        f"rehearsal on a copy ({size:.1f} MB): {done.applied} migration(s) in "
        f"{done.timings['migrate_seconds']:.1f}s; {up.facts.live_ref} on the migrated copy: {done.compatibility.verdict}"
    )
    for evidence in done.compatibility.evidence:
        run.say(f"  {evidence.describe()}")
    return done.compatibility, {
        **done.record(),
        "database_mb": round(size, 1),
        "pending": list(done.phases.pending),
        "after_switch": list(done.phases.after_switch),
    }


# ---------------------------------------------------------------- the live database changes


def migrate(up: UpgradeRun, run: Run) -> StepResult:
    image, idle = up.facts.image, up.facts.idle
    if up.nothing_to_migrate:
        up.after_switch = run.notes["after_switch"] = []
        if up.decision is not None and up.decision.maintenance:
            _maintenance_on(up, run)  # the operator asked for the page; no container runs under it
        return {"outcome": "skipped", "reason": up.nothing_to_migrate, "pending": [], "after_switch": []}
    phases = up.phases or up.pending_from_image or up.stacks.pending_migrations(idle, image.tag)
    up.after_switch = run.notes["after_switch"] = list(phases.after_switch)
    run.say(
        "pending migrations: "
        + (", ".join(phases.pending) or "none")
        + (f"; after the switch: {', '.join(phases.after_switch)}" if phases.after_switch else "")
    )
    decision = up.decision
    if decision is not None and decision.maintenance:
        _maintenance_on(up, run)
    output = up.stacks.migrate(idle, image.tag, up.restore_hint, before_switch_only=bool(phases.after_switch))
    if decision is not None and decision.breaks_previous:
        up.schema_breaks_live = True
    return {
        "pending": list(phases.pending),
        "after_switch": list(phases.after_switch),
        "applied": applied_count(output),
    }


def _maintenance_on(up: UpgradeRun, run: Run) -> None:
    ctx, stacks, facts = up.ctx, up.stacks, up.facts
    live = facts.live
    # The live release's worker would run tasks against a schema it may not know.
    keep_colour_logs(stacks, run, live, ("worker",))
    if stacks.stop_worker(live):
        run.on_failure(
            f"restart {live}'s worker", lambda: stacks.start_worker(live, facts.live_record.image, live=True)
        )
    ctx.edge.files.set_maintenance(up.slug, True)
    up.maintenance_since = time.monotonic()
    run.say("maintenance page on: visitors get 503 with Retry-After until the new release is confirmed")

    def off_unless_live_cannot_serve() -> None:
        if up.schema_breaks_live:
            run.notes["maintenance_kept"] = True
            ctx.reporter.line(
                f"     the maintenance page STAYS ON: the database has {facts.new_ref}'s schema, which "
                f"{facts.live_ref} cannot serve; restore the pre-upgrade database with `sumbg restore {up.slug} "
                f"{up.backup_path} --yes` (it turns the page off), or upgrade to a fixed release with --maintenance"
            )
            return
        ctx.edge.files.set_maintenance(up.slug, False)

    run.on_failure("turn the maintenance page off", off_unless_live_cannot_serve)


# ---------------------------------------------------------------- the new colour


def start_new_colour(up: UpgradeRun, run: Run) -> StepResult:
    ctx, stacks, image, idle = up.ctx, up.stacks, up.facts.image, up.facts.idle
    if stacks.colour_exists(idle):
        # Kept in state.json too, so `recover` can put it back after a crash.
        displaced = run.state.displace(idle)
        run.save_state()
        keep_colour_logs(stacks, run, idle)
        stacks.remove_colour(idle)
        if displaced is not None:
            # Registered first, so it runs last: after the new colour is gone.
            run.on_failure(
                f"start the previous release {displaced.ref} again in {idle}",
                lambda: restart_rollback_target(ctx, up.site, run),
                durable=True,
            )

    def remove_new_colour() -> None:
        if run.state.live != idle:
            keep_colour_logs(stacks, run, idle)
            stacks.remove_colour(idle)

    run.on_failure(f"remove the new colour {naming.app_project(up.slug, idle)}", remove_new_colour)
    summary = stacks.collectstatic(idle, image.tag)
    try:
        stacks.start_web(idle, image.tag)
    except DockerError as exc:
        raise CheckFailed(
            f"the new colour {idle} never became healthy: its web container could not start",
            colour=idle,
            command=exc.command,
            returncode=exc.returncode,
            output_tail=up.web_log_tail(exc.output_tail),
        ) from None
    ctx.edge.files.write_colour(up.slug, "preview", idle)
    with ctx.prober() as prober:
        try:
            answer = prober.wait_healthy(
                up.preview, up.site.config.health_timeout, expect_version=expected_version(image)
            )
        except CheckFailed as exc:
            raise exc.refined(
                message=f"the new colour {idle} never became healthy: {exc.message}; {stacks.web_exit_summary(idle)}",
                colour=idle,
                output_tail=up.web_log_tail(exc.output_tail),
            ) from exc
    return {"static": summary, "health": answer.status, **say_degraded(run, "start", answer.failing_checks)}


def smoke(up: UpgradeRun, run: Run) -> StepResult:
    results = []
    with up.ctx.prober() as prober:
        for check in up.site.config.smoke_checks:
            try:
                results.append(prober.check(up.preview, check))
            except CheckFailed as exc:
                raise exc.refined(colour=up.facts.idle) from exc
        failing = prober.health(up.preview).failing_checks
    return {"checks": results, **say_degraded(run, "smoke", failing)}


# ---------------------------------------------------------------- traffic moves


def switch(up: UpgradeRun, run: Run) -> StepResult:
    ctx, idle = up.ctx, up.facts.idle
    record = release_record(up.facts.image, up.dependencies)
    record.backup = run.notes.get("backup")
    if up.decision is not None and up.decision.breaks_previous:
        record.breaks_previous = up.decision.breaks_previous
    if up.after_switch:
        record.after_switch_migrations, record.after_switch = list(up.after_switch), AFTER_SWITCH_PENDING
    run.state.add_candidate(idle, record)
    run.save_state()
    maintenance_off = None
    since = up.maintenance_since
    if since is not None:

        def maintenance_off() -> None:
            # Off the moment the live file names the new colour: its confirmation then goes
            # through the public listener like any visitor's request.
            ctx.edge.files.set_maintenance(up.slug, False)
            run.notes["maintenance_seconds"] = round(time.monotonic() - since, 3)

    flip = switch_live(ctx, up.site, run, idle, before_confirm=maintenance_off)
    run.notes["flip_seconds"] = flip.seconds
    if "maintenance_seconds" in run.notes:
        run.say(f"maintenance window: {run.notes['maintenance_seconds']:.1f}s (migrate to confirmed switch)")
    if up.watch <= 0:
        run.state.mark_healthy(idle)
        run.state.displaced = None
        run.save_state()
    run.forget_cleanups()
    return {
        "flip_seconds": flip.seconds,
        "version": run.notes["flips"][-1]["version"],
        **({"maintenance_seconds": run.notes["maintenance_seconds"]} if "maintenance_seconds" in run.notes else {}),
        **say_degraded(run, "switch", flip.degraded),
    }


def move_worker(up: UpgradeRun, run: Run) -> StepResult:
    """The worker follows the traffic; a new release whose worker is not ready goes back whole."""
    try:
        return workers.move_worker(up.ctx, up.site, run, to=up.facts.idle, came_from=up.facts.live, wait=True)
    except WorkerNotReady as failure:
        revert_after_switch(
            up.ctx,
            up.site,
            run,
            failure.message,
            new=up.facts.idle,
            old=up.facts.live,
            evidence=failure.output_tail,
            what="its worker was not ready",
        )


def watch_release(up: UpgradeRun, run: Run) -> StepResult:
    result = watch_live(up.ctx, up.site, run, up.watch, new=up.facts.idle, old=up.facts.live)
    run.state.mark_healthy(up.facts.idle)
    run.state.displaced = None
    run.save_state()
    run.forget_cleanups(durable_too=True)
    return result


def run_after_switch(up: UpgradeRun, run: Run) -> StepResult:
    waiting = up.after_switch
    if not waiting:
        return {"outcome": "skipped", "reason": "no migration is marked run_after_switch"}
    record = run.state.record(up.facts.idle)
    assert record is not None  # the switch recorded it
    # Recorded before they run: from now on a rollback needs the pre-upgrade database.
    record.after_switch = AFTER_SWITCH_RUNNING
    run.save_state()
    try:
        output = up.stacks.migrate(up.facts.idle, up.facts.image.tag, up.restore_hint)
    except MigrationFailed as exc:
        record.after_switch = AFTER_SWITCH_FAILED
        run.save_state()
        raise exc.refined(
            message=f"the after-switch migrations ({', '.join(waiting)}) of {up.facts.new_ref} failed; traffic "
            f"stays on {up.facts.new_ref} (live, healthy). {up.restore_hint}"
        ) from exc
    record.after_switch = AFTER_SWITCH_RAN
    run.save_state()
    return {"migrations": waiting, "applied": applied_count(output)}


# ---------------------------------------------------------------- the plan


def upgrade_plan(
    ctx: Context,
    site: Site,
    facts: UpgradeFacts,
    *,
    allow_same_core: bool,
    watch: float,
    migrations: MigrationChoices | None = None,
) -> Plan:
    choices = migrations or MigrationChoices()
    stacks = ctx.stacks(site)
    up = UpgradeRun(
        ctx, site, stacks, facts, choices, allow_same_core, watch, backup_name=stacks.backup_name(facts.new_ref)
    )
    slug, domain, image, live, idle = site.slug, site.config.domain, facts.image, facts.live, facts.idle

    def step(name: str, summary: str, action: Any, details: dict[str, Any] | None = None) -> Step:
        return Step(name, summary, functools.partial(action, up), details or {})

    steps = [
        step(
            "preflight",
            f"engine, live {live} web, health through Caddy, disk, sum-core {facts.live_core} -> {facts.new_core}",
            preflight,
        ),
        step(
            "build",
            f"build {image.tag} from {facts.new_ref} ({image.commit[:12]})",
            build_release,
            {"image": image.tag, "commit": image.commit},
        ),
        *upgrade_hooks(ctx, site, facts, "pre_upgrade", "pre_backup"),
        step(
            "backup",
            f"pg_dump to {up.backup_path}, verify",
            take_backup,
            {"backup": str(up.backup_path)},
        ),
        step(
            "rehearsal",
            (
                "restore the backup into a scratch database, migrate it with the new release, and "
                f"check the live {facts.live_ref} on it through Caddy"
                if up.rehearse
                else "skipped (--no-rehearsal or [migrations] rehearsal = false)"
            ),
            rehearse_migrations,
        ),
        step(
            "migrate",
            f"list pending migrations, then migrate (all but the after-switch ones) in a one-off "
            f"{image.tag} container" + (" under the maintenance page" if choices.maintenance else ""),
            migrate,
        ),
        step(
            "start",
            f"collectstatic and start {naming.app_project(slug, idle)}, wait for health through the preview listener",
            start_new_colour,
            {"project": naming.app_project(slug, idle)},
        ),
        step(
            "smoke",
            f"{len(site.config.smoke_checks)} smoke checks through the preview listener",
            smoke,
            {"checks": [c.describe() for c in site.config.smoke_checks]},
        ),
        step(
            "switch",
            f"point {domain} at {idle} (state/{slug}/live: {live} -> {idle}), confirm the new version through Caddy",
            switch,
        ),
        step(
            "workers",
            f"{live}'s worker finishes its tasks in the background, {idle}'s starts; wait until it is ready "
            f"(else back to {live}); keep {live}'s web for rollback",
            move_worker,
        ),
    ]
    steps += upgrade_hooks(ctx, site, facts, "post_switch")
    if watch > 0:
        steps.append(
            step(
                "watch",
                f"watch health and smoke paths through Caddy for {watch:g}s; roll back by itself on failure",
                watch_release,
            )
        )
    steps.append(
        step(
            "after-switch",
            "run the migrations marked run_after_switch (if any) once the new "
            "release is live" + (" and its watch passed" if watch > 0 else ""),
            run_after_switch,
        )
    )
    steps += upgrade_hooks(ctx, site, facts, "post_upgrade")
    return Plan(
        "upgrade",
        slug,
        tuple(steps),
        facts={
            "from": facts.live_record.ref,
            "to": facts.new_ref,
            "from_colour": live,
            "to_colour": idle,
            "sum_core": {"from": facts.live_core, "to": facts.new_core},
        },
    )


_HOOK_STEPS = {
    "pre_upgrade": ("starting", "the pre_upgrade hook (a failure stops the upgrade; nothing has changed)"),
    "pre_backup": ("starting", "the pre_backup hook (a failure stops the upgrade; nothing has changed)"),
    "post_switch": ("switched", "the post_switch hook (a failure is reported; the switch stands)"),
    "post_upgrade": ("succeeded", "the post_upgrade hook (a failure is reported; the upgrade stands)"),
}


def upgrade_hooks(ctx: Context, site: Site, facts: UpgradeFacts, *hooks: str) -> list[Step]:
    """The configured [hooks] among `hooks`, as steps; a `manage:` hook runs in the new release."""
    steps = []
    for hook in hooks:
        if not configured(site, hook):
            continue
        outcome, summary = _HOOK_STEPS[hook]
        call = HookCall(
            hook,
            "upgrade",
            outcome,
            from_ref=facts.live_record.ref,
            to_ref=facts.new_ref,
            from_colour=facts.live,
            to_colour=facts.idle,
            colour=facts.idle,
            image=facts.image.tag,
        )
        make = pre_hook_step if hook.startswith("pre_") else post_hook_step
        steps.append(make(ctx, site, call, f"{summary}: {configured(site, hook)}"))
    return steps


# ---------------------------------------------------------------- the dry run

# Operations in `migrate --plan` output that code still running the old release may
# not survive (it reads or writes what they remove or rename).
_BREAKING = re.compile(
    r"^\s*(Remove field|Delete model|Rename field|Rename model|Rename table|Alter field|"
    r"Raw SQL operation|Remove constraint|Alter unique_together)\b",
    re.M,
)


def breaking_operations(plan_output: str) -> list[str]:
    return [line.strip() for line in plan_output.splitlines() if _BREAKING.match(line)]


def dry_run_report(ctx: Context, site: Site, plan: Plan, facts: UpgradeFacts) -> dict[str, Any]:
    changes = ctx.edge.pending_changes(ctx.all_sites())
    diff = "".join(
        "".join(difflib.unified_diff((before or "").splitlines(True), after.splitlines(True), str(path), str(path)))
        for path, (before, after) in changes.items()
    )
    report = plan.describe()
    report.update(
        {
            "dry_run": True,
            "image": facts.image.tag,
            "compose_projects": [naming.data_project(site.slug), naming.app_project(site.slug, facts.idle)],
            "caddy_config_diff": diff or "(no structural change: no reload)",
            "traffic_switch": f"{ctx.edge.files.state(site.slug, 'live')}: {facts.live} -> {facts.idle}",
        }
    )
    report["migration_hint"] = migration_hint(ctx, site, facts)
    dependency_diff = dry_run_dependencies(ctx, site, facts)
    if isinstance(dependency_diff, deps.DependencyDiff):
        report["dependency_diff"], shown = dependency_diff.record(), dependency_diff.lines()
    else:
        report["dependency_diff"], shown = {"summary": dependency_diff}, [dependency_diff]
    ctx.reporter.dry_run(
        f"dry run: sumbg upgrade {site.slug} {facts.new_ref} would:",
        plan,
        f"caddy config: {report['caddy_config_diff']}",
        f"traffic switch: {report['traffic_switch']}",
        f"migrations (a hint; the rehearsal measures): {report['migration_hint']['summary']}",
        *shown,
    )
    return report


def dry_run_dependencies(ctx: Context, site: Site, facts: UpgradeFacts) -> deps.DependencyDiff | str:
    """The dependency diff live -> new, when the new image exists (a dry run builds nothing)."""
    new = ctx.read_dependencies(facts.image.tag)
    if new is None:
        return f"dependencies: not known until {facts.image.tag} is built (the upgrade's build step prints the diff)"
    live_record = facts.live_record
    live = deps.record_dependencies(live_record)
    if live is None and live_record.image:
        read = ctx.read_dependencies(live_record.image)
        live = read[0] if read else None
    if live is None:
        return f"dependencies: the live {facts.live_ref}'s are not known (built before sumbg recorded them)"
    mirror = ctx.mirror(site)
    return deps.explain(
        live,
        new[0],
        live_requirements=mirror.read_file(live_record.commit, "requirements.txt") if live_record.commit else None,
        new_requirements=mirror.read_file(facts.image.commit, "requirements.txt") or "",
        environment=new[1],
        live_ref=facts.live_ref,
        new_ref=facts.new_ref,
    )


def migration_hint(ctx: Context, site: Site, facts: UpgradeFacts) -> dict[str, Any]:
    """An early look at what the release's migrations do, from `migrate --plan` (read-only),
    when its image is already built; the upgrade's rehearsal decides, not this."""
    if ctx.engine.image_labels(facts.image.tag) is None:
        return {"summary": f"not known until {facts.image.tag} is built"}
    try:
        with tempfile.TemporaryDirectory(prefix="sumbg-dry-run-") as scratch:
            planned = ctx.stacks(site).migration_plan(facts.idle, facts.image.tag, env_dir=Path(scratch))
    except SumbgError as exc:
        return {"summary": f"could not list them: {exc.message}"}
    flagged = breaking_operations(planned)
    if flagged:
        summary = f"{len(flagged)} operation(s) may break the live release: {'; '.join(flagged[:3])}"
    else:
        summary = "nothing that looks breaking" if "No planned" not in planned else "none pending"
    return {"summary": summary, "plan": planned, "flagged": flagged}
