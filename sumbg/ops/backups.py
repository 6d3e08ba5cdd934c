"""Database backups: take, list, verify and restore (with a safety backup and a maintenance page)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sumbg.errors import BackupError, NotFound, UsageError
from sumbg.ops.context import Context, refuse_if_interrupted
from sumbg.ops.executor import Plan, Run, Step
from sumbg.site.records import recorded
from sumbg.site.site import Site
from sumbg.site.stacks import sha256_file

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

    def describe(self) -> dict:
        match = _NAME.match(self.path.name)
        stat = self.path.stat()
        return {
            "file": self.path.name,
            "size": stat.st_size,
            "time": int(stat.st_mtime),
            "ref": match.group("ref") if match else None,
            "verified": self.verified(),
        }


def list_backups(ctx: Context, slug: str) -> list[dict]:
    site = ctx.site(slug)
    files = sorted(ctx.stacks(site).list_backup_files(), key=lambda p: p.stat().st_mtime, reverse=True)
    return [BackupFile(path).describe() for path in files]


def backup(ctx: Context, slug: str, *, lock_timeout: float = 0.0) -> dict:
    site = ctx.site(slug)
    stacks = ctx.stacks(site)
    with site.lock().acquire(timeout=lock_timeout, command=f"sumbg backup {slug}"):
        state = site.records.load_state()
        refuse_if_interrupted(site, state)
        live_ref = recorded(state, state.get("live")).get("ref") or "manual"
        name = stacks.backup_name(live_ref)

        def take(run: Run):
            taken, pruned = stacks.backup_and_prune(name, run.state)
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


def restore_steps(ctx: Context, site: Site, file: Path, *, require_sha: bool, then_flip=None) -> tuple[Step, ...]:
    """Verify, safety-backup, maintenance on, restore, (flip), maintenance off: as plan steps."""
    stacks = ctx.stacks(site)
    database = stacks.database()
    edge_files = ctx.edge.files
    safety_name = stacks.backup_name("safety-before-restore")

    def verify(run: Run):
        check = BackupFile(file).verified()
        if check is False:
            raise BackupError(f"{file.name} does not match its recorded sha256; refusing to restore it")
        if check is None and require_sha:
            raise BackupError(f"{file.name} has no recorded sha256 ({file.name}.sha256); refusing to restore it")
        return {"sha256": "verified" if check else "not recorded (plain SQL backup)"}

    def safety(run: Run):
        edge_files.set_maintenance(site.slug, True)
        run.on_failure("turn the maintenance page off", lambda: edge_files.set_maintenance(site.slug, False))
        live = run.state.get("live")
        if live and stacks.stop_worker(live):
            run.on_failure(f"restart {live}'s worker", lambda: stacks.start_worker(live))
        database.terminate(database.name)
        taken = stacks.backup(safety_name)
        run.notes["safety_backup"] = taken.path.name
        return taken.record()

    def load(run: Run):
        container_path = f"/backups/{file.name}"
        copied = None
        if file.parent != site.backups_dir:
            copied = site.backups_dir / f".restore-{file.name}"
            shutil.copyfile(file, copied)
            os.chmod(copied, 0o600)
            container_path = f"/backups/{copied.name}"
        try:
            scratch = database.load_into_scratch(container_path)
            database.swap_in(scratch)
        finally:
            if copied:
                copied.unlink(missing_ok=True)
        return {"restored": file.name}

    def reopen(run: Run):
        def maintenance_off() -> None:
            edge_files.set_maintenance(site.slug, False)

        if then_flip:
            then_flip(run, maintenance_off)
        else:
            live = run.state.get("live")
            if live:
                stacks.start_worker(live)
            maintenance_off()
        run.forget_cleanups()

    return (
        Step("verify", f"check {file.name} against its sha256", verify),
        Step("safety-backup", "maintenance page on, stop the worker, pg_dump the current database", safety),
        Step("restore", f"load {file.name} into a scratch database, then swap it in", load),
        Step("reopen", "maintenance page off" + (", switch traffic" if then_flip else ""), reopen),
    )


def restore(
    ctx: Context,
    slug: str,
    file: str,
    *,
    yes: bool,
    lock_timeout: float = 0.0,
    confirm: Callable[[str], bool] | None = None,
) -> dict:
    site = ctx.site(slug)
    path = resolve_backup_file(site, file)
    confirm_restore(site, path, yes, confirm)
    with site.lock().acquire(timeout=lock_timeout, command=f"sumbg restore {slug} {path.name}"):
        refuse_if_interrupted(site, site.records.load_state())
        plan = Plan("restore", slug, restore_steps(ctx, site, path, require_sha=False), facts={"file": path.name})
        return ctx.execute(plan, site, f"restore {slug} {path.name}")
