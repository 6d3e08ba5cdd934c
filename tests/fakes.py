"""Small fakes of the outside world, for unit tests of whole operations.

A `World` is one site on one host: which release each colour's web runs and
whether it answers, the edge's state files, the client repo's refs, and an
ordered log of every effect (live/preview file writes, containers started and
removed). A `FakeContext` hands the operations fakes over that world instead of
Docker, Caddy, HTTP and git, so a test runs the real operation (init, upgrade,
rollback, watch, recover, restore, retire) in milliseconds and asserts the whole
sequence of effects and records. Every fake implements the Protocol the
operations declare (sumbg/ops/seams.py), and mypy holds it to it.

For adoption, a `RunbookHost` is the old host (its files in a temporary folder, its systemd,
its Caddy, its database and broker) and a `RunbookContext` hands the operations fakes over
both hosts, logging into the world's one ordered list of effects.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from sumbg import naming
from sumbg.adapters.build import BuildResult, Constraints, ImageSpec
from sumbg.adapters.docker import ComposeProject, ContainerState, EngineVersions, ExecResult
from sumbg.adapters.gitrepo import Resolved
from sumbg.adapters.hooks import CommandResult
from sumbg.adapters.notify import DeliveryFailed, Message
from sumbg.adapters.probe import Answer, Health, Target
from sumbg.adapters.pydeps import Dependency
from sumbg.adapters.restic import Repository, Snapshot, Upload
from sumbg.adoption.adopt import MANAGED_MARK
from sumbg.config import (
    EdgeSettings,
    HostConfig,
    NotifyTarget,
    SiteConfig,
    SmokeCheck,
    WatchSettings,
    load_host,
    render_site_toml,
)
from sumbg.errors import BackupError, CheckFailed, ConfigError, GitError, MigrationFailed, RunbookError, WorkerNotReady
from sumbg.ops.context import Context
from sumbg.ops.events import DeliveryPolicy, Notifier
from sumbg.ops.executor import Reporter
from sumbg.ops.seams import (
    AddressPlanner,
    CaddyRunner,
    CertificateProbe,
    ContainerEngine,
    Courier,
    EdgeLock,
    EdgeProxy,
    EdgeStateFiles,
    GitMirror,
    HostCommands,
    HostServices,
    HttpProber,
    OffsiteStore,
    SiteStacks,
)
from sumbg.site.logs import SERVICES
from sumbg.site.site import Site
from sumbg.site.stacks import Backup, Drained, PendingMigrations, parse_phases, sha256_file
from sumbg.site.worker import WorkerCommand, WorkerView, parse_worker_command

Effect = tuple[Any, ...]


@dataclass
class Web:
    image: str
    running: bool = True


@dataclass
class Worker:
    image: str
    restarts: int = 0


@dataclass
class World:
    slug: str = "acme"
    domain: str = "acme.example.test"
    releases: dict[str, dict[str, str]] = field(default_factory=dict)  # image -> {"build", "git_sha"}
    webs: dict[str, Web] = field(default_factory=dict)  # colour -> Web
    files: dict[str, str] = field(default_factory=dict)  # "live"/"preview" -> colour
    broken: set[str] = field(default_factory=set)  # images whose /health/ answers 503
    turns_unhealthy: dict[str, int] = field(default_factory=dict)  # image -> live probes it passes before failing
    failing_probes: int = 0  # the next N live /health/ probes answer 503
    # Caddy's (requests, 5xx) for the host, None, or a callable giving them.
    visitors: tuple[int, int] | None | Callable[[], tuple[int, int] | None] = (0, 0)
    databases: set[str] = field(default_factory=lambda: {"acme"})
    maintenance: bool = False
    effects: list[Effect] = field(default_factory=list)
    # Migrations: what each release has pending (and marks run_after_switch), which releases'
    # migrations fail, or break the live release once applied; and every effect on a database.
    pending: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)  # image -> (pending, after)
    failing_migrations: set[str] = field(default_factory=set)
    breaks_live: set[str] = field(default_factory=set)
    database_mb: float = 5.0
    rehearsal: str | None = None  # the image of the rehearsal stand-in, if running
    copy_migrated_by: str | None = None
    schema_effects: list[Effect] = field(default_factory=list)
    # The client repo: its refs (ref -> the sum-core version its requirements pin).
    refs: dict[str, str] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)  # Docker volumes that exist
    backups_taken: list[str] = field(default_factory=list)
    # Offsite: the rows a dump holds, the rows a restore of it gives, and the restic repository's
    # snapshots (id -> FakeSnapshot); `upload_fails` makes the next upload fail half way.
    dumped_rows: dict[str, int] = field(default_factory=lambda: {"public.sum_core_lead": 3})
    restored_rows: dict[str, int] = field(default_factory=lambda: {"public.sum_core_lead": 3})
    snapshots: dict[str, FakeSnapshot] = field(default_factory=dict)
    upload_fails: bool = False
    # [hooks] and [[notify]]: each command run (host command or manage args, with its SUMBG_* variables)
    # and its exit code; each message sent (target label, event); targets that refuse every message.
    hook_exit_codes: dict[str, int] = field(default_factory=dict)  # command -> exit code (default 0)
    hooks_run: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refusing_targets: set[str] = field(default_factory=set)
    # The site's worker (when site.toml has a worker_command): each colour's, the old ones draining,
    # the images whose worker crash-loops from the start, or once it was found ready.
    workers: dict[str, Worker] = field(default_factory=dict)
    draining: list[str] = field(default_factory=list)
    crashing_workers: set[str] = field(default_factory=set)
    workers_crashing_later: set[str] = field(default_factory=set)
    drain_ends: tuple[str, int, list[dict[str, str]] | None] = ("exited", 0, None)  # outcome, exit code, held tasks
    # Images whose /health/ answers "degraded": {check: what it says}.
    degraded: dict[str, dict[str, str]] = field(default_factory=dict)
    # Day-2: what each colour's web logged (kept when it is removed), every kept log as (colour,
    # service, ref), the one-off commands run as (what, colour, argv, tty, env names), and the exit
    # code they give; the logs shown through the engine.
    logged: dict[str, list[bytes]] = field(default_factory=dict)
    kept_logs: list[Effect] = field(default_factory=list)
    oneoffs: list[Effect] = field(default_factory=list)
    oneoff_exit: int = 0
    shown_logs: list[Effect] = field(default_factory=list)
    engine_versions: EngineVersions = EngineVersions("20.10.24", "Docker Compose version v2.40.3")
    published: dict[str, list[int]] = field(default_factory=dict)
    edge_running: bool = True
    caddy_version: str = "v2.11.7"
    # The address plan: why a new site could not get its networks (a full or routed pool), if so.
    address_refusal: str | None = None
    # What each image holds (image -> its distributions; none: the build records none), and every
    # build asked for, with the constraints it resolved under.
    dependencies: dict[str, list[Dependency]] = field(default_factory=dict)
    builds: list[tuple[str, Constraints]] = field(default_factory=list)

    def release(self, ref: str) -> str:
        image = f"sum-{self.slug}:{ref}"
        self.releases[image] = {"build": ref, "git_sha": f"{ref}-sha"}
        return image

    def record(self, image: str, **extra: Any) -> dict[str, Any]:
        version = self.releases[image]
        return {"image": image, "ref": version["build"], "commit": version["git_sha"], **extra}

    def file_writes(self) -> list[Effect]:
        return [e for e in self.effects if e[0] in ("live", "preview")]

    # What answers through Caddy, the way the edge routes it.
    def answering(self, label: str) -> str | None:
        candidates = (
            [self.files.get("live"), self.files.get("preview")] if label == "live" else [self.files.get("preview")]
        )
        for colour in candidates:  # the live route falls back to the preview colour on a dial error
            web = self.webs.get(colour or "")
            if web and web.running:
                return colour
        return None

    def health_answer(self, label: str) -> Answer:
        if label == "rehearsal":
            if self.rehearsal is None:
                return Answer(502, "", "")
            return Answer(
                200, "application/json", json.dumps({"status": "ok", "version": self.releases[self.rehearsal]})
            )
        colour = self.answering(label)
        if colour is None:
            return Answer(502, "", "", error="")
        image = self.webs[colour].image
        version = self.releases[image]
        broken = image in self.broken
        if label == "live" and image in self.turns_unhealthy:
            broken = self.turns_unhealthy[image] <= 0
            self.turns_unhealthy[image] -= 1
        if label == "live" and self.failing_probes > 0:
            self.failing_probes -= 1
            broken = True
        failing = self.degraded.get(image, {})
        status = "unhealthy" if broken else "degraded" if failing else "ok"
        checks = {name: {"status": "ok"} for name in ("db", "cache", "celery")}
        checks.update({name: {"status": "fail", "detail": detail} for name, detail in failing.items()})
        body = {"status": status, "version": version, "checks": checks}
        return Answer(503 if broken else 200, "application/json", json.dumps(body))


@dataclass
class FakeSnapshot:
    snapshot: Snapshot
    folder: Path  # a real copy of what was uploaded


class FakeOffsite:
    """A restic repository: every snapshot a real copy of the uploaded folder, under `store`."""

    def __init__(self, world: World, repository: Repository, store: Path) -> None:
        self.world = world
        self.repository = repository
        self.store = store

    @property
    def shown(self) -> str:
        return self.repository.shown

    def ensure_initialised(self) -> bool:
        created = not self.store.exists()
        self.store.mkdir(parents=True, exist_ok=True)
        return created

    def backup(self, paths: Sequence[Path], tags: Sequence[str]) -> Upload:
        if self.world.upload_fails:
            raise BackupError(
                f"restic backup on {self.shown} failed: Fatal: unable to save snapshot: no space left on device"
            )
        number = len(self.world.snapshots) + 1
        snapshot_id = f"{number:08x}" + "f" * 56
        folder = self.store / snapshot_id
        files = size = 0
        for path in paths:
            shutil.copytree(path, folder / path.relative_to("/"), symlinks=True)
            for item in path.rglob("*"):
                if item.is_file():
                    files, size = files + 1, size + item.stat().st_size
        at = f"2026-12-{number:02d}T03:00:00.123456789Z"
        self.world.snapshots[snapshot_id] = FakeSnapshot(
            Snapshot(snapshot_id, at, tuple(tags), tuple(map(str, paths))), folder
        )
        self.world.effects.append(("upload", snapshot_id[:8], tuple(tags)))
        return Upload(snapshot_id, files, size, files, size, 0.0)

    def snapshots(self, tags: Sequence[str] = ()) -> list[Snapshot]:
        return [s.snapshot for s in self.world.snapshots.values() if set(tags) <= set(s.snapshot.tags)]

    def forget(self, snapshot_ids: Sequence[str], *, prune: bool = True) -> None:
        for snapshot_id in snapshot_ids:
            self.world.snapshots.pop(snapshot_id)
        if snapshot_ids:
            self.world.effects.append(("forget", tuple(i[:8] for i in snapshot_ids), prune))

    def restore(self, snapshot_id: str, target: Path) -> None:
        shutil.copytree(self.world.snapshots[snapshot_id].folder, target, dirs_exist_ok=True, symlinks=True)
        self.world.effects.append(("fetch", snapshot_id[:8]))


class FakeProber:
    def __init__(self, world: World) -> None:
        self.world = world

    def __enter__(self) -> FakeProber:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None

    def request(
        self,
        target: Target,
        path: str,
        method: str = "GET",
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return self.world.health_answer(target.label)

    def health(self, target: Target) -> Health:
        return Health(self.world.health_answer(target.label), target.required_checks)

    def wait_healthy(
        self,
        target: Target,
        timeout: float,
        *,
        expect_version: dict[str, str | None] | None = None,
        on_wait: Any = None,
    ) -> Health:
        health = self.health(target)
        if health.passing and all(health.version.get(k) == v for k, v in (expect_version or {}).items()):
            return health
        raise CheckFailed(
            f"{target.label} /health/ through Caddy did not pass within {timeout:g}s: {health.describe()}"
        )

    def evaluate(self, target: Target, check: SmokeCheck) -> tuple[dict[str, Any], Answer, str]:
        answer = self.world.health_answer(target.label)
        if target.label == "rehearsal" and self.world.copy_migrated_by in self.world.breaks_live:
            answer = Answer(500, "text/html", "Server Error (500)")
        problem = "" if answer.status == 200 else f"expected HTTP 200, got {answer.status}"
        return {"check": check.describe(), "status": answer.status}, answer, problem

    def check(self, target: Target, check: SmokeCheck) -> dict[str, Any]:
        answer = self.world.health_answer(target.label)
        if answer.status != 200:
            raise CheckFailed(
                f"smoke check {check.describe()} on the {target.label} colour failed: HTTP {answer.status}"
            )
        return {"check": check.describe(), "status": 200}

    def visitor_counts(self, edge: EdgeSettings, domain: str) -> tuple[int, int] | None:
        visitors = self.world.visitors
        return visitors() if callable(visitors) else visitors


class FakeFiles:
    def __init__(self, world: World, caddy_dir: Path) -> None:
        self.world = world
        self.dir = caddy_dir

    def read_colour(self, slug: str, which: str) -> str | None:
        return self.world.files.get(which)

    def write_colour(self, slug: str, which: str, colour: str) -> None:
        self.world.files[which] = colour
        self.world.effects.append((which, colour))

    def site(self, slug: str) -> Path:
        path = self.dir / "sites" / f"{slug}.caddy"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return path

    def state(self, slug: str, name: str) -> Path:
        return self.dir / "state" / slug / name

    def maintenance_on(self, slug: str) -> bool:
        return self.world.maintenance

    def set_maintenance(self, slug: str, on: bool) -> None:
        if on != self.world.maintenance:
            self.world.effects.append(("maintenance", "on" if on else "off"))
        self.world.maintenance = on


class FakeLock:
    def acquire(self, timeout: float = 0.0, command: str | None = None) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()


class FakeEdge:
    def __init__(self, world: World, caddy_dir: Path) -> None:
        self.world = world
        self._files = FakeFiles(world, caddy_dir)

    @property
    def files(self) -> EdgeStateFiles:
        return self._files

    def lock(self) -> EdgeLock:
        return FakeLock()

    def apply(self, sites: dict[str, SiteConfig], *, reload: bool = True) -> list[str]:
        return []

    def pending_changes(self, sites: dict[str, SiteConfig]) -> dict[Path, tuple[str | None, str]]:
        return {}

    def ensure_up(self) -> None:
        return None

    def recreate(self) -> None:
        self.world.effects.append(("edge", "recreated"))

    def remove_site(self, slug: str) -> None:
        self.world.effects.append(("edge", "removed", slug))

    def certificate_failure(self, domains: tuple[str, ...], since: float) -> str | None:
        return None

    def import_storage(self, source: Path) -> list[str]:
        return []

    def running(self) -> bool:
        return self.world.edge_running

    def check_version(self) -> str:
        return self.world.caddy_version


class FakeDatabase:
    def __init__(self, world: World) -> None:
        self.world = world
        self.name = world.slug

    def size_mb(self) -> float:
        return self.world.database_mb

    def has_tables(self) -> bool:
        return self.world.database_mb > 0

    def terminate(self, database: str) -> None:
        self.world.schema_effects.append(("terminate", database))

    def row_counts(self, database: str | None = None) -> dict[str, int]:
        if database and database != self.name:
            return dict(self.world.restored_rows)
        return {"public.sum_core_lead": 1}

    def load_into_scratch(self, container_path: str, suffix: str = "__sumbg_restore") -> str:
        self.world.databases.add(self.name + suffix)
        self.world.schema_effects.append(("restore", self.name + suffix, container_path.rsplit("/", 1)[-1]))
        return self.name + suffix

    def swap_in(self, scratch: str) -> None:
        self.world.databases.discard(scratch)
        self.world.schema_effects.append(("swap-in", scratch))

    def drop_if_exists(self, database: str) -> None:
        if database in self.world.databases:
            self.world.databases.discard(database)
            self.world.schema_effects.append(("drop", database))

    def repair_interrupted_swap(self) -> list[str]:
        done, name = [], self.world.slug
        if name not in self.world.databases and f"{name}__sumbg_old" in self.world.databases:
            self.world.databases = (self.world.databases - {f"{name}__sumbg_old"}) | {name}
            done.append(f"renamed {name}__sumbg_old back to {name}")
        for leftover in (
            f"{name}__sumbg_restore",
            f"{name}__sumbg_old",
            f"{name}__sumbg_rehearsal",
            f"{name}__sumbg_verify",
        ):
            if leftover in self.world.databases:
                self.world.databases.discard(leftover)
                done.append(f"dropped {leftover}")
        return done


class FakeStacks:
    def __init__(self, world: World, site: Site) -> None:
        self.world = world
        self.site = site

    def start_data(self) -> None:
        self.world.effects.append(("data", "up"))

    def data_running(self) -> bool:
        return True

    def database(self) -> FakeDatabase:
        return FakeDatabase(self.world)

    def backup_name(self, ref: str) -> str:
        return f"{self.world.slug}_20261127T000000Z_{ref}.dump"

    def backup(self, name: str) -> Backup:
        """A real (tiny) dump file and its .sha256, so what reads the backups folder reads files."""
        self.world.backups_taken.append(name)
        path = self.site.backups_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"dump of {self.world.slug}\n".encode())
        digest = sha256_file(path)
        path.with_name(name + ".sha256").write_text(f"{digest}  {name}\n")
        return Backup(path, digest, path.stat().st_size, 1, 0.0, 0.0)

    def backup_and_prune(self, name: str, protected: set[str]) -> tuple[Backup, list[str]]:
        return self.backup(name), []

    def prune_backups(self, protected: set[str]) -> list[str]:
        self.world.effects.append(("prune", tuple(sorted(protected))))
        return []

    def dump_row_counts(self, name: str) -> dict[str, int]:
        return dict(self.world.dumped_rows)

    def list_backup_files(self) -> list[Path]:
        return [self.site.backups_dir / name for name in self.world.backups_taken]

    def free_space_problems(self, min_free_gb: float) -> list[str]:
        return []

    def migration_plan(self, colour: str, image: str, *, env_dir: Path | None = None) -> str:
        return ""

    def migrate(self, colour: str, image: str, backup_hint: str, *, before_switch_only: bool = False) -> str:
        self._migrate(image, "live", "before-switch" if before_switch_only else "all")
        return "Applying sum_core.0002... OK"

    def _migrate(self, image: str, where: str, which: str) -> None:
        """Apply `image`'s migrations (`which`: "all" or "before-switch") to the copy or the live database."""
        self.world.schema_effects.append(("migrate", where, self.world.releases[image]["build"], which))
        if image in self.world.failing_migrations:
            raise MigrationFailed(f"migrations of {image} failed", output_tail="RuntimeError: half way")
        if where == "copy":
            self.world.copy_migrated_by = image

    def _phases(self, image: str) -> ExecResult:
        pending, after = self.world.pending.get(image, (["sum_core.0002_lead_phone"], []))
        report = json.dumps({"pending": pending, "after_switch": after})
        return ExecResult(0, f"SUMBG-MIGRATIONS {report}", "")

    def pending_migrations(self, colour: str, image: str) -> PendingMigrations:
        return parse_phases(self._phases(image).stdout)

    def rehearsal_manage(self, image: str, database: str, args: list[str]) -> ExecResult:
        assert database == f"{self.world.slug}__sumbg_rehearsal"
        if args[:2] == ["shell", "-c"] and args[2].startswith("MODE = 'plan'"):
            return self._phases(image)
        which = "before-switch" if args[:2] == ["shell", "-c"] else "all"
        try:
            self._migrate(image, "copy", which)
        except MigrationFailed as exc:
            return ExecResult(1, "", exc.output_tail or "")
        return self._phases(image) if which == "before-switch" else ExecResult(0, "Applying ... OK", "")

    def start_rehearsal_web(self, image: str, database: str, static_from: str) -> None:
        self.world.rehearsal = image
        self.world.schema_effects.append(("rehearsal-web", self.world.releases[image]["build"], database))

    def remove_rehearsal(self) -> bool:
        had, self.world.rehearsal = self.world.rehearsal, None
        if had:
            self.world.schema_effects.append(("rehearsal-web", "removed"))
        return bool(had)

    def rehearsal_logs(self, lines: int = 60) -> str:
        if self.world.copy_migrated_by in self.world.breaks_live:
            return (
                "Internal Server Error: /\nTraceback (most recent call last):\n"
                "django.db.utils.ProgrammingError: column sum_core_lead.message does not exist"
            )
        return ""

    def collectstatic(self, colour: str, image: str) -> str:
        return "1 static file copied"

    def start_web(self, colour: str, image: str) -> None:
        self.world.webs[colour] = Web(image)
        self.world.effects.append(("start", colour, self.world.releases[image]["build"]))

    def worker_command(self) -> WorkerCommand | None:
        line = self.site.config.worker_command
        return parse_worker_command(line) if line else None

    def start_worker(self, colour: str, image: str, *, live: bool) -> bool:
        if not self.site.config.worker_command:
            return False
        current = self.world.workers.get(colour)
        if current is not None and current.image == image:
            return True
        if current is not None:
            self.drain_worker(colour)
        self.world.workers[colour] = Worker(image)
        self.world.effects.append(("worker", "start", colour, self.world.releases[image]["build"]))
        return True

    def drain_worker(self, colour: str) -> str | None:
        if self.world.workers.pop(colour, None) is None:
            return None
        name = f"sum-{self.world.slug}-{colour}-worker-draining-{len(self.world.draining) + 1}"
        self.world.draining.append(name)
        self.world.effects.append(("worker", "drain", colour))
        return name

    def stop_worker(self, colour: str) -> bool:
        if self.world.workers.pop(colour, None) is None:
            return False
        self.world.effects.append(("worker", "stop", colour))
        return True

    def finish_draining(self, name: str, since: float | None = None) -> Drained:
        if name in self.world.draining:
            self.world.draining.remove(name)
        outcome, exit_code, held = self.world.drain_ends
        return Drained(name, outcome, exit_code, 300.0 if outcome == "killed" else 4.0, held)

    def draining_workers(self, colour: str | None = None) -> list[ContainerState]:
        return [
            ContainerState(name=name, running=True, status="running", exit_code=None)
            for name in self.world.draining
            if colour is None or f"-{colour}-worker-" in name
        ]

    def remove_drained_workers(self) -> list[str]:
        return []

    def wait_worker_ready(self, colour: str) -> dict[str, Any]:
        if not self.site.config.worker_command:
            return {"outcome": "skipped", "reason": "no worker configured"}
        worker = self.world.workers.get(colour)
        if worker is None or worker.image in self.world.crashing_workers:
            raise WorkerNotReady(
                f"the worker of {colour} is not ready: it crashed and was restarted 3 times since it was "
                "started (exit code 1, restarted 3 times)",
                colour=colour,
                returncode=1,
                output_tail="--- last worker log lines ---\n[tasks]\n  . sum_core.notify",
            )
        self.world.effects.append(("worker", "ready", colour))
        return {"container": f"sum-{self.world.slug}-{colour}-worker", "seconds": 0.0}

    def worker_view(self, colour: str) -> WorkerView:
        if not self.site.config.worker_command:
            return WorkerView("none")
        worker = self.world.workers.get(colour)
        if worker is None:
            return WorkerView("stopped")
        if worker.image in self.world.workers_crashing_later:
            return WorkerView("restarting", restart_count=1, exit_code=1)
        return WorkerView("running", container=f"sum-{self.world.slug}-{colour}-worker", up_seconds=60.0)

    def worker_logs(self, colour: str, lines: int = 25) -> str:
        return "[tasks]\n  . sum_core.notify"

    def apply_cpu_weights(self, live: str) -> None:
        self.world.effects.append(("weights", live))

    def colour_exists(self, colour: str) -> bool:
        return colour in self.world.webs

    def web_running(self, colour: str) -> bool:
        web = self.world.webs.get(colour)
        return bool(web and web.running)

    def remove_colour(self, colour: str) -> None:
        if self.world.webs.pop(colour, None) is not None:
            self.world.effects.append(("remove", colour))

    def running_image(self, colour: str) -> str | None:
        web = self.world.webs.get(colour)
        return web.image if web else None

    def web_logs(self, colour: str, lines: int = 25) -> str:
        return ""

    def web_exit_summary(self, colour: str) -> str:
        return "the web container is running" if self.web_running(colour) else "the web container is missing"

    def run_manage(self, colour: str, image: str, args: list[str], *, env_dir: Path | None = None) -> ExecResult:
        command = "manage: " + " ".join(args)
        self.world.hooks_run.append((command, {"colour": colour, "release": self.world.releases[image]["build"]}))
        code = self.world.hook_exit_codes.get(command, 0)
        return ExecResult(code, "", "" if code == 0 else "CommandError: it failed")

    def keep_logs(self, colour: str, services: tuple[str, ...] = SERVICES) -> list[str]:
        web = self.world.webs.get(colour)
        if web is None or "web" not in services or self.site.logs_keep_bytes <= 0:  # the fakes run no workers
            return []
        ref = self.world.releases[web.image]["build"]
        self.world.kept_logs.append((colour, "web", ref))
        path = self.site.kept_logs.new_path(colour, "web", ref)
        self.site.kept_logs.write(path, self.world.logged.get(colour, []), self.site.logs_keep_bytes)
        return [path.name]

    def run_attached(
        self, colour: str, image: str, argv: list[str], *, tty: bool, env_names: tuple[str, ...] = ()
    ) -> int:
        self.world.oneoffs.append(("run", colour, image, argv, tty, env_names))
        return self.world.oneoff_exit

    def psql_attached(self, args: list[str], *, tty: bool) -> int:
        self.world.oneoffs.append(("psql", None, None, args, tty, ()))
        return self.world.oneoff_exit


