"""sumbg.lock: one operation per site at a time, a named holder, and no wedging when a holder dies."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sumbg.cli import exit_code_of
from sumbg.errors import LockHeld
from sumbg.lock import SiteLock, describe, is_held


@pytest.fixture
def lock_path(tmp_path):
    return tmp_path / "acme" / ".lock"


def test_acquire_writes_the_holder_and_release_clears_it(lock_path):
    lock = SiteLock(lock_path, "site acme").acquire(command="sumbg upgrade acme v2")
    try:
        holder = json.loads(lock_path.read_text())
        assert set(holder) == {"pid", "host", "command", "since"}
        assert (holder["pid"], holder["host"], holder["command"]) == (
            os.getpid(),
            socket.gethostname(),
            "sumbg upgrade acme v2",
        )
        assert lock.holder() == holder
        assert lock.took_over is None
        assert is_held(lock_path)
    finally:
        lock.release()
    assert lock_path.read_text() == ""
    assert not is_held(lock_path)
    lock.release()  # a second release is harmless


def test_context_manager_releases(lock_path):
    with SiteLock(lock_path, "site acme").acquire(command="x"):
        assert is_held(lock_path)
    assert not is_held(lock_path)


def test_lock_can_be_taken_again_after_release(lock_path):
    SiteLock(lock_path, "site acme").acquire(command="first").release()
    second = SiteLock(lock_path, "site acme").acquire(command="second")
    assert second.took_over is None  # a clean release leaves nothing to take over
    second.release()


def test_second_lock_fails_at_once_naming_the_holder(lock_path):
    first = SiteLock(lock_path, "site acme").acquire(command="sumbg upgrade acme v2")
    try:
        holder = first.holder()
        started = time.monotonic()
        with pytest.raises(LockHeld) as info:
            SiteLock(lock_path, "site acme").acquire(timeout=0, command="sumbg rollback acme")
        assert time.monotonic() - started < 0.5
        assert info.value.message == (
            f"site acme is locked by pid {os.getpid()} on {socket.gethostname()} running "
            f"`sumbg upgrade acme v2` since {holder['since']}"
        )
        assert exit_code_of(info.value) == 1
        # The loser did not overwrite the holder's record.
        assert first.holder() == holder
    finally:
        first.release()


def test_lock_held_without_a_record_names_another_process(lock_path):
    lock_path.parent.mkdir(parents=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockHeld) as info:
            SiteLock(lock_path, "the edge Caddy configuration").acquire()
        assert info.value.message == "the edge Caddy configuration is locked by another sumbg process"
    finally:
        os.close(fd)


def test_waiting_times_out(lock_path):
    first = SiteLock(lock_path, "site acme").acquire(command="a")
    try:
        started = time.monotonic()
        with pytest.raises(LockHeld):
            SiteLock(lock_path, "site acme").acquire(timeout=0.3, command="b")
        assert 0.3 <= time.monotonic() - started < 1.5
    finally:
        first.release()


def test_waiting_succeeds_when_the_holder_releases(lock_path):
    first = SiteLock(lock_path, "site acme").acquire(command="first")
    outcome = {}

    def wait_for_it():
        try:
            second = SiteLock(lock_path, "site acme").acquire(timeout=5, command="second")
            outcome["holder"] = second.holder()
            outcome["took_over"] = second.took_over
            second.release()
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()  # still waiting
    first.release()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert "error" not in outcome
    assert outcome["holder"]["command"] == "second"
    assert outcome["took_over"] is None


def test_a_record_left_by_a_dead_holder_is_taken_over(lock_path):
    stale = {"pid": 999999, "host": "old-host", "command": "sumbg upgrade acme v2", "since": "2024-01-01T00:00:00Z"}
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(json.dumps(stale))
    assert not is_held(lock_path)
    lock = SiteLock(lock_path, "site acme").acquire(command="sumbg recover acme")
    try:
        assert lock.took_over == stale
        assert json.loads(lock_path.read_text())["command"] == "sumbg recover acme"
    finally:
        lock.release()


def test_garbage_in_the_lock_file_is_no_holder(lock_path):
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text("{not json")
    lock = SiteLock(lock_path, "site acme").acquire(command="x")
    try:
        assert lock.took_over is None
    finally:
        lock.release()


@pytest.mark.parametrize("text", ["[1, 2]", '"sumbg"', '{"pid": "7", "host": "h", "command": "c", "since": "T"}'])
def test_json_that_is_not_a_holder_record_is_no_holder(lock_path, text):
    """Valid JSON of another shape in the lock file: no holder, and a waiter still gets its one-line message."""
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(text)
    first = SiteLock(lock_path, "site acme")
    assert first.holder() is None
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockHeld) as info:
            SiteLock(lock_path, "site acme").acquire()
        assert info.value.message == "site acme is locked by another sumbg process"
    finally:
        os.close(fd)
    lock = first.acquire(command="x")
    try:
        assert lock.took_over is None
    finally:
        lock.release()


def test_is_held_of_a_missing_file(lock_path):
    assert not is_held(lock_path)
    assert not lock_path.exists()


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sumbg.lock import SiteLock
    SiteLock(Path(sys.argv[1]), "site acme").acquire(command="sumbg upgrade acme v9")
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_lock_held_by_another_process_is_freed_when_it_is_killed(lock_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "locked\n"
        assert is_held(lock_path)
        with pytest.raises(LockHeld) as info:
            SiteLock(lock_path, "site acme").acquire(timeout=0, command="sumbg rollback acme")
        assert info.value.message.startswith(
            f"site acme is locked by pid {proc.pid} on {socket.gethostname()} running `sumbg upgrade acme v9` since "
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not is_held(lock_path)
        lock = SiteLock(lock_path, "site acme").acquire(timeout=0, command="sumbg recover acme")
        try:
            assert lock.took_over["pid"] == proc.pid
            assert lock.took_over["command"] == "sumbg upgrade acme v9"
        finally:
            lock.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_describe():
    assert describe(None) == "another sumbg process"
    assert describe({}) == "another sumbg process"
    assert describe({"pid": 7, "host": "vps1", "command": "sumbg upgrade acme v2", "since": "T"}) == (
        "pid 7 on vps1 running `sumbg upgrade acme v2` since T"
    )
