"""Complete backups that survive the host: `sumbg backup` (database and media, verified here,
then uploaded to the site's restic repository), `backup --all` (what the schedule runs),
`backup verify` (a restore drill off to the side), `restore --from-offsite` and the disaster
recovery `init --from-backup`; and what `status` says about a site's last good backups.

A backup counts as good here once its dump verified and its manifest was written after the
media copy; it counts as good offsite only once restic reported the snapshot and the snapshot
holds every staged file and byte. A failure at any stage exits 1 naming the stage (the step),
is recorded in the history, and shows in `status` until a backup succeeds.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters import pydeps
from sumbg.adapters.build import Constraints
from sumbg.adapters.restic import Repository, Snapshot, Upload
from sumbg.config import BackupPolicy, set_site_settings
from sumbg.errors import BackupError, NotFound, SumbgError, UsageError
from sumbg.ops.backups import confirm_restore, protected_backups, restore_steps
from sumbg.ops.context import Context
from sumbg.ops.dependencies import RecordedBuild, recorded_constraints
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.hooks import HookCall, configured, pre_hook_step
from sumbg.ops.opening import opened
from sumbg.ops.seams import OffsiteStore, SiteStacks
from sumbg.site import retention
from sumbg.site.backupset import (
    MANUAL,
    SCHEDULED,
    STAGED_DUMP,
    STAGED_MANIFEST,
    STAGED_MEDIA,
    STAGED_SECRETS,
    BackupSet,
    Manifest,
    MediaCount,
    count_tree,
    link_tree,
    record_offsite,
    stem,
)
from sumbg.site.database import VERIFY_SUFFIX
from sumbg.site.site import Site
from sumbg.site.state import SiteState
from sumbg.util import utc_now

STAGE_DIR = ".offsite"  # in the backups folder: what one upload sends (hard links), removed after it
FETCH_DIR = ".offsite-restore"  # in the backups folder: a snapshot fetched for a restore or a drill
LATEST = "latest"


def repository_of(ctx: Context, policy: BackupPolicy, location: str | None = None) -> Repository:
    return Repository(
        location=location or policy.repository,
        password_file=policy.password_file,
        env_file=policy.env_file,
        ssh_key_file=policy.ssh_key_file,
        ssh_known_hosts=policy.ssh_known_hosts,
        cache_dir=str(ctx.host.root / ".cache" / "restic"),
    )


def tag_value(text: str) -> str:
    """A tag's value as restic can filter on it (a comma separates tags)."""
    return "".join(ch if ch.isalnum() or ch in "._-+" else "-" for ch in text)


def site_tag(slug: str) -> str:
    return f"site={slug}"


# ---------------------------------------------------------------- sumbg backup


@dataclass
class BackupRun:
    """What a backup's steps share."""

    ctx: Context
    site: Site
    stacks: SiteStacks
    policy: BackupPolicy
    name: str
    kind: str
    release: dict[str, str | None]
    manifest: Manifest | None = None
    store: OffsiteStore | None = None
    dependencies: list[dict[str, str]] | None = None  # what the live release's image holds, as recorded

    @property
    def backups(self) -> BackupSet:
        return BackupSet(self.site.backups_dir)

    def offsite_store(self) -> OffsiteStore:
        if self.store is None:
            self.store = self.ctx.offsite(repository_of(self.ctx, self.policy))
        return self.store

    def tags(self) -> list[str]:
        return [
            "sumbg",
            site_tag(self.site.slug),
            f"release={tag_value(self.release.get('ref') or 'unknown')}",
            f"kind={self.kind}",
            f"backup={stem(self.name)}",
        ]


def dump_step(br: BackupRun, run: Run) -> StepResult:
    run.on_failure(f"remove the unfinished backup {br.name}", lambda: br.backups.remove(br.name))
    taken = br.stacks.backup(br.name)
    rows = br.stacks.dump_row_counts(br.name)
    br.manifest = Manifest(
        backup=br.name,
        site=br.site.slug,
        kind=br.kind,
        taken_at=utc_now(),
        release=br.release,
        dependencies=br.dependencies,
        database={
            "file": br.name,
            "sha256": taken.sha256,
            "size": taken.size,
            "entries": taken.entries,
            "rows": rows,
        },
    )
    return {**taken.record(), "tables": len(rows), "rows": sum(rows.values())}


