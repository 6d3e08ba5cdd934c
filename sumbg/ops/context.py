"""What every operation works with: the host, its engine and edge, and a site's stacks.

Operations (init/upgrade in operations.py, rollback.py, backups.py, lifecycle.py)
take a Context instead of reaching for Docker, Caddy or HTTP themselves, so the
unit tests can hand them a context whose engine, edge files and prober are small
fakes and assert the whole sequence of effects of a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sumbg.adapters import build, gitrepo
from sumbg.adapters.caddy import Edge
from sumbg.adapters.docker import Engine
from sumbg.adapters.probe import Prober
from sumbg.config import HostConfig, SiteConfig, load_site
from sumbg.errors import ConfigError, Interrupted, SumbgError
from sumbg.ops import reports
from sumbg.ops.executor import Plan, Reporter, execute
from sumbg.site.site import Site
from sumbg.site.stacks import Stacks


@dataclass
class Context:
    host: HostConfig
    reporter: Reporter

    @cached_property
    def engine(self) -> Engine:
        return Engine()

    @cached_property
    def edge(self) -> Edge:
        return Edge(self.host, self.engine)

    def site(self, slug: str) -> Site:
        return Site(self.host, load_site(self.host, slug))

    def stacks(self, site: Site) -> Stacks:
        return Stacks(site, self.engine)

    def prober(self) -> Prober:
        return Prober()

    def build_image(self, site: Site, image: build.ImageSpec) -> dict:
        return build.build(
            self.engine, mirror_for(site), image, host=self.host, site=site.config, work_dir=site.run_dir
        )

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

    def execute(self, plan: Plan, site: Site, command: str) -> dict:
        """Run a plan on a site, then refresh the host's operator documents whatever happened."""
        try:
            return execute(plan, site.records, self.reporter, command=command)
        finally:
            reports.regenerate(self.host)

    def all_sites(self, *, strict: bool = False) -> dict[str, SiteConfig]:
        """{slug: configuration} of every initialised site on this host (what the edge serves)."""
        return {
            config.slug: config
            for config in self.site_configs(strict=strict)
            if Site(self.host, config).records.load_state().get("live")
        }


def mirror_for(site: Site) -> gitrepo.Mirror:
    return gitrepo.Mirror(site.mirror_dir, site.config.repo)


def refuse_if_interrupted(site: Site, state: dict) -> None:
    """A journalled operation whose process died (we now hold the lock) must be recovered first."""
    operation = state.get("operation")
    if operation:
        raise Interrupted(
            f"site {site.slug} has an interrupted {operation.get('kind')} (stopped during step "
            f"{operation.get('step')}, started {operation.get('started_at')} by pid {operation.get('pid')}); "
            f"run `sumbg recover {site.slug}` first"
        )
