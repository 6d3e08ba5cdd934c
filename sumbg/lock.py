"""Per-site (and edge-wide) operation locks with a named holder.

An flock on the lock file is released by the kernel when its holder dies, so a
crashed sumbg never wedges a site; the holder's details written into the file
let a waiting operation say who holds it, and a leftover record from a dead
holder is reported when the lock is taken over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import TypedDict

from sumbg.errors import LockHeld
from sumbg.util import utc_now


class LockHolder(TypedDict):
    """Who holds a lock, as its holder writes it into the lock file."""

    pid: int
    host: str
    command: str
    since: str


class SiteLock:
    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label
        self._fd: int | None = None
        self._handed_over = False
        self.took_over: LockHolder | None = None

    def holder(self) -> LockHolder | None:
        try:
            text = self.path.read_text()
        except OSError:
            return None
        try:
            return _holder_record(json.loads(text)) if text.strip() else None
        except json.JSONDecodeError:
            return None

    def acquire(self, timeout: float = 0.0, command: str | None = None) -> SiteLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockHeld(f"{self.label} is locked by {describe(self.holder())}") from None
                time.sleep(0.2)
        self._fd = fd
        self.took_over = self.holder()
        self._write_holder(command)
        return self

    def _write_holder(self, command: str | None) -> None:
        assert self._fd is not None
        record = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            command=command or " ".join(["sumbg", *sys.argv[1:]]),
            since=utc_now(),
        )
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)
        os.fsync(self._fd)

    def hand_over(self) -> int:
        """The lock's descriptor, for a process this one starts to go on holding the lock after this
        one exits (an flock belongs to the open file, shared by both); from now on `release` only
        closes this process's descriptor."""
        assert self._fd is not None, "hand over a lock that is held"
        self._handed_over = True
        return self._fd

    def adopt(self, fd: int, command: str) -> SiteLock:
        """Hold the lock a parent process handed over (`hand_over`) on descriptor `fd`."""
        self._fd = fd
        self._write_holder(command)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if self._handed_over:
            os.close(self._fd)
            self._fd = None
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SiteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_record(data: object) -> LockHolder | None:
    """The holder a lock file names, or None if its JSON is not a holder record (not ours, or torn)."""
    if not isinstance(data, dict):
        return None
    pid, host, command, since = (data.get(key) for key in ("pid", "host", "command", "since"))
    if not (isinstance(pid, int) and isinstance(host, str) and isinstance(command, str) and isinstance(since, str)):
        return None
    return LockHolder(pid=pid, host=host, command=command, since=since)


def describe(holder: LockHolder | None) -> str:
    if not holder:
        return "another sumbg process"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} running `{holder.get('command')}` since {holder.get('since')}"
    )


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock (without taking it for long)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