def media_step(br: BackupRun, run: Run) -> StepResult:
    assert br.manifest is not None
    shutil.rmtree(br.backups.media_path(br.name), ignore_errors=True)  # a backup of the same second, replaced
    copy = link_tree(br.site.media_dir, br.backups.media_path(br.name))
    br.manifest.media = copy.to_json()
    br.backups.write(br.manifest)
    # The local backup is complete and recorded: whatever fails next, it stays.
    run.forget_cleanups()
    run.notes["backup"] = br.name
    return {"media_files": copy.files, "media_bytes": copy.bytes, "manifest": br.backups.manifest_path(br.name).name}


def stage(br: BackupRun) -> Path:
    """What one snapshot holds, under a path that is the same every time (so restic compares each
    file with its parent snapshot's and reads only what changed): hard links, and the secrets."""
    assert br.manifest is not None
    folder = br.site.backups_dir / STAGE_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(mode=0o700)
    os.link(br.site.backups_dir / br.name, folder / STAGED_DUMP)
    shutil.copyfile(br.site.backups_dir / (br.name + ".sha256"), folder / (STAGED_DUMP + ".sha256"))
    shutil.copyfile(br.backups.manifest_path(br.name), folder / STAGED_MANIFEST)
    link_tree(br.backups.media_path(br.name), folder / STAGED_MEDIA)
    if br.site.secrets_file.exists():
        # The site's secrets go too (restic encrypts): a new host then runs the site with its own keys.
        shutil.copyfile(br.site.secrets_file, folder / STAGED_SECRETS)
        os.chmod(folder / STAGED_SECRETS, 0o600)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o600)
    return folder


def upload_step(br: BackupRun, run: Run) -> StepResult:
    if not br.policy.offsite:
        return {"outcome": "skipped", "reason": "no [backup] repository: this backup stays on this host"}
    assert br.manifest is not None
    store = br.offsite_store()
    folder = stage(br)
    try:
        created = store.ensure_initialised()
        expected = count_tree(folder)
        upload = store.backup([folder], br.tags())
        snapshot = check_upload(store, br.site.slug, upload, expected)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    record_offsite(
        br.manifest,
        store.shown,
        snapshot,
        files=upload.files,
        bytes=upload.bytes,
        data_added=upload.data_added,
    )
    br.backups.write(br.manifest)
    run.notes["snapshot"] = snapshot
    return {
        "repository": store.shown,
        "initialised": created,
        "snapshot": snapshot,
        "files": upload.files,
        "bytes": upload.bytes,
        "files_new": upload.files_new,
        "data_added": upload.data_added,
        "upload_seconds": upload.seconds,
    }


def check_upload(store: OffsiteStore, slug: str, upload: Upload, expected: MediaCount) -> str:
    """A snapshot counts only if the repository lists it and it holds every staged file and byte;
    otherwise it is removed, so nothing half made is ever taken for a backup. Returns its full id
    (restic 0.14's summary gives the short one)."""
    listed = [s.id for s in store.snapshots([site_tag(slug)]) if s.id.startswith(upload.snapshot)]
    if len(listed) == 1 and (upload.files, upload.bytes) == (expected.files, expected.bytes):
        return listed[0]
    store.forget([upload.snapshot], prune=False)
    raise BackupError(
        f"snapshot {upload.snapshot[:8]} on {store.shown} "
        + (
            f"holds {upload.files} files ({upload.bytes} bytes), not the {expected.files} ({expected.bytes} bytes) sent"
            if listed
            else "is not listed by the repository"
        )
        + ": it was removed and does not count"
    )


def prune_step(br: BackupRun, run: Run) -> StepResult:
    protected = protected_backups(run.state)
    removed = br.stacks.prune_backups(protected | {br.name})
    result: StepResult = {"removed": removed}
    if br.policy.offsite:
        store = br.offsite_store()
        snapshots = store.snapshots([site_tag(br.site.slug)])
        kept_names = {stem(name) for name in protected}
        dated = [retention.Dated(s.id, at) for s in snapshots if (at := retention.parse_time(s.time)) is not None]
        # A colour's backup is kept whatever the rules say (counted by them, as here).
        keep = {s.id for s in snapshots if (s.tag("backup") or "") in kept_names}
        forget = retention.to_delete(dated, br.policy.retention, keep)
        store.forget(forget, prune=True)
        result["offsite_removed"] = [s[:8] for s in forget]
    return result


