"""Small helpers with no outside dependencies: atomic files, clocks, polling."""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str | int | float) -> float:
    """Seconds from 90, "90", "30m", "2h" or "1d"; ValueError for anything else or a negative."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        try:
            seconds = (
                float(text[:-1]) * DURATION_UNITS[text[-1]] if text and text[-1] in DURATION_UNITS else float(text)
            )
        except ValueError:
            raise ValueError(f"{value!r} is not a duration like 90, 30m, 2h or 1d") from None
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{value!r} is not a duration like 90, 30m, 2h or 1d")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as a person reads it: 45s, 12.0m, 3.5h, 2.0d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def atomic_write(path: Path, body: str | bytes, mode: int = 0o644) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(body.encode() if isinstance(body, str) else body)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def poll(check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T | None:
    """Call `check` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())) or interval)


def tree_stats(path: Path) -> tuple[int, int]:
    """(regular files, bytes) under a folder; (0, 0) if it does not exist."""
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                files += 1
                size += os.path.getsize(full)
    return files, size


def sync_tree(source: Path, dest: Path, *, owner: tuple[int, int] | None = None) -> tuple[int, int]:
    """Copy every regular file of `source` that `dest` lacks or has with another size or mtime
    (atomically, mtime kept); never deletes anything. Returns (files, bytes) copied."""
    import shutil

    copied = size = 0
    for root, _dirs, names in os.walk(source):
        rel = Path(root).relative_to(source)
        target_dir = dest / rel
        if not target_dir.exists():
            target_dir.mkdir(parents=True, exist_ok=True)
            if owner:
                os.chown(target_dir, *owner)
        for name in names:
            src = Path(root) / name
            if src.is_symlink() or not src.is_file():
                continue
            dst = target_dir / name
            stat = src.stat()
            if dst.exists() and dst.stat().st_size == stat.st_size and int(dst.stat().st_mtime) == int(stat.st_mtime):
                continue
            tmp = dst.with_name(f".{name}.sumbg-partial")
            shutil.copy2(src, tmp)
            if owner:
                os.chown(tmp, *owner)
            os.replace(tmp, dst)
            copied += 1
            size += stat.st_size
    return copied, size
