"""A site's background worker as sumbg understands it, with no outside world: what its command
line says (Celery or not, which app, whether it runs beat, whether sumbg can `exec` it so that it
gets Docker's signals), when a worker an operation started counts as ready, and how the state of
its container reads to an operator. The verbs on the containers are in stacks.py.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from sumbg.adapters.docker import ContainerState
from sumbg.util import format_duration

# What makes a command line more than one command for the shell (then it cannot simply be exec'ed).
_SHELL_SYNTAX = re.compile(r"[;&|<>()`\n]|\$\(")
# VAR=value words before the command itself (quoted values allowed).
_ASSIGNMENTS = re.compile(r"""^\s*(?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|"[^"]*"|[^\s'"])*\s+)*""")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
# Celery's options before the subcommand that take a value.
_CELERY_VALUE_OPTIONS = {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}

# A worker that crashed this many times since an operation started it will not be ready.
CRASH_LOOP_RESTARTS = 3

# How a worker's container reads in `status` (and the fleet's).
NONE, RUNNING, STARTING, RESTARTING, STOPPED = "none", "running", "starting", "restarting", "stopped"


@dataclass(frozen=True)
class WorkerCommand:
    """`[app] worker_command`, read: how sumbg runs it, pings it and names it."""

    line: str
    celery: tuple[str, ...] = ()  # how to run celery as the command does: ("celery",), ("python", "-m", "celery")
    app: str | None = None  # -A / --app
    subcommand: str | None = None  # worker, beat, ...
    beat: bool = False  # runs Celery beat: embedded (-B / --beat) or the beat command
    nodename: str | None = None  # -n / --hostname (may hold %h, %n, %d)
    simple: bool = False  # one command: exec'ed by the container's shell, so it gets SIGTERM itself

    @property
    def celery_worker(self) -> bool:
        """A Celery worker: it answers `celery inspect ping` and drains on SIGTERM (warm shutdown)."""
        return bool(self.celery) and self.subcommand == "worker"

    def shell_line(self) -> str:
        """The line the container's `sh -c` runs. One command is exec'ed, so it is the container's
        first process and Docker's SIGTERM reaches it (sh, as PID 1, would ignore it)."""
        if not self.simple or re.match(r"^\s*exec\s", self.line):
            return self.line
        prefix = _ASSIGNMENTS.match(self.line)
        cut = prefix.end() if prefix else 0
        return f"{self.line[:cut]}exec {self.line[cut:].lstrip()}"

    def node(self, hostname: str) -> str:
        """The worker's Celery node name in a container with this hostname."""
        if not self.nodename:
            return f"celery@{hostname}"
        name, _, domain = hostname.partition(".")
        node = self.nodename.replace("%h", hostname).replace("%n", name).replace("%d", domain).replace("%%", "%")
        return node if "@" in node else f"celery@{node}"

    def _control(self, verb: str, hostname: str, timeout: float) -> list[str]:
        app = ["-A", self.app] if self.app else []
        return [*self.celery, *app, "inspect", verb, "-d", self.node(hostname), "--timeout", f"{timeout:g}"]

    def ping_argv(self, hostname: str, timeout: float) -> list[str]:
        """`celery inspect ping` addressed to this container's node only."""
        return self._control("ping", hostname, timeout)

    def active_argv(self, hostname: str, timeout: float) -> list[str]:
        """`celery inspect active --json` of this container's node: the tasks it is running."""
        return [*self._control("active", hostname, timeout), "--json"]


def parse_worker_command(line: str) -> WorkerCommand:
    simple = not _SHELL_SYNTAX.search(line)
    try:
        words = shlex.split(line)
    except ValueError:
        return WorkerCommand(line)
    while words and (_ASSIGNMENT.match(words[0]) or words[0] == "exec"):
        words = words[1:]
    start = _celery_start(words)
    if start is None:
        return WorkerCommand(line, simple=simple)
    prefix, rest = tuple(words[: start[1]]), words[start[1] :]
    app = subcommand = nodename = None
    beat = False
    index = 0
    while index < len(rest):
        word = rest[index]
        value = rest[index + 1] if index + 1 < len(rest) else None
        if word in ("-A", "--app"):
            app, index = value, index + 2
            continue
        if word.startswith("--app="):
            app = word.split("=", 1)[1]
        elif word.startswith("-A") and len(word) > 2:
            app = word[2:]
        elif word in ("-n", "--hostname") and subcommand:
            nodename, index = value, index + 2
            continue
        elif word.startswith("--hostname=") and subcommand:
            nodename = word.split("=", 1)[1]
        elif word in ("-B", "--beat") and subcommand:
            beat = True
        elif subcommand is None and word in _CELERY_VALUE_OPTIONS:
            index += 2
            continue
        elif subcommand is None and not word.startswith("-"):
            subcommand = word
        index += 1
    return WorkerCommand(
        line,
        celery=prefix[start[0] :],
        app=app,
        subcommand=subcommand,
        beat=beat or subcommand == "beat",
        nodename=nodename,
        simple=simple,
    )


