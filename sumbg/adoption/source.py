"""The old host's data, as adoption moves it: the runbook site's PostgreSQL database and its
Celery broker (Redis), and how two databases' rows are compared.

Both are reached as the old app reached them, through one-off client containers on the host
network (`ctx.engine`, so the unit tests' fake engine answers for them): the database with the
credentials of the old .env (the password by environment, never in argv), the broker by its URL.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import urlsplit

from sumbg.adapters.docker import ExecResult
from sumbg.adoption.runbook_host import DatabaseSource
from sumbg.errors import BackupError, UsageError, tail
from sumbg.ops.seams import ContainerEngine
from sumbg.site.database import ROW_COUNTS_SQL, parse_row_counts
from sumbg.site.stacks import sha256_file
from sumbg.util import atomic_write


class SourceDatabase:
    """The runbook host's PostgreSQL, reached as the old app reached it: the host network,
    with the credentials from its .env (the password by environment, never in argv)."""

    def __init__(self, engine: ContainerEngine, image: str, database: DatabaseSource) -> None:
        self.engine = engine
        self.image = image
        self.db = database

    def _run(self, argv: list[str], backups: Path | None = None, extra_env: dict[str, str] | None = None) -> ExecResult:
        volumes = [(str(backups), "/backups", "rw")] if backups else []
        host = self.db.host
        if host.startswith("/"):  # a Unix socket folder, as Django's HOST may name one
            volumes.append((host, host, "rw"))
        return self.engine.run_oneoff(
            self.image,
            argv,
            volumes=volumes,
            network="host",
            env={"PGPASSWORD": self.db.password, "PGCONNECT_TIMEOUT": "5", **(extra_env or {})},
        )

    def _target(self) -> list[str]:
        return ["-h", self.db.host, "-p", str(self.db.port), "-U", self.db.user, "-d", self.db.name]

    def check_readable(self) -> None:
        result = self._run(["psql", "-X", "-q", "-t", "-A", *self._target(), "-c", "SELECT 1"])
        if result.returncode != 0 or result.stdout.strip() != "1":
            raise UsageError(
                f"cannot read the database {self.db.describe()} with the credentials in the .env: "
                f"{_first_error(result.output)}"
            )

    def row_counts(self) -> dict[str, int]:
        result = self._run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", *self._target(), "-c", ROW_COUNTS_SQL]
        )
        if result.returncode != 0:
            raise BackupError(f"counting rows in {self.db.describe()} failed", output_tail=tail(result.output))
        return parse_row_counts(result.stdout)

    def dump(self, backups: Path, name: str, *, count: bool = False) -> dict[str, int]:
        """pg_dump into the site's backups folder; with `count`, the rows per table counted just
        before, in the same container (one start fewer inside the cutover window)."""
        partial = f".{name}.partial"
        counting = 'psql -X -q -t -A -v ON_ERROR_STOP=1 "$@" -c "$SUMBG_COUNT_SQL" && ' if count else ""
        result = self._run(
            [
                "sh",
                "-c",
                f"umask 077 && {counting}pg_dump --format=custom --no-owner "
                f'--no-privileges --no-password "$@" -f "/backups/{partial}"',
                "pg_dump",
                *self._target(),
            ],
            backups,
            extra_env={"SUMBG_COUNT_SQL": ROW_COUNTS_SQL},
        )
        if result.returncode != 0:
            (backups / partial).unlink(missing_ok=True)
            raise BackupError(
                f"pg_dump of {self.db.describe()} failed",
                command=["pg_dump", "..."],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        final = backups / name
        os.replace(backups / partial, final)
        atomic_write(final.with_name(final.name + ".sha256"), f"{sha256_file(final)}  {final.name}\n", mode=0o600)
        return parse_row_counts(result.stdout)

    def load(self, backups: Path, name: str) -> None:
        """Replace the old database's contents with a dump, in one transaction: all or nothing."""
        result = self._run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                *self._target(),
                f"/backups/{name}",
            ],
            backups,
        )
        if result.returncode != 0:
            raise BackupError(
                f"loading {name} into {self.db.describe()} failed; it was not changed",
                command=["pg_restore", "..."],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )


