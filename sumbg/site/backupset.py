"""A site's complete backup on this host: its verified dump, a copy of its media taken right
after it, and one manifest that records both with the release that was live (and, once
uploaded, the restic snapshot that holds them offsite).

    <slug>/backups/<slug>_<UTC>_<ref>.dump          pg_dump -Fc, 0600 (+ .sha256)
    <slug>/backups/<slug>_<UTC>_<ref>.media/        the media folder as it was, hard links
    <slug>/backups/<slug>_<UTC>_<ref>.json          the manifest, 0600: a backup without one is not good

The media copy is a tree of hard links: instant and free of space while the files are
unchanged, and Django's storage never rewrites a media file in place (an upload under a taken
name gets a new name). A restore copies the files back (never links), so what the site writes
afterwards cannot reach the backup.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg.util import atomic_write, utc_now

MANIFEST_SUFFIX = ".json"
MEDIA_SUFFIX = ".media"
# The names a snapshot holds in its staging folder (stable, so restic finds its parent snapshot).
STAGED_DUMP = "database.dump"
STAGED_MANIFEST = "manifest.json"
STAGED_MEDIA = "media"
STAGED_SECRETS = "site.env"
# Kinds of backup: restic tags, and what `status` calls them.
MANUAL, SCHEDULED, UPGRADE, SAFETY = "manual", "scheduled", "upgrade", "safety"


def stem(dump_name: str) -> str:
    return dump_name[: -len(".dump")] if dump_name.endswith(".dump") else dump_name


@dataclass(frozen=True)
class MediaCount:
    files: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "bytes": self.bytes}


@dataclass
class Manifest:
    """What one complete backup holds, as its .json file says."""

    backup: str  # the dump's file name
    site: str
    kind: str
    taken_at: str
    release: dict[str, str | None] = field(default_factory=dict)  # colour, ref, commit
    database: dict[str, Any] = field(default_factory=dict)  # file, sha256, size, entries, rows
    media: dict[str, int] = field(default_factory=dict)  # files, bytes
    offsite: dict[str, Any] | None = None  # repository, snapshot, uploaded_at, files, bytes, data_added
    # What the release's image held (ColourRecord.dependencies): a new host rebuilds it with these versions.
    dependencies: list[dict[str, str]] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            backup=str(data.get("backup", "")),
            site=str(data.get("site", "")),
            kind=str(data.get("kind", "")),
            taken_at=str(data.get("taken_at", "")),
            release=dict(data.get("release") or {}),
            database=dict(data.get("database") or {}),
            media=dict(data.get("media") or {}),
            offsite=dict(data["offsite"]) if data.get("offsite") else None,
            dependencies=[dict(d) for d in data["dependencies"]] if data.get("dependencies") else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backup": self.backup,
            "site": self.site,
            "kind": self.kind,
            "taken_at": self.taken_at,
            "release": self.release,
            "database": self.database,
            "media": self.media,
        }
        if self.offsite is not None:
            out["offsite"] = self.offsite
        if self.dependencies:
            out["dependencies"] = self.dependencies
        return out

    @property
    def rows(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in (self.database.get("rows") or {}).items()}

    @property
    def media_count(self) -> MediaCount:
        return MediaCount(int(self.media.get("files", 0)), int(self.media.get("bytes", 0)))


class BackupSet:
    """The complete backups in a site's backups folder."""

    def __init__(self, backups_dir: Path) -> None:
        self.dir = backups_dir

    def manifest_path(self, dump_name: str) -> Path:
        return self.dir / (stem(dump_name) + MANIFEST_SUFFIX)

    def media_path(self, dump_name: str) -> Path:
        return self.dir / (stem(dump_name) + MEDIA_SUFFIX)

    def write(self, manifest: Manifest) -> Path:
        path = self.manifest_path(manifest.backup)
        atomic_write(path, json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n", mode=0o600)
        return path

    def read(self, dump_name: str) -> Manifest | None:
        try:
            data = json.loads(self.manifest_path(dump_name).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return Manifest.from_json(data) if isinstance(data, dict) else None

    def manifests(self) -> list[Manifest]:
        """Every complete backup whose dump is still there, newest first."""
        found = []
        if not self.dir.exists():
            return []
        for path in self.dir.glob("*" + MANIFEST_SUFFIX):
            manifest = self.read(path.name[: -len(MANIFEST_SUFFIX)] + ".dump")
            if manifest is not None and (self.dir / manifest.backup).is_file():
                found.append(manifest)
        return sorted(found, key=lambda m: (m.taken_at, m.backup), reverse=True)

    def remove(self, dump_name: str) -> None:
        """A backup's every file: dump, checksum, manifest and media copy."""
        (self.dir / dump_name).unlink(missing_ok=True)
        (self.dir / (dump_name + ".sha256")).unlink(missing_ok=True)
        self.manifest_path(dump_name).unlink(missing_ok=True)
        shutil.rmtree(self.media_path(dump_name), ignore_errors=True)


def record_offsite(manifest: Manifest, repository: str, snapshot: str, **facts: Any) -> None:
    manifest.offsite = {"repository": repository, "snapshot": snapshot, "uploaded_at": utc_now(), **facts}


def link_tree(source: Path, dest: Path) -> MediaCount:
    """A copy of `source` at `dest` made of hard links (a real copy where links cannot be made)."""
    files = size = 0
    dest.mkdir(parents=True, exist_ok=True)
    if not source.exists():
        return MediaCount()
    for root, dirs, names in os.walk(source):
        here = Path(root)
        there = dest / here.relative_to(source)
        for name in dirs:
            (there / name).mkdir(exist_ok=True)
        for name in names:
            src, dst = here / name, there / name
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
                continue
            if not src.is_file():
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            files += 1
            size += dst.stat().st_size
    return MediaCount(files, size)


def count_tree(path: Path) -> MediaCount:
    """Regular files and their bytes under a folder."""
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = Path(root) / name
            if full.is_file() and not full.is_symlink():
                files += 1
                size += full.stat().st_size
    return MediaCount(files, size)


def copy_tree(source: Path, dest: Path, owner: int | None) -> MediaCount:
    """A real copy (never links) of what `source` holds into the folder `dest` (created if missing,
    kept if there: a container may mount it), owned by `owner` when sumbg runs as root."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, symlinks=True, copy_function=shutil.copy2, dirs_exist_ok=True)
    if owner is not None and os.geteuid() == 0:
        os.chown(dest, owner, owner)
        for root, dirs, names in os.walk(dest):
            for name in [*dirs, *names]:
                os.chown(Path(root) / name, owner, owner, follow_symlinks=False)
    return count_tree(dest)
