"""Host (sumbg.toml), site (site.toml) and fleet configuration: validated once, then frozen.

Every error names the file, the key and what was expected, e.g.
``site.toml: smoke.checks[2].path: must start with / and contain no spaces``.

- `keys`: the one declaration of every setting (type, default, rules, help, init option);
- `tables`: reading TOML tables with the file and key in every message;
- `host`, `site`, `fleet`, `build`: the frozen configuration objects and their parsers;
- `render`: writing site.toml and editing either file in place (tomlkit);
- `reference`: docs/configuration.md, generated from the declarations.
"""

from __future__ import annotations

from sumbg.config.backup import BackupPolicy, BackupSettings, Retention, SiteBackupSettings, default_backup_time
from sumbg.config.build import BuildSettings
from sumbg.config.fleet import FLEET_ENV, FleetConfig, FleetHost, fleet_path, load_fleet
from sumbg.config.host import (
    DEFAULT_ROOT,
    EdgeSettings,
    HostConfig,
    Images,
    NetworkSettings,
    load_host,
    parse_host,
    root_from_env,
)
from sumbg.config.keys import LIVE_CPU_SHARES, LOCK_MODES, TLS_MODES
from sumbg.config.notify import EVENTS, GROUPS, HOOKS, HookSettings, NotifyTarget
from sumbg.config.render import render_site_toml, set_edge_settings, set_host_settings, set_site_settings
from sumbg.config.site import (
    DEFAULT_SMOKE_CHECKS,
    GOLDEN_PATH_HEADERS,
    BasicAuth,
    CaddySettings,
    MigrationSettings,
    SiteConfig,
    SmokeCheck,
    WatchSettings,
    WorkerSettings,
    load_site,
    parse_site,
    refuse_changes_to_kept_config,
)

__all__ = [
    "DEFAULT_ROOT",
    "EVENTS",
    "GROUPS",
    "HOOKS",
    "DEFAULT_SMOKE_CHECKS",
    "FLEET_ENV",
    "GOLDEN_PATH_HEADERS",
    "LIVE_CPU_SHARES",
    "LOCK_MODES",
    "TLS_MODES",
    "BackupPolicy",
    "BackupSettings",
    "BasicAuth",
    "BuildSettings",
    "CaddySettings",
    "EdgeSettings",
    "FleetConfig",
    "FleetHost",
    "HookSettings",
    "HostConfig",
    "Images",
    "MigrationSettings",
    "Retention",
    "SiteBackupSettings",
    "NotifyTarget",
    "NetworkSettings",
    "SiteConfig",
    "SmokeCheck",
    "WatchSettings",
    "default_backup_time",
    "WorkerSettings",
    "fleet_path",
    "load_fleet",
    "load_host",
    "load_site",
    "parse_host",
    "parse_site",
    "refuse_changes_to_kept_config",
    "render_site_toml",
    "root_from_env",
    "set_edge_settings",
    "set_host_settings",
    "set_site_settings",
]
