"""A site's site.toml: validated once (declarations in `keys.SITE_TOML`), then frozen."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sumbg import naming
from sumbg.config.backup import BackupPolicy, SiteBackupSettings, backup_policy
from sumbg.config.build import BuildSettings
from sumbg.config.host import HostConfig, notify_targets
from sumbg.config.keys import DOTTED_PATH_MESSAGE, HOSTNAME_MESSAGE, SITE_TOML, assemble, lookup
from sumbg.config.notify import HookSettings, NotifyTarget
from sumbg.config.tables import Table, load_toml
from sumbg.errors import ConfigError, UsageError


@dataclass(frozen=True)
class SmokeCheck:
    path: str
    status: int = 200
    content_type: str = ""
    contains: str = ""
    json_status: tuple[str, ...] = ()
    method: str = "GET"
    form: tuple[tuple[str, str], ...] = ()
    csrf_from: str = ""

    def describe(self) -> str:
        return f"{self.method} {self.path}"


DEFAULT_SMOKE_CHECKS = (
    SmokeCheck(path="/health/", status=200, json_status=("ok", "degraded")),
    SmokeCheck(path="/", status=200),
    SmokeCheck(path="/static/sum_core/css/main.css", status=200, content_type="text/css"),
    SmokeCheck(path="/admin/login/", status=200),
)


@dataclass(frozen=True)
class BasicAuth:
    path: str  # a Caddy path pattern, e.g. /admin/*
    user: str
    hash: str  # bcrypt, as printed by `caddy hash-password`


GOLDEN_PATH_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "geolocation=(), microphone=(), camera=()"),
)


@dataclass(frozen=True)
class CaddySettings:
    """The site's block in the edge Caddy: the SUM golden path by default."""

    redirect_to_canonical: bool = True  # other names redirect (308) to the first domain
    encode: bool = True  # encode gzip zstd
    security_headers: bool = True  # GOLDEN_PATH_HEADERS
    headers: tuple[tuple[str, str], ...] = ()  # added or overriding; "" removes one
    basic_auth: tuple[BasicAuth, ...] = ()
    extra: str = ""  # raw directives inside the site block, braces balanced
    behind_proxy: bool = False  # TLS ends at another proxy in front (plain HTTP at the edge)

    def response_headers(self) -> tuple[tuple[str, str], ...]:
        merged = dict(GOLDEN_PATH_HEADERS) if self.security_headers else {}
        merged.update(dict(self.headers))
        return tuple((name, value) for name, value in merged.items() if value)


@dataclass(frozen=True)
class WatchSettings:
    """When the watch after a switch reverts: only on a failure that persists."""

    interval: float = 1.0  # seconds between probes
    consecutive_failures: int = 3  # this many failed probes in a row revert
    max_failed_ratio: float = 0.3  # ...or more than this share of probes failed,
    min_probes: int = 10  # once at least this many probes were made
    max_visitor_5xx: int = 10  # ...or Caddy answered visitors with at least this many 5xx
    max_visitor_5xx_ratio: float = 0.05  # and more than this share of the site's requests


@dataclass(frozen=True)
class WorkerSettings:
    """How sumbg tells a release's background worker is ready, and how long an old one may drain."""

    ready_after: float = 10.0  # seconds running without a restart
    ping_timeout: float = 5.0  # seconds a Celery worker has to answer `celery inspect ping`
    ready_timeout: float = 90.0  # seconds an operation waits for the worker it started
    stop_timeout: float = 300.0  # seconds an old worker has to finish its tasks after SIGTERM, then SIGKILL


@dataclass(frozen=True)
class MigrationSettings:
    """How an upgrade proves its migrations safe before they touch the live database."""

    rehearsal: bool = True  # rehearse on a copy of the database (and measure compatibility)
    rehearsal_max_mb: int = 2048  # above this database size the rehearsal is skipped (and said so)
    read_paths: tuple[str, ...] = ()  # GET paths the live release must still serve on the new schema


@dataclass(frozen=True)
class SiteConfig:
    slug: str
    domain: str
    repo: str
    environment: str = "production"
    project: str = ""
    settings_module: str = ""
    wsgi: str = ""
    web_workers: int = 2
    worker_command: str = ""
    web_stop_timeout: float = 30.0  # gunicorn's graceful timeout; Docker's stop timeout is 5 s more
    db_publish_port: int = 0
    health_timeout: float = 120.0
    required_checks: tuple[str, ...] = ()  # /health/ checks whose failure is unhealthy, even when "degraded"
    smoke_checks: tuple[SmokeCheck, ...] = DEFAULT_SMOKE_CHECKS
    keep_backups: int = 10
    watch_seconds: float = 30.0
    watch: WatchSettings = WatchSettings()
    caddy: CaddySettings = CaddySettings()
    aliases: tuple[str, ...] = ()  # the site's other names; `domain` is the canonical one
    notes: str = ""
    extra_env: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    build: BuildSettings = BuildSettings()  # [build]: overrides sumbg.toml [build] per key
    migrations: MigrationSettings = MigrationSettings()
    retire_idle_after: float | None = None  # None: sumbg.toml's [upgrade] retire_idle_after
    backup: SiteBackupSettings = SiteBackupSettings()  # [backup]: overrides sumbg.toml's key by key
    notify: tuple[NotifyTarget, ...] = ()  # [[notify]]: who hears about this site's events
    hooks: HookSettings = HookSettings()
    worker: WorkerSettings = WorkerSettings()
    logs_keep_mb: float | None = None  # None: sumbg.toml's [logs] keep_mb

    @property
    def domains(self) -> tuple[str, ...]:
        """Every name the site answers to, the canonical one first."""
        return (self.domain, *self.aliases)

    def backup_policy(self, host: HostConfig) -> BackupPolicy:
        """This site's [backup] over the host's, key by key."""
        return backup_policy(host.backup, self.backup, self.keep_backups)

    @property
    def db_name(self) -> str:
        return naming.db_identifier(self.slug)

    @property
    def db_user(self) -> str:
        return naming.db_identifier(self.slug)


