"""systemd on this host, the only module that runs systemctl. Two users, one way to call it:

- `sumbg schedule` (sumbg/ops/schedule.py): whether systemd runs, its unit folder, and systemctl
  for sumbg's own backup timers; failures are `ScheduleError`.
- adoption of a runbook deployment: `RunbookServices` drives the old app's units and the host
  Caddy; failures are `RunbookError`. It implements `HostServices` (sumbg/ops/seams.py);
  operations reach it through `Context.runbook_services()`, and the unit tests hand them a fake
  held to the same Protocol.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sumbg.errors import RunbookError, ScheduleError, SumbgError, tail

RUNNING_MARKER = Path("/run/systemd/system")  # exists only when systemd is PID 1 (sd_booted)
UNIT_DIR = Path("/etc/systemd/system")
TIMEOUT_S = 120
# No pager and no colours: systemctl's output is read, never shown to a terminal.
QUIET_ENV = {"SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}


def _call(
    systemctl: str, args: tuple[str, ...], error: type[SumbgError], not_installed: str
) -> subprocess.CompletedProcess[str]:
    """systemctl once; a missing binary or no answer within the timeout is `error`."""
    try:
        return subprocess.run(
            [systemctl, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env={**os.environ, **QUIET_ENV},
        )
    except FileNotFoundError:
        raise error(not_installed) from None
    except subprocess.TimeoutExpired:
        raise error(f"systemctl {' '.join(args)} gave no answer within {TIMEOUT_S} s") from None


def _failed(
    proc: subprocess.CompletedProcess[str], args: tuple[str, ...], error: type[SumbgError], lines: int
) -> SumbgError:
    return error(
        f"systemctl {' '.join(args)} failed",
        command=["systemctl", *args],
        returncode=proc.returncode,
        output_tail=tail(proc.stderr or proc.stdout, lines),
    )


# ---------------------------------------------------------------- sumbg's own timers (schedule)


def running() -> bool:
    return RUNNING_MARKER.is_dir()


def systemctl(*args: str) -> str:
    proc = _call("systemctl", args, ScheduleError, "systemctl is not installed")
    if proc.returncode != 0:
        raise _failed(proc, args, ScheduleError, 20)
    return proc.stdout


def timer_state(unit: str) -> dict[str, str]:
    """What systemd says of a timer: active, enabled, next and last run (empty without systemd)."""
    if not running():
        return {}
    out = systemctl("show", unit, "--property=ActiveState,UnitFileState,NextElapseUSecRealtime,LastTriggerUSec")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# ---------------------------------------------------------------- a runbook host (adoption)


class RunbookServices:
    """The host's systemd (the old app's units) and its Caddy."""

    def __init__(self, systemctl: str = "systemctl") -> None:
        self.systemctl = systemctl

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _call(
            self.systemctl,
            args,
            RunbookError,
            f"{self.systemctl} is not installed: sumbg adopt drives the old site's systemd units",
        )

    def _must(self, *args: str) -> None:
        proc = self._run(*args)
        if proc.returncode != 0:
            raise _failed(proc, args, RunbookError, 5)

    def is_active(self, unit: str) -> bool:
        return self._run("is-active", unit).returncode == 0

    def stop(self, *units: str) -> None:
        """Stopped together, as systemd stops the units of one command in parallel."""
        self._must("stop", *units)

    def start(self, unit: str) -> None:
        self._must("start", unit)

    def disable(self, unit: str) -> None:
        self._must("disable", unit)

    def enable(self, unit: str) -> None:
        self._must("enable", unit)

    def reload_caddy(self) -> None:
        self._must("reload", "caddy")