def backup(ctx: Context, slug: str, *, kind: str = MANUAL, lock_timeout: float = 0.0) -> dict[str, Any]:
    """Dump, media, upload, prune: one complete backup of a site."""
    site = ctx.site(slug)
    stacks = ctx.stacks(site)
    policy = site.config.backup_policy(ctx.host)
    with opened(ctx, site, f"backup {slug}", lock_timeout=lock_timeout) as state:
        live, colour = state.live_record, state.live
        if live is None or colour is None:
            raise UsageError(f"site {slug} has no live release to back up")
        br = BackupRun(
            ctx,
            site,
            stacks,
            policy,
            stacks.backup_name(live.ref or "manual"),
            kind,
            {"colour": state.live, "ref": live.ref, "commit": live.commit},
            dependencies=live.dependencies,
        )
        where = f"upload to {repository_of(ctx, policy).shown}" if policy.offsite else "no [backup] repository"
        steps: tuple[Step, ...] = (
            Step(
                "dump",
                f"pg_dump to {site.backups_dir / br.name}, verify, count its rows",
                functools.partial(dump_step, br),
            ),
            Step(
                "media",
                f"copy {site.media_dir} beside it (hard links), write the manifest",
                functools.partial(media_step, br),
            ),
            Step("upload", f"{where}, check the snapshot", functools.partial(upload_step, br)),
            Step(
                "prune",
                "keep_backups and keep_daily/weekly/monthly, here and offsite",
                functools.partial(prune_step, br),
            ),
        )
        if configured(site, "pre_backup"):
            call = HookCall("pre_backup", "backup", "starting", live.ref, live.ref, colour, colour, colour, live.image)
            hook = f"the pre_backup hook (a failure stops the backup): {configured(site, 'pre_backup')}"
            steps = (pre_hook_step(ctx, site, call, hook), *steps)
        plan = Plan(
            "backup",
            slug,
            steps,
            facts={"file": br.name, "kind": kind},
        )
        return ctx.execute(plan, site, f"backup {slug}")


def backup_all(ctx: Context, *, lock_timeout: float = 600.0) -> dict[str, Any]:
    """Every live site, one after the other (what the schedule runs); one failing stops none of the
    others, and the whole exits 1 naming each that failed and its stage."""
    results: list[dict[str, Any]] = []
    for config in ctx.site_configs():
        site = Site(ctx.host, config)
        if not site.records.load_state().live:
            continue
        try:
            entry = backup(ctx, config.slug, kind=SCHEDULED, lock_timeout=lock_timeout)
            results.append(
                {"site": config.slug, "outcome": "done", "file": entry.get("file"), "snapshot": entry.get("snapshot")}
            )
        except SumbgError as exc:
            ctx.reporter.line(f"sumbg: error: {exc.format_message()}")
            results.append({"site": config.slug, "outcome": "failed", "step": exc.step, "error": exc.message})
    document = {"operation": "backup", "all": True, "sites": results}
    failed = [r for r in results if r["outcome"] != "done"]
    if failed:
        raise BackupError(
            f"backups of {len(failed)} of {len(results)} site(s) failed: "
            + ", ".join(f"{r['site']} (step {r['step']})" for r in failed),
            result=document,
        )
    return document


# ---------------------------------------------------------------- fetching a snapshot


def choose_snapshot(store: OffsiteStore, slug: str, wanted: str) -> Snapshot:
    snapshots = store.snapshots([site_tag(slug)])
    if not snapshots:
        raise NotFound(f"{store.shown} holds no backup of site {slug}")
    if wanted == LATEST:
        return max(snapshots, key=lambda s: retention.parse_time(s.time) or dt.datetime.min.replace(tzinfo=dt.UTC))
    matches = [s for s in snapshots if s.id.startswith(wanted)]
    if len(matches) != 1:
        raise NotFound(
            f"{store.shown} holds {'no' if not matches else 'more than one'} backup of site {slug} "
            f"whose snapshot id starts with {wanted!r} (`sumbg backups {slug}` lists them)"
        )
    return matches[0]


@dataclass(frozen=True)
class Fetched:
    """A snapshot restored into a scratch folder: its dump, media and manifest."""

    snapshot: Snapshot
    folder: Path  # the scratch folder (removed by whoever fetched it)
    staged: Path  # the staging folder inside it, as the snapshot holds it
    manifest: Manifest

    @property
    def dump(self) -> Path:
        return self.staged / STAGED_DUMP

    @property
    def media(self) -> Path:
        return self.staged / STAGED_MEDIA

    @property
    def secrets(self) -> Path:
        return self.staged / STAGED_SECRETS


