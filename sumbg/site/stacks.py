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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.adapters.docker import ComposeProject, ContainerState, Engine, ExecResult
from sumbg.config import LIVE_CPU_SHARES
from sumbg.errors import AppCommandFailed, BackupError, DockerError, MigrationFailed, SumbgError, WorkerNotReady, tail
from sumbg.site import retention
from sumbg.site.addresses import AddressPlan
from sumbg.site.backupset import BackupSet
from sumbg.site.database import Database, parse_row_counts
from sumbg.site.logs import SERVICES
from sumbg.site.site import Site
from sumbg.site.worker import WorkerCommand, WorkerView, parse_worker_command, readiness, worker_view
from sumbg.util import poll, utc_stamp

DATA_READY_SECONDS = 120.0
WORKER_LOG_LINES = 25
# An old worker exited this long ago and still there has no drainer left: whoever sees it removes it.
DRAINED_LEFT_AFTER = 60.0


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


@dataclass(frozen=True)
class Drained:
    """How an old worker's drain ended."""

    container: str
    outcome: str  # "exited" (it finished its tasks), "killed" ([worker] stop_timeout passed), "gone"
    exit_code: int | None
    seconds: float  # from SIGTERM until it was gone
    held_tasks: list[dict[str, str]] | None = None  # what a killed worker still ran, if Celery said
    signalled_at: float | None = None  # when it got SIGTERM, epoch seconds
    kept_logs: tuple[str, ...] = ()  # its logs, kept in the site's logs/ before it was removed

    def record(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "seconds": self.seconds,
            **({"signalled_at": round(self.signalled_at, 3)} if self.signalled_at is not None else {}),
            **({"held_tasks": self.held_tasks} if self.held_tasks is not None else {}),
            **({"kept_logs": list(self.kept_logs)} if self.kept_logs else {}),
        }