class FakeEngine:
    def __init__(self, world: World) -> None:
        self.world = world

    def ping(self) -> None:
        return None

    def container(self, name: str) -> ContainerState | None:
        for colour, web in self.world.webs.items():
            if name == f"sum-{self.world.slug}-{colour}-web":
                return ContainerState(
                    name=name,
                    running=web.running,
                    status="running" if web.running else "exited",
                    exit_code=None,
                    image=web.image,
                )
        return None

    def project_containers(self, project_name: str) -> list[ContainerState]:
        return []

    def remove_container(self, name: str) -> None:
        self.world.effects.append(("remove-container", name))

    def volume_exists(self, name: str) -> bool:
        return name in self.world.volumes

    def image_labels(self, tag: str) -> dict[str, str] | None:
        version = self.world.releases.get(tag)
        return {"sumbg.ref": version["build"], "sumbg.commit": version["git_sha"]} if version else None

    def compose_down(self, project: ComposeProject, *, volumes: bool = False) -> None:
        self.world.effects.append(("down", project.name, volumes))

    def exec(
        self,
        name: str,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
    ) -> ExecResult:
        self.world.effects.append(("exec", name, argv[0]))
        return ExecResult(0, "", "")

    def run_oneoff(
        self,
        image: str,
        argv: list[str],
        *,
        volumes: list[tuple[str, str, str]],
        network: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        self.world.effects.append(("oneoff", image, argv[0]))
        return ExecResult(0, "", "")

    def show_logs(self, name: str, *, follow: bool, since: float | None, tail: int | None) -> int:
        self.world.shown_logs.append((name, follow, since, tail))
        return 0

    def versions(self) -> EngineVersions:
        return self.world.engine_versions

    def published_ports(self, name: str) -> list[int]:
        return self.world.published.get(name, [])

    def data_root(self) -> Path:
        return Path("/")


class FakeNetworks:
    """The address plan: every site on it, unless the world says the pool refuses a new one."""

    def __init__(self, world: World) -> None:
        self.world = world

    def check_room(self, slug: str) -> None:
        if self.world.address_refusal:
            raise ConfigError(self.world.address_refusal)

    def site_view(self, slug: str) -> dict[str, Any]:
        return {"plan": True, "site_network": f"sum-{slug}", "edge_network": f"sum-{slug}.edge", "problems": []}

    def host_problems(self) -> list[str]:
        return []


class FakeMirror:
    """The client repo's bare mirror: `world.refs` are its refs, each pinning a sum-core version."""

    def __init__(self, world: World, path: Path) -> None:
        self.world = world
        self.path = path

    def sync(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)  # a real sync leaves the mirror's folder

    def exists(self) -> bool:
        return self.path.exists()

    def resolve(self, ref: str) -> Resolved:
        if ref == "HEAD":
            ref = next(iter(self.world.refs))
        if ref not in self.world.refs:
            raise GitError(f"ref {ref} not found in the repository")
        image = self.world.release(ref)
        return Resolved(ref=ref, commit=self.world.releases[image]["git_sha"])

    def tags(self) -> list[tuple[str, str, int]]:
        return [(ref, f"{ref}-sha", 0) for ref in self.world.refs]

    def tags_at(self, commit: str) -> list[str]:
        return [ref for ref in self.world.refs if f"{ref}-sha" == commit]

    def read_file(self, commit: str, path: str) -> str | None:
        ref = commit.removesuffix("-sha")
        if path == "requirements.txt" and ref in self.world.refs:
            return f"sum-core=={self.world.refs[ref]}\n"
        return None

    def list_files(self, commit: str) -> list[str]:
        return ["manage.py", "acme/__init__.py", "acme/wsgi.py", "acme/settings/production.py", "requirements.txt"]


class FakeCourier:
    """Accepts every message (recorded in the world), except for the targets the world says refuse."""

    def __init__(self, world: World) -> None:
        self.world = world

    def send(self, target: NotifyTarget, message: Message, timeout: float) -> None:
        if target.label in self.world.refusing_targets:
            raise DeliveryFailed(f"{target.label}: connection refused")
        self.world.sent.append((target.label, message.event))


class FakeHostCommands:
    def __init__(self, world: World) -> None:
        self.world = world

    def __call__(self, command: str, env: dict[str, str], cwd: Path, timeout: float) -> CommandResult:
        self.world.hooks_run.append((command, {k: v for k, v in env.items() if k.startswith("SUMBG_")}))
        code = self.world.hook_exit_codes.get(command, 0)
        return CommandResult(code, "" if code == 0 else "no deploys on Friday", 0.01)


# Unit tests try a refusing target quickly: the same retries, with short pauses.
FAST_DELIVERY = DeliveryPolicy(attempts=3, backoff=0.001, attempt_timeout=1.0, deadline=5.0)


class FakeContext(Context):
    def __init__(self, root: Path, world: World) -> None:
        super().__init__(host=HostConfig(root=root), reporter=Reporter(quiet=True))
        self.world = world
        self._edge = FakeEdge(world, root / "caddy")
        self._engine = FakeEngine(world)
        self._networks = FakeNetworks(world)

    @property
    def engine(self) -> ContainerEngine:
        return self._engine

    @property
    def edge(self) -> EdgeProxy:
        return self._edge

    @property
    def networks(self) -> AddressPlanner:
        return self._networks

    def stacks(self, site: Site) -> SiteStacks:
        return FakeStacks(self.world, site)

    def prober(self) -> HttpProber:
        return FakeProber(self.world)

    def mirror(self, site: Site) -> GitMirror:
        return FakeMirror(self.world, site.mirror_dir)

    def offsite(self, repository: Repository) -> OffsiteStore:
        return FakeOffsite(self.world, repository, self.host.root.parent / "restic" / repository.location.strip("/"))

    def scratch_mirror(self, path: Path, repo: str) -> GitMirror:
        return FakeMirror(self.world, path)

    def check_repo_reachable(self, repo: str) -> None:
        if repo.startswith("/unreachable"):
            raise GitError(f"cannot reach the repository {repo}")

    def build_image(self, site: Site, image: ImageSpec, *, constraints: Constraints | None = None) -> BuildResult:
        self.world.builds.append((image.tag, constraints or Constraints()))
        held = self.world.dependencies.get(image.tag)
        if held is None:
            return BuildResult({"image": image.tag})
        record = {"image": image.tag, "commit": image.commit, "dependencies": [d.to_json() for d in held]}
        return BuildResult(record, held, {"python_version": "3.12", "sys_platform": "linux"})

    def read_dependencies(self, tag: str) -> tuple[list[Dependency], dict[str, str]] | None:
        held = self.world.dependencies.get(tag)
        return (held, {"python_version": "3.12", "sys_platform": "linux"}) if held is not None else None

    def labelled_dependencies(self, tag: str) -> list[Dependency] | None:
        return self.world.dependencies.get(tag)

    @property
    def host_commands(self) -> HostCommands:
        return FakeHostCommands(self.world)

    def courier(self) -> Courier:
        return FakeCourier(self.world)

    @cached_property
    def events(self) -> Notifier:
        return Notifier(self.host, self.courier(), self.reporter, FAST_DELIVERY, host_name="fakehost")

    def start_drainer(self, site: Site, container: str) -> int:
        self.world.effects.append(("worker", "drainer", container))
        return 4241

    def start_worker_move(self, site: Site, lock_fd: int, wait_fd: int) -> int:
        """The rollback's background move: recorded; a test runs `workers.move_to_live` itself."""
        self.world.effects.append(("worker", "handed over"))
        return 4242


def site_config(
    world: World, *, watch_seconds: float = 0.05, worker_command: str = "", required_checks: tuple[str, ...] = ()
) -> SiteConfig:
    """The world's site, with a watch fast enough for unit tests."""
    return SiteConfig(
        slug=world.slug,
        domain=world.domain,
        repo="/r",
        project="acme",
        settings_module="acme.settings.production",
        wsgi="acme.wsgi:application",
        watch_seconds=watch_seconds,
        watch=WatchSettings(interval=0.001),
        worker_command=worker_command,
        required_checks=required_checks,
    )


def make_site(
    root: Path,
    world: World,
    *,
    watch_seconds: float = 0.05,
    worker_command: str = "",
    required_checks: tuple[str, ...] = (),
) -> None:
    """site.toml for the world's site."""
    site_dir = root / world.slug
    (site_dir / "backups").mkdir(parents=True, exist_ok=True)
    config = site_config(
        world, watch_seconds=watch_seconds, worker_command=worker_command, required_checks=required_checks
    )
    (site_dir / "site.toml").write_text(render_site_toml(config))


def deployed(
    root: Path,
    world: World,
    live: tuple[str, str],
    idle: tuple[str, str] | None = None,
    *,
    worker_command: str = "",
    **idle_extra: Any,
) -> None:
    """A site with `live` = (colour, ref) serving (and its worker, with `worker_command`), and
    optionally `idle` = (colour, ref) running."""
    make_site(root, world, worker_command=worker_command)
    colours = {}
    colour, ref = live
    image = world.release(ref)
    world.webs[colour] = Web(image)
    if worker_command:
        world.workers[colour] = Worker(image)
    colours[colour] = world.record(image, status="live", outcome="healthy")
    world.files["live"] = colour
    world.files["preview"] = naming.other_colour(colour)
    if idle:
        idle_colour, idle_ref = idle
        idle_image = world.release(idle_ref)
        world.webs[idle_colour] = Web(idle_image)
        colours[idle_colour] = world.record(idle_image, status="idle", outcome="healthy", **idle_extra)
    write_state_json(
        root / world.slug,
        {
            "slug": world.slug,
            "live": colour,
            "previous": idle[0] if idle else None,
            "colours": colours,
            "operation": None,
        },
    )


def write_state_json(site_dir: Path, state: dict[str, Any]) -> None:
    """state.json as an earlier sumbg (or a test) left it: the file is the contract."""
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def no_effects(world: World) -> Iterator[None]:
    """Asserts that what runs inside changes nothing in the world (a dry run, a refusal)."""
    before = (list(world.effects), list(world.schema_effects), dict(world.files), dict(world.webs))
    yield
    assert (world.effects, world.schema_effects, world.files, world.webs) == before


# ---------------------------------------------------------------- a runbook host (adoption)

# Every site of the fake runbook host deploys the same commit (same tree, author, dates and message),
# so the fake edge's one release answers for each of them once adopted.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "deploy",
    "GIT_AUTHOR_EMAIL": "deploy@example.test",
    "GIT_COMMITTER_NAME": "deploy",
    "GIT_COMMITTER_EMAIL": "deploy@example.test",
    "GIT_AUTHOR_DATE": "2026-01-05T10:00:00+00:00",
    "GIT_COMMITTER_DATE": "2026-01-05T10:00:00+00:00",
}