def fetch(store: OffsiteStore, snapshot: Snapshot, folder: Path) -> Fetched:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    store.restore(snapshot.id, folder)
    found = sorted(folder.rglob(STAGED_MANIFEST))
    if len(found) != 1 or not (found[0].parent / STAGED_DUMP).is_file():
        raise BackupError(f"snapshot {snapshot.short_id} on {store.shown} is not a sumbg backup (no manifest and dump)")
    manifest = Manifest.from_json(json.loads(found[0].read_text()))
    staged = found[0].parent
    (staged / STAGED_MEDIA).mkdir(exist_ok=True)  # a site with no media yet
    return Fetched(snapshot, folder, staged, manifest)


# ---------------------------------------------------------------- sumbg backup verify


@dataclass
class VerifyRun:
    ctx: Context
    site: Site
    stacks: SiteStacks
    store: OffsiteStore
    wanted: str
    folder: Path
    fetched: Fetched | None = None
    found: dict[str, Any] = field(default_factory=dict)


def verify_fetch(vr: VerifyRun, run: Run) -> StepResult:
    run.on_failure("remove the scratch folder", lambda: shutil.rmtree(vr.folder, ignore_errors=True))
    snapshot = choose_snapshot(vr.store, vr.site.slug, vr.wanted)
    vr.fetched = fetch(vr.store, snapshot, vr.folder)
    return {"snapshot": snapshot.id, "taken_at": vr.fetched.manifest.taken_at, "backup": vr.fetched.manifest.backup}


def verify_database(vr: VerifyRun, run: Run) -> StepResult:
    assert vr.fetched is not None
    database = vr.stacks.database()
    scratch = database.name + VERIFY_SUFFIX
    run.on_failure(f"drop {scratch}", lambda: database.drop_if_exists(scratch))
    container_path = f"/backups/{vr.fetched.dump.relative_to(vr.site.backups_dir)}"
    database.load_into_scratch(container_path, VERIFY_SUFFIX)
    try:
        rows = database.row_counts(scratch)
    finally:
        database.drop_if_exists(scratch)
    vr.found["rows"] = rows
    return {"tables": len(rows), "rows": sum(rows.values())}


def verify_media(vr: VerifyRun, run: Run) -> StepResult:
    assert vr.fetched is not None
    count = count_tree(vr.fetched.media)
    vr.found["media"] = count
    return count.to_json()


def verify_compare(vr: VerifyRun, run: Run) -> StepResult:
    assert vr.fetched is not None
    manifest = vr.fetched.manifest
    try:
        problems = differences(manifest, vr.found["rows"], vr.found["media"])
        if problems:
            raise BackupError(
                f"snapshot {vr.fetched.snapshot.short_id} does not restore what was recorded: "
                + "; ".join(problems[:5])
            )
    finally:
        shutil.rmtree(vr.folder, ignore_errors=True)
    run.forget_cleanups()
    media = manifest.media_count
    return {
        "tables": len(manifest.rows),
        "rows": sum(manifest.rows.values()),
        "media_files": media.files,
        "media_bytes": media.bytes,
        "verdict": "every row and file restored",
    }


def differences(manifest: Manifest, rows: dict[str, int], media: MediaCount) -> list[str]:
    """What a restore of a backup gave that differs from what the backup recorded."""
    problems = []
    recorded = manifest.rows
    for table in sorted(set(recorded) | set(rows)):
        if recorded.get(table) != rows.get(table):
            problems.append(f"{table}: {rows.get(table, 'missing')} rows, recorded {recorded.get(table, 'none')}")
    expected = manifest.media_count
    if (media.files, media.bytes) != (expected.files, expected.bytes):
        problems.append(
            f"media: {media.files} files ({media.bytes} bytes), recorded {expected.files} ({expected.bytes} bytes)"
        )
    return problems


