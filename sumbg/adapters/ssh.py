"""Running sumbg on a fleet host: over the user's own ssh (their config, keys and agent), or
on this machine for a host named "local". The only module that starts ssh.

Nothing of ours runs on the hosts but sumbg itself: each call is one `sumbg ... --json`
whose JSON document comes back on stdout and whose progress streams back on stderr.

`HostLinkProtocol` is what the fleet needs of a link; `HostLink` is the real one, and the
unit tests' fake links are held to the same Protocol by mypy.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sumbg.config import FleetConfig, FleetHost
from sumbg.errors import HostUnreachable, tail

SSH_FAILED = 255  # ssh's own exit code: it could not connect or lost the connection


@dataclass(frozen=True)
class Reply:
    returncode: int
    document: dict[str, Any] | None  # the --json document, when one came back
    stderr_tail: str


class HostLinkProtocol(Protocol):
    """A way to run sumbg on one fleet host: all the fleet driver asks of a link."""

    def call(
        self, args: list[str], *, timeout: float | None = None, on_line: Callable[[str], None] | None = None
    ) -> Reply:
        """Run `sumbg ARGS` there; progress lines go to on_line as they come. Raises
        HostUnreachable when the host cannot be reached or its sumbg cannot be run."""
        ...

    def query(self, args: list[str], *, timeout: float, answered_exits: tuple[int, ...] = (0,)) -> dict[str, Any]:
        """`sumbg ARGS --json`, read-only, which must succeed (exit with one of `answered_exits`):
        its JSON document. Raises HostUnreachable otherwise."""
        ...


class HostLink:
    """The real link: the user's own ssh (or this machine, for a host named "local")."""

    def __init__(self, fleet: FleetConfig, host: FleetHost) -> None:
        self.fleet = fleet
        self.host = host

    def argv(self, args: list[str]) -> list[str]:
        command = [*shlex.split(self.host.sumbg), "--root", self.host.root, *args]
        if self.host.local:
            if self.host.sumbg == "sumbg":
                command[0:1] = [sys.executable, "-m", "sumbg.cli"]
            return command
        options = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.fleet.connect_timeout}",
            # A link that dies mid-upgrade is noticed within a minute, not at TCP's pace.
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]
        if self.fleet.ssh_config:
            options = ["-F", str(self.fleet.ssh_config), *options]
        # SIGHUP ignored: if this link drops, the operation on the host still runs to its end
        # (its progress then goes nowhere; its history records how it ended).
        remote = "trap '' HUP; exec " + shlex.join(command)
        return ["ssh", *options, self.host.ssh, remote]

    def call(
        self, args: list[str], *, timeout: float | None = None, on_line: Callable[[str], None] | None = None
    ) -> Reply:
        """Run `sumbg ARGS` on the host; progress lines go to on_line as they come."""
        argv = self.argv(args)
        try:
            # Its own session: a Ctrl-C at the fleet console does not reach an upgrade half-way.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise HostUnreachable(f"host {self.host.name}: {argv[0]} is not installed here") from None
        stdout_pipe, stderr_pipe = proc.stdout, proc.stderr
        assert stdout_pipe is not None and stderr_pipe is not None  # both asked for as PIPE
        lines: list[str] = []
        out: list[str] = []

        def read_progress() -> None:
            for line in stderr_pipe:
                lines.append(line.rstrip("\n"))
                if on_line:
                    on_line(line.rstrip("\n"))

        readers = [
            threading.Thread(target=read_progress, daemon=True),
            threading.Thread(target=lambda: out.append(stdout_pipe.read()), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise HostUnreachable(
                f"host {self.host.name}: `sumbg {' '.join(args[:2])}` gave no answer within {timeout:.0f}s",
                command=argv,
            ) from None
        for reader in readers:
            reader.join(timeout=10)
        stdout = "".join(out)
        stderr_tail = tail("\n".join(lines), 15)
        if proc.returncode == SSH_FAILED and not self.host.local:
            raise HostUnreachable(
                f"host {self.host.name} ({self.host.ssh}) is unreachable: {_ssh_reason(lines)}",
                command=argv,
                returncode=proc.returncode,
            )
        if proc.returncode == 127:
            raise HostUnreachable(
                f"host {self.host.name}: `{self.host.sumbg}` is not installed there "
                f"(set hosts.{self.host.name}.sumbg in {self.fleet.path.name})",
                command=argv,
                returncode=127,
                output_tail=stderr_tail,
            )
        try:
            document = json.loads(stdout) if stdout.strip() else None
        except json.JSONDecodeError:
            document = None
        return Reply(proc.returncode, document if isinstance(document, dict) else None, stderr_tail)

    def query(self, args: list[str], *, timeout: float, answered_exits: tuple[int, ...] = (0,)) -> dict[str, Any]:
        """A read-only call that must succeed and answer with JSON (`sumbg status` exits 1 with its
        whole document when a site has a problem). A failure's document is never an answer."""
        reply = self.call([*args, "--json"], timeout=timeout)
        answered = reply.returncode in answered_exits and (
            reply.returncode == 0 or (reply.document is not None and reply.document.get("outcome") != "failed")
        )
        if not answered or reply.document is None:
            message = (reply.document or {}).get("message") or (reply.stderr_tail.splitlines() or ["no output"])[-1]
            raise HostUnreachable(
                f"host {self.host.name}: `sumbg {args[0]}` failed (exit {reply.returncode}): {message}",
                returncode=reply.returncode,
                output_tail=reply.stderr_tail,
            )
        return reply.document


def _ssh_reason(lines: list[str]) -> str:
    said = [line for line in lines if line.strip()]
    return said[-1].removeprefix("ssh: ") if said else "ssh exited 255 without saying why"
