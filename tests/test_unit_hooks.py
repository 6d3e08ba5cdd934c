"""The [hooks] host-command adapter on the real shell: the environment it is given, its output's
tail, its exit code, and a timeout that kills what it started too."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sumbg.adapters.hooks import run_host_command


def test_a_host_command_sees_the_sumbg_variables_in_the_site_folder(tmp_path: Path) -> None:
    done = run_host_command(
        'echo "$SUMBG_SLUG $SUMBG_OUTCOME $(pwd)"', {"SUMBG_SLUG": "acme", "SUMBG_OUTCOME": "switched"}, tmp_path, 10
    )
    assert (done.ok, done.returncode, done.output_tail) == (True, 0, f"acme switched {tmp_path}")


def test_a_failing_command_keeps_the_tail_of_stdout_and_stderr(tmp_path: Path) -> None:
    done = run_host_command("seq 1 30; echo no deploys on Friday >&2; exit 3", {}, tmp_path, 10)
    assert (done.ok, done.returncode) == (False, 3)
    assert done.output_tail.splitlines() == [*(str(n) for n in range(12, 31)), "no deploys on Friday"]


def test_a_command_that_outlives_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    # The child does not hold the output pipe: only killing the whole group stops it.
    done = run_host_command(f"sleep 60 >/dev/null 2>&1 & echo $! > {pid_file}; wait", {}, tmp_path, 0.5)
    assert done.returncode is None and not done.ok
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the hook's child {child} outlived the timeout")
