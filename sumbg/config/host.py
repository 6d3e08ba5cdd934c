"""The host's sumbg.toml: validated once (declarations in `keys.SUMBG_TOML`), then frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg.config.backup import BackupSettings
from sumbg.config.build import BuildSettings
from sumbg.config.keys import DEFAULT_POOL, DEFAULT_SITE_PREFIX, SUMBG_TOML, assemble
from sumbg.config.notify import NotifyTarget
from sumbg.config.tables import Table, load_toml

DEFAULT_ROOT = "/srv/sum"


@dataclass(frozen=True)
class EdgeSettings:
    http_port: int = 80
    https_port: int = 443
    preview_port: int = 8081
    bind: str = "0.0.0.0"
    tls: str = "auto"
    acme_email: str = ""
    # Another ACME CA than Let's Encrypt (a staging or in-house CA): its directory URL, and the
    # root that its API's certificate chains to when that is not a public one. Empty: Caddy's defaults.
    acme_ca: str = ""
    acme_ca_root: str = ""
    # The edge stack's name: its Compose project, network, and container prefix.
    # One per host normally; a second root on the same host needs its own.
    name: str = "sum-edge"

    @property
    def container(self) -> str:
        return f"{self.name}-caddy"

    @property
    def probe_host(self) -> str:
        """Where sumbg itself reaches the edge's published ports from this host."""
        return "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind


@dataclass(frozen=True)
class Images:
    python: str = "python:3.12-slim"
    postgres: str = "postgres:16"
    redis: str = "redis:7"
    caddy: str = "caddy:2"


@dataclass(frozen=True)
class NetworkSettings:
    """sumbg's address plan: where site networks get their subnets (validated by the declarations)."""

    pool: str = DEFAULT_POOL
    site_prefix: int = DEFAULT_SITE_PREFIX


@dataclass(frozen=True)
class HostConfig:
    root: Path
    edge: EdgeSettings = EdgeSettings()
    images: Images = Images()
    ca_bundle: str = ""
    min_free_gb: float = 2.0
    build: BuildSettings = BuildSettings()  # git credentials and URL rewrites for all sites
    build_lock: str = "none"  # [build] lock: what new builds resolve against (none, live, file)
    wheel_cache_max_gb: float = 5.0  # [build] wheel_cache_max_gb: the host-wide wheel cache; 0 = off
    # Seconds an idle colour is kept after the live one went live (`sumbg retire --due`); 0: kept.
    retire_idle_after: float = 0.0
    # The CPU weight (Docker cpu-shares; the live colour has 1024) of everything an upgrade runs
    # besides the live colour: builds, one-off commands, a colour not yet switched in.
    background_cpu_shares: int = 128
    backup: BackupSettings = BackupSettings()  # [backup]: the offsite repository, retention, schedule
    notify: tuple[NotifyTarget, ...] = ()  # [[notify]]: who hears about every site's events
    # MB of compressed logs of removed colours kept per site (a site's [logs] keep_mb overrides it).
    logs_keep_mb: float = 100.0
    # `sumbg doctor`: the addresses the sites' domains must resolve to (empty: found).
    doctor_addresses: tuple[str, ...] = ()
    network: NetworkSettings = NetworkSettings()  # [network]: the address plan every site's networks come from

    @property
    def caddy_dir(self) -> Path:
        return self.root / "caddy"

    @property
    def www_dir(self) -> Path:
        return self.root / "www"

    def site_dir(self, slug: str) -> Path:
        return self.root / slug


def root_from_env() -> Path:
    return Path(os.environ.get("SUMBG_ROOT") or DEFAULT_ROOT)


def load_host(root: Path | None = None) -> HostConfig:
    root = (root or root_from_env()).absolute()
    path = root / "sumbg.toml"
    if not path.exists():
        return HostConfig(root=root)
    return parse_host(load_toml(path, SUMBG_TOML.name), root)


def parse_host(data: Mapping[str, Any], root: Path) -> HostConfig:
    """sumbg.toml's content as read (a dict), checked against the declarations."""
    values = Table(data, SUMBG_TOML.name).read_file(SUMBG_TOML)
    values["notify"] = notify_targets(values["notify"], SUMBG_TOML.name)
    return assemble(HostConfig, values, root=root)


def notify_targets(tables: tuple[dict[str, Any], ...], source: str) -> tuple[NotifyTarget, ...]:
    """The [[notify]] tables of a file, as read, each knowing where it was declared."""
    return tuple(NotifyTarget(**values, source=f"{source} notify[{index}]") for index, values in enumerate(tables))
