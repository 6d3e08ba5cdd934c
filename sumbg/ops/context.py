"""What every operation works with: the host, and the seams to the outside world.

Operations take a Context instead of reaching for Docker, Caddy, HTTP or git
themselves: everything that touches the outside is reached through it, typed by
the Protocols in seams.py. The unit tests hand the operations a context whose
engine, edge files, prober, stacks and mirrors are small fakes (tests/fakes.py)
and assert the whole sequence of effects of a plan.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sumbg.adapters import background, build, gitrepo, hooks, notify
from sumbg.adapters.caddy import Edge, OneOffCaddy
from sumbg.adapters.docker import Engine
from sumbg.adapters.probe import CertificateProbe as TlsCertificateProbe
from sumbg.adapters.probe import Prober
from sumbg.adapters.pydeps import Dependency
from sumbg.adapters.restic import Repository, Restic
from sumbg.adapters.systemd import RunbookServices
from sumbg.config import HostConfig, SiteConfig, load_host, load_site
from sumbg.errors import ConfigError, Interrupted, SumbgError
from sumbg.ops import reports
from sumbg.ops.events import Notifier
from sumbg.ops.executor import Plan, Reporter, execute
from sumbg.ops.seams import (
    AddressPlanner,
    CaddyRunner,
    CertificateProbe,
    ContainerEngine,
    Courier,
    EdgeProxy,
    GitMirror,
    HostCommands,
    HostServices,
    HttpProber,
    OffsiteStore,
    SiteStacks,
)
from sumbg.site.addresses import AddressPlan
from sumbg.site.records import HistoryEntry
from sumbg.site.site import Site
from sumbg.site.stacks import Stacks
from sumbg.site.state import SiteState


@dataclass
class Context:
    host: HostConfig
    reporter: Reporter
    # The host's SITES.md and WHAT-BROKE.md are left to whoever continues the operation in the
    # background (a rollback's worker move regenerates them when it ends).
    reports_deferred: bool = False

    @cached_property
    def docker(self) -> Engine:
        """The real engine (the adapters that build on it need the class itself)."""
        return Engine()

    @property
    def engine(self) -> ContainerEngine:
        return self.docker

    @property
    def edge(self) -> EdgeProxy:
        return self._edge_caddy

    @cached_property
    def _edge_caddy(self) -> Edge:
        return Edge(self.host, self.docker)

    @property
    def networks(self) -> AddressPlanner:
        return self._address_plan

    @cached_property
    def _address_plan(self) -> AddressPlan:
        return AddressPlan(self.host, self.docker)

    def site(self, slug: str) -> Site:
        return Site(self.host, load_site(self.host, slug))

    def stacks(self, site: Site) -> SiteStacks:
        return Stacks(site, self.docker, on_drain=lambda container: self.start_drainer(site, container))

    def start_drainer(self, site: Site, container: str) -> int:
        """A `sumbg` in the background that removes an old worker once it has finished its tasks
        (SIGKILL after [worker] stop_timeout) and records how it ended; returns its pid."""
        args = ["_drain-worker", site.slug, container, "--since", f"{time.time():.3f}"]
        return background.start_sumbg(self.host.root, args, log=site.run_dir / "workers.log")

    def start_worker_move(self, site: Site, lock_fd: int, wait_fd: int) -> int:
        """A `sumbg` in the background that goes on holding the site's lock (`lock_fd`), waits
        until this process has exited (`wait_fd` reaches its end), then moves the worker to the
        live colour and waits until it is ready; returns its pid."""
        args = ["_move-worker", site.slug, "--lock-fd", str(lock_fd), "--wait-fd", str(wait_fd)]
        return background.start_sumbg(
            self.host.root, args, log=site.run_dir / "workers.log", pass_fds=(lock_fd, wait_fd)
        )

    def prober(self) -> HttpProber:
        return Prober()

    def offsite(self, repository: Repository) -> OffsiteStore:
        """A restic repository (a site's [backup] repository, or one named for a disaster recovery)."""
        return Restic(repository)

    @property
    def host_commands(self) -> HostCommands:
        return hooks.run_host_command

    def courier(self) -> Courier:
        return notify.Courier()

    @cached_property
    def events(self) -> Notifier:
        """The command's events: written to events.jsonl, delivered to the [[notify]] targets."""
        return Notifier(self.host, self.courier(), self.reporter)

    def close(self) -> None:
        """At the end of the command: the notifications still being delivered, waited for (bounded)."""
        if "events" not in self.__dict__:
            return
        try:
            self.events.flush()
        except Exception as exc:  # noqa: BLE001 - a notification never changes the command's exit code
            self.reporter.line(f"warning: notifications were not all delivered: {exc}")

    def mirror(self, site: Site) -> GitMirror:
        return gitrepo.Mirror(site.mirror_dir, site.config.repo)

    def scratch_mirror(self, path: Path, repo: str) -> GitMirror:
        """A mirror synced somewhere else first (init and adopt check a repo before creating the site)."""
        return gitrepo.Mirror(path, repo)

    def reloaded(self) -> Context:
        """This context with the host's settings read again (after an operation edited sumbg.toml)."""
        return type(self)(load_host(self.host.root), self.reporter)

    def check_repo_reachable(self, repo: str) -> None:
        gitrepo.check_reachable(repo)

    def build_image(
        self, site: Site, image: build.ImageSpec, *, constraints: build.Constraints | None = None
    ) -> build.BuildResult:
        return build.build(
            self.docker,
            gitrepo.Mirror(site.mirror_dir, site.config.repo),
            image,
            host=self.host,
            site=site.config,
            work_dir=site.run_dir,
            constraints=constraints,
        )

    def read_dependencies(self, tag: str) -> tuple[list[Dependency], dict[str, str]] | None:
        """What an existing image holds, read by a one-off container of it (None: no such image, or no python)."""
        if self.engine.image_labels(tag) is None:
            return None
        return build.image_dependencies(self.docker, tag, self.host.background_cpu_shares)

    def labelled_dependencies(self, tag: str) -> list[Dependency] | None:
        """What an image's label says it holds (None: no such image or no label)."""
        return build.labelled_dependencies(self.docker, tag)

    def site_configs(self, *, strict: bool = False) -> list[SiteConfig]:
        """Every site registered under the root whose site.toml is valid; with `strict`, an
        invalid one is an error naming its site instead of being passed over."""
        found = []
        for path in sorted(self.host.root.glob("*/site.toml")):
            try:
                found.append(load_site(self.host, path.parent.name))
            except ConfigError as exc:
                if strict:
                    raise ConfigError(exc.message.replace("site.toml:", f"{path.parent.name}/site.toml:", 1)) from None
            except SumbgError:
                if strict:
                    raise
        return found

    def execute(self, plan: Plan, site: Site, command: str, *, also: Sequence[Site] = ()) -> HistoryEntry:
        """Run a plan on a site, then refresh the host's operator documents whatever happened.
        `also`: the other sites a host-wide operation changes (each journals and records it too)."""
        try:
            return execute(
                plan,
                site.records,
                self.reporter,
                command=command,
                companions=[s.records for s in also],
                listener=lambda entry: self.events.on_history(entry, site.config),
            )
        finally:
            if not self.reports_deferred:
                reports.regenerate(self.host)

    def runbook_services(self) -> HostServices:
        """A runbook host's systemd: the old app's units and the host Caddy (adoption)."""
        return RunbookServices()

    def caddy_runner(self) -> CaddyRunner:
        """Caddy as sumbg ships it, run once to read the host Caddy's configuration (adoption)."""
        return OneOffCaddy(self.docker, self.host.images.caddy)

    def certificate_probe(self) -> CertificateProbe:
        """Which certificate a TLS listener serves (the takeover compares them)."""
        return TlsCertificateProbe()

    def all_sites(self, *, strict: bool = False) -> dict[str, SiteConfig]:
        """{slug: configuration} of every initialised site on this host (what the edge serves)."""
        return {
            config.slug: config
            for config in self.site_configs(strict=strict)
            if Site(self.host, config).records.load_state().live
        }


def refuse_if_interrupted(site: Site, state: SiteState) -> None:
    """A journalled operation whose process died (we now hold the lock) must be recovered first."""
    operation = state.operation
    if operation:
        raise Interrupted(
            f"site {site.slug} has an interrupted {operation.kind} (stopped during step "
            f"{operation.step}, started {operation.started_at} by pid {operation.pid}); "
            f"run `sumbg recover {site.slug}` first"
        )