def verify(ctx: Context, slug: str, snapshot: str = LATEST, *, lock_timeout: float = 0.0) -> dict[str, Any]:
    """The restore drill off to the side: the snapshot into a scratch database and folder, compared
    with what its backup recorded, then removed. The live site is not touched."""
    site = ctx.site(slug)
    policy = site.config.backup_policy(ctx.host)
    if not policy.offsite:
        raise UsageError(f"site {slug} has no [backup] repository to verify (set it in sumbg.toml or site.toml)")
    store = ctx.offsite(repository_of(ctx, policy))
    with opened(ctx, site, f"backup verify {slug}", lock_timeout=lock_timeout):
        vr = VerifyRun(ctx, site, ctx.stacks(site), store, snapshot, site.backups_dir / FETCH_DIR)
        plan = Plan(
            "backup-verify",
            slug,
            (
                Step(
                    "fetch",
                    f"restic restore {snapshot} from {store.shown} into a scratch folder",
                    functools.partial(verify_fetch, vr),
                ),
                Step(
                    "database",
                    f"load its dump into {site.config.db_name}{VERIFY_SUFFIX}, count the rows, drop it",
                    functools.partial(verify_database, vr),
                ),
                Step("media", "count its media files and bytes", functools.partial(verify_media, vr)),
                Step(
                    "compare",
                    "compare with the backup's manifest, remove the scratch folder",
                    functools.partial(verify_compare, vr),
                ),
            ),
            facts={"repository": store.shown, "snapshot": snapshot},
        )
        return ctx.execute(plan, site, f"backup verify {slug}")


# ---------------------------------------------------------------- sumbg restore --from-offsite


def restore_offsite(
    ctx: Context,
    slug: str,
    snapshot: str = LATEST,
    *,
    yes: bool,
    lock_timeout: float = 0.0,
    confirm: Callable[[str], bool] | None = None,
    repository: str | None = None,
    fetched: Fetched | None = None,
) -> dict[str, Any]:
    """Database and media back from the repository, with today's restore's safety (a safety backup,
    the maintenance page, a scratch database swapped in by renaming, the media folder kept aside)."""
    site = ctx.site(slug)
    policy = site.config.backup_policy(ctx.host)
    if not (repository or policy.offsite):
        raise UsageError(f"site {slug} has no [backup] repository to restore from (set it in sumbg.toml or site.toml)")
    store = ctx.offsite(repository_of(ctx, policy, repository))
    folder = site.backups_dir / FETCH_DIR
    if fetched is None:
        chosen = choose_snapshot(store, slug, snapshot)
        confirm_restore(site, Path(f"snapshot {chosen.short_id}"), yes, confirm)
    else:
        chosen = fetched.snapshot
    try:
        with opened(ctx, site, f"restore {slug} --from-offsite {chosen.short_id}", lock_timeout=lock_timeout):
            got: list[Fetched] = [fetched] if fetched is not None else []

            def fetch_step(run: Run) -> StepResult:
                if not got:
                    got.append(fetch(store, chosen, folder))
                manifest = got[0].manifest
                return {
                    "snapshot": chosen.id,
                    "backup": manifest.backup,
                    "taken_at": manifest.taken_at,
                    "release": manifest.release,
                }

            the_dump = fetched.dump if fetched is not None else folder / "pending" / STAGED_DUMP
            steps = restore_steps(
                ctx,
                site,
                the_dump,
                require_sha=True,
                locate=lambda: (got[0].dump, got[0].media, got[0].manifest.media_count),
            )
            plan = Plan(
                "restore",
                slug,
                (Step("fetch", f"restic restore {chosen.short_id} from {store.shown}", fetch_step), *steps),
                facts={"repository": store.shown, "snapshot": chosen.id},
            )
            return ctx.execute(plan, site, f"restore {slug} --from-offsite {chosen.short_id}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if fetched is not None:
            shutil.rmtree(fetched.folder, ignore_errors=True)


# ---------------------------------------------------------------- sumbg init --from-backup


def recover_site(
    ctx: Context,
    slug: str,
    repository: str,
    init: Callable[[str | None, Constraints | None], dict[str, Any]],
    ref: str | None,
) -> dict[str, Any]:
    """Disaster recovery on a new host: the latest backup of SLUG in REPOSITORY is fetched, the
    release it recorded is built (with the versions its image held, when the backup recorded them)
    and deployed (`init`, with the site's secrets from the backup),
    then its database and media are restored, and the site keeps backing up to that repository."""
    naming.validate_slug(slug)
    if ctx.host.site_dir(slug).joinpath("state.json").exists():
        raise UsageError(f"site {slug} already exists on this host: use `sumbg restore {slug} --from-offsite`")
    policy = ctx.host.backup
    repo = Repository(
        location=repository,
        password_file=policy.password_file,
        env_file=policy.env_file,
        ssh_key_file=policy.ssh_key_file,
        ssh_known_hosts=policy.ssh_known_hosts,
        cache_dir=str(ctx.host.root / ".cache" / "restic"),
    )
    store = ctx.offsite(repo)
    chosen = choose_snapshot(store, slug, LATEST)
    ctx.host.root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".recover-{slug}-", dir=ctx.host.root))
    try:
        ctx.reporter.line(f"fetching backup {chosen.short_id} of {slug} from {store.shown}")
        fetched = fetch(store, chosen, folder)
        recorded = fetched.manifest.release.get("ref")
        if not recorded:
            raise BackupError(f"backup {chosen.short_id} records no release to build")
        if ref is not None and ref != recorded:
            raise UsageError(f"--ref {ref} is not the release the backup recorded ({recorded}); leave --ref out")
        site_dir = ctx.host.site_dir(slug)
        if fetched.secrets.is_file() and not (site_dir / ".env").exists():
            site_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fetched.secrets, site_dir / ".env")
            os.chmod(site_dir / ".env", 0o600)
        held = fetched.manifest.dependencies
        where = f"backup {chosen.short_id}'s manifest"
        as_built = (
            recorded_constraints(RecordedBuild(pydeps.dependencies_from_json(held), recorded, where)) if held else None
        )
        deployed = init(recorded, as_built)
        site = ctx.site(slug)
        if repository != ctx.host.backup.repository:
            set_site_settings(site.dir / "site.toml", {"backup.repository": repository})
        restored = restore_offsite(ctx, slug, yes=True, repository=repository, fetched=fetched)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "operation": "init",
        "site": slug,
        "outcome": "done",
        "from_backup": {"repository": store.shown, "snapshot": chosen.id, "release": recorded},
        "init": deployed,
        "restore": restored,
    }


