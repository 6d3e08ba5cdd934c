"""`sumbg upgrade`: the blue/green upgrade of a site to a git ref, as a plan of named steps."""

from __future__ import annotations

import difflib
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sumbg import naming
from sumbg.adapters import build, gitrepo
from sumbg.adapters.probe import live_target, preview_target
from sumbg.errors import BreakingRelease, CheckFailed, DockerError, MigrationFailed, SumbgError, UsageError
from sumbg.ops import agreement, rehearsal
from sumbg.ops import policy as migration_policy
from sumbg.ops.context import Context, mirror_for, refuse_if_interrupted
from sumbg.ops.executor import Plan, Run, Step
from sumbg.ops.switch import is_failed, mark_healthy, move_workers, restart_rollback_target, switch_live
from sumbg.ops.watch import watch_live
from sumbg.site.records import recorded
from sumbg.site.site import Site
from sumbg.site.stacks import applied_count
from sumbg.site.state import colour_record, expected_version

# =================================================================== upgrade


@dataclass(frozen=True)
class UpgradeFacts:
    live: str
    idle: str
    live_record: dict
    image: build.ImageSpec
    live_core: str | None
    new_core: str | None


def gather_upgrade(ctx: Context, site: Site, ref: str) -> UpgradeFacts:
    state = site.records.load_state()
    live = state.get("live")
    if not live:
        raise UsageError(f"site {site.slug} has no live colour yet; run `sumbg init` first")
    mirror = mirror_for(site)
    mirror.sync()
    resolved = mirror.resolve(ref)
    new_core = gitrepo.sum_core_pin(mirror.read_file(resolved.commit, "requirements.txt"))
    live_record = state["colours"][live]
    return UpgradeFacts(
        live=live,
        idle=naming.other_colour(live),
        live_record=live_record,
        image=build.image_spec(site.slug, resolved, new_core),
        live_core=live_record.get("sum_core"),
        new_core=new_core,
    )


@dataclass(frozen=True)
class MigrationChoices:
    """The operator's say in how an upgrade treats its migrations (see migration_policy)."""

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
    confirm=None,
    migrations: MigrationChoices = MigrationChoices(),
) -> dict:
    site = ctx.site(slug)
    naming.validate_ref(ref)
    if migrations.maintenance and migrations.accept_breaking:
        raise UsageError("give --maintenance or --accept-breaking, not both")
    lock = site.lock()
    if not dry_run:
        lock.acquire(timeout=lock_timeout, command=f"sumbg upgrade {slug} {ref}")
        if lock.took_over:
            ctx.reporter.line(f"warning: took over a lock left by a dead process ({lock.took_over})")
    try:
        state = site.records.load_state()
        if not dry_run:
            refuse_if_interrupted(site, state)
        agreement.probe_and_check(ctx, site, state)[0].refuse(slug, f"upgrade of {slug}")
        facts = gather_upgrade(ctx, site, ref)
        plan = upgrade_plan(
            ctx,
            site,
            facts,
            allow_same_core=allow_same_core,
            watch=site.config.watch_seconds if watch is None else watch,
            migrations=migrations,
        )
        if dry_run:
            return dry_run_report(ctx, site, plan, facts)
        if confirm and not confirm(plan):
            raise SumbgError(f"upgrade of {slug} to {ref} cancelled; nothing was changed")
        return ctx.execute(plan, site, f"upgrade {slug} {ref}")
    finally:
        lock.release()