def _celery_start(words: list[str]) -> tuple[int, int] | None:
    """Where the celery program starts in `words` and where its own arguments start."""
    for index, word in enumerate(words):
        if os.path.basename(word) == "celery":
            return index, index + 1
        if _PYTHON.match(os.path.basename(word)) and words[index + 1 : index + 3] == ["-m", "celery"]:
            return index, index + 3
    return None


# ---------------------------------------------------------------- readiness


@dataclass(frozen=True)
class Readiness:
    """What one look at a worker an operation started says: ready, failed for good, or not yet."""

    ready: bool = False
    failed: str | None = None  # why it will not be ready (stop waiting)
    waiting: str = ""  # what it waits for
    needs_ping: bool = False  # a Celery worker running in a run that has not answered a ping yet


def readiness(
    state: ContainerState | None,
    *,
    now: float,
    ready_after: float,
    celery_worker: bool,
    pinged_run: float | None,
    restarts_before: int,
) -> Readiness:
    """`pinged_run`: the start time of the container's run in which `celery inspect ping` last
    answered; `restarts_before`: its restart count when the operation started it."""
    if state is None:
        return Readiness(failed="its container does not exist")
    restarts = state.restart_count - restarts_before
    if restarts >= CRASH_LOOP_RESTARTS:
        return Readiness(failed=f"it crashed and was restarted {restarts} times since it was started")
    if not state.running or state.restarting:
        return Readiness(waiting=f"it is {state.status} (exit code {state.exit_code})")
    up = now - state.started_at
    if celery_worker and pinged_run != state.started_at:
        return Readiness(waiting="it has not answered `celery inspect ping` yet", needs_ping=True)
    if up < ready_after:
        return Readiness(waiting=f"it has run {max(up, 0):.0f}s of the {ready_after:g}s without a restart")
    return Readiness(ready=True)


# ---------------------------------------------------------------- how it reads


@dataclass(frozen=True)
class WorkerView:
    """One colour's worker as `status` shows it."""

    state: str  # NONE, RUNNING, STARTING, RESTARTING or STOPPED
    container: str | None = None
    restart_count: int = 0
    exit_code: int | None = None
    up_seconds: float | None = None
    draining: tuple[str, ...] = ()  # the colour's old workers still finishing their tasks

    def describe(self) -> str:
        if self.state == NONE:
            return "none configured"
        if self.state == STOPPED:
            words = "stopped" + (f" (exit code {self.exit_code})" if self.exit_code is not None else "")
        elif self.state == RESTARTING:
            words = f"restarting ({self.restart_count} restarts, last exit code {self.exit_code})"
        else:
            up = f"up {format_duration(self.up_seconds or 0)}"
            words = f"{self.state} ({up}{f', {self.restart_count} restarts' if self.restart_count else ''})"
        if self.draining:
            words += f"; {len(self.draining)} old worker(s) finishing their tasks"
        return words

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "container": self.container,
            "restart_count": self.restart_count,
            "exit_code": self.exit_code,
            "up_seconds": None if self.up_seconds is None else round(self.up_seconds, 1),
            "draining": list(self.draining),
        }


def worker_view(
    state: ContainerState | None, *, configured: bool, now: float, ready_after: float, draining: tuple[str, ...] = ()
) -> WorkerView:
    if not configured:
        return WorkerView(NONE, draining=draining)
    if state is None:
        return WorkerView(STOPPED, draining=draining)
    up = max(0.0, now - state.started_at) if state.running else None
    if state.restarting:
        kind = RESTARTING
    elif not state.running:
        kind = STOPPED
    elif up is not None and up < ready_after:
        # Restarted moments ago (a crash loop shows like this between its crashes), or just started.
        kind = RESTARTING if state.restart_count else STARTING
    else:
        kind = RUNNING
    return WorkerView(
        kind,
        container=state.name,
        restart_count=state.restart_count,
        exit_code=None if kind == RUNNING else state.exit_code,
        up_seconds=up,
        draining=draining,
    )


def worker_problem(view: WorkerView, colour: str) -> str | None:
    """What is wrong with the live colour's worker, or None."""
    if view.state in (STOPPED, RESTARTING):
        return f"the live colour {colour}'s worker is {view.describe()}"
    return None
