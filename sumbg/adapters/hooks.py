"""Running a `[hooks]` host command: `sh -c COMMAND` with the SUMBG_* variables, in the site's
folder, killed (its whole process group) when it outlives its timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sumbg.errors import tail


@dataclass(frozen=True)
class CommandResult:
    returncode: int | None  # None: killed at the timeout
    output_tail: str  # stdout and stderr together, the last lines
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_host_command(command: str, env: dict[str, str], cwd: Path, timeout: float) -> CommandResult:
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            ["sh", "-c", command],
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except OSError as exc:
        return CommandResult(127, f"could not start sh: {exc.strerror}", time.monotonic() - started)
    try:
        output, _ = process.communicate(timeout=timeout)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        output, _ = process.communicate()
        code = None
    return CommandResult(code, tail(output, 20), round(time.monotonic() - started, 3))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