def upgrade_plan(
    ctx: Context,
    site: Site,
    facts: UpgradeFacts,
    *,
    allow_same_core: bool,
    watch: float,
    migrations: MigrationChoices = MigrationChoices(),
) -> Plan:
    slug, domain = site.slug, site.config.domain
    stacks = ctx.stacks(site)
    image, live, idle = facts.image, facts.live, facts.idle
    backup_name = stacks.backup_name(image.labels["sumbg.ref"])
    live_target_ = live_target(ctx.host.edge, site.config)
    preview = preview_target(ctx.host.edge, domain)
    restore_hint = f"Backup {site.backups_dir / backup_name}; to restore it: sumbg restore {slug} {site.backups_dir / backup_name} --yes"

    def preflight(run: Run):
        ctx.engine.ping()
        if not stacks.web_running(live):
            raise CheckFailed(
                f"the live colour's web ({site.web_container(live)}) is not running; {stacks.web_exit_summary(live)}"
            )
        with ctx.prober() as prober:
            health = prober.health(live_target_)
        if not health.passing:
            raise CheckFailed(f"the live site is not healthy through Caddy: {health.answer.describe()}")
        problems = stacks.free_space_problems(ctx.host.min_free_gb)
        if problems:
            raise CheckFailed("not enough free disk: " + "; ".join(problems))
        core = f"{facts.live_core} -> {facts.new_core}"
        run.say(f"sum-core {core}")
        if facts.live_core == facts.new_core and not allow_same_core:
            raise CheckFailed(
                f"sum-core pin is unchanged ({facts.new_core}) between the live release and "
                f"{image.labels['sumbg.ref']}; pass --allow-same-core to upgrade anyway"
            )
        if stacks.colour_exists(idle):
            run.say(f"{idle} still holds {stacks.recorded_image(idle)} (the rollback target); it will be replaced")
        return {"sum_core": core, "health": health.status}

    def build_step(run: Run):
        return ctx.build_image(site, image)

    def backup(run: Run):
        taken, removed = stacks.backup_and_prune(backup_name, run.state)
        run.notes["backup"] = taken.path.name
        run.notes["backup_path"] = str(taken.path)
        run.say(f"{taken.path.name}: {taken.size} bytes, {taken.entries} entries, sha256 {taken.sha256[:16]}...")
        return {**taken.record(), "pruned": removed}

    new_ref, live_ref = image.labels["sumbg.ref"], facts.live_record.get("ref") or live
    rehearse = migrations.rehearsal and site.config.migrations.rehearsal
    # What the steps tell each other but the history need not keep (run.notes goes there).
    between: dict = {}

    def rehearsal_step(run: Run):
        compat, facts_ = _rehearse_or_say_why_not(run)
        decision = migration_policy.decide(
            compat,
            maintenance=migrations.maintenance,
            accept_breaking=migrations.accept_breaking,
            slug=slug,
            new_ref=new_ref,
            live_ref=live_ref,
        )
        between["decision"] = decision
        for warning in decision.warnings:
            run.say(f"warning: {warning}")
        result = {**facts_, **decision.record}
        run.notes["rehearsal"] = dict(result)
        if decision.refusal:
            raise BreakingRelease(decision.refusal)
        if decision.breaks_previous:
            run.say(f"breaking, going ahead with {decision.record['policy']}: {decision.breaks_previous}")
        return result

    def _rehearse_or_say_why_not(run: Run):
        if not rehearse:
            why = "--no-rehearsal" if not migrations.rehearsal else "[migrations] rehearsal = false in site.toml"
            return (
                migration_policy.Compatibility(migration_policy.NOT_MEASURED, reason=why),
                {"outcome": "skipped", "reason": why},
            )
        size = stacks.database().size_mb()
        limit = site.config.migrations.rehearsal_max_mb
        if size > limit:
            why = f"the database is {size:.0f} MB, above [migrations] rehearsal_max_mb = {limit}"
            return (
                migration_policy.Compatibility(migration_policy.NOT_MEASURED, reason=why),
                {"outcome": "skipped", "reason": why, "database_mb": round(size, 1)},
            )
        done = rehearsal.rehearse(
            ctx,
            site,
            run,
            new_image=image.tag,
            live_record=facts.live_record,
            backup_file=Path(run.notes["backup_path"]),
        )
        compat, phases = done.pop("compatibility"), done.pop("phases")
        # The copy was the live database a moment ago: what was pending there is pending here.
        between["phases"] = phases
        run.say(
            f"rehearsal on a copy ({size:.1f} MB): {done['applied']} migration(s) in "
            f"{done['migrate_seconds']:.1f}s; {live_ref} on the migrated copy: {compat.verdict}"
        )
        for evidence in compat.evidence:
            run.say(f"  {evidence.describe()}")
        return compat, {
            **done,
            "database_mb": round(size, 1),
            "pending": list(phases.pending),
            "after_switch": list(phases.after_switch),
        }

    def migrate(run: Run):
        phases = between.get("phases") or stacks.pending_migrations(idle, image.tag)
        run.notes["after_switch"] = list(phases.after_switch)
        run.say(
            "pending migrations: "
            + (", ".join(phases.pending) or "none")
            + (f"; after the switch: {', '.join(phases.after_switch)}" if phases.after_switch else "")
        )
        decision = between.get("decision")
        if decision is not None and decision.maintenance:
            _maintenance_on(run)
        output = stacks.migrate(idle, image.tag, restore_hint, before_switch_only=bool(phases.after_switch))
        if decision is not None and decision.breaks_previous:
            between["schema_breaks_live"] = True
        return {
            "pending": list(phases.pending),
            "after_switch": list(phases.after_switch),
            "applied": applied_count(output),
        }

    def _maintenance_on(run: Run) -> None:
        # The live release's worker would run tasks against a schema it may not know.
        if stacks.stop_worker(live):
            run.on_failure(f"restart {live}'s worker", lambda: stacks.start_worker(live))
        ctx.edge.files.set_maintenance(slug, True)
        between["maintenance_since"] = time.monotonic()
        run.say("maintenance page on: visitors get 503 with Retry-After until the new release is confirmed")

        def off_unless_live_cannot_serve() -> None:
            if between.get("schema_breaks_live"):
                run.notes["maintenance_kept"] = True
                ctx.reporter.line(
                    f"     the maintenance page STAYS ON: the database has {new_ref}'s schema, which {live_ref} "
                    f"cannot serve; restore the pre-upgrade database with `sumbg restore {slug} "
                    f"{site.backups_dir / backup_name} --yes` (it turns the page off), or upgrade to a fixed "
                    f"release with --maintenance"
                )
                return
            ctx.edge.files.set_maintenance(slug, False)

        run.on_failure("turn the maintenance page off", off_unless_live_cannot_serve)

    def start(run: Run):
        if stacks.colour_exists(idle):
            displaced = recorded(run.state, idle)
            keep = bool(displaced) and not is_failed(displaced) and bool(displaced.get("image"))
            if keep:
                # In state.json too, so `recover` can put it back after a crash.
                run.state["displaced"] = {"colour": idle, "record": displaced}
            run.state.setdefault("colours", {}).pop(idle, None)
            if run.state.get("previous") == idle:
                run.state["previous"] = None
            run.save_state()
            stacks.remove_colour(idle)
            if keep:
                # Registered first, so it runs last: after the new colour is gone.
                run.on_failure(
                    f"start the previous release {displaced.get('ref')} again in {idle}",
                    lambda: restart_rollback_target(ctx, site, run),
                    durable=True,
                )
        run.on_failure(
            f"remove the new colour {naming.app_project(slug, idle)}",
            lambda: stacks.remove_colour(idle) if run.state.get("live") != idle else None,
        )
        summary = stacks.collectstatic(idle, image.tag)
        try:
            stacks.start_web(idle, image.tag)
        except DockerError as exc:
            raise CheckFailed(
                f"the new colour {idle} never became healthy: its web container could not start",
                colour=idle,
                command=exc.command,
                returncode=exc.returncode,
                output_tail=(
                    (exc.output_tail or "") + "\n--- last web log lines ---\n" + stacks.web_logs(idle)
                ).strip(),
            ) from None
        ctx.edge.files.write_colour(slug, "preview", idle)
        with ctx.prober() as prober:
            try:
                answer = prober.wait_healthy(
                    preview, site.config.health_timeout, expect_version=expected_version(image)
                )
            except CheckFailed as exc:
                raise exc.refined(
                    message=f"the new colour {idle} never became healthy: {exc.message}; "
                    f"{stacks.web_exit_summary(idle)}",
                    colour=idle,
                    output_tail=(
                        (exc.output_tail or "") + "\n--- last web log lines ---\n" + stacks.web_logs(idle)
                    ).strip(),
                ) from exc
        return {"static": summary, "health": answer.status}

    def smoke(run: Run):
        results = []
        with ctx.prober() as prober:
            for check in site.config.smoke_checks:
                try:
                    results.append(prober.check(preview, check))
                except CheckFailed as exc:
                    raise exc.refined(colour=idle) from exc
        return {"checks": results}

    def switch(run: Run):
        decision = between.get("decision")
        schema = {}
        if decision is not None and decision.breaks_previous:
            schema["breaks_previous"] = decision.breaks_previous
        if run.notes.get("after_switch"):
            schema.update(after_switch_migrations=run.notes["after_switch"], after_switch="pending")
        run.state.setdefault("colours", {})[idle] = colour_record(
            image, status="candidate", backup=run.notes.get("backup"), **schema
        )
        run.save_state()
        maintenance_off = None
        if "maintenance_since" in between:

            def maintenance_off() -> None:
                # Off the moment the live file names the new colour: its confirmation then goes
                # through the public listener like any visitor's request.
                ctx.edge.files.set_maintenance(slug, False)
                run.notes["maintenance_seconds"] = round(time.monotonic() - between["maintenance_since"], 3)

        flip = switch_live(ctx, site, run, idle, before_confirm=maintenance_off)
        run.notes["flip_seconds"] = flip.seconds
        if "maintenance_seconds" in run.notes:
            run.say(f"maintenance window: {run.notes['maintenance_seconds']:.1f}s (migrate to confirmed switch)")
        if watch <= 0:
            mark_healthy(run.state, idle)
            run.state.pop("displaced", None)
            run.save_state()
        run.forget_cleanups()
        return {
            "flip_seconds": flip.seconds,
            "version": run.notes["flips"][-1]["version"],
            **({"maintenance_seconds": run.notes["maintenance_seconds"]} if "maintenance_seconds" in run.notes else {}),
        }

    def workers(run: Run):
        moved = move_workers(ctx, site, to=idle, came_from=live)
        if not site.config.worker_command:
            return {"outcome": "skipped", "reason": "no worker configured"}
        return moved

    def watch_step(run: Run):
        result = watch_live(ctx, site, run, watch, new=idle, old=live)
        mark_healthy(run.state, idle)
        run.state.pop("displaced", None)
        run.save_state()
        run.forget_cleanups(durable_too=True)
        return result

    def after_switch(run: Run):
        waiting = run.notes.get("after_switch") or []
        if not waiting:
            return {"outcome": "skipped", "reason": "no migration is marked run_after_switch"}
        record = run.state["colours"][idle]
        # Recorded before they run: from now on a rollback needs the pre-upgrade database.
        record["after_switch"] = "running"
        run.save_state()
        try:
            output = stacks.migrate(idle, image.tag, restore_hint)
        except MigrationFailed as exc:
            record["after_switch"] = "failed"
            run.save_state()
            raise exc.refined(
                message=f"the after-switch migrations ({', '.join(waiting)}) of {new_ref} failed; traffic stays "
                f"on {new_ref} (live, healthy). {restore_hint}"
            ) from exc
        record["after_switch"] = "ran"
        run.save_state()
        return {"migrations": waiting, "applied": applied_count(output)}

    steps = [
        Step(
            "preflight",
            f"engine, live {live} web, health through Caddy, disk, sum-core {facts.live_core} -> {facts.new_core}",
            preflight,
        ),
        Step(
            "build",
            f"build {image.tag} from {image.labels['sumbg.ref']} ({image.commit[:12]})",
            build_step,
            {"image": image.tag, "commit": image.commit},
        ),
        Step(
            "backup",
            f"pg_dump to {site.backups_dir / backup_name}, verify",
            backup,
            {"backup": str(site.backups_dir / backup_name)},
        ),
        Step(
            "rehearsal",
            (
                "restore the backup into a scratch database, migrate it with the new release, and "
                f"check the live {live_ref} on it through Caddy"
                if rehearse
                else "skipped (--no-rehearsal or [migrations] rehearsal = false)"
            ),
            rehearsal_step,
        ),
        Step(
            "migrate",
            f"list pending migrations, then migrate (all but the after-switch ones) in a one-off "
            f"{image.tag} container" + (" under the maintenance page" if migrations.maintenance else ""),
            migrate,
        ),
        Step(
            "start",
            f"collectstatic and start {naming.app_project(slug, idle)}, wait for health through the preview listener",
            start,
            {"project": naming.app_project(slug, idle)},
        ),
        Step(
            "smoke",
            f"{len(site.config.smoke_checks)} smoke checks through the preview listener",
            smoke,
            {"checks": [c.describe() for c in site.config.smoke_checks]},
        ),
        Step(
            "switch",
            f"point {domain} at {idle} (state/{slug}/live: {live} -> {idle}), confirm the new version through Caddy",
            switch,
        ),
        Step("workers", f"stop {live}'s worker, start {idle}'s; keep {live}'s web for rollback", workers),
    ]
    if watch > 0:
        steps.append(
            Step(
                "watch",
                f"watch health and smoke paths through Caddy for {watch:g}s; roll back by itself on failure",
                watch_step,
            )
        )
    steps.append(
        Step(
            "after-switch",
            "run the migrations marked run_after_switch (if any) once the new "
            "release is live" + (" and its watch passed" if watch > 0 else ""),
            after_switch,
        )
    )
    return Plan(
        "upgrade",
        slug,
        tuple(steps),
        facts={
            "from": facts.live_record.get("ref"),
            "to": image.labels["sumbg.ref"],
            "from_colour": live,
            "to_colour": idle,
            "sum_core": {"from": facts.live_core, "to": facts.new_core},
        },
    )


