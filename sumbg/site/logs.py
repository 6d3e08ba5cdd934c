"""A site's kept logs: the web and worker logs of every colour sumbg removed, compressed in
`<slug>/logs/`, so `sumbg logs SLUG --release REF` reads an earlier release's logs after its
containers are gone (Docker deletes a container's logs with it).

One file per container, named `<removed at>_<colour>_<service>_<ref>.log.gz`, each line as
`docker logs --timestamps` gave it. A site keeps at most `[logs] keep_mb` of them: one
container's logs keep their newest lines within it, and the oldest files go first.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sumbg import naming

# Raw bytes compressed as one gzip member: the unit in which the oldest lines are dropped (an
# eighth of the cap when that is smaller, so a small cap still keeps its newest lines).
CHUNK_BYTES = 256 * 1024
# Room left in the cap for the line that says how many were dropped.
NOTE_BYTES = 128
SERVICES = ("web", "worker")
_NAME = re.compile(
    rf"^(?P<stamp>\d{{8}}T\d{{6}}\.\d{{3}}Z)_(?P<colour>{'|'.join(naming.COLOURS)})_"
    rf"(?P<service>{'|'.join(SERVICES)})_(?P<ref>[A-Za-z0-9._+~-]+)\.log\.gz$"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+~-]")


def file_ref(ref: str) -> str:
    """A ref as it appears in a file name: `/` becomes `~` (no ref holds one), anything else
    outside [A-Za-z0-9._+-] becomes `-`."""
    return _UNSAFE.sub("-", ref.replace("/", "~")) or "unknown"


@dataclass(frozen=True)
class KeptLog:
    path: Path
    removed_at: dt.datetime
    colour: str
    service: str
    ref: str  # as the file name holds it (see file_ref)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def describe(self) -> dict[str, object]:
        return {
            "file": self.path.name,
            "ref": self.ref,
            "colour": self.colour,
            "service": self.service,
            "removed_at": self.removed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size": self.size,
        }

    def lines(self) -> Iterator[str]:
        with gzip.open(self.path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                yield line.rstrip("\n")


@dataclass(frozen=True)
class WriteResult:
    lines: int  # kept
    dropped: int  # the oldest lines, beyond the cap
    size: int  # bytes on disk


class KeptLogs:
    """The `logs/` folder of one site."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def new_path(self, colour: str, service: str, ref: str, now: dt.datetime | None = None) -> Path:
        now = now or dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"
        return self.folder / f"{stamp}_{colour}_{service}_{file_ref(ref)}.log.gz"

    def entries(self) -> list[KeptLog]:
        """Every kept file, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_file():
                removed = dt.datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=dt.UTC)
                found.append(KeptLog(path, removed, match["colour"], match["service"], match["ref"]))
        return sorted(found, key=lambda entry: (entry.removed_at, entry.path.name))

    def of_release(self, ref: str, service: str) -> list[KeptLog]:
        return [e for e in self.entries() if e.ref == file_ref(ref) and e.service == service]

    def write(self, path: Path, lines: Iterable[bytes], cap_bytes: int) -> WriteResult:
        """Compress `lines` into `path` keeping the newest of them within `cap_bytes` on disk."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)  # logs hold visitors' addresses and whatever the app prints
        members, kept, dropped = newest_members(lines, max(cap_bytes - NOTE_BYTES, 0))
        if dropped:
            note = f"[sumbg: the {dropped} oldest lines were dropped to keep within [logs] keep_mb]\n"
            members.insert(0, gzip.compress(note.encode()))
        partial = path.with_name(f".{path.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for member in members:
                handle.write(member)
        os.replace(partial, path)
        return WriteResult(kept, dropped, path.stat().st_size)

    def prune(self, cap_bytes: int) -> list[str]:
        """Remove the oldest files until the folder holds at most `cap_bytes`; returns their names."""
        entries = self.entries()
        total = sum(entry.size for entry in entries)
        removed = []
        for entry in entries:
            if total <= cap_bytes:
                break
            total -= entry.size
            entry.path.unlink(missing_ok=True)
            removed.append(entry.path.name)
        return removed


def newest_members(lines: Iterable[bytes], cap_bytes: int) -> tuple[list[bytes], int, int]:
    """The lines compressed as gzip members of about CHUNK_BYTES each, the oldest members dropped
    until the rest fit in `cap_bytes` (bounded memory, however long the log); returns (members,
    lines kept, lines dropped). A multi-member gzip file reads as one stream."""
    chunk_bytes = max(1024, min(CHUNK_BYTES, cap_bytes // 8))
    members: deque[tuple[bytes, int]] = deque()
    total = dropped = 0
    buffer: list[bytes] = []
    size = 0

    def flush() -> None:
        nonlocal total, dropped, size
        if not buffer:
            return
        member = gzip.compress(b"".join(buffer), compresslevel=6)
        members.append((member, len(buffer)))
        total += len(member)
        buffer.clear()
        size = 0
        while members and total > cap_bytes:
            old, count = members.popleft()
            total -= len(old)
            dropped += count

    for line in lines:
        buffer.append(line if line.endswith(b"\n") else line + b"\n")
        size += len(buffer[-1])
        if size >= chunk_bytes:
            flush()
    flush()
    return [member for member, _ in members], sum(count for _, count in members), dropped


def line_time(line: str) -> dt.datetime | None:
    """The time `docker logs --timestamps` put at the start of a line, or None."""
    try:
        return dt.datetime.strptime(line[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