RUNBOOK_ENV = """\
DJANGO_SETTINGS_MODULE=acme.settings.production
DJANGO_SECRET_KEY='k3y-of-{slug}-$ign#'
ALLOWED_HOSTS={domains}
DJANGO_DB_NAME={slug}
DJANGO_DB_USER={slug}
DJANGO_DB_PASSWORD=s3cret
DJANGO_DB_HOST=localhost
DJANGO_DB_PORT=5432
CELERY_BROKER_URL=redis://localhost:6379/1
DJANGO_MEDIA_ROOT={site}/media
SENTRY_DSN=https://abc@sentry.example/4
"""

RUNBOOK_GUNICORN_UNIT = """\
[Service]
User=deploy
WorkingDirectory={site}/app
EnvironmentFile={site}/.env
ExecStart={site}/venv/bin/gunicorn \\
    --workers 3 \\
    --bind unix:{socket} \\
    acme.wsgi:application
"""

RUNBOOK_CELERY_UNIT = """\
[Service]
User=deploy
WorkingDirectory={site}/app
EnvironmentFile={site}/.env
ExecStart={site}/venv/bin/celery -A acme worker -l INFO
"""

RUNBOOK_SITE_FILE = """\
{domains} {{
\ttls internal
\tencode gzip
\treverse_proxy unix/{socket}
}}
"""

