"""Small fakes of the engine, the edge files and the prober, for unit tests of whole plans.

A `World` is one site on one host: which release each colour's web runs and
whether it answers, the edge's state files, and an ordered log of every effect
(live/preview file writes, containers started and removed). A `FakeContext`
hands the operations fakes over that world instead of Docker, Caddy and HTTP,
so a test runs the real plan (upgrade, rollback, watch, recover) in
milliseconds and asserts the whole sequence of effects and records.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sumbg import naming
from sumbg.adapters.docker import ContainerState, ExecResult
from sumbg.adapters.probe import Answer, Health
from sumbg.config import HostConfig, SiteConfig, WatchSettings, render_site_toml
from sumbg.errors import CheckFailed
from sumbg.ops.context import Context
from sumbg.ops.executor import Reporter
from sumbg.site.stacks import Backup, parse_phases


@dataclass
class Web:
    image: str
    running: bool = True


@dataclass
class World:
    slug: str = "acme"
    domain: str = "acme.example.test"
    releases: dict = field(default_factory=dict)  # image -> {"build", "git_sha"}
    webs: dict = field(default_factory=dict)  # colour -> Web
    files: dict = field(default_factory=dict)  # "live"/"preview" -> colour
    broken: set = field(default_factory=set)  # images whose /health/ answers 503
    turns_unhealthy: dict = field(default_factory=dict)  # image -> live probes it passes before failing
    failing_probes: int = 0  # the next N live /health/ probes answer 503
    visitors: object = (0, 0)  # Caddy's (requests, 5xx) for the host, None, or a callable giving them
    databases: set = field(default_factory=lambda: {"acme"})
    maintenance: bool = False
    effects: list = field(default_factory=list)
    # Migrations: what each release has pending (and marks run_after_switch), which releases'
    # migrations fail, or break the live release once applied; and every effect on a database.
    pending: dict = field(default_factory=dict)  # image -> (pending, after_switch)
    failing_migrations: set = field(default_factory=set)
    breaks_live: set = field(default_factory=set)
    database_mb: float = 5.0
    rehearsal: str | None = None  # the image of the rehearsal stand-in, if running
    copy_migrated_by: str | None = None
    schema_effects: list = field(default_factory=list)

    def release(self, ref: str) -> str:
        image = f"sum-{self.slug}:{ref}"
        self.releases[image] = {"build": ref, "git_sha": f"{ref}-sha"}
        return image

    def record(self, image: str, **extra) -> dict:
        version = self.releases[image]
        return {"image": image, "ref": version["build"], "commit": version["git_sha"], **extra}

    def file_writes(self) -> list[tuple]:
        return [e for e in self.effects if e[0] in ("live", "preview")]

    # What answers through Caddy, the way the edge routes it.
    def answering(self, label: str) -> str | None:
        candidates = (
            [self.files.get("live"), self.files.get("preview")] if label == "live" else [self.files.get("preview")]
        )
        for colour in candidates:  # the live route falls back to the preview colour on a dial error
            web = self.webs.get(colour)
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


class FakeProber:
    def __init__(self, world: World) -> None:
        self.world = world

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def health(self, target) -> Health:
        return Health(self.world.health_answer(target.label))

    def wait_healthy(self, target, timeout: float, *, expect_version=None, on_wait=None) -> Health:
        health = self.health(target)
        if health.passing and all(health.version.get(k) == v for k, v in (expect_version or {}).items()):
            return health
        raise CheckFailed(
            f"{target.label} /health/ through Caddy did not pass within {timeout:g}s: {health.answer.describe()}"
        )

    def evaluate(self, target, check):
        answer = self.world.health_answer(target.label)
        if target.label == "rehearsal" and self.world.copy_migrated_by in self.world.breaks_live:
            answer = Answer(500, "text/html", "Server Error (500)")
        problem = "" if answer.status == 200 else f"expected HTTP 200, got {answer.status}"
        return {"check": check.describe(), "status": answer.status}, answer, problem

    def check(self, target, check) -> dict:
        answer = self.world.health_answer(target.label)
        if answer.status != 200:
            raise CheckFailed(
                f"smoke check {check.describe()} on the {target.label} colour failed: HTTP {answer.status}"
            )
        return {"check": check.describe(), "status": 200}

    def visitor_counts(self, edge, domain):
        visitors = self.world.visitors
        return visitors() if callable(visitors) else visitors


class FakeFiles:
    def __init__(self, world: World, caddy_dir: Path) -> None:
        self.world = world
        self.dir = caddy_dir

    def read_colour(self, slug, which):
        return self.world.files.get(which)

    def write_colour(self, slug, which, colour):
        self.world.files[which] = colour
        self.world.effects.append((which, colour))

    def site(self, slug) -> Path:
        path = self.dir / "sites" / f"{slug}.caddy"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        return path

    def state(self, slug, which) -> Path:
        return self.dir / "state" / slug / which

    def maintenance_on(self, slug):
        return self.world.maintenance

    def set_maintenance(self, slug, on):
        if on != self.world.maintenance:
            self.world.effects.append(("maintenance", "on" if on else "off"))
        self.world.maintenance = on


class FakeEdge:
    def __init__(self, world: World, caddy_dir: Path) -> None:
        self.files = FakeFiles(world, caddy_dir)

    def lock(self):
        class _Lock:
            def acquire(self, timeout=0, command=None):
                return contextlib.nullcontext()

        return _Lock()

    def apply(self, sites):
        return []

    def ensure_up(self):
        return None

    def pending_changes(self, sites):
        return {}


class FakeDatabase:
    def __init__(self, world: World) -> None:
        self.world = world
        self.name = world.slug

    def size_mb(self) -> float:
        return self.world.database_mb

    def load_into_scratch(self, container_path, suffix):
        self.world.databases.add(self.name + suffix)
        self.world.schema_effects.append(("restore", self.name + suffix, container_path.rsplit("/", 1)[-1]))
        return self.name + suffix

    def drop_if_exists(self, database):
        if database in self.world.databases:
            self.world.databases.discard(database)
            self.world.schema_effects.append(("drop", database))

    def repair_interrupted_swap(self) -> list[str]:
        done, name = [], self.world.slug
        if name not in self.world.databases and f"{name}__sumbg_old" in self.world.databases:
            self.world.databases = (self.world.databases - {f"{name}__sumbg_old"}) | {name}
            done.append(f"renamed {name}__sumbg_old back to {name}")
        for leftover in (f"{name}__sumbg_restore", f"{name}__sumbg_old", f"{name}__sumbg_rehearsal"):
            if leftover in self.world.databases:
                self.world.databases.discard(leftover)
                done.append(f"dropped {leftover}")
        return done


class FakeStacks:
    def __init__(self, world: World, site) -> None:
        self.world = world
        self.site = site

    def start_data(self):
        self.world.effects.append(("data", "up"))

    def data_running(self):
        return True

    def database(self):
        return FakeDatabase(self.world)

    def backup_name(self, ref):
        return f"{self.world.slug}_20261127T000000Z_{ref}.dump"

    def backup_and_prune(self, name, state):
        return Backup(self.site.backups_dir / name, "0" * 64, 1, 1, 0.0, 0.0), []

    def free_space_problems(self, min_free_gb):
        return []

    def migration_plan(self, colour, image):
        return ""

    def migrate(self, colour, image, hint, *, before_switch_only=False):
        self._migrate(image, "live", "before-switch" if before_switch_only else "all")
        return "Applying sum_core.0002... OK"

    def _migrate(self, image, where, which):
        """Apply `image`'s migrations (`which`: "all" or "before-switch") to the copy or the live database."""
        from sumbg.errors import MigrationFailed

        self.world.schema_effects.append(("migrate", where, self.world.releases[image]["build"], which))
        if image in self.world.failing_migrations:
            raise MigrationFailed(f"migrations of {image} failed", output_tail="RuntimeError: half way")
        if where == "copy":
            self.world.copy_migrated_by = image

    def _phases(self, image, args) -> ExecResult:
        pending, after = self.world.pending.get(image, (["sum_core.0002_lead_phone"], []))
        report = json.dumps({"pending": pending, "after_switch": after})
        return ExecResult(0, f"SUMBG-MIGRATIONS {report}", "")

    def pending_migrations(self, colour, image):
        return parse_phases(self._phases(image, []).stdout)

    def rehearsal_manage(self, image, database, args):
        assert database == f"{self.world.slug}__sumbg_rehearsal"
        if args[:2] == ["shell", "-c"] and args[2].startswith("MODE = 'plan'"):
            return self._phases(image, args)
        which = "before-switch" if args[:2] == ["shell", "-c"] else "all"
        try:
            self._migrate(image, "copy", which)
        except Exception as exc:
            return ExecResult(1, "", exc.output_tail)
        return self._phases(image, args) if which == "before-switch" else ExecResult(0, "Applying ... OK", "")

    def start_rehearsal_web(self, image, database):
        self.world.rehearsal = image
        self.world.schema_effects.append(("rehearsal-web", self.world.releases[image]["build"], database))

    def remove_rehearsal(self):
        had, self.world.rehearsal = self.world.rehearsal, None
        if had:
            self.world.schema_effects.append(("rehearsal-web", "removed"))
        return bool(had)

    def rehearsal_logs(self, lines=60):
        if self.world.copy_migrated_by in self.world.breaks_live:
            return (
                "Internal Server Error: /\nTraceback (most recent call last):\n"
                "django.db.utils.ProgrammingError: column sum_core_lead.message does not exist"
            )
        return ""

    def collectstatic(self, colour, image):
        return "1 static file copied"

    def start_web(self, colour, image):
        self.world.webs[colour] = Web(image)
        self.world.effects.append(("start", colour, self.world.releases[image]["build"]))

    def start_worker(self, colour, image=None):
        return False

    def apply_cpu_weights(self, live):
        self.world.effects.append(("weights", live))

    def stop_worker(self, colour):
        return False

    def colour_exists(self, colour):
        return colour in self.world.webs

    def web_running(self, colour):
        web = self.world.webs.get(colour)
        return bool(web and web.running)

    def remove_colour(self, colour):
        if self.world.webs.pop(colour, None) is not None:
            self.world.effects.append(("remove", colour))

    def recorded_image(self, colour):
        return None

    def web_logs(self, colour, lines=25):
        return ""

    def web_exit_summary(self, colour):
        return "the web container is running" if self.web_running(colour) else "the web container is missing"


