"""`sumbg backup`, `backups` and `restore`: database backups taken, listed, verified and restored
(a restore takes a safety backup first and shows the maintenance page while it runs)."""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg.errors import BackupError, NotFound, UsageError
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.opening import opened
from sumbg.ops.seams import SiteDatabase, SiteStacks
from sumbg.site.site import Site
from sumbg.site.stacks import sha256_file
from sumbg.site.state import SiteState

_NAME = re.compile(r"^(?P<slug>[a-z0-9-]+)_(?P<stamp>\d{8}T\d{6}Z)_(?P<ref>.+)\.dump$")


@dataclass(frozen=True)
class BackupFile:
    path: Path

    @property
    def sums(self) -> Path:
        return self.path.with_name(self.path.name + ".sha256")

    def recorded_sha(self) -> str | None:
        try:
            return self.sums.read_text().split()[0]
        except (FileNotFoundError, IndexError):
            return None

    def verified(self) -> bool | None:
        """True if the file matches its recorded sha256, False if not, None if nothing was recorded."""
        recorded = self.recorded_sha()
        return None if recorded is None else recorded == sha256_file(self.path)

    def describe(self) -> dict[str, Any]:
        match = _NAME.match(self.path.name)
        stat = self.path.stat()
        return {
            "file": self.path.name,
            "size": stat.st_size,
            "time": int(stat.st_mtime),
            "ref": match.group("ref") if match else None,
            "verified": self.verified(),
        }


def list_backups(ctx: Context, slug: str) -> list[dict[str, Any]]:
    site = ctx.site(slug)
    files = sorted(ctx.stacks(site).list_backup_files(), key=lambda p: p.stat().st_mtime, reverse=True)
    return [BackupFile(path).describe() for path in files]


def protected_backups(state: SiteState) -> set[str]:
    """The backups state.json records for a colour: a rollback's way back, never pruned."""
    return {record.backup for record in state.colours.values() if record.backup}


def backup(ctx: Context, slug: str, *, lock_timeout: float = 0.0) -> dict[str, Any]:
    site = ctx.site(slug)
    stacks = ctx.stacks(site)
    with opened(ctx, site, f"backup {slug}", lock_timeout=lock_timeout) as state:
        name = stacks.backup_name(state.ref(state.live) or "manual")

        def take(run: Run) -> StepResult:
            taken, pruned = stacks.backup_and_prune(name, protected_backups(run.state))
            return {**taken.record(), "pruned": pruned}

        plan = Plan(
            "backup",
            slug,
            (Step("backup", f"pg_dump to {site.backups_dir / name}, verify", take),),
            facts={"file": name},
        )
        return ctx.execute(plan, site, f"backup {slug}")


def resolve_backup_file(site: Site, file: str) -> Path:
    path = Path(file)
    if not path.is_absolute() and not path.exists():
        path = site.backups_dir / file
    if not path.is_file():
        raise NotFound(f"backup file {file} does not exist")
    if not (path.name.endswith(".dump") or path.name.endswith(".sql") or path.name.endswith(".sql.gz")):
        raise UsageError(f"{path.name}: not a backup sumbg can restore (.dump, .sql or .sql.gz)")
    return path.absolute()


def confirm_restore(site: Site, file: Path, yes: bool, confirm: Callable[[str], bool] | None) -> None:
    """A restore replaces the site's database: only with --yes, or when the operator says so at a terminal."""
    if yes:
        return
    if confirm is None:
        raise UsageError("restore replaces the site's database: pass --yes (no terminal to ask on)")
    if not confirm(f"Replace {site.slug}'s database with {file.name}? A safety backup is taken first"):
        raise UsageError("restore cancelled")


# How a restore hands traffic back: given the run and a function that turns the maintenance page
# off, it flips (a rollback --restore-db) or, by default, just reopens the live colour.
Reopen = Callable[[Run, Callable[[], None]], None]


