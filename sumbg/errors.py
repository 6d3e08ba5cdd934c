"""One exception root for everything sumbg reports to a user.

Each error carries the site, colour and step it happened in plus the evidence
(command, exit code, output tail), and maps to the CLI's documented exit codes.
"""

from __future__ import annotations

import click

EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_NEEDS_OPERATOR = 3


class SumbgError(click.ClickException):
    """Something sumbg could not do; the message says what and why."""

    exit_code = EXIT_ABORTED

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
    ) -> None:
        super().__init__(message)
        self.site = site
        self.colour = colour
        self.step = step
        self.command = command
        self.returncode = returncode
        self.output_tail = output_tail

    def evidence(self) -> dict:
        """The structured facts behind the message, for history and --json."""
        facts = {
            "error": type(self).__name__,
            "message": self.message,
            "site": self.site,
            "colour": self.colour,
            "step": self.step,
            "command": self.command,
            "returncode": self.returncode,
            "output_tail": self.output_tail,
        }
        return {key: value for key, value in facts.items() if value is not None}

    def format_message(self) -> str:
        where = ", ".join(
            f"{label} {value}"
            for label, value in (("site", self.site), ("colour", self.colour), ("step", self.step))
            if value
        )
        return f"{self.message} [{where}]" if where else self.message

    def show(self, file=None) -> None:
        click.echo(f"sumbg: error: {self.format_message()}", err=True)
        if self.output_tail:
            click.echo(_indent(self.output_tail), err=True)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


class UsageError(SumbgError):
    """Bad input: a malformed argument, file or setting; nothing was changed."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration file is missing, malformed or has an invalid value."""


class NotFound(UsageError):
    """A site, ref, backup or colour the user named does not exist."""


class LockHeld(SumbgError):
    """Another sumbg operation holds the site's lock."""


class DockerError(SumbgError):
    """A Docker engine or Compose command failed."""


class GitError(SumbgError):
    """A git command on the client repository failed."""


class BuildError(SumbgError):
    """The client image could not be built."""


class CheckFailed(SumbgError):
    """A preflight, health or smoke check did not pass."""


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


class HostUnreachable(SumbgError):
    """A fleet host did not answer over SSH (or its sumbg could not be run)."""


class NeedsOperator(SumbgError):
    """The operation failed and sumbg could not put the previous state back."""

    exit_code = EXIT_NEEDS_OPERATOR


def tail(text: str | bytes | None, lines: int = 20) -> str:
    """The last lines of some output, decoded leniently."""
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])
