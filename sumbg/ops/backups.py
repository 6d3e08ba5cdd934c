"""`sumbg backups` and `restore`: backups listed, verified and restored (a restore takes a safety
backup first and shows the maintenance page while it runs). `sumbg backup` itself, database and
media and offsite, is ops/offsite.py."""

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
from sumbg.site.backupset import SAFETY, BackupSet, Manifest, MediaCount, copy_tree, count_tree
from sumbg.site.site import APP_UID, Site
from sumbg.site.stacks import sha256_file
from sumbg.site.state import SiteState
from sumbg.util import utc_now

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
    """Each dump, newest first, with what its manifest says of it (kind, media, offsite snapshot)."""
    site = ctx.site(slug)
    files = sorted(ctx.stacks(site).list_backup_files(), key=lambda p: p.stat().st_mtime, reverse=True)
    found = []
    backups = BackupSet(site.backups_dir)
    for path in files:
        item = BackupFile(path).describe()
        manifest = backups.read(path.name)
        item["kind"] = manifest.kind if manifest else None
        item["media"] = manifest.media_count.to_json() if manifest else None
        item["offsite"] = manifest.offsite if manifest else None
        found.append(item)
    return found


def protected_backups(state: SiteState) -> set[str]:
    """The backups state.json records for a colour: a rollback's way back, never pruned."""
    return {record.backup for record in state.colours.values() if record.backup}


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


# Where a restore's dump, media and expected media count are, once known (a snapshot fetched
# from the offsite repository by an earlier step of the same plan).
Locate = Callable[[], tuple[Path, Path, MediaCount]]


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
    locate: Locate | None = None  # also restore media (from where this says)

    def source(self) -> Path:
        return self.locate()[0] if self.locate else self.file


def verify(rs: RestoreRun, run: Run) -> StepResult:
    file = rs.source()
    check = BackupFile(file).verified()
    if check is False:
        raise BackupError(f"{file.name} does not match its recorded sha256; refusing to restore it")
    if check is None and rs.require_sha:
        raise BackupError(f"{file.name} has no recorded sha256 ({file.name}.sha256); refusing to restore it")
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
    if not rs.database.has_tables():
        # A database lost and created again empty (a restore drill, a new volume): nothing to keep.
        return {"outcome": "skipped", "reason": "the database holds no table: nothing to keep"}
    taken = rs.stacks.backup(rs.safety_name)
    run.notes["safety_backup"] = taken.path.name
    return taken.record()


def load(rs: RestoreRun, run: Run) -> StepResult:
    backups = rs.site.backups_dir
    file = rs.source()
    container_path = f"/backups/{file.name}"
    copied = None
    if file.is_relative_to(backups):
        # The backups folder is mounted in the Postgres container: anything under it is read in place.
        container_path = f"/backups/{file.relative_to(backups)}"
    else:
        copied = backups / f".restore-{file.name}"
        shutil.copyfile(file, copied)
        os.chmod(copied, 0o600)
        container_path = f"/backups/{copied.name}"
    try:
        scratch = rs.database.load_into_scratch(container_path)
        rs.database.swap_in(scratch)
    finally:
        if copied:
            copied.unlink(missing_ok=True)
    return {"restored": file.name}


def restore_media(rs: RestoreRun, run: Run) -> StepResult:
    """The backup's media in place of the site's: what the folder held is kept, as the safety
    backup's media copy (its manifest written), and put back if the copy fails. The folder itself
    stays (the colours' containers mount it): only what is in it changes."""
    assert rs.locate is not None
    _dump, source, expected = rs.locate()
    media = rs.site.media_dir
    media.mkdir(parents=True, exist_ok=True)
    backups = BackupSet(rs.site.backups_dir)
    aside = backups.media_path(rs.safety_name)
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(parents=True)
    for item in list(media.iterdir()):
        shutil.move(str(item), str(aside / item.name))

    def put_back() -> None:
        for item in list(media.iterdir()):
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        for item in list(aside.iterdir()):
            shutil.move(str(item), str(media / item.name))

    run.on_failure(f"put the media back from {aside.name}", put_back)
    restored = copy_tree(source, media, APP_UID)
    if (restored.files, restored.bytes) != (expected.files, expected.bytes):
        raise BackupError(
            f"the media restored are {restored.files} files ({restored.bytes} bytes), the backup recorded "
            f"{expected.files} ({expected.bytes} bytes)"
        )
    kept = count_tree(aside)
    if (rs.site.backups_dir / rs.safety_name).is_file():
        # The safety backup is complete: its dump and the media it replaced, recorded as one.
        backups.write(
            Manifest(
                backup=rs.safety_name,
                site=rs.site.slug,
                kind=SAFETY,
                taken_at=utc_now(),
                release={"colour": run.state.live, "ref": run.state.ref(run.state.live), "commit": None},
                database={"file": rs.safety_name},
                media=kept.to_json(),
            )
        )
    elif kept.files == 0:
        shutil.rmtree(aside, ignore_errors=True)  # an empty database and an empty folder: nothing was kept
    return {
        "media_files": restored.files,
        "media_bytes": restored.bytes,
        "kept_aside": aside.name if aside.exists() else None,
    }


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
    ctx: Context,
    site: Site,
    file: Path,
    *,
    require_sha: bool,
    then_flip: Reopen | None = None,
    locate: Locate | None = None,
) -> tuple[Step, ...]:
    """Verify, safety-backup, maintenance on, restore, (media), (flip), maintenance off: as plan steps."""
    stacks = ctx.stacks(site)
    rs = RestoreRun(
        ctx,
        site,
        stacks,
        stacks.database(),
        file,
        require_sha,
        stacks.backup_name("safety-before-restore"),
        then_flip,
        locate,
    )
    media = (
        (
            Step(
                "media",
                f"copy the backup's media into {site.media_dir} (the current folder kept beside the safety backup)",
                functools.partial(restore_media, rs),
            ),
        )
        if locate
        else ()
    )
    return (
        Step("verify", f"check {file.name} against its sha256", functools.partial(verify, rs)),
        Step(
            "safety-backup",
            "maintenance page on, stop the worker, pg_dump the current database",
            functools.partial(safety_backup, rs),
        ),
        Step("restore", f"load {file.name} into a scratch database, then swap it in", functools.partial(load, rs)),
        *media,
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