class FakeEngine:
    def __init__(self, world: World) -> None:
        self.world = world

    def ping(self):
        return None

    def container(self, name):
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

    def project_containers(self, project):
        return []

    def volume_exists(self, name):
        return False

    def image_labels(self, tag):
        version = self.world.releases.get(tag)
        return {"sumbg.ref": version["build"], "sumbg.commit": version["git_sha"]} if version else None


class FakeContext(Context):
    def __init__(self, root: Path, world: World) -> None:
        super().__init__(host=HostConfig(root=root), reporter=Reporter(quiet=True))
        self.world = world
        self._edge = FakeEdge(world, root / "caddy")
        self._engine = FakeEngine(world)

    @property
    def engine(self):
        return self._engine

    @property
    def edge(self):
        return self._edge

    def stacks(self, site):
        return FakeStacks(self.world, site)

    def prober(self):
        return FakeProber(self.world)

    def build_image(self, site, image):
        return {"image": image.tag}


def make_site(root: Path, world: World, *, watch_seconds: float = 0.05) -> None:
    """site.toml for the world's site, with a watch fast enough for unit tests."""
    config = SiteConfig(
        slug=world.slug,
        domain=world.domain,
        repo="/r",
        project="acme",
        settings_module="acme.settings.production",
        wsgi="acme.wsgi:application",
        watch_seconds=watch_seconds,
        watch=WatchSettings(interval=0.001),
    )
    site_dir = root / world.slug
    (site_dir / "backups").mkdir(parents=True, exist_ok=True)
    (site_dir / "site.toml").write_text(render_site_toml(config))


def deployed(
    root: Path, world: World, live: tuple[str, str], idle: tuple[str, str] | None = None, **idle_extra
) -> None:
    """A site with `live` = (colour, ref) serving, and optionally `idle` = (colour, ref) running."""
    from sumbg.site.records import SiteRecords

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
    SiteRecords(root / world.slug).save_state(
        {
            "slug": world.slug,
            "live": colour,
            "previous": idle[0] if idle else None,
            "colours": colours,
            "operation": None,
        }
    )
