"""Small helpers with no outside dependencies: atomic files, clocks, polling."""
from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


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
