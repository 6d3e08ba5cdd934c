"""The host's systemd, as adoption drives a runbook deployment: the old app's units and the host
Caddy. The only module that runs systemctl.

`RunbookServices` implements `HostServices` (sumbg/ops/seams.py); operations reach it through
`Context.runbook_services()`, and the unit tests hand them a fake held to the same Protocol.
"""

from __future__ import annotations

import os
import subprocess

from sumbg.errors import RunbookError, tail


class RunbookServices:
    """The host's systemd (the old app's units) and its Caddy."""

    def __init__(self, systemctl: str = "systemctl") -> None:
        self.systemctl = systemctl

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.systemctl, *args],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
            )
        except FileNotFoundError:
            raise RunbookError(
                f"{self.systemctl} is not installed: sumbg adopt drives the old site's systemd units"
            ) from None
        except subprocess.TimeoutExpired:
            raise RunbookError(f"systemctl {' '.join(args)} took longer than 120 s") from None

    def _must(self, *args: str) -> None:
        proc = self._run(*args)
        if proc.returncode != 0:
            raise RunbookError(
                f"systemctl {' '.join(args)} failed",
                command=["systemctl", *args],
                returncode=proc.returncode,
                output_tail=tail(proc.stderr or proc.stdout, 5),
            )

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
