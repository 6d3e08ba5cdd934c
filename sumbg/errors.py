"""One exception root for everything sumbg reports to a user.

Each error carries the site, colour and step it happened in plus the evidence
(command, exit code, output tail). The command line (`sumbg.cli`) is the one place
that turns an error into a message and one of the documented exit codes (EXIT_*),
so nothing here knows about the terminal.

Errors are not edited after they are raised: code that knows more (the step it
happened in, a log tail, a better message) raises a new one with `refined(...)`,
chained to the original.
"""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_NEEDS_OPERATOR = 3


class ErrorFacts(TypedDict, total=False):
    """Where an error happened and its evidence: what `refined` may change."""

    site: str | None
    colour: str | None
    step: str | None
    command: list[str] | None
    returncode: int | None
    output_tail: str | None


class Evidence(TypedDict, total=False):
    """An error as history and `--json` record it: the facts that are set, by name."""

    error: str
    message: str
    site: str
    colour: str
    step: str
    command: list[str]
    returncode: int
    output_tail: str


class SumbgError(Exception):
    """Something sumbg could not do; the message says what and why."""

    def __init__(
        self,
        message: str,
        *,
        site: str | None = None,
        colour: str | None = None,
        step: str | None = None,
        command: list[str] | None = None,
        returncode: int | None = None,
        output_tail: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.site = site
        self.colour = colour
        self.step = step
        self.command = command
        self.returncode = returncode
        self.output_tail = output_tail
        # What an operation recorded before it failed (its history entry), for `--json`.
        self.result = result

    def refined(
        self, *, message: str | None = None, result: dict[str, Any] | None = None, **facts: Unpack[ErrorFacts]
    ) -> SumbgError:
        """The same error with more context: a new error of the same class (chain it with `from`)."""
        known: ErrorFacts = {
            "site": self.site,
            "colour": self.colour,
            "step": self.step,
            "command": self.command,
            "returncode": self.returncode,
            "output_tail": self.output_tail,
        }
        unknown = set(facts) - set(known)
        if unknown:
            raise TypeError(f"unknown error facts: {sorted(unknown)}")
        known.update(facts)
        copy = type(self).__new__(type(self))
        SumbgError.__init__(
            copy,
            self.message if message is None else message,
            result=self.result if result is None else result,
            **known,
        )
        return copy

    def evidence(self) -> Evidence:
        """The structured facts behind the message, for history and --json."""
        facts = Evidence(error=type(self).__name__, message=self.message)
        if self.site is not None:
            facts["site"] = self.site
        if self.colour is not None:
            facts["colour"] = self.colour
        if self.step is not None:
            facts["step"] = self.step
        if self.command is not None:
            facts["command"] = self.command
        if self.returncode is not None:
            facts["returncode"] = self.returncode
        if self.output_tail is not None:
            facts["output_tail"] = self.output_tail
        return facts

    def format_message(self) -> str:
        where = ", ".join(
            f"{label} {value}"
            for label, value in (("site", self.site), ("colour", self.colour), ("step", self.step))
            if value
        )
        return f"{self.message} [{where}]" if where else self.message

    def __str__(self) -> str:
        return self.format_message()


class UsageError(SumbgError):
    """Bad input: a malformed argument, file or setting; nothing was changed."""


class ConfigError(UsageError):
    """A configuration file is missing, malformed or has an invalid value."""


class NotFound(UsageError):
    """A site, ref, backup or colour the user named does not exist."""


class LockHeld(SumbgError):
    """Another sumbg operation holds the site's lock."""


class Interrupted(SumbgError):
    """An earlier operation on the site died part way; `sumbg recover` must run first."""


class Disagreement(SumbgError):
    """The site's records, Caddy's files and what answers disagree; `sumbg recover` must run first."""


class DockerError(SumbgError):
    """A Docker engine or Compose command failed."""


class AppCommandFailed(SumbgError):
    """A one-off command of the site's release (collectstatic, manage.py) failed."""


class DatabaseError(SumbgError):
    """An SQL statement on a site's database failed."""


class GitError(SumbgError):
    """A git command on the client repository failed."""


class BuildError(SumbgError):
    """The client image could not be built."""


class CheckFailed(SumbgError):
    """A preflight, health or smoke check did not pass."""


class CertificateFailed(CheckFailed):
    """The edge could not get a TLS certificate for a site's domain."""


class HookFailed(SumbgError):
    """A [hooks] command failed, or outlived its hook_timeout."""


class WorkerNotReady(CheckFailed):
    """A release's background worker did not become ready, or did not stay up."""


class BackupError(SumbgError):
    """A database backup or restore did not complete or did not verify."""


class MigrationFailed(SumbgError):
    """The new release's migrations failed; traffic was not touched."""


class BreakingRelease(SumbgError):
    """The rehearsal measured that the release's migrations break the live release; refused."""


class CaddyError(SumbgError):
    """The edge Caddy rejected its configuration or could not be reloaded."""


class RunbookError(SumbgError):
    """A command on a runbook-deployed site (systemctl, its host Caddy) failed."""


class ScheduleError(SumbgError):
    """systemd could not install, start or remove sumbg's timers."""


class HostUnreachable(SumbgError):
    """A fleet host did not answer over SSH (or its sumbg could not be run)."""


class NeedsOperator(SumbgError):
    """The operation failed and sumbg could not put the previous state back."""


def tail(text: str | bytes | None, lines: int = 20) -> str:
    """The last lines of some output, decoded leniently."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])
