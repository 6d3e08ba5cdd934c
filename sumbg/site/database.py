"""A site's PostgreSQL database, driven through its container: SQL, row counts, and restores
that never edit the live database in place."""

from __future__ import annotations

from sumbg.adapters.docker import Engine, ExecResult
from sumbg.errors import BackupError, DatabaseError, tail
from sumbg.site.site import Site

# ---------------------------------------------------------------- database restore
#
# A restore never edits the live database in place: it loads the backup into a
# scratch database, and only when that fully succeeded swaps the names, so a
# failed or interrupted restore leaves the original untouched.

RESTORE_SUFFIX = "__sumbg_restore"
# pg_dump's plain-SQL statements that name roles: `ALTER ... OWNER TO x;`, `GRANT ... TO x;`, `REVOKE ... FROM x;`.
PLAIN_SQL_ROLE_LINES = r"/^(ALTER [A-Z ]+ .* OWNER TO [^;]+|(GRANT|REVOKE) .* (TO|FROM) [^;]+);$/d"
OLD_SUFFIX = "__sumbg_old"
REHEARSAL_SUFFIX = "__sumbg_rehearsal"
VERIFY_SUFFIX = "__sumbg_verify"  # `sumbg backup verify`: an offsite backup loaded beside the live one


# Exact rows per table of every schema the user can read, as "schema.table|count" lines; one
# statement, read-only, the same on the site's database and on a runbook host's.
ROW_COUNTS_SQL = (
    "SELECT format('%I.%I', table_schema, table_name) || '|' || (xpath('/row/c/text()', query_to_xml("
    "format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text "
    "FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


HAS_TABLES_SQL = (
    "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema'))"
)


def parse_row_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        table, sep, count = line.strip().rpartition("|")
        if sep and count.isdigit():
            counts[table] = int(count)
    return counts


class Database:
    def __init__(self, site: Site, engine: Engine) -> None:
        self.site = site
        self.engine = engine
        self.name = self.site.config.db_name
        self.user = self.site.config.db_user

    def _exec(self, argv: list[str]) -> ExecResult:
        env = {"SUMBG_DB": self.name, "SUMBG_DB_USER": self.user}
        return self.engine.exec(self.site.postgres_container, argv, env=env)

    def sql(self, statement: str, database: str = "postgres") -> str:
        result = self._exec(
            ["psql", "-v", "ON_ERROR_STOP=1", "-X", "-q", "-t", "-A", "-U", self.user, "-d", database, "-c", statement]
        )
        if result.returncode != 0:
            raise DatabaseError(
                f"SQL on {database} failed: {statement[:80]}",
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return result.stdout.strip()

    def exists(self, database: str) -> bool:
        return self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'") == "1"

    def drop_if_exists(self, database: str) -> None:
        if self.exists(database):
            self.sql(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            self.terminate(database)
            self.sql(f'DROP DATABASE IF EXISTS "{database}"')

    def terminate(self, database: str) -> None:
        self.sql(
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )

    def row_counts(self, database: str | None = None) -> dict[str, int]:
        """Rows per table of the site's database (or of a scratch one beside it)."""
        return parse_row_counts(self.sql(ROW_COUNTS_SQL, database or self.name))

    def has_tables(self) -> bool:
        """Whether the site's database holds any table of its own (an empty one has none)."""
        return self.sql(HAS_TABLES_SQL, self.name) == "t"

    def size_mb(self) -> float:
        return int(self.sql(f"SELECT pg_database_size('{self.name}')")) / 1024**2

    def load_into_scratch(self, container_path: str, suffix: str = RESTORE_SUFFIX) -> str:
        """Restore a backup file (custom-format dump, or plain SQL .sql/.sql.gz) into a fresh database."""
        scratch = self.name + suffix
        self.drop_if_exists(scratch)
        self.sql(f'CREATE DATABASE "{scratch}" OWNER "{self.user}"')
        if container_path.endswith(".dump"):
            argv = [
                "pg_restore",
                "--exit-on-error",
                "--no-owner",
                "--single-transaction",
                "-U",
                self.user,
                "-d",
                scratch,
                container_path,
            ]
        else:
            reader = "gunzip -c" if container_path.endswith(".gz") else "cat"
            # Ownership and grants name the roles of the host the file came from (another name on a
            # runbook host): dropped, so the objects belong to the site's user, as with --no-owner.
            argv = [
                "sh",
                "-c",
                f'{reader} "$0" | sed -E "{PLAIN_SQL_ROLE_LINES}" | psql -v ON_ERROR_STOP=1 -X -q '
                f'--single-transaction -U "$SUMBG_DB_USER" -d "{scratch}" >/dev/null',
                container_path,
            ]
        result = self._exec(argv)
        if result.returncode != 0:
            self.drop_if_exists(scratch)
            raise BackupError(
                f"restoring {container_path.rsplit('/', 1)[-1]} failed; the database was not changed",
                command=argv[:1],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return scratch

    def swap_in(self, scratch: str) -> None:
        old = self.name + OLD_SUFFIX
        self.drop_if_exists(old)
        self.sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.terminate(self.name)
        self.sql(f'ALTER DATABASE "{self.name}" RENAME TO "{old}"')
        self.sql(f'ALTER DATABASE "{scratch}" RENAME TO "{self.name}"')
        self.sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
        self.drop_if_exists(old)

    def repair_interrupted_swap(self) -> list[str]:
        """After a crash mid-restore: put the original database back under its name, drop leftovers."""
        done = []
        if not self.exists(self.name) and self.exists(self.name + OLD_SUFFIX):
            self.sql(f'ALTER DATABASE "{self.name + OLD_SUFFIX}" RENAME TO "{self.name}"')
            done.append(f"renamed {self.name + OLD_SUFFIX} back to {self.name}")
        if self.exists(self.name):
            self.sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
        for leftover in (
            self.name + RESTORE_SUFFIX,
            self.name + OLD_SUFFIX,
            self.name + REHEARSAL_SUFFIX,
            self.name + VERIFY_SUFFIX,
        ):
            if self.exists(leftover):
                self.drop_if_exists(leftover)
                done.append(f"dropped {leftover}")
        return done