OLD_APP_HEALTH = Answer(200, "application/json", json.dumps({"status": "ok", "version": {"git_sha": "unknown"}}))
REFUSED = Answer(0, "", "", error="connection refused")


@dataclass
class OldSite:
    """A site deployed the runbook way: /srv/sum/<slug>, its two units, its host Caddy site file."""

    slug: str
    domains: tuple[str, ...]
    commit: str = ""  # what app/ has checked out
    tag: str = "v1.0.0"  # the one tag at that commit

    @property
    def socket(self) -> str:
        return f"/run/sum-{self.slug}/gunicorn.sock"

    @property
    def units(self) -> tuple[str, str]:
        return f"sum-{self.slug}-gunicorn.service", f"sum-{self.slug}-celery.service"

    @property
    def file_name(self) -> str:
        return f"sum-{self.slug}.caddy"


@dataclass
class RunbookHost:
    """The old host before and during an adoption: its files under `root` (which stands for its /:
    etc/systemd/system, etc/caddy, srv/sum/<slug> with app/, .env and media/, the host Caddy's data
    folder), what its systemd runs and has enabled, what the running host Caddy serves from each
    site file, its PostgreSQL's rows and its Celery broker's queues, and the edge's state as the
    takeover changes it. Every effect on it goes into the world's ordered log of effects."""

    world: World
    root: Path
    ports: tuple[int, int] = (80, 443)
    sites: dict[str, OldSite] = field(default_factory=dict)
    active: set[str] = field(default_factory=lambda: {"caddy"})
    enabled: set[str] = field(default_factory=lambda: {"caddy"})
    served: dict[str, str] = field(default_factory=dict)  # site file -> "original", "maintenance" or "proxy"
    rows: dict[str, int] = field(default_factory=lambda: {"public.sum_core_lead": 1})
    queued: list[tuple[bytes, bytes]] = field(default_factory=list)  # (queue, message) in the old broker
    wrong_password: bool = False  # the .env's database password is refused
    failing: set[str] = field(default_factory=set)  # systemctl commands that fail ("reload caddy")
    caddy_reads: list[tuple[str, str]] = field(default_factory=list)  # (site file, "original" or "sumbg's")
    # The edge: the https port it last started on (None: its own, from before), the ports it
    # cannot serve on, whether its storage holds the host Caddy's certificates.
    edge_https_port: int | None = None
    edge_refuses: set[int] = field(default_factory=set)
    edge_has_certificates: bool = False

    @property
    def systemd_dir(self) -> Path:
        return self.root / "etc/systemd/system"

    @property
    def caddy_dir(self) -> Path:
        return self.root / "etc/caddy"

    @property
    def caddy_data(self) -> Path:
        return self.root / "var/lib/caddy/.local/share/caddy"

    def site_dir(self, slug: str) -> Path:
        return self.root / "srv/sum" / slug

    def site_file(self, slug: str) -> Path:
        return self.caddy_dir / "sites-enabled" / self.sites[slug].file_name

    def log(self, *effect: Any) -> None:
        self.world.effects.append(effect)

    def add_site(self, slug: str, domains: tuple[str, ...]) -> OldSite:
        """A site deployed by the runbook: its files, its units running and enabled, its site file served."""
        old = OldSite(slug, domains)
        site = self.site_dir(slug)
        (site / "media/uploads").mkdir(parents=True)
        (site / "media/uploads/logo.txt").write_text(f"{slug}'s logo")
        (site / ".env").write_text(RUNBOOK_ENV.format(slug=slug, site=site, domains=",".join(domains)))
        app = site / "app"
        app.mkdir()
        (app / "manage.py").write_text("")
        git = {**os.environ, **_GIT_ENV}
        for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "deployed"]):
            subprocess.run(["git", "-C", str(app), *args], check=True, env=git)
        subprocess.run(
            ["git", "-C", str(app), "remote", "add", "origin", f"https://git.example/{slug}.git"], check=True
        )
        done = subprocess.run(["git", "-C", str(app), "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
        old.commit = done.stdout.strip()
        self.systemd_dir.mkdir(parents=True, exist_ok=True)
        gunicorn, celery = old.units
        (self.systemd_dir / gunicorn).write_text(RUNBOOK_GUNICORN_UNIT.format(site=site, socket=old.socket))
        (self.systemd_dir / celery).write_text(RUNBOOK_CELERY_UNIT.format(site=site))
        (self.caddy_dir / "sites-enabled").mkdir(parents=True, exist_ok=True)
        (self.caddy_dir / "Caddyfile").write_text("{\n\temail ops@agency.example\n}\n\nimport sites-enabled/*\n")
        (self.caddy_dir / "sites-enabled" / old.file_name).write_text(
            RUNBOOK_SITE_FILE.format(domains=", ".join(domains), socket=old.socket)
        )
        for folder in ("certificates", "acme", "pki"):
            (self.caddy_data / folder).mkdir(parents=True, exist_ok=True)
        self.sites[slug] = old
        self.active |= set(old.units)
        self.enabled |= set(old.units)
        self.served[old.file_name] = "original"
        return old

    def load_caddy(self) -> None:
        """The host Caddy (re)reads its site files: each serves what its file now says."""
        for old in self.sites.values():
            kind = _host_site_kind(self.site_file(old.slug).read_text())
            if self.served.get(old.file_name) != kind:
                self.log("host-caddy", old.file_name, kind)
            self.served[old.file_name] = kind

    @property
    def edge_down(self) -> bool:
        return self.edge_https_port in self.edge_refuses

    def site_of(self, domain: str) -> OldSite:
        return next(old for old in self.sites.values() if domain in old.domains)

    def old_app_answer(self, domain: str) -> Answer:
        return OLD_APP_HEALTH if self.site_of(domain).units[0] in self.active else REFUSED

    def edge_answer(self) -> Answer:
        return REFUSED if self.edge_down else self.world.health_answer("live")

    def host_caddy_answer(self, domain: str) -> Answer:
        """What a visitor of `domain` gets on the host Caddy's https port."""
        if "caddy" not in self.active:
            return self.edge_answer() if self.edge_https_port == self.ports[1] else REFUSED
        kind = self.served[self.site_of(domain).file_name]
        if kind == "maintenance":
            return Answer(503, "text/plain", f"{domain} is being moved to a new home and is back in a few seconds.")
        if kind == "proxy":
            return Answer(502, "", "") if self.edge_down else self.world.health_answer("live")
        answer = self.old_app_answer(domain)
        return Answer(502, "", "") if answer is REFUSED else answer  # Caddy's bad gateway while the app is down


def _host_site_kind(text: str) -> str:
    if MANAGED_MARK not in text:
        return "original"
    return "maintenance" if "Retry-After" in text else "proxy"


def make_runbook_host(root: Path, world: World) -> RunbookHost:
    """The world's site deployed the runbook way on a fresh old host under `root`."""
    old = RunbookHost(world, root)
    old.add_site(world.slug, (world.domain, f"www.{world.domain}"))
    return old


class FakeSystemd:
    """The runbook host's systemctl (HostServices)."""

    def __init__(self, old: RunbookHost) -> None:
        self.old = old

    def _do(self, verb: str, *units: str) -> None:
        command = " ".join((verb, *units))
        if command in self.old.failing:
            raise RunbookError(f"systemctl {command} failed", command=["systemctl", verb, *units], returncode=1)
        self.old.log("systemctl", verb, *units)

    def is_active(self, unit: str) -> bool:
        return unit in self.old.active

    def stop(self, *units: str) -> None:
        self._do("stop", *units)
        self.old.active -= set(units)

    def start(self, unit: str) -> None:
        self._do("start", unit)
        self.old.active.add(unit)
        if unit == "caddy":
            self.old.load_caddy()

    def disable(self, unit: str) -> None:
        self._do("disable", unit)
        self.old.enabled.discard(unit)

    def enable(self, unit: str) -> None:
        self._do("enable", unit)
        self.old.enabled.add(unit)

    def reload_caddy(self) -> None:
        self._do("reload", "caddy")
        self.old.load_caddy()


class FakeHostCaddy:
    """`caddy adapt` of the host Caddy's folder (a CaddyRunner): Caddy's JSON of each site file as
    the old host's sites say (a site file sumbg wrote proxies to where it says, or answers 503),
    in the sections sumbg's adapt script prints. Records which content it was given to read."""

    def __init__(self, old: RunbookHost) -> None:
        self.old = old

    def __call__(self, script: str, args: list[str], scratch: Path, mount_at: Path) -> tuple[int, str, str]:
        main, files = Path(args[0]), [Path(arg) for arg in args[1:]]
        assert (scratch / main.relative_to(mount_at)).is_file()
        routes = []
        for path in files:
            text = (scratch / path.relative_to(mount_at)).read_text()
            kind = _host_site_kind(text)
            self.old.caddy_reads.append((path.name, "original" if kind == "original" else "sumbg's"))
            routes.append(self._routes(path.name, text, kind))
        out = [
            ("whole", self._adapted([r for site in routes for r in site], files)),
            ("baseline", self._adapted([], [])),
        ]
        out += [
            (str(n), self._adapted(site, [path])) for n, (site, path) in enumerate(zip(routes, files, strict=True), 1)
        ]
        return 0, "".join(f"\n@@sumbg {name} ok\n{json.dumps(body)}\n" for name, body in out), ""

    def _site(self, file_name: str) -> OldSite | None:
        return next((old for old in self.old.sites.values() if old.file_name == file_name), None)

    def _routes(self, file_name: str, text: str, kind: str) -> list[dict[str, Any]]:
        old = self._site(file_name)
        if old is None:
            return []
        if kind == "maintenance":
            handle: list[dict[str, Any]] = [{"handler": "static_response", "status_code": 503}]
        else:
            dial = f"unix/{old.socket}" if kind == "original" else text.split("reverse_proxy ", 1)[1].split()[0]
            handle = [
                {"handler": "encode", "encodings": {"gzip": {}}, "prefer": ["gzip"]},
                {"handler": "reverse_proxy", "upstreams": [{"dial": dial}]},
            ]
        subroute = {"handler": "subroute", "routes": [{"handle": handle}]}
        return [{"match": [{"host": list(old.domains)}], "handle": [subroute], "terminal": True}]

    def _adapted(self, routes: list[dict[str, Any]], files: list[Path]) -> dict[str, Any]:
        sites = [old for old in (self._site(path.name) for path in files) if old]
        policies: list[dict[str, Any]] = [
            {"subjects": list(old.domains), "issuers": [{"module": "internal"}]} for old in sites
        ]
        policies.append({"issuers": [{"module": "acme", "email": "ops@agency.example"}]})
        http_port, https_port = self.old.ports
        server = {"listen": [f":{https_port}"], "routes": routes}
        return {
            "apps": {
                "http": {"http_port": http_port, "https_port": https_port, "servers": {"srv0": server}},
                "tls": {"automation": {"policies": policies}},
            }
        }


class FakeCertificates:
    """Which certificate answers on the old host's https port (a CertificateProbe): the host
    Caddy's while it runs; once the edge holds the port, the same ones if it imported them."""

    def __init__(self, old: RunbookHost) -> None:
        self.old = old

    def served(self, address: str, port: int, server_name: str) -> str | None:
        old = self.old
        if port != old.ports[1] or not any(server_name in site.domains for site in old.sites.values()):
            return None
        if "caddy" in old.active:
            return f"host-{server_name}"
        if old.edge_https_port == port and not old.edge_down:
            return f"host-{server_name}" if old.edge_has_certificates else f"edge-{server_name}"
        return None


class RunbookEngine(FakeEngine):
    """The engine, also answering the one-off clients adoption runs on the host network: psql,
    pg_dump and pg_restore against the old host's PostgreSQL, redis-cli against its broker; and
    `redis-cli --pipe` into sumbg's broker."""

    def __init__(self, world: World, old: RunbookHost) -> None:
        super().__init__(world)
        self.old = old

    def _counts(self) -> str:
        return "".join(f"{table}|{count}\n" for table, count in sorted(self.old.rows.items()))

    def run_oneoff(
        self,
        image: str,
        argv: list[str],
        *,
        volumes: list[tuple[str, str, str]],
        network: str | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        if network != "host":
            return super().run_oneoff(image, argv, volumes=volumes, network=network, env=env)
        old, script = self.old, argv[2] if argv[:2] == ["sh", "-c"] else ""
        if argv[0] in ("psql", "pg_restore") or "pg_dump" in script:
            assert env and env["PGPASSWORD"] == "s3cret" and "s3cret" not in argv  # by environment only
            if old.wrong_password:
                return ExecResult(2, "", 'psql: error: FATAL:  password authentication failed for user "acme"')
        if argv[0] == "psql":
            return ExecResult(0, "1\n" if argv[-1] == "SELECT 1" else self._counts(), "")
        if argv[0] == "pg_restore":
            old.log("old-db", "load", Path(argv[-1]).name)
            old.rows = FakeDatabase(self.world).row_counts()  # now holds sumbg's rows
            return ExecResult(0, "", "")
        if "pg_dump" in script:
            backups = Path(next(source for source, target, _ in volumes if target == "/backups"))
            partial = script.split('-f "/backups/', 1)[1].split('"', 1)[0]
            (backups / partial).write_bytes(b"PGDMP the old database")
            old.log("old-db", "dump", partial.removesuffix(".partial").rsplit("_", 1)[-1])
            return ExecResult(0, self._counts() if "SUMBG_COUNT_SQL" in script else "", "")
        if "--scan" in script:
            lines = [
                f"{base64.b64encode(key).decode()} {base64.b64encode(message).decode()}" for key, message in old.queued
            ]
            return ExecResult(0, "".join(line + "\n" for line in lines), "")
        if " DEL " in script:
            keys = argv[4:]
            old.log("old-broker", "drop", *keys)
            old.queued = [(key, message) for key, message in old.queued if key.decode() not in keys]
            return ExecResult(0, f"{len(keys)}\n", "")
        raise AssertionError(f"the old host has no answer for {argv}")

    def exec(
        self,
        name: str,
        argv: list[str],
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        input: bytes | None = None,
    ) -> ExecResult:
        if argv[:1] == ["redis-cli"] and "--pipe" in argv:
            count = (input or b"").count(b"*3\r\n$5\r\nRPUSH\r\n")
            self.world.effects.append(("broker", "pushed", count))
            return ExecResult(0, f"All data transferred.\nerrors: 0, replies: {count}\n", "")
        return super().exec(name, argv, user=user, env=env, input=input)


class RunbookEdge(FakeEdge):
    """The edge, started on the ports of the settings it was made with, importing the host
    Caddy's storage."""

    def __init__(self, world: World, caddy_dir: Path, old: RunbookHost, settings: EdgeSettings) -> None:
        super().__init__(world, caddy_dir)
        self.old = old
        self.settings = settings

    def recreate(self) -> None:
        super().recreate()
        self.old.edge_https_port = self.settings.https_port

    def import_storage(self, source: Path) -> list[str]:
        self.world.effects.append(("edge", "imported", source.name))
        self.old.edge_has_certificates = True
        return sorted(path.name for path in source.iterdir())


class RunbookProber(FakeProber):
    """Also answers for the host Caddy (what it serves from the site file it last loaded, or the
    edge once that holds its port) and the old app (while its gunicorn unit runs)."""

    def __init__(self, world: World, old: RunbookHost) -> None:
        super().__init__(world)
        self.old = old

    def _answer(self, target: Target) -> Answer | None:
        if target.label == "host Caddy":
            return self.old.host_caddy_answer(target.domain)
        if target.label == "old app":
            return self.old.old_app_answer(target.domain)
        if target.label == "live" and self.old.edge_down:
            return REFUSED
        return None

    def request(
        self,
        target: Target,
        path: str,
        method: str = "GET",
        *,
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return self._answer(target) or super().request(target, path, method, data=data, headers=headers)

    def health(self, target: Target) -> Health:
        answer = self._answer(target)
        return Health(answer) if answer is not None else super().health(target)


class RunbookStacks(FakeStacks):
    """A site's stacks, also recording when its worker starts and stops."""

    def __init__(self, world: World, site: Site, workers: set[str]) -> None:
        super().__init__(world, site)
        self.workers = workers

    def start_worker(self, colour: str, image: str, *, live: bool) -> bool:
        self.workers.add(colour)
        self.world.effects.append(("worker", colour, "started"))
        return True

    def stop_worker(self, colour: str) -> bool:
        if colour not in self.workers:
            return False
        self.workers.discard(colour)
        self.world.effects.append(("worker", colour, "stopped"))
        return True


class RunbookMirror(FakeMirror):
    """The client repo of the world's site on the old host: the commit app/ has checked out, tagged."""

    def __init__(self, world: World, old: RunbookHost, path: Path) -> None:
        super().__init__(world, path)
        self.deployed = old.sites[world.slug]

    def resolve(self, ref: str) -> Resolved:
        deployed = self.deployed
        if ref not in (deployed.commit, deployed.tag, "HEAD"):
            raise GitError(f"ref {ref} not found in the repository")
        self.world.releases[naming.image_tag(self.world.slug, deployed.tag)] = {
            "build": deployed.tag,
            "git_sha": deployed.commit,
        }
        return Resolved(ref=ref, commit=deployed.commit)

    def tags(self) -> list[tuple[str, str, int]]:
        return [(self.deployed.tag, self.deployed.commit, 0)]

    def tags_at(self, commit: str) -> list[str]:
        return [self.deployed.tag] if commit == self.deployed.commit else []

    def read_file(self, commit: str, path: str) -> str | None:
        return "sum-core==0.6.3\n" if path == "requirements.txt" and commit == self.deployed.commit else None


class RunbookContext(FakeContext):
    """A FakeContext on a host where sites were deployed the runbook way (`old`): its systemd, its
    Caddy's reader, the certificates on its port and the old app answer from the old host; its
    database and broker through the engine. The host's settings are read from sumbg.toml (so an
    operation that edits it, the takeover, gets a context with the new ones from `reloaded`)."""

    def __init__(self, root: Path, world: World, old: RunbookHost, workers: set[str] | None = None) -> None:
        super().__init__(root, world)
        self.host = load_host(root)
        self.old = old
        self.workers = set() if workers is None else workers
        self._engine = RunbookEngine(world, old)
        self._edge = RunbookEdge(world, root / "caddy", old, self.host.edge)

    def stacks(self, site: Site) -> SiteStacks:
        return RunbookStacks(self.world, site, self.workers)

    def prober(self) -> HttpProber:
        return RunbookProber(self.world, self.old)

    def mirror(self, site: Site) -> GitMirror:
        return RunbookMirror(self.world, self.old, site.mirror_dir)

    def scratch_mirror(self, path: Path, repo: str) -> GitMirror:
        return RunbookMirror(self.world, self.old, path)

    def runbook_services(self) -> HostServices:
        return FakeSystemd(self.old)

    def caddy_runner(self) -> CaddyRunner:
        return FakeHostCaddy(self.old)

    def certificate_probe(self) -> CertificateProbe:
        return FakeCertificates(self.old)

    def reloaded(self) -> Context:
        return RunbookContext(self.host.root, self.world, self.old, self.workers)
