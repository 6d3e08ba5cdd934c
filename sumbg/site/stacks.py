"""What sumbg does to one site's containers, one verb per method.

Operations (init, upgrade, rollback, ...) compose these into plans; nothing
here decides *when* to do something, only how.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters.docker import ComposeProject, Engine, ExecResult
from sumbg.config import LIVE_CPU_SHARES
from sumbg.errors import AppCommandFailed, BackupError, DockerError, MigrationFailed, tail
from sumbg.site import retention
from sumbg.site.addresses import AddressPlan
from sumbg.site.backupset import BackupSet
from sumbg.site.database import Database, parse_row_counts
from sumbg.site.site import Site
from sumbg.util import poll, utc_stamp

DATA_READY_SECONDS = 120.0


@dataclass(frozen=True)
class Backup:
    path: Path
    sha256: str
    size: int
    entries: int
    dump_seconds: float
    verify_seconds: float

    def record(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "size": self.size,
            "entries": self.entries,
            "dump_seconds": self.dump_seconds,
            "verify_seconds": self.verify_seconds,
        }


class Stacks:
    def __init__(self, site: Site, engine: Engine) -> None:
        self.site = site
        self.engine = engine

    # ------------------------------------------------------------ data stack
    def start_data(self) -> None:
        # The edge's own network (and the app stacks' of a site older than the address plan).
        self.engine.ensure_edge_network(self.site.host.edge.name)
        # The site's network and its link to the edge, on subnets of the address plan.
        self.addresses().ensure(self.site.slug)
        self.engine.compose_up(self.site.data_project())
        self.wait_data_ready()

    def addresses(self) -> AddressPlan:
        return AddressPlan(self.site.host, self.engine)

    def wait_data_ready(self, timeout: float = DATA_READY_SECONDS) -> None:
        """Postgres answers on TCP (not only the socket of its first-start init server) and Redis
        answers PING."""
        checks = {
            self.site.postgres_container: [
                "sh",
                "-c",
                'pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"',
            ],
            self.site.redis_container: ["redis-cli", "ping"],
        }
        last: dict[str, ExecResult] = {}

        def ready() -> bool:
            for name, argv in checks.items():
                if name not in last or last[name].returncode != 0:
                    last[name] = self.engine.exec(name, argv)
            return all(result.returncode == 0 for result in last.values())

        if not poll(ready, timeout, interval=0.5):
            name = next(n for n, r in last.items() if r.returncode != 0)
            raise DockerError(
                f"{name} did not become ready within {timeout:.0f}s",
                site=self.site.slug,
                command=checks[name],
                returncode=last[name].returncode,
                output_tail=tail(last[name].output, 10),
            )

    def data_running(self) -> bool:
        state = self.engine.container(self.site.postgres_container)
        return bool(state and state.running)

    # ------------------------------------------------------------ app stacks
    def app_project(self, colour: str, image: str | None = None, *, worker: bool | None = None) -> ComposeProject:
        """`image`: what the colour runs; only stopping or removing a colour may leave it out (the
        image its web container runs is used then, since Compose wants one)."""
        image = image or self.running_image(colour) or "sumbg-unknown-image"
        labels = self.engine.image_labels(image) or {}
        return self.site.app_project(
            colour,
            image,
            worker=worker,
            # Only the edge may tell gunicorn the scheme (X-Forwarded-Proto), so a client whose
            # settings redirect to HTTPS with no SECURE_PROXY_SSL_HEADER works unchanged.
            forwarded_allow_ips=self.edge_address(),
            edge_network=self.edge_network(),
            version=(labels.get("sumbg.commit") or "unknown", labels.get("sumbg.ref") or "unknown"),
        )

    def edge_network(self) -> str:
        """Where the site's webs meet the edge: its own link, or (a site older than the address plan)
        the shared edge network."""
        block = self.addresses().block(self.site.slug)
        return block.edge_network if block else self.site.host.edge.name

    def edge_address(self) -> str:
        """The edge Caddy's address where the site's webs meet it: reserved on the site's link, or on
        the shared edge network, or (on an edge network made by an older sumbg) wherever the
        running edge is now."""
        block = self.addresses().block(self.site.slug)
        if block is not None:
            return block.edge_address
        edge = self.site.host.edge
        return (
            self.engine.edge_address(edge.name)
            or self.engine.container_address(edge.container, edge.name)
            or "127.0.0.1"
        )

    def running_image(self, colour: str) -> str | None:
        """The image the colour's web container was created from, if it exists."""
        web = self.engine.container(self.site.web_container(colour))
        return web.image if web is not None else None

    def run_manage(self, colour: str, image: str, args: list[str], *, env_dir: Path | None = None) -> ExecResult:
        """`env_dir`: where Compose's variables file goes instead of the site's run/ folder
        (a dry run leaves no file behind)."""
        project = self.app_project(colour, image)
        if env_dir is not None:
            project = replace(project, env_file=env_dir / project.env_file.name)
        return self.engine.compose_run(project, "manage", ["python", "manage.py", *args])

    def migration_plan(self, colour: str, image: str, *, env_dir: Path | None = None) -> str:
        result = self.run_manage(colour, image, ["migrate", "--plan"], env_dir=env_dir)
        if result.returncode != 0:
            raise MigrationFailed(
                "`manage.py migrate --plan` failed",
                colour=colour,
                command=["manage.py", "migrate", "--plan"],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return result.stdout.strip()

    def pending_migrations(self, colour: str, image: str) -> PendingMigrations:
        result = self.run_manage(colour, image, phase_command("plan"))
        try:
            if result.returncode != 0:
                raise ValueError(result.returncode)
            return parse_phases(result.stdout)
        except ValueError:
            raise MigrationFailed(
                f"could not list the pending migrations of {image}",
                colour=colour,
                returncode=result.returncode,
                output_tail=tail(result.output),
            ) from None

    def migrate(self, colour: str, image: str, backup_hint: str, *, before_switch_only: bool = False) -> str:
        """`manage.py migrate`; with `before_switch_only`, all but the migrations marked run_after_switch."""
        args = phase_command("pre") if before_switch_only else ["migrate", "--noinput"]
        result = self.run_manage(colour, image, args)
        if result.returncode != 0:
            raise MigrationFailed(
                f"migrations of {image} failed; traffic untouched on the live colour. {backup_hint}",
                colour=colour,
                command=["manage.py", *args[:1], "..." if before_switch_only else "--noinput"],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return result.stdout.strip()

    def collectstatic(self, colour: str, image: str) -> str:
        result = self.run_manage(colour, image, ["collectstatic", "--noinput", "--clear"])
        if result.returncode != 0:
            raise AppCommandFailed(
                f"collectstatic of {image} failed",
                colour=colour,
                command=["manage.py", "collectstatic", "--noinput", "--clear"],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return (result.stdout.strip().splitlines() or [""])[-1]

    def cpu_shares(self, *, live: bool) -> int:
        """The live colour's weight, or the background weight for anything else (a candidate, a
        rollback target, the rehearsal) until a flip makes it live."""
        return LIVE_CPU_SHARES if live else self.site.host.background_cpu_shares

    def start_web(self, colour: str, image: str) -> None:
        """A colour's web, created and started at the background weight (no web starts live: a flip
        moves traffic, and the weight with it)."""
        self.engine.compose_up(
            self.app_project(colour, image, worker=False),
            ["web"],
            force_recreate=True,
            cpu_shares=self.cpu_shares(live=False),
        )

    def start_worker(self, colour: str, image: str, *, live: bool) -> bool:
        """`live`: the colour takes traffic now (its worker gets the live weight)."""
        if not self.site.config.worker_command:
            return False
        self.engine.compose_up(self.app_project(colour, image), ["worker"], cpu_shares=self.cpu_shares(live=live))
        return True

    def apply_cpu_weights(self, live: str) -> None:
        """After a flip: the colour now live gets the live weight, the other the background one."""
        for colour, shares in (
            (live, LIVE_CPU_SHARES),
            (naming.other_colour(live), self.site.host.background_cpu_shares),
        ):
            names = [
                c.name
                for c in self.engine.project_containers(naming.app_project(self.site.slug, colour))
                if c.running and c.labels.get("com.docker.compose.oneoff") != "True"
            ]
            self.engine.set_cpu_shares(names, shares)

    def stop_worker(self, colour: str) -> bool:
        if not self.site.config.worker_command:
            return False
        state = self.engine.container(self.site.worker_container(colour))
        if state is None:
            return False
        self.engine.compose_rm(self.app_project(colour), ["worker"])
        return True

    def colour_exists(self, colour: str) -> bool:
        return bool(self.engine.project_containers(naming.app_project(self.site.slug, colour)))

    def web_running(self, colour: str) -> bool:
        state = self.engine.container(self.site.web_container(colour))
        return bool(state and state.running)

    def remove_colour(self, colour: str) -> None:
        self.engine.compose_down(self.app_project(colour))

    def web_logs(self, colour: str, lines: int = 25) -> str:
        return self.engine.logs(self.site.web_container(colour), lines)

    def web_exit_summary(self, colour: str) -> str:
        state = self.engine.container(self.site.web_container(colour))
        if state is None:
            return "the web container does not exist"
        if not state.running:
            return f"the web container is {state.status} (exit code {state.exit_code})"
        return "the web container is running"

    # ------------------------------------------------------------ rehearsal
    def rehearsal_project(self, image: str, database: str, static_from: str) -> ComposeProject:
        """A stand-in app stack (web only) on a scratch copy of the database, serving the static
        files of colour `static_from` (the live one, whose release it runs)."""
        self.site.write_rehearsal_env(database)
        labels = self.engine.image_labels(image) or {}
        return self.site.app_project(
            naming.REHEARSAL,
            image,
            worker=False,
            forwarded_allow_ips=self.edge_address(),
            edge_network=self.edge_network(),
            version=(labels.get("sumbg.commit") or "unknown", labels.get("sumbg.ref") or "unknown"),
            app_env_file=self.site.rehearsal_env_file(),
            static_dir=self.site.static_dir(static_from),
        )

    def rehearsal_manage(self, image: str, database: str, args: list[str]) -> ExecResult:
        # One-off commands have no web: the static folder is never read.
        return self.engine.compose_run(
            self.rehearsal_project(image, database, naming.COLOURS[0]), "manage", ["python", "manage.py", *args]
        )

    def start_rehearsal_web(self, image: str, database: str, static_from: str) -> None:
        self.engine.compose_up(
            self.rehearsal_project(image, database, static_from),
            ["web"],
            force_recreate=True,
            cpu_shares=self.site.host.background_cpu_shares,
        )

    def remove_rehearsal(self) -> bool:
        """Remove the rehearsal stack (also one left by a killed upgrade); True if there was one."""
        project = naming.app_project(self.site.slug, naming.REHEARSAL)
        containers = self.engine.project_containers(project)
        for container in containers:
            self.engine.remove_container(container.name)
        return bool(containers)

    def rehearsal_logs(self, lines: int = 60) -> str:
        return self.engine.logs(self.site.web_container(naming.REHEARSAL), lines)

    def database(self) -> Database:
        return Database(self.site, self.engine)

    # ------------------------------------------------------------ backups
    def backup_name(self, ref: str) -> str:
        safe_ref = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in ref)
        return f"{self.site.slug}_{utc_stamp()}_{safe_ref}.dump"

    def backup(self, name: str) -> Backup:
        """pg_dump (custom format) in the site's Postgres container, verified with pg_restore --list."""
        backups = self.site.backups_dir
        final = backups / name
        partial = backups / f".{name}.partial"
        container = self.site.postgres_container
        user = f"{os.getuid()}:{os.getgid()}"
        env = {"SUMBG_DB": self.site.config.db_name, "SUMBG_DB_USER": self.site.config.db_user}
        # Local-socket auth inside the container: no password in any argument, log or history.
        started = time.monotonic()
        dump = self.engine.exec(
            container,
            [
                "sh",
                "-c",
                f'umask 077 && pg_dump --format=custom --no-password -U "$SUMBG_DB_USER" -d "$SUMBG_DB" '
                f'-f "/backups/.{name}.partial"',
            ],
            user=user,
            env=env,
        )
        if dump.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BackupError(
                "pg_dump failed",
                command=["pg_dump", "--format=custom", "..."],
                returncode=dump.returncode,
                output_tail=tail(dump.output),
            )
        dumped = time.monotonic()
        listing = self.engine.exec(container, ["pg_restore", "--list", f"/backups/.{name}.partial"], user=user)
        entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
        if listing.returncode != 0 or entries == 0:
            partial.unlink(missing_ok=True)
            raise BackupError(
                f"backup {name} did not verify with pg_restore --list",
                returncode=listing.returncode,
                output_tail=tail(listing.output),
            )
        digest = sha256_file(partial)
        os.chmod(partial, 0o600)
        os.replace(partial, final)
        sums = final.with_name(final.name + ".sha256")
        fd = os.open(sums, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{digest}  {final.name}\n")
        return Backup(
            final,
            digest,
            final.stat().st_size,
            entries,
            dump_seconds=elapsed(started),
            verify_seconds=round(time.monotonic() - dumped, 3),
        )

    def backup_and_prune(self, name: str, protected: set[str]) -> tuple[Backup, list[str]]:
        """Take a backup, then apply the site's retention ([upgrade] keep_backups, [backup]
        keep_daily/weekly/monthly), never deleting the new one or a `protected` one (those
        state.json records for a colour: the way back for a rollback)."""
        taken = self.backup(name)
        return taken, self.prune_backups(protected | {taken.path.name})

    def prune_backups(self, protected: set[str]) -> list[str]:
        """Delete the backups (dump, checksum, manifest, media copy) the retention rules let go."""
        rules = self.site.config.backup_policy(self.site.host).retention
        dated = [retention.Dated(path.name, dump_time(path)) for path in self.list_backup_files()]
        removed = retention.to_delete(dated, rules, protected)
        backups = BackupSet(self.site.backups_dir)
        for name in removed:
            backups.remove(name)
        return removed

    def dump_row_counts(self, name: str) -> dict[str, int]:
        """Rows per table as the dump in the backups folder holds them ("schema.table" -> count, the
        names quoted as ROW_COUNTS_SQL quotes them): read from its data, so they are exactly what a
        restore of it must give, whatever was written while it was taken."""
        script = (
            'pg_restore --data-only -f - "$0" | awk \'/^COPY [^ ]+ .* FROM stdin;$/ { table = $2; rows = 0; '
            'inside = 1; next } inside && $0 == "\\\\." { print table "|" rows; inside = 0; next } '
            "inside { rows++ }'"
        )
        argv = ["bash", "-o", "pipefail", "-c", script, f"/backups/{name}"]
        result = self.engine.exec(self.site.postgres_container, argv, user=f"{os.getuid()}:{os.getgid()}")
        if result.returncode != 0:
            raise BackupError(
                f"could not count the rows in {name}",
                command=["pg_restore", "--data-only", "..."],
                returncode=result.returncode,
                output_tail=tail(result.output),
            )
        return parse_row_counts(result.stdout)

    def list_backup_files(self) -> list[Path]:
        if not self.site.backups_dir.exists():
            return []
        return [
            p
            for p in self.site.backups_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix in (".dump", ".gz", ".sql")
        ]

    # ------------------------------------------------------------ host checks
    def free_space_problems(self, min_free_gb: float) -> list[str]:
        problems = []
        places = [("backups folder", self.site.backups_dir)]
        try:
            places.append(("Docker data root", self.engine.data_root()))
        except DockerError:
            pass
        for label, path in places:
            probe = path
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            free = shutil.disk_usage(probe).free / 1024**3
            if free < min_free_gb:
                problems.append(f"{label} {path}: {free:.1f} GB free, need {min_free_gb:g} GB")
        return problems


# ---------------------------------------------------------------- migrations in two phases

_PHASES_SCRIPT = Path(__file__).with_name("migration_phases_script.py").read_text()
_PHASES_MARKER = "SUMBG-MIGRATIONS "


@dataclass(frozen=True)
class PendingMigrations:
    pending: tuple[str, ...]
    after_switch: tuple[str, ...]  # marked run_after_switch, or depending on one that is


def phase_command(mode: str) -> list[str]:
    """`manage.py` arguments that list (mode "plan") or apply (mode "pre") the migrations
    that do not wait for the switch."""
    return ["shell", "-c", f"MODE = {mode!r}\n{_PHASES_SCRIPT}"]


def parse_phases(output: str) -> PendingMigrations:
    for line in reversed(output.splitlines()):
        if line.startswith(_PHASES_MARKER):
            facts = json.loads(line[len(_PHASES_MARKER) :])
            return PendingMigrations(tuple(facts["pending"]), tuple(facts["after_switch"]))
    raise ValueError("no migration report in the output")


def applied_count(migrate_output: str) -> int:
    return sum(1 for line in migrate_output.splitlines() if "Applying" in line)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dump_time(path: Path) -> datetime.datetime:
    """When a dump was taken: the UTC stamp in its name, else its file's time."""
    parts = path.name.split("_")
    stamp = retention.parse_time(parts[1]) if len(parts) >= 3 else None
    return stamp or datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 3)