class SourceBroker:
    """The old host's Celery broker (Redis): the task messages still queued when its worker
    stopped go to sumbg's broker, so no task the old site accepted is dropped."""

    # Every list in the broker's database but kombu's own bookkeeping, one "key message" line per
    # queued message, both base64 (the output passes through text decoding on its way back).
    SCRIPT = r"""
set -e
cli() { redis-cli -h "$SUMBG_HOST" -p "$SUMBG_PORT" -n "$SUMBG_DB" "$@"; }
b64() { printf '%s' "$1" | base64 -w0; }
for key in $(cli --scan); do
  case "$key" in _kombu*|unacked*) continue;; esac
  [ "$(cli TYPE "$key")" = list ] || continue
  cli --raw LRANGE "$key" 0 -1 > /tmp/messages
  while IFS= read -r message; do
    echo "$(b64 "$key") $(b64 "$message")"
  done < /tmp/messages
done
"""

    def __init__(self, engine: ContainerEngine, image: str, url: str) -> None:
        parts = urlsplit(url)
        self.engine, self.image = engine, image
        self.env = {
            "SUMBG_HOST": parts.hostname or "localhost",
            "SUMBG_PORT": str(parts.port or 6379),
            "SUMBG_DB": (parts.path.strip("/") or "0"),
        }
        if parts.password:
            self.env["REDISCLI_AUTH"] = parts.password

    def queued(self) -> list[tuple[bytes, bytes]]:
        """(queue, message) of every message still queued, oldest first per queue."""
        result = self.engine.run_oneoff(self.image, ["sh", "-c", self.SCRIPT], volumes=[], network="host", env=self.env)
        if result.returncode != 0:
            raise BackupError("reading the old Celery broker failed", output_tail=tail(result.output))
        messages = []
        for line in result.stdout.splitlines():
            key, sep, message = line.partition(" ")
            if sep:
                messages.append((base64.b64decode(key), base64.b64decode(message)))
        return messages

    def drop(self, keys: list[str]) -> None:
        result = self.engine.run_oneoff(
            self.image,
            ["sh", "-c", 'redis-cli -h "$SUMBG_HOST" -p "$SUMBG_PORT" -n "$SUMBG_DB" DEL "$@"', "sh", *keys],
            volumes=[],
            network="host",
            env=self.env,
        )
        if result.returncode != 0:
            raise BackupError("removing the moved messages from the old broker failed", output_tail=tail(result.output))


def as_rpush_commands(messages: list[tuple[bytes, bytes]]) -> bytes:
    """The messages as RPUSH commands in Redis's protocol, for `redis-cli --pipe` (binary-safe)."""

    def bulk(value: bytes) -> bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)

    return b"".join(b"*3\r\n" + bulk(b"RPUSH") + bulk(key) + bulk(message) for key, message in messages)


def compare_counts(
    source: dict[str, int], target: dict[str, int], *, source_after: dict[str, int] | None = None
) -> list[str]:
    """What differs between the old database and the imported copy. With `source_after`
    (counted again after the dump of a live site), a table that changed meanwhile may hold
    anything between its two counts; otherwise the counts must be equal."""
    problems = []
    for table in sorted(set(source) | set(target)):
        if table not in target:
            problems.append(f"{table} is missing from the copy")
            continue
        if table not in source:
            problems.append(f"{table} is in the copy but not in the old database")
            continue
        low, high = source[table], source[table]
        if source_after is not None and table in source_after:
            low, high = min(low, source_after[table]), max(high, source_after[table])
        if not low <= target[table] <= high:
            expected = f"{low}" if low == high else f"{low}..{high}"
            problems.append(f"{table}: {target[table]} rows in the copy, {expected} in the old database")
    return problems


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() or "fatal" in line.lower():
            return line
    return lines[-1] if lines else "no answer"
