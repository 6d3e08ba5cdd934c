"""Small fakes of the outside world, for unit tests of whole operations.

A `World` is one site on one host: which release each colour's web runs and
whether it answers, the edge's state files, the client repo's refs, and an
ordered log of every effect (live/preview file writes, containers started and
removed). A `FakeContext` hands the operations fakes over that world instead of
Docker, Caddy, HTTP and git, so a test runs the real operation (init, upgrade,
rollback, watch, recover, restore, retire) in milliseconds and asserts the whole
sequence of effects and records. Every fake implements the Protocol the
operations declare (sumbg/ops/seams.py), and mypy holds it to it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any

from sumbg import naming
from sumbg.adapters.build import BuildResult, Constraints, ImageSpec
from sumbg.adapters.docker import ComposeProject, ContainerState, ExecResult
from sumbg.adapters.gitrepo import Resolved
from sumbg.adapters.hooks import CommandResult
from sumbg.adapters.notify import DeliveryFailed, Message
from sumbg.adapters.probe import Answer, Health, Target
from sumbg.adapters.pydeps import Dependency
from sumbg.adapters.restic import Repository, Snapshot, Upload
from sumbg.config import EdgeSettings, HostConfig, NotifyTarget, SiteConfig, SmokeCheck, WatchSettings, render_site_toml
from sumbg.errors import BackupError, CheckFailed, GitError, MigrationFailed
from sumbg.ops.context import Context
from sumbg.ops.events import DeliveryPolicy, Notifier
from sumbg.ops.executor import Reporter
from sumbg.ops.seams import (
    ContainerEngine,
    Courier,
    EdgeLock,
    EdgeProxy,
    EdgeStateFiles,
    GitMirror,
    HostCommands,
    HttpProber,
    OffsiteStore,
    SiteStacks,
)
from sumbg.site.site import Site
from sumbg.site.stacks import Backup, PendingMigrations, parse_phases, sha256_file

Effect = tuple[Any, ...]


@dataclass
class Web:
    image: str
    running: bool = True


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
        status = "unhealthy" if broken else "ok"
        return Answer(503 if broken else 200, "application/json", json.dumps({"status": status, "version": version}))


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
        return Health(self.world.health_answer(target.label))

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
            f"{target.label} /health/ through Caddy did not pass within {timeout:g}s: {health.answer.describe()}"
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

    def start_worker(self, colour: str, image: str, *, live: bool) -> bool:
        return False

    def apply_cpu_weights(self, live: str) -> None:
        self.world.effects.append(("weights", live))

    def stop_worker(self, colour: str) -> bool:
        return False

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

    @property
    def engine(self) -> ContainerEngine:
        return self._engine

    @property
    def edge(self) -> EdgeProxy:
        return self._edge

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


def site_config(world: World, *, watch_seconds: float = 0.05) -> SiteConfig:
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
    )


def make_site(root: Path, world: World, *, watch_seconds: float = 0.05) -> None:
    """site.toml for the world's site."""
    site_dir = root / world.slug
    (site_dir / "backups").mkdir(parents=True, exist_ok=True)
    (site_dir / "site.toml").write_text(render_site_toml(site_config(world, watch_seconds=watch_seconds)))


def deployed(
    root: Path, world: World, live: tuple[str, str], idle: tuple[str, str] | None = None, **idle_extra: Any
) -> None:
    """A site with `live` = (colour, ref) serving, and optionally `idle` = (colour, ref) running."""
    make_site(root, world)
    colours = {}
    colour, ref = live
    image = world.release(ref)
    world.webs[colour] = Web(image)
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
