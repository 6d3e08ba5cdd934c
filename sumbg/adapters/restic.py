"""The restic adapter: the only module that runs restic (Debian's package, `make setup`).

A site's offsite copies live in a restic repository (restic's own deduplication and
encryption; no upload code of ours). Credentials reach restic only through its documented
environment: RESTIC_REPOSITORY (the location, which may carry a user name), RESTIC_PASSWORD_FILE
(a 0600 file), the backend's variables (AWS_*, ...) from a 0600 file or sumbg's own
environment; an sftp repository's ssh command names key files, never keys. Nothing secret is
in argv, and every message and output tail is scrubbed of the password and those variables.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg.errors import BackupError, tail

RESTIC = "restic"
# restic's documented variables (its manual, "Environment Variables") that a repository's
# credentials may come from: passed on from sumbg's environment or read from [backup] env_file.
ENV_PREFIXES = ("AWS_", "RESTIC_", "B2_", "AZURE_", "GOOGLE_", "OS_", "ST_", "RCLONE_")
_PASSED_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY")
_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# sftp:user@host:/path, or sftp://user@host:port//path (restic's two forms).
_SFTP_SHORT = re.compile(r"^sftp:(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+):(?P<path>.+)$")
_SFTP_URL = re.compile(r"^sftp://(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?/(?P<path>.*)$")
# restic's exit code for "the snapshot was made, but some files could not be read".
INCOMPLETE = 3
TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class Repository:
    """Where and how to reach a restic repository (paths of credential files, never their content)."""

    location: str
    password_file: str = ""
    env_file: str = ""
    ssh_key_file: str = ""
    ssh_known_hosts: str = ""
    cache_dir: str = ""

    @property
    def shown(self) -> str:
        """The location as messages and records show it: no password in a URL."""
        return re.sub(r"(://[^/@:]+):[^/@]*@", r"\1:***@", self.location)


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str  # restic's RFC 3339 time
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def tag(self, key: str) -> str | None:
        """The value of a `key=value` tag."""
        prefix = f"{key}="
        return next((t[len(prefix) :] for t in self.tags if t.startswith(prefix)), None)


@dataclass(frozen=True)
class Upload:
    """What `restic backup` reported in its summary."""

    snapshot: str
    files: int
    bytes: int
    files_new: int
    data_added: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)


def read_env_file(path: str) -> dict[str, str]:
    """NAME=value lines (blank lines and # comments skipped); only restic's documented variables."""
    found: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise BackupError(f"cannot read the backup env_file {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, value = text.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not sep or not _NAME.fullmatch(name) or not name.startswith(ENV_PREFIXES):
            raise BackupError(
                f"{path} line {number}: expected NAME=value with one of restic's variables "
                f"({', '.join(p + '...' for p in ENV_PREFIXES)})"
            )
        found[name] = value.strip().strip("'\"")
    return found


def sftp_command(location: str, key_file: str, known_hosts: str) -> str | None:
    """The ssh command restic runs for an sftp repository (restic's `-o sftp.command`): batch mode
    (a scheduled backup never waits at a prompt), the key file and pinned host keys when given."""
    match = _SFTP_URL.match(location) or _SFTP_SHORT.match(location)
    if not location.startswith("sftp:") or match is None:
        return None
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    port = match.groupdict().get("port")
    if port:
        ssh += ["-p", port]
    if match.group("user"):
        ssh += ["-l", match.group("user")]
    if key_file:
        ssh += ["-i", key_file, "-o", "IdentitiesOnly=yes"]
    if known_hosts:
        ssh += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    else:
        ssh += ["-o", "StrictHostKeyChecking=accept-new"]
    return shlex.join([*ssh, match.group("host"), "-s", "sftp"])


class Restic:
    """restic on one repository; `stage` names the backup stage in every error (upload, prune, ...)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    @property
    def shown(self) -> str:
        return self.repository.shown

    # ------------------------------------------------------------ how restic is run
    def env(self) -> dict[str, str]:
        """restic's whole environment, built from scratch."""
        env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env.update({k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)})
        if self.repository.env_file:
            env.update(read_env_file(self.repository.env_file))
        env["RESTIC_REPOSITORY"] = self.repository.location
        env.pop("RESTIC_REPOSITORY_FILE", None)
        if self.repository.password_file:
            env["RESTIC_PASSWORD_FILE"] = self.repository.password_file
            env.pop("RESTIC_PASSWORD", None)
            env.pop("RESTIC_PASSWORD_COMMAND", None)
        elif not any(k in env for k in ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")):
            raise BackupError(
                f"the restic repository {self.repository.shown} needs a password: set [backup] password_file "
                "(a file of mode 0600) in sumbg.toml or site.toml"
            )
        if self.repository.cache_dir:
            env["RESTIC_CACHE_DIR"] = self.repository.cache_dir
        env["RESTIC_PROGRESS_FPS"] = "0.2"
        return env

    def options(self) -> list[str]:
        command = sftp_command(self.repository.location, self.repository.ssh_key_file, self.repository.ssh_known_hosts)
        return ["-o", f"sftp.command={command}"] if command else []

    def argv(self, *args: str) -> list[str]:
        return [RESTIC, *self.options(), *args]

    def secrets(self, env: dict[str, str]) -> list[str]:
        """What must never be shown: the password and the credential variables' values."""
        found = []
        if self.repository.password_file:
            try:
                found += [line.strip() for line in Path(self.repository.password_file).read_text().splitlines()]
            except OSError:
                pass
        for key, value in env.items():
            if key.startswith(ENV_PREFIXES) and key not in ("RESTIC_REPOSITORY", "RESTIC_CACHE_DIR"):
                found.append(value)
        if self.repository.location != self.repository.shown:
            found.append(self.repository.location)
        return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str, secrets: Sequence[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    def run(self, args: list[str], what: str, *, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        env = self.env()
        argv = self.argv(*args)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=TIMEOUT
            )
        except FileNotFoundError:
            raise BackupError("restic is not installed (run `make setup`, or apt-get install restic)") from None
        except subprocess.TimeoutExpired:
            raise BackupError(f"{what} on {self.repository.shown} gave no answer within {TIMEOUT:.0f}s") from None
        if proc.returncode not in ok:
            secrets = self.secrets(env)
            said = [line for line in proc.stderr.splitlines() if line.strip()]
            reason = self.scrub(said[-1], secrets) if said else f"restic exited {proc.returncode}"
            raise BackupError(
                f"{what} on {self.repository.shown} failed: {reason}",
                command=[RESTIC, args[0]],
                returncode=proc.returncode,
                output_tail=self.scrub(tail(proc.stderr, 15), secrets),
            )
        return proc

    # ------------------------------------------------------------ verbs
    def ensure_initialised(self) -> bool:
        """Create the repository if there is none yet; True if it was created. A repository that is
        there but does not open (a wrong password, an unreachable server) is an error, never re-made."""
        try:
            self.run(["cat", "config"], "restic cat config")
            return False
        except BackupError as exc:
            if "Is there a repository at the following location?" not in (exc.output_tail or ""):
                raise
        self.run(["init"], "restic init")
        return True

    def backup(self, paths: Sequence[Path], tags: Sequence[str]) -> Upload:
        """One snapshot of `paths`. Unchanged files (same size and mtime) are not read again: media
        files are written once, and a backup's copy of them is a tree of hard links (new ctime)."""
        args = ["backup", "--json", "--ignore-ctime", "--ignore-inode"]
        for tag in tags:
            args += ["--tag", tag]
        started = time.monotonic()
        proc = self.run([*args, *(str(p) for p in paths)], "restic backup", ok=(0, INCOMPLETE))
        summary: dict[str, Any] = {}
        for line in proc.stdout.splitlines():
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("message_type") == "summary":
                summary = message
        snapshot = str(summary.get("snapshot_id") or "")
        if proc.returncode == INCOMPLETE:
            if snapshot:
                self.forget([snapshot], prune=False)
            raise BackupError(
                f"restic backup on {self.repository.shown} could not read every file: the incomplete snapshot "
                "was removed",
                returncode=proc.returncode,
                output_tail=self.scrub(tail(proc.stderr, 15), self.secrets(self.env())),
            )
        if not snapshot:
            raise BackupError(f"restic backup on {self.repository.shown} reported no snapshot")
        return Upload(
            snapshot=snapshot,
            files=int(summary.get("total_files_processed") or 0),
            bytes=int(summary.get("total_bytes_processed") or 0),
            files_new=int(summary.get("files_new") or 0),
            data_added=int(summary.get("data_added") or 0),
            seconds=round(time.monotonic() - started, 3),
            summary=summary,
        )

    def snapshots(self, tags: Sequence[str] = ()) -> list[Snapshot]:
        """The repository's snapshots with all of `tags`, oldest first."""
        args = ["snapshots", "--json"]
        if tags:
            args += ["--tag", ",".join(tags)]
        proc = self.run(args, "restic snapshots")
        try:
            found = json.loads(proc.stdout or "[]") or []
        except json.JSONDecodeError:
            raise BackupError(f"restic snapshots on {self.repository.shown} answered what is not JSON") from None
        return [
            Snapshot(
                id=str(item.get("id", "")),
                time=str(item.get("time", "")),
                tags=tuple(item.get("tags") or ()),
                paths=tuple(item.get("paths") or ()),
            )
            for item in found
            if isinstance(item, dict)
        ]

    def forget(self, snapshot_ids: Sequence[str], *, prune: bool = True) -> None:
        if not snapshot_ids:
            return
        self.run(["forget", *(["--prune"] if prune else []), *snapshot_ids], "restic forget")

    def restore(self, snapshot_id: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.run(["restore", snapshot_id, "--target", str(target)], "restic restore")
