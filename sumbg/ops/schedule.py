"""`sumbg schedule install|status|remove`: the host's timers, as data. `sumbg backup --all`
at [backup] schedule (default daily at a minute of 02:00-04:00 picked from the host's name) and
`sumbg retire --due` hourly, as systemd timer units where systemd runs, else as crontab lines
for the operator to install (cron runs them the same way)."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg.adapters import systemd
from sumbg.config import HostConfig, default_backup_time
from sumbg.errors import UsageError
from sumbg.ops.context import Context
from sumbg.util import atomic_write

DEFAULT_EDGE = "sum-edge"
CLOCK = re.compile(r"(?P<hour>\d\d):(?P<minute>\d\d)")
MARK = "# Written by `sumbg schedule install`; `sumbg schedule remove` deletes it."


@dataclass(frozen=True)
class Job:
    """One scheduled sumbg command: its unit name, what it does, its command and when."""

    name: str  # the units' name, without .service/.timer
    description: str
    args: tuple[str, ...]
    on_calendar: str  # systemd's OnCalendar
    cron: str | None  # the same in crontab's five fields, when cron can say it

    def service(self, sumbg: str, host: HostConfig) -> str:
        command = shlex.join([sumbg, "--root", str(host.root), *self.args])
        return (
            f"{MARK}\n[Unit]\nDescription=sumbg: {self.description}\nAfter=docker.service network-online.target\n"
            f"Wants=network-online.target\n\n[Service]\nType=oneshot\nExecStart={command}\n"
            "# A backup is work in the background: the sites' visitors come first.\n"
            "Nice=10\nIOSchedulingClass=best-effort\nIOSchedulingPriority=7\n"
        )

    def timer(self) -> str:
        return (
            f"{MARK}\n[Unit]\nDescription=sumbg: {self.description} ({self.on_calendar})\n\n"
            f"[Timer]\nOnCalendar={self.on_calendar}\n# A run missed while the host was down happens at boot.\n"
            f"Persistent=true\n\n[Install]\nWantedBy=timers.target\n"
        )

    def cron_line(self, sumbg: str, host: HostConfig) -> str:
        assert self.cron is not None
        command = shlex.join([sumbg, "--root", str(host.root), *self.args])
        log = f"/var/log/{self.name}.log"
        return f"{self.cron} root {command} >>{log} 2>&1"


def jobs(host: HostConfig) -> tuple[Job, ...]:
    suffix = "" if host.edge.name == DEFAULT_EDGE else f"-{host.edge.name}"
    when = host.backup.schedule or default_backup_time(f"{_hostname()}:{host.root}")
    clock = CLOCK.fullmatch(when)
    if clock:
        on_calendar, cron = f"*-*-* {when}:00", f"{int(clock['minute'])} {int(clock['hour'])} * * *"
    else:
        on_calendar, cron = when, None
    return (
        Job(
            f"sumbg-backup{suffix}",
            "back up every site (database and media, then offsite)",
            ("backup", "--all"),
            on_calendar,
            cron,
        ),
        Job(
            f"sumbg-retire{suffix}",
            "retire idle colours whose soak period is over",
            ("retire", "--due"),
            "hourly",
            "7 * * * *",
        ),
    )


def _hostname() -> str:
    import socket

    return socket.gethostname()


def sumbg_command() -> str:
    """The sumbg that the timers run: this one."""
    beside = Path(sys.executable).with_name("sumbg")
    if beside.exists():
        return str(beside)
    return shutil.which("sumbg") or "sumbg"


def crontab(host: HostConfig, sumbg: str) -> str:
    lines = [MARK.replace("install`;", "install` (no systemd here): put it in /etc/cron.d/sumbg;")]
    for job in jobs(host):
        if job.cron is None:
            raise UsageError(
                f"sumbg.toml: backup.schedule: {job.on_calendar!r} is a systemd OnCalendar expression and this host "
                'runs no systemd: give a daily time ("HH:MM") for cron'
            )
        lines.append(job.cron_line(sumbg, host))
    return "\n".join(lines) + "\n"


def unit_files(host: HostConfig, sumbg: str) -> dict[str, str]:
    files = {}
    for job in jobs(host):
        files[f"{job.name}.service"] = job.service(sumbg, host)
        files[f"{job.name}.timer"] = job.timer()
    return files


def install(ctx: Context, unit_dir: Path | None = None) -> dict[str, Any]:
    """Write the units (and enable the timers where systemd runs); without systemd and no
    --unit-dir, the crontab lines instead."""
    sumbg = sumbg_command()
    running = systemd.running()
    if not running and unit_dir is None:
        return {"mode": "cron", "systemd": False, "crontab": crontab(ctx.host, sumbg), "jobs": _jobs(ctx.host)}
    folder = unit_dir or systemd.UNIT_DIR
    written = []
    for name, text in unit_files(ctx.host, sumbg).items():
        atomic_write(folder / name, text, mode=0o644)
        written.append(str(folder / name))
    enabled = []
    if running and unit_dir is None:
        systemd.systemctl("daemon-reload")
        for job in jobs(ctx.host):
            systemd.systemctl("enable", "--now", f"{job.name}.timer")
            enabled.append(f"{job.name}.timer")
    return {"mode": "systemd", "systemd": running, "units": written, "enabled": enabled, "jobs": _jobs(ctx.host)}


def status(ctx: Context, unit_dir: Path | None = None) -> dict[str, Any]:
    folder = unit_dir or systemd.UNIT_DIR
    running = systemd.running()
    found = []
    for job in jobs(ctx.host):
        timer = folder / f"{job.name}.timer"
        state = systemd.timer_state(f"{job.name}.timer") if running and unit_dir is None else {}
        found.append(
            {
                "job": job.name,
                "command": " ".join(job.args),
                "on_calendar": job.on_calendar,
                "installed": timer.exists(),
                "active": state.get("ActiveState"),
                "enabled": state.get("UnitFileState"),
                "next": state.get("NextElapseUSecRealtime"),
                "last": state.get("LastTriggerUSec"),
            }
        )
    return {"systemd": running, "unit_dir": str(folder), "timers": found}


def remove(ctx: Context, unit_dir: Path | None = None) -> dict[str, Any]:
    folder = unit_dir or systemd.UNIT_DIR
    running = systemd.running() and unit_dir is None
    removed = []
    for job in jobs(ctx.host):
        if running and (folder / f"{job.name}.timer").exists():
            systemd.systemctl("disable", "--now", f"{job.name}.timer")
        for suffix in (".timer", ".service"):
            path = folder / f"{job.name}{suffix}"
            if path.exists() and MARK in path.read_text():
                path.unlink()
                removed.append(str(path))
    if running and removed:
        systemd.systemctl("daemon-reload")
    return {"systemd": running, "removed": removed}


def _jobs(host: HostConfig) -> list[dict[str, str | None]]:
    return [
        {"job": j.name, "command": " ".join(j.args), "on_calendar": j.on_calendar, "cron": j.cron} for j in jobs(host)
    ]