# Operations in `migrate --plan` output that code still running the old release may
# not survive (it reads or writes what they remove or rename).
_BREAKING = re.compile(
    r"^\s*(Remove field|Delete model|Rename field|Rename model|Rename table|Alter field|"
    r"Raw SQL operation|Remove constraint|Alter unique_together)\b",
    re.M,
)


def breaking_operations(plan_output: str) -> list[str]:
    return [line.strip() for line in plan_output.splitlines() if _BREAKING.match(line)]


def dry_run_report(ctx: Context, site: Site, plan: Plan, facts: UpgradeFacts) -> dict:
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
    ctx.reporter.line(f"dry run: sumbg upgrade {site.slug} {facts.image.labels['sumbg.ref']} would:")
    for index, step in enumerate(plan.steps, 1):
        ctx.reporter.line(f"  {index}. {step.name}: {step.summary}")
    ctx.reporter.line(f"  caddy config: {report['caddy_config_diff']}")
    ctx.reporter.line(f"  traffic switch: {report['traffic_switch']}")
    report["migration_hint"] = migration_hint(ctx, site, facts)
    ctx.reporter.line(f"  migrations (a hint; the rehearsal measures): {report['migration_hint']['summary']}")
    return report


def migration_hint(ctx: Context, site: Site, facts: UpgradeFacts) -> dict:
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
