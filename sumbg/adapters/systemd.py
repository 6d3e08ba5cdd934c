"""systemd on this host: whether it runs, its unit files, and systemctl. The only module that
runs systemctl, for sumbg's own timers and for the units of a runbook deployment being adopted."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sumbg.errors import ScheduleError, tail

RUNNING_MARKER = Path("/run/systemd/system")  # exists only when systemd is PID 1 (sd_booted)
UNIT_DIR = Path("/etc/systemd/system")


def running() -> bool:
    return RUNNING_MARKER.is_dir()


def systemctl(*args: str) -> str:
    try:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ScheduleError("systemctl is not installed") from None
    except subprocess.TimeoutExpired:
        raise ScheduleError(f"systemctl {' '.join(args)} gave no answer within 120s") from None
    if proc.returncode != 0:
        raise ScheduleError(
            f"systemctl {' '.join(args)} failed",
            command=["systemctl", *args],
            returncode=proc.returncode,
            output_tail=tail(proc.stderr or proc.stdout),
        )
    return proc.stdout


@dataclass(frozen=True)
class Completed:
    """What one systemctl command answered; whether its exit code is a failure is the caller's to judge."""

    returncode: int
    stdout: str
    stderr: str


def run_systemctl(*args: str, systemctl: str = "systemctl", timeout: float = 120.0) -> Completed:
    """`systemctl ARGS` with no pager and no colours. Raises FileNotFoundError when systemctl is not
    installed and TimeoutError when it gives no answer within `timeout` seconds."""
    try:
        proc = subprocess.run(
            [systemctl, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"systemctl {' '.join(args)} gave no answer within {timeout:g} s") from None
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def timer_state(unit: str) -> dict[str, str]:
    """What systemd says of a timer: active, enabled, next and last run (empty without systemd)."""
    if not running():
        return {}
    out = systemctl("show", unit, "--property=ActiveState,UnitFileState,NextElapseUSecRealtime,LastTriggerUSec")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