@dataclass(frozen=True)
class RestoreRun:
    """What a restore's steps share."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    database: SiteDatabase
    file: Path
    require_sha: bool
    safety_name: str
    then_flip: Reopen | None


def verify(rs: RestoreRun, run: Run) -> StepResult:
    check = BackupFile(rs.file).verified()
    if check is False:
        raise BackupError(f"{rs.file.name} does not match its recorded sha256; refusing to restore it")
    if check is None and rs.require_sha:
        raise BackupError(f"{rs.file.name} has no recorded sha256 ({rs.file.name}.sha256); refusing to restore it")
    return {"sha256": "verified" if check else "not recorded (plain SQL backup)"}


def safety_backup(rs: RestoreRun, run: Run) -> StepResult:
    files, slug = rs.ctx.edge.files, rs.site.slug
    files.set_maintenance(slug, True)
    run.on_failure("turn the maintenance page off", lambda: files.set_maintenance(slug, False))
    live = run.state.live
    live_record = run.state.live_record
    if live:
        keep_colour_logs(rs.stacks, run, live, ("worker",))
    if live and live_record is not None and rs.stacks.stop_worker(live):
        run.on_failure(f"restart {live}'s worker", lambda: rs.stacks.start_worker(live, live_record.image, live=True))
    rs.database.terminate(rs.database.name)
    taken = rs.stacks.backup(rs.safety_name)
    run.notes["safety_backup"] = taken.path.name
    return taken.record()


def load(rs: RestoreRun, run: Run) -> StepResult:
    backups = rs.site.backups_dir
    container_path = f"/backups/{rs.file.name}"
    copied = None
    if rs.file.parent != backups:
        copied = backups / f".restore-{rs.file.name}"
        shutil.copyfile(rs.file, copied)
        os.chmod(copied, 0o600)
        container_path = f"/backups/{copied.name}"
    try:
        scratch = rs.database.load_into_scratch(container_path)
        rs.database.swap_in(scratch)
    finally:
        if copied:
            copied.unlink(missing_ok=True)
    return {"restored": rs.file.name}


def reopen(rs: RestoreRun, run: Run) -> StepResult:
    files, slug = rs.ctx.edge.files, rs.site.slug

    def maintenance_off() -> None:
        files.set_maintenance(slug, False)

    if rs.then_flip:
        rs.then_flip(run, maintenance_off)
    else:
        live, live_record = run.state.live, run.state.live_record
        if live and live_record is not None:
            rs.stacks.start_worker(live, live_record.image, live=True)
        maintenance_off()
    run.forget_cleanups()
    return {}


def restore_steps(
    ctx: Context, site: Site, file: Path, *, require_sha: bool, then_flip: Reopen | None = None
) -> tuple[Step, ...]:
    """Verify, safety-backup, maintenance on, restore, (flip), maintenance off: as plan steps."""
    stacks = ctx.stacks(site)
    rs = RestoreRun(
        ctx, site, stacks, stacks.database(), file, require_sha, stacks.backup_name("safety-before-restore"), then_flip
    )
    return (
        Step("verify", f"check {file.name} against its sha256", functools.partial(verify, rs)),
        Step(
            "safety-backup",
            "maintenance page on, stop the worker, pg_dump the current database",
            functools.partial(safety_backup, rs),
        ),
        Step("restore", f"load {file.name} into a scratch database, then swap it in", functools.partial(load, rs)),
        Step(
            "reopen",
            "maintenance page off" + (", switch traffic" if then_flip else ""),
            functools.partial(reopen, rs),
        ),
    )


def restore(
    ctx: Context,
    slug: str,
    file: str,
    *,
    yes: bool,
    lock_timeout: float = 0.0,
    confirm: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    site = ctx.site(slug)
    path = resolve_backup_file(site, file)
    confirm_restore(site, path, yes, confirm)
    with opened(ctx, site, f"restore {slug} {path.name}", lock_timeout=lock_timeout):
        plan = Plan("restore", slug, restore_steps(ctx, site, path, require_sha=False), facts={"file": path.name})
        return ctx.execute(plan, site, f"restore {slug} {path.name}")