def load_site(host: HostConfig, slug: str) -> SiteConfig:
    naming.validate_slug(slug)
    path = host.site_dir(slug) / "site.toml"
    if not path.exists():
        raise UsageError(f"no site {slug!r} under {host.root} (run `sumbg init {slug} ...` first)")
    site = parse_site(load_toml(path, SITE_TOML.name))
    if site.slug != slug:
        raise ConfigError(f"site.toml: slug: is {site.slug!r} but the site folder is {slug!r}")
    return site


def parse_site(data: Mapping[str, Any]) -> SiteConfig:
    """site.toml's content as read (a dict), checked against the declarations."""
    top = Table(_older_single_domain(Table(data, SITE_TOML.name)), SITE_TOML.name)
    values = top.read_file(SITE_TOML)
    domains = values.pop("domains")
    project = values["project"]
    app = Table({}, SITE_TOML.name, "app.")
    for attr, key, derived in (
        ("settings_module", "settings", f"{project}.settings.production"),
        ("wsgi", "wsgi", f"{project}.wsgi:application"),
    ):
        if not values[attr]:
            if not project:
                raise app.fail(key, DOTTED_PATH_MESSAGE)
            values[attr] = derived
    caddy_values = {attr.removeprefix("caddy."): values.pop(attr) for attr in list(values) if attr.startswith("caddy.")}
    caddy_values["basic_auth"] = tuple(BasicAuth(**rule) for rule in caddy_values["basic_auth"])
    caddy = assemble(CaddySettings, caddy_values)
    values["notify"] = notify_targets(values["notify"], f"{values['slug']}/site.toml")
    checks = values["smoke_checks"]
    if checks is None:
        # The defaults follow the site's basic auth: a protected path answers 401 to sumbg.
        values["smoke_checks"] = tuple(
            replace(check, status=401) if _protected(check.path, caddy) else check for check in DEFAULT_SMOKE_CHECKS
        )
    else:
        values["smoke_checks"] = tuple(SmokeCheck(**check) for check in checks)
        for index, check in enumerate(values["smoke_checks"]):
            rule = _protected(check.path, caddy)
            if rule and check.status != 401:
                raise ConfigError(
                    f"site.toml: smoke.checks[{index}].status: {check.path} is behind "
                    f"caddy.basic_auth ({rule.path}), so sumbg gets 401: say status = 401"
                )
    return assemble(SiteConfig, values, domain=domains[0], aliases=domains[1:], caddy=caddy)


def _older_single_domain(top: Table) -> Mapping[str, Any]:
    """The file's content with an older `domain = "..."` read as `domains = [...]`."""
    if "domain" not in top.data:
        return top.data
    if "domains" in top.data:
        raise top.fail("domain", "give either domain or domains, not both")
    domain = top.get("domain", str)
    if not naming.DOMAIN_PATTERN.fullmatch(domain):
        raise top.fail("domain", HOSTNAME_MESSAGE)
    return {key: value for key, value in top.data.items() if key != "domain"} | {"domains": [domain]}


def _protected(path: str, caddy: CaddySettings) -> BasicAuth | None:
    return next((rule for rule in caddy.basic_auth if fnmatch.fnmatchcase(path, rule.path)), None)


def refuse_changes_to_kept_config(kept: SiteConfig, **given: object) -> None:
    """A re-run init keeps the site.toml an earlier, failed init wrote (and its edits): an
    option that says something else is refused rather than silently dropped or applied.

    `given` are `sumbg init`'s options by keyword (ops.init.init's parameters); None, or an
    empty list, is an option not given."""
    options = SITE_TOML.options()
    for param, value in given.items():
        if value is None or (isinstance(value, list | tuple) and not value):
            continue
        current = lookup(kept, options[param])
        if isinstance(value, list):
            current = list(current)
        if value == current:
            continue
        raise UsageError(
            f"site.toml of {kept.slug} (kept from an earlier init, with any edits) has {param} = "
            f"{current!r}, not {value!r}: edit site.toml, or remove it to start afresh"
        )