# ---------------------------------------------------------------- what status says


def _age(text: str | None, now: dt.datetime) -> float | None:
    at = retention.parse_time(text) if text else None
    return round((now - at).total_seconds()) if at else None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds < 172800 else f"{seconds / 86400:.1f}d"


def backup_status(ctx: Context, site: Site, state: SiteState, now: dt.datetime | None = None) -> dict[str, Any]:
    """The site's last good backup here and offsite, its last failed one, and the problems:
    either older than [backup] max_age (or none at all once the site is older than that), or the
    last backup failed."""
    now = now or dt.datetime.now(dt.UTC)
    policy = site.config.backup_policy(ctx.host)
    manifests = BackupSet(site.backups_dir).manifests()
    local = manifests[0] if manifests else None
    shown = repository_of(ctx, policy).shown if policy.offsite else None
    # Only a snapshot in the repository the site backs up to now counts as offsite.
    offsite = next((m for m in manifests if m.offsite and m.offsite.get("repository") == shown), None)
    history = [e for e in site.records.history() if e.get("event") == "finished"]
    since = _age(history[0].get("at"), now) if history else None  # the site's age, as its records tell
    last_op = next((e for e in reversed(history) if e.get("operation") == "backup"), None)
    failure = None
    if last_op is not None and last_op.get("outcome") != "done":
        failure = {
            "at": last_op.get("at"),
            "step": last_op.get("failed_step"),
            "message": (last_op.get("error") or {}).get("message"),
        }
    problems = []
    for where, good, needed in (("here", local, True), ("offsite", offsite, policy.offsite)):
        if not needed:
            continue
        age = _age(good.taken_at if good else None, now)
        if age is not None and age > policy.max_age:
            problems.append(f"last good backup {where} is {_hours(age)} old (max_age {_hours(policy.max_age)})")
        elif age is None and since is not None and since > policy.max_age:
            problems.append(f"no good backup {where} in {_hours(since)} (max_age {_hours(policy.max_age)})")
    if failure:
        problems.append(f"the last backup failed at step {failure['step']} ({failure['at']}): {failure['message']}")
    return {
        "repository": shown,
        "max_age_seconds": policy.max_age,
        "local": {
            "backup": local.backup,
            "at": local.taken_at,
            "age_seconds": _age(local.taken_at, now),
            "release": local.release.get("ref"),
            "media_files": local.media_count.files,
        }
        if local
        else None,
        "offsite": {
            "backup": offsite.backup,
            "snapshot": (offsite.offsite or {}).get("snapshot"),
            "at": offsite.taken_at,
            "uploaded_at": (offsite.offsite or {}).get("uploaded_at"),
            "age_seconds": _age(offsite.taken_at, now),
        }
        if offsite
        else None,
        "last_failure": failure,
        "problems": problems,
    }