class Stacks:
    def __init__(self, site: Site, engine: Engine, on_drain: Callable[[str], object] | None = None) -> None:
        """`on_drain`: given the name of an old worker that now finishes its tasks; whoever started
        the drain hands the container to it (a background drainer removes it once it exited)."""
        self.site = site
        self.engine = engine
        self.on_drain = on_drain

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

    # ------------------------------------------------------------ the worker
    def worker_command(self) -> WorkerCommand | None:
        line = self.site.config.worker_command
        return parse_worker_command(line) if line else None

    def start_worker(self, colour: str, image: str, *, live: bool) -> bool:
        """The colour's worker, started in the background (it is not waited for: see
        wait_worker_ready), and restarted by Docker if it dies. One already running `image` is
        kept; an old worker of the colour still finishing its tasks is left to finish them.
        `live`: the colour takes traffic now (its worker gets the live weight)."""
        if not self.site.config.worker_command:
            return False
        name = self.site.worker_container(colour)
        current = self.engine.container(name)
        shares = self.cpu_shares(live=live)
        if current is not None and current.running and current.image == image:
            self.engine.update_container(name, cpu_shares=shares)
            return True
        if current is not None:
            self._drain(colour, hand_over=True)
        self.engine.compose_run_detached(self.app_project(colour, image), "worker", name)
        self.engine.update_container(name, restart="unless-stopped", cpu_shares=shares)
        return True

    def drain_worker(self, colour: str) -> str | None:
        """The colour's worker stops taking tasks and finishes the ones it holds, and this returns at
        once: Docker no longer restarts it, it is renamed out of the way (a new worker of the colour
        may start beside it) and gets SIGTERM (Celery's warm shutdown), then it is handed to
        `on_drain`. Returns its new name, or None when the colour had no running worker (one
        stopped or restarting in a crash loop holds no task: it is removed)."""
        return self._drain(colour, hand_over=True)

    def _drain(self, colour: str, *, hand_over: bool) -> str | None:
        name = self.site.worker_container(colour)
        state = self.engine.container(name)
        if state is None:
            return None
        if not state.running or state.restarting:
            self.engine.remove_container(name)
            return None
        try:
            self.engine.update_container(name, restart="no")
        except DockerError:
            # Docker refuses to update a container that is (now) restarting: it holds no task.
            self.engine.remove_container(name)
            return None
        draining = self.site.draining_worker_container(colour, state.id or name)
        self.engine.rename_container(name, draining)
        self.engine.signal_container(draining, "TERM")
        if hand_over and self.on_drain is not None:
            self.on_drain(draining)
        return draining

    def stop_worker(self, colour: str) -> bool:
        """The colour's worker stopped for good before this returns (no task runs during a restore
        or a maintenance window): it finishes its tasks, SIGKILL after [worker] stop_timeout."""
        if not self.site.config.worker_command:
            return False
        draining = self._drain(colour, hand_over=False)
        if draining is None:
            return False
        self.finish_draining(draining)
        return True

    def finish_draining(self, name: str, since: float | None = None) -> Drained:
        """Wait until an old worker (SIGTERM'd at `since`, epoch seconds; default now) has exited;
        past [worker] stop_timeout, name the tasks it still runs (if Celery says) and SIGKILL it.
        Then remove it."""
        started = time.time() if since is None else since
        deadline = started + self.site.config.worker.stop_timeout
        held = None
        outcome = "exited"
        while True:
            state = self.engine.container(name)
            if state is None:
                return Drained(name, "gone", None, round(time.time() - started, 3), signalled_at=started)
            if not state.running:
                break
            if time.time() >= deadline:
                held = self.held_tasks(name)
                self.engine.signal_container(name, "KILL")
                poll(lambda: not self._running(name), 30, interval=0.2)
                outcome = "killed"
                break
            time.sleep(min(1.0, max(0.05, deadline - time.time())))
        final = self.engine.container(name)
        kept = self._keep_drained_logs(final) if final else []
        self.engine.remove_container(name)
        return Drained(
            name,
            outcome,
            final.exit_code if final else None,
            round(time.time() - started, 3),
            held_tasks=held,
            signalled_at=started,
            kept_logs=tuple(kept),
        )

    def _keep_drained_logs(self, state: ContainerState) -> list[str]:
        """An old worker's logs, kept like a removed colour's (its tasks' last lines are in them).
        Never stops the removal: a log that cannot be kept is only missing from logs/."""
        colour = self.site.colour_of_worker(state.name)
        if colour is None:
            return []
        try:
            return self._keep(colour, {"worker": state})
        except (SumbgError, OSError):
            return []

    def _running(self, name: str) -> bool:
        state = self.engine.container(name)
        return state is not None and state.running

    def held_tasks(self, name: str) -> list[dict[str, str]] | None:
        """The tasks a Celery worker runs now (`celery inspect active`), or None if it does not say."""
        command = self.worker_command()
        state = self.engine.container(name)
        if command is None or not command.celery_worker or state is None or not state.running:
            return None
        result = self.engine.exec(name, command.active_argv(state.hostname, self.site.config.worker.ping_timeout))
        return parse_active_tasks(result.stdout) if result.returncode == 0 else None

    def draining_workers(self, colour: str | None = None) -> list[ContainerState]:
        """The site's old workers still finishing their tasks (or exited, if nobody removed them)."""
        found = []
        for each in naming.COLOURS if colour is None else (colour,):
            prefix = self.site.worker_container(each) + "-draining-"
            found += [
                c
                for c in self.engine.project_containers(naming.app_project(self.site.slug, each))
                if c.name.startswith(prefix)
            ]
        return found

    def remove_drained_workers(self) -> list[str]:
        """Remove the old workers that exited a while ago with no drainer left to remove them (a
        drainer killed, a reboot); returns their names. (A live drainer removes its own at once.)"""
        since = time.time() - DRAINED_LEFT_AFTER
        gone = [
            c.name
            for c in self.draining_workers()
            if not c.running and not c.restarting and c.finished_at and c.finished_at < since
        ]
        for name in gone:
            self.engine.remove_container(name)
        return gone

    def wait_worker_ready(self, colour: str) -> dict[str, Any]:
        """Wait until the colour's worker is ready: running, not restarted for [worker] ready_after
        seconds and, for a Celery worker, answering `celery inspect ping` addressed to its own node.
        Raises WorkerNotReady with its exit code, restart count and last log lines after [worker]
        ready_timeout, or at once when it crash-loops."""
        command = self.worker_command()
        if command is None:
            return {"outcome": "skipped", "reason": "no worker configured"}
        settings = self.site.config.worker
        name = self.site.worker_container(colour)
        first = self.engine.container(name)
        restarts_before = first.restart_count if first else 0
        started = time.monotonic()
        deadline = started + settings.ready_timeout
        pinged_run: float | None = None
        ping: ExecResult | None = None
        pings = 0
        crashed_with: int | None = None  # Docker shows 0 once it runs again: the last crash's code is kept here
        while True:
            state = self.engine.container(name)
            if state is not None and (not state.running or state.restarting) and state.exit_code:
                crashed_with = state.exit_code
            verdict = readiness(
                state,
                now=time.time(),
                ready_after=settings.ready_after,
                celery_worker=command.celery_worker,
                pinged_run=pinged_run,
                restarts_before=restarts_before,
            )
            if verdict.needs_ping and state is not None:
                pings += 1
                ping = self.engine.exec(name, command.ping_argv(state.hostname, settings.ping_timeout))
                if ping.returncode == 0:
                    pinged_run = state.started_at
                    continue
            if verdict.ready:
                assert state is not None
                return {
                    "container": name,
                    "seconds": round(time.monotonic() - started, 3),
                    "restart_count": state.restart_count,
                    **({"ping": command.node(state.hostname), "pings": pings} if command.celery_worker else {}),
                }
            if verdict.failed or time.monotonic() >= deadline:
                reason = (
                    verdict.failed
                    or f"not ready within [worker] ready_timeout {settings.ready_timeout:g}s: {verdict.waiting}"
                )
                raise self._not_ready(colour, name, reason, ping, crashed_with)
            time.sleep(0.5)

    def _not_ready(
        self, colour: str, name: str, reason: str, ping: ExecResult | None, crashed_with: int | None
    ) -> WorkerNotReady:
        state = self.engine.container(name)
        exit_code = (state.exit_code if state is not None else None) or crashed_with
        facts = (
            f"exit code {exit_code}, restarted {state.restart_count} times"
            + (", killed for lack of memory" if state.oom_killed else "")
            if state is not None
            else "no container"
        )
        evidence = "--- last worker log lines ---\n" + (self.engine.logs(name, WORKER_LOG_LINES) or "(none)")
        if ping is not None and ping.returncode != 0 and ping.output.strip():
            evidence += "\n--- celery inspect ping ---\n" + tail(ping.output, 5)
        return WorkerNotReady(
            f"the worker of {colour} is not ready: {reason} ({facts})",
            colour=colour,
            returncode=exit_code,
            output_tail=evidence,
        )

    def worker_logs(self, colour: str, lines: int = 25) -> str:
        return self.engine.logs(self.site.worker_container(colour), lines)

    def worker_view(self, colour: str) -> WorkerView:
        """The colour's worker as `status` shows it (Docker's word; no ping)."""
        draining = tuple(c.name for c in self.draining_workers(colour) if c.running)
        return worker_view(
            self.engine.container(self.site.worker_container(colour)),
            configured=bool(self.site.config.worker_command),
            now=time.time(),
            ready_after=self.site.config.worker.ready_after,
            draining=draining,
        )

    def apply_cpu_weights(self, live: str) -> None:
        """After a flip: the colour now live gets the live weight, the other the background one."""
        for colour, shares in (
            (live, LIVE_CPU_SHARES),
            (naming.other_colour(live), self.site.host.background_cpu_shares),
        ):
            names = [
                c.name
                for c in self.engine.project_containers(naming.app_project(self.site.slug, colour))
                if c.running
                and (
                    c.labels.get("com.docker.compose.oneoff") != "True" or c.name == self.site.worker_container(colour)
                )
            ]
            self.engine.set_cpu_shares(names, shares)

    def colour_exists(self, colour: str) -> bool:
        """Whether the colour has containers (an old worker still finishing its tasks does not count)."""
        draining = self.site.worker_container(colour) + "-draining-"
        return any(
            not c.name.startswith(draining)
            for c in self.engine.project_containers(naming.app_project(self.site.slug, colour))
        )

    def web_running(self, colour: str) -> bool:
        state = self.engine.container(self.site.web_container(colour))
        return bool(state and state.running)

    def remove_colour(self, colour: str) -> None:
        """Stop and remove the colour: its web's in-flight requests finish first ([app] stop_timeout),
        and its worker finishes its tasks in the background (drain_worker), as after a switch."""
        if self.site.config.worker_command:
            self.drain_worker(colour)
        # Without the worker profile, Compose leaves the workers (started with `run`) alone.
        self.engine.compose_down(self.app_project(colour, worker=False), timeout=self.site.web_stop_seconds)

    def web_logs(self, colour: str, lines: int = 25) -> str:
        return self.engine.logs(self.site.web_container(colour), lines)

    def web_exit_summary(self, colour: str) -> str:
        state = self.engine.container(self.site.web_container(colour))
        if state is None:
            return "the web container does not exist"
        if not state.running:
            return f"the web container is {state.status} (exit code {state.exit_code})"
        return "the web container is running"

    # ------------------------------------------------------------ day-2: kept logs, one-off commands
    def keep_logs(self, colour: str, services: tuple[str, ...] = SERVICES) -> list[str]:
        """Before a colour's containers are removed (their logs go with them): each one's logs,
        compressed into the site's logs/ folder within its [logs] keep_mb, the oldest kept files
        pruned to make room. Returns the names of the files written."""
        containers = {
            service: self.site.web_container(colour) if service == "web" else self.site.worker_container(colour)
            for service in services
        }
        found = {service: state for service, name in containers.items() if (state := self.engine.container(name))}
        return self._keep(colour, found)

    def _keep(self, colour: str, found: dict[str, ContainerState]) -> list[str]:
        cap = self.site.logs_keep_bytes
        if cap <= 0 or not found:
            return []
        kept = self.site.kept_logs
        written = []
        for service, state in found.items():
            labels = self.engine.image_labels(state.image) or {}
            ref = labels.get("sumbg.ref") or state.image.rpartition(":")[2]
            path = kept.new_path(colour, service, ref)
            kept.write(path, self.engine.log_lines(state.name), cap // len(found))
            written.append(path.name)
        kept.prune(cap)
        return written

    def run_attached(
        self, colour: str, image: str, argv: list[str], *, tty: bool, env_names: tuple[str, ...] = ()
    ) -> int:
        """A one-off container of a colour's release (the `manage` service: the site's environment,
        network, media and the colour's static files, at the background CPU weight) attached to
        this process's terminal or pipes; returns its exit code."""
        return self.engine.compose_run_attached(
            self.app_project(colour, image, worker=False), "manage", argv, tty=tty, env_names=env_names
        )

    def psql_attached(self, args: list[str], *, tty: bool) -> int:
        """psql in a one-off container of the site's Postgres image on its network, logged in as
        the site's own role with its password by environment (never in argv)."""
        secrets = self.site.read_secrets()
        env = {
            "PGHOST": "postgres",
            "PGUSER": self.site.config.db_user,
            "PGDATABASE": self.site.config.db_name,
            "PGPASSWORD": secrets.get("DJANGO_DB_PASSWORD") or secrets.get("POSTGRES_PASSWORD") or "",
            "PGAPPNAME": "sumbg-psql",
        }
        return self.engine.run_attached(
            self.site.host.images.postgres,
            ["psql", *args],
            network=naming.site_network(self.site.slug),
            env=env,
            tty=tty,
            cpu_shares=self.site.host.background_cpu_shares,
        )

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


def parse_active_tasks(output: str) -> list[dict[str, str]] | None:
    """The tasks in `celery inspect active --json` output ({node: [task, ...]}), by id and name."""
    for line in reversed(output.strip().splitlines()):
        try:
            replies = json.loads(line)
        except ValueError:
            continue
        if isinstance(replies, dict):
            return [
                {"id": str(task.get("id")), "name": str(task.get("name"))}
                for tasks in replies.values()
                if isinstance(tasks, list)
                for task in tasks
                if isinstance(task, dict)
            ]
    return None


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
