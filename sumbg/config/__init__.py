"""Host (sumbg.toml) and site (site.toml) configuration: validated once, then frozen.

Every error names the file, the key and what was expected, e.g.
``site.toml: smoke.checks[2].path: must start with /``.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sumbg import naming
from sumbg.errors import ConfigError, UsageError
from sumbg.util import atomic_write, parse_duration

DEFAULT_ROOT = "/srv/sum"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TLS_MODES = ("auto", "internal", "off")
LIVE_CPU_SHARES = 1024  # Docker's default weight: the live colour, the data stack and the edge keep it


# ---------------------------------------------------------------- reading helpers


class _Table:
    """A TOML table with the file name and key path needed for error messages."""

    def __init__(self, data: dict, file: str, prefix: str = "") -> None:
        self.data = data
        self.file = file
        self.prefix = prefix
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.file}: {self.prefix}{key}"

    def fail(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {expected}")

    def get(self, key: str, kind: type | tuple, default: Any = None, *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a port of `true` is still a mistake.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_kind_name(kinds)}, not {value!r}")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_kind_name(kinds)}, not {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, not {value}")
        return value

    def table(self, key: str) -> _Table:
        value = self.get(key, dict, {})
        return _Table(value, self.file, f"{self.prefix}{key}.")

    def port(self, key: str, default: int, *, allow_zero: bool = False) -> int:
        value = self.get(key, int, default)
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            raise self.fail(key, f"must be a port number {low}-65535, not {value}")
        return value

    def positive(self, key: str, kind: type | tuple, default: Any) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.fail(key, f"must be greater than 0, not {value}")
        return value

    def duration(self, key: str, default: float | None) -> float | None:
        value = self.get(key, (str, int, float), None)
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown setting")


def _kind_name(kinds: tuple) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "a list",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _load_toml(path: Path, label: str) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{label}: not found at {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}") from None


# ---------------------------------------------------------------- host configuration


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
class BuildSettings:
    """`[build]` of sumbg.toml or site.toml: how a client image is built (empty = not set here).

    The credential files are paths (mode 0600); sumbg never reads them into its records.
    """

    python_image: str = ""  # site only; "" = sumbg.toml images.python
    build_packages: tuple[str, ...] = ()  # site only; Debian packages of the build stage
    packages: tuple[str, ...] = ()  # site only; Debian packages of the final image
    git_token_file: str = ""  # token for git+https dependencies
    git_username: str = ""  # username sent with the token
    git_ssh_key_file: str = ""  # deploy key for git+ssh dependencies
    git_ssh_known_hosts: str = ""  # pinned host keys; "" = ~/.ssh/known_hosts, accept-new
    git_url_rewrites: tuple[tuple[str, str], ...] = ()  # (prefix, replacement): git's insteadOf


_DEB_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?")
_SITE_ONLY_BUILD_KEYS = ("python_image", "build_packages", "packages")


def _parse_build(table: _Table, *, site: bool) -> tuple[BuildSettings, str]:
    """A `[build]` table; returns the settings and (host only) the CA bundle."""
    ca_bundle = ""
    if not site:
        ca_bundle = table.get("ca_bundle", str, "")
        if ca_bundle and not Path(ca_bundle).is_file():
            raise table.fail("ca_bundle", f"file {ca_bundle} does not exist")
    python_image = table.get("python_image", str, "") if site else ""
    if python_image and (any(ch.isspace() for ch in python_image) or python_image.startswith("-")):
        raise table.fail("python_image", "must be an image reference like 'python:3.12-slim'")
    lists = {}
    for key in _SITE_ONLY_BUILD_KEYS[1:] if site else ():
        value = table.get(key, list, [])
        if not all(isinstance(item, str) and _DEB_PACKAGE.fullmatch(item) for item in value):
            raise table.fail(key, 'must be a list of Debian package names like ["libjpeg62-turbo"]')
        lists[key] = tuple(value)
    secrets = {key: _secret_file(table, key) for key in ("git_token_file", "git_ssh_key_file")}
    known_hosts = table.get("git_ssh_known_hosts", str, "")
    if known_hosts and not (os.path.isabs(known_hosts) and Path(known_hosts).is_file()):
        raise table.fail("git_ssh_known_hosts", f"must be the absolute path of a file, not {known_hosts!r}")
    username = table.get("git_username", str, "")
    if any(ch.isspace() or ch in ":@" for ch in username):
        raise table.fail("git_username", "must be a user name without spaces, ':' or '@'")
    rewrites = table.get("git_url_rewrites", dict, {})
    for prefix, replacement in rewrites.items():
        if (
            not prefix
            or not isinstance(replacement, str)
            or not replacement
            or any(ch.isspace() for ch in prefix + replacement)
        ):
            raise ConfigError(
                f"{table.where('git_url_rewrites')}: {prefix!r} must map a URL prefix to "
                "a non-empty URL prefix without spaces"
            )
    table.reject_unknown()
    return BuildSettings(
        python_image=python_image,
        git_username=username,
        git_ssh_known_hosts=known_hosts,
        git_url_rewrites=tuple(rewrites.items()),
        **lists,
        **secrets,
    ), ca_bundle


def _secret_file(table: _Table, key: str) -> str:
    """A credential file: an absolute path to a regular file nobody but its owner can read."""
    path = table.get(key, str, "")
    if not path:
        return ""
    if not os.path.isabs(path):
        raise table.fail(key, f"must be an absolute path, not {path!r}")
    try:
        info = os.stat(path)
    except OSError:
        raise table.fail(key, f"file {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise table.fail(key, f"{path} is not a file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise table.fail(key, f"{path} has mode {mode:04o}; a credential file must be 0600 (chmod 600 {path})")
    return path


def render_build_toml(build: BuildSettings) -> list[str]:
    """The `[build]` table of site.toml, every setting spelled out."""
    q = _toml_string
    rewrites = ", ".join(f"{q(prefix)} = {q(to)}" for prefix, to in build.git_url_rewrites)
    return [
        "[build]",
        "# The Python base image; empty = sumbg.toml images.python.",
        f"python_image = {q(build.python_image)}",
        "# Debian packages for the build stage only (compilers, -dev headers) and for the final image.",
        f"build_packages = [{', '.join(q(p) for p in build.build_packages)}]",
        f"packages = [{', '.join(q(p) for p in build.packages)}]",
        "# Private git+https / git+ssh requirements: files of mode 0600; empty = sumbg.toml [build].",
        f"git_token_file = {q(build.git_token_file)}",
        f"git_username = {q(build.git_username)}",
        f"git_ssh_key_file = {q(build.git_ssh_key_file)}",
        "# The SSH servers' host keys (known_hosts format); empty = ~/.ssh/known_hosts, new hosts accepted.",
        f"git_ssh_known_hosts = {q(build.git_ssh_known_hosts)}",
        '# Like git\'s insteadOf: { "https://github.com/acme/" = "https://mirror.example/acme/" }',
        f"git_url_rewrites = {{{' ' + rewrites + ' ' if rewrites else ''}}}",
        "",
    ]


@dataclass(frozen=True)
class HostConfig:
    root: Path
    edge: EdgeSettings = EdgeSettings()
    images: Images = Images()
    ca_bundle: str = ""
    min_free_gb: float = 2.0
    build: BuildSettings = BuildSettings()  # git credentials and URL rewrites for all sites
    # Seconds an idle colour is kept after the live one went live (`sumbg retire --due`); 0: kept.
    retire_idle_after: float = 0.0
    # The CPU weight (Docker cpu-shares; the live colour has 1024) of everything an upgrade runs
    # besides the live colour: builds, one-off commands, a colour not yet switched in.
    background_cpu_shares: int = 128

    @property
    def caddy_dir(self) -> Path:
        return self.root / "caddy"

    @property
    def www_dir(self) -> Path:
        return self.root / "www"

    def site_dir(self, slug: str) -> Path:
        return self.root / slug


def set_edge_settings(root: Path, values: dict[str, str | int]) -> str:
    """Set keys of sumbg.toml's [edge] in place (other lines and comments kept); returns the
    previous text, to put back. The result must still parse."""
    path = root / "sumbg.toml"
    before = path.read_text() if path.exists() else ""
    lines = before.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "[edge]"), None)
    if start is None:
        lines += ["", "[edge]"]
        start = len(lines) - 1
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    for key, value in values.items():
        rendered = f"{key} = {value if isinstance(value, int) else _toml_string(value)}"
        found = next((i for i in range(start + 1, end) if re.match(rf"\s*{key}\s*=", lines[i])), None)
        if found is None:
            lines.insert(end, rendered)
            end += 1
        else:
            lines[found] = rendered
    text = "\n".join(lines) + "\n"
    parse_host(_Table(tomllib.loads(text), "sumbg.toml"), root)
    atomic_write(path, text)
    return before


def root_from_env() -> Path:
    return Path(os.environ.get("SUMBG_ROOT") or DEFAULT_ROOT)


def load_host(root: Path | None = None) -> HostConfig:
    root = (root or root_from_env()).absolute()
    path = root / "sumbg.toml"
    if not path.exists():
        return HostConfig(root=root)
    table = _Table(_load_toml(path, "sumbg.toml"), "sumbg.toml")
    return parse_host(table, root)


def parse_host(table: _Table, root: Path) -> HostConfig:
    edge_t = table.table("edge")
    edge = EdgeSettings(
        http_port=edge_t.port("http_port", 80),
        https_port=edge_t.port("https_port", 443),
        preview_port=edge_t.port("preview_port", 8081),
        bind=edge_t.get("bind", str, "0.0.0.0"),
        tls=edge_t.choice("tls", TLS_MODES, "auto"),
        acme_email=edge_t.get("acme_email", str, ""),
        acme_ca=edge_t.get("acme_ca", str, ""),
        acme_ca_root=edge_t.get("acme_ca_root", str, ""),
        name=edge_t.get("name", str, "sum-edge"),
    )
    if edge.acme_ca and not re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?", edge.acme_ca):
        raise edge_t.fail("acme_ca", f"must be the https:// URL of an ACME directory, not {edge.acme_ca!r}")
    if edge.acme_ca_root and not (edge.acme_ca_root.startswith("/") and Path(edge.acme_ca_root).is_file()):
        raise edge_t.fail("acme_ca_root", f"must be the absolute path of a PEM file, not {edge.acme_ca_root!r}")
    if not naming.SLUG_PATTERN.fullmatch(edge.name):
        raise edge_t.fail("name", "must match ^[a-z0-9][a-z0-9-]{0,62}$")
    if edge.acme_email and not _looks_like_email(edge.acme_email):
        raise edge_t.fail("acme_email", "must be an email address")
    if not _looks_like_ip(edge.bind):
        raise edge_t.fail("bind", f"must be an IP address, not {edge.bind!r}")
    if len({edge.http_port, edge.https_port, edge.preview_port}) != 3:
        raise edge_t.fail("preview_port", "http_port, https_port and preview_port must all differ")
    edge_t.reject_unknown()

    images_t = table.table("images")
    defaults = Images()
    images = Images(
        **{
            name: _image_ref(images_t, name, getattr(defaults, name))
            for name in ("python", "postgres", "redis", "caddy")
        }
    )
    images_t.reject_unknown()

    build, ca_bundle = _parse_build(table.table("build"), site=False)

    preflight_t = table.table("preflight")
    min_free_gb = float(preflight_t.get("min_free_gb", (int, float), 2.0))
    if min_free_gb < 0:
        raise preflight_t.fail("min_free_gb", "must not be negative")
    preflight_t.reject_unknown()
    upgrade_t = table.table("upgrade")
    retire_idle_after = upgrade_t.duration("retire_idle_after", 0.0)
    background_cpu_shares = upgrade_t.get("background_cpu_shares", int, 128)
    if not 2 <= background_cpu_shares <= LIVE_CPU_SHARES:
        raise upgrade_t.fail(
            "background_cpu_shares",
            f"must be from 2 to {LIVE_CPU_SHARES} (the live colour's), not {background_cpu_shares}",
        )
    upgrade_t.reject_unknown()
    table.reject_unknown()
    return HostConfig(
        root=root,
        edge=edge,
        images=images,
        ca_bundle=ca_bundle,
        min_free_gb=min_free_gb,
        build=build,
        retire_idle_after=retire_idle_after,
        background_cpu_shares=background_cpu_shares,
    )


def _image_ref(table: _Table, key: str, default: str) -> str:
    value = table.get(key, str, default)
    if not value or any(ch.isspace() for ch in value) or value.startswith("-"):
        raise table.fail(key, f"must be an image reference like {default!r}")
    return value


def _looks_like_email(value: str) -> bool:
    return "@" in value and not any(ch.isspace() or ch in "{}\"'" for ch in value)


def _looks_like_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- site configuration


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
    db_publish_port: int = 0
    health_timeout: float = 120.0
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

    @property
    def domains(self) -> tuple[str, ...]:
        """Every name the site answers to, the canonical one first."""
        return (self.domain, *self.aliases)

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
    site = parse_site(_Table(_load_toml(path, "site.toml"), "site.toml"))
    if site.slug != slug:
        raise ConfigError(f"site.toml: slug: is {site.slug!r} but the site folder is {slug!r}")
    return site


def parse_site(table: _Table) -> SiteConfig:
    slug = table.get("slug", str, required=True)
    if not naming.SLUG_PATTERN.fullmatch(slug):
        raise table.fail("slug", "must match ^[a-z0-9][a-z0-9-]{0,62}$")
    domains = _parse_domains(table)
    domain, aliases = domains[0], tuple(domains[1:])
    repo = table.get("repo", str, required=True)
    environment = table.get("environment", str, "production")
    notes = table.get("notes", str, "")

    app = table.table("app")
    project = app.get("project", str, "")
    if project and not project.isidentifier():
        raise app.fail("project", "must be a Python package name")
    settings_module = app.get("settings", str, f"{project}.settings.production" if project else "")
    wsgi = app.get("wsgi", str, f"{project}.wsgi:application" if project else "")
    for key, value in (("settings", settings_module), ("wsgi", wsgi)):
        if not value or not all(part.isidentifier() for part in value.replace(":", ".").split(".")):
            raise app.fail(key, "must be a dotted Python path (set app.project or app.settings/app.wsgi)")
    web_workers = app.positive("web_workers", int, 2)
    worker_command = app.get("worker_command", str, "")
    if "\n" in worker_command:
        raise app.fail("worker_command", "must be a single line")
    app.reject_unknown()

    env_t = table.table("env")
    extra_env = []
    for key in env_t.data:
        value = env_t.get(key, str)
        if not _ENV_NAME.fullmatch(key) or "\n" in value:
            raise env_t.fail(key, 'must be NAME = "single-line value"')
        extra_env.append((key, value))
    env_t.reject_unknown()

    database = table.table("database")
    db_publish_port = database.port("publish_port", 0, allow_zero=True)
    database.reject_unknown()

    health = table.table("health")
    health_timeout = float(health.positive("timeout", (int, float), 120))
    health.reject_unknown()

    upgrade = table.table("upgrade")
    keep_backups = upgrade.positive("keep_backups", int, 10)
    watch_seconds = float(upgrade.get("watch", (int, float), 30))
    if watch_seconds < 0:
        raise upgrade.fail("watch", "must not be negative")
    retire_idle_after = upgrade.duration("retire_idle_after", None)
    upgrade.reject_unknown()

    watch = _parse_watch(table.table("watch"))

    migrations = _parse_migrations(table.table("migrations"))

    build, _ = _parse_build(table.table("build"), site=True)

    caddy = _parse_caddy(table.table("caddy"))

    smoke = table.table("smoke")
    checks_raw = smoke.get("checks", list, None)
    if checks_raw is None:
        # The defaults follow the site's basic auth: a protected path answers 401 to sumbg.
        smoke_checks = tuple(
            replace(check, status=401) if _protected(check.path, caddy) else check for check in DEFAULT_SMOKE_CHECKS
        )
    else:
        smoke_checks = tuple(_parse_check(item, index) for index, item in enumerate(checks_raw))
        for index, check in enumerate(smoke_checks):
            rule = _protected(check.path, caddy)
            if rule and check.status != 401:
                raise ConfigError(
                    f"site.toml: smoke.checks[{index}].status: {check.path} is behind "
                    f"caddy.basic_auth ({rule.path}), so sumbg gets 401: say status = 401"
                )
    smoke.reject_unknown()
    table.reject_unknown()
    return SiteConfig(
        slug=slug,
        domain=domain,
        repo=repo,
        environment=environment,
        project=project,
        settings_module=settings_module,
        wsgi=wsgi,
        web_workers=web_workers,
        worker_command=worker_command,
        db_publish_port=db_publish_port,
        health_timeout=health_timeout,
        smoke_checks=smoke_checks,
        keep_backups=keep_backups,
        watch_seconds=watch_seconds,
        watch=watch,
        notes=notes,
        extra_env=tuple(extra_env),
        build=build,
        caddy=caddy,
        aliases=aliases,
        migrations=migrations,
        retire_idle_after=retire_idle_after,
    )


def _parse_domains(table: _Table) -> list[str]:
    """`domains = [...]` (the first is canonical), or the older single `domain = "..."`."""
    if "domains" in table.data and "domain" in table.data:
        raise table.fail("domain", "give either domain or domains, not both")
    if "domain" in table.data:
        domains, key = [table.get("domain", str)], "domain"
    else:
        domains, key = table.get("domains", list, required=True), "domains"
        if not domains:
            raise table.fail(key, "must name at least one domain")
    for index, domain in enumerate(domains):
        where = key if key == "domain" else f"{key}[{index}]"
        if not isinstance(domain, str) or not naming.DOMAIN_PATTERN.fullmatch(domain):
            raise table.fail(where, "must be a hostname (lowercase letters, digits, hyphens, dots)")
    if len(set(domains)) != len(domains):
        raise table.fail(key, "names a domain twice")
    return domains


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_HEADER_VALUE = re.compile(r'[^"\\{}`\x00-\x1f\x7f]*')
_AUTH_PATH = re.compile(r"/[A-Za-z0-9/_.*-]*")
_AUTH_USER = re.compile(r"[A-Za-z0-9._-]+")
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


def _parse_caddy(table: _Table) -> CaddySettings:
    headers = []
    headers_t = table.table("headers")
    for name in headers_t.data:
        value = headers_t.get(name, str)
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise headers_t.fail(
                name, 'must be Header-Name = "value" without quotes, backslashes, braces or control characters'
            )
        headers.append((name, value))
    headers_t.reject_unknown()
    rules = []
    for index, item in enumerate(table.get("basic_auth", list, [])):
        if not isinstance(item, dict):
            raise table.fail(f"basic_auth[{index}]", "must be a table with path, user and hash")
        rule_t = _Table(item, table.file, f"{table.prefix}basic_auth[{index}].")
        path = rule_t.get("path", str, required=True)
        if not _AUTH_PATH.fullmatch(path):
            raise rule_t.fail("path", "must be a path pattern like /admin/*")
        user = rule_t.get("user", str, required=True)
        if not _AUTH_USER.fullmatch(user):
            raise rule_t.fail("user", "must be letters, digits, dots, hyphens or underscores")
        hash_ = rule_t.get("hash", str, required=True)
        if not _BCRYPT.fullmatch(hash_):
            raise rule_t.fail("hash", "must be a bcrypt hash from `caddy hash-password` (never a plain password)")
        rule_t.reject_unknown()
        rules.append(BasicAuth(path, user, hash_))
    extra = table.get("extra", str, "")
    problem = _unbalanced(extra)
    if problem:
        raise table.fail("extra", problem)
    settings = CaddySettings(
        redirect_to_canonical=table.get("redirect_to_canonical", bool, True),
        encode=table.get("encode", bool, True),
        security_headers=table.get("security_headers", bool, True),
        headers=tuple(headers),
        basic_auth=tuple(rules),
        extra=extra,
        behind_proxy=table.get("behind_proxy", bool, False),
    )
    table.reject_unknown()
    return settings


def _unbalanced(text: str) -> str:
    """Why raw directives could leave their place in the site block, or ""."""
    if "\x00" in text:
        return "must not contain NUL"
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        depth += line.count("{") - line.count("}")
        if depth < 0:
            return f"line {number} closes a block it did not open: braces must balance"
    return "" if depth == 0 else "braces must balance (a block is left open)"


def _protected(path: str, caddy: CaddySettings) -> BasicAuth | None:
    return next((rule for rule in caddy.basic_auth if fnmatch.fnmatchcase(path, rule.path)), None)


def _parse_migrations(table: _Table) -> MigrationSettings:
    defaults = MigrationSettings()
    read_paths = table.get("read_paths", list, [])
    for index, path in enumerate(read_paths):
        if not isinstance(path, str) or not path.startswith("/") or any(ch.isspace() for ch in path):
            raise table.fail(f"read_paths[{index}]", "must be a path starting with / (no spaces)")
    settings = MigrationSettings(
        rehearsal=table.get("rehearsal", bool, defaults.rehearsal),
        rehearsal_max_mb=table.positive("rehearsal_max_mb", int, defaults.rehearsal_max_mb),
        read_paths=tuple(read_paths),
    )
    table.reject_unknown()
    return settings


def _parse_watch(table: _Table) -> WatchSettings:
    defaults = WatchSettings()
    watch = WatchSettings(
        interval=float(table.positive("interval", (int, float), defaults.interval)),
        consecutive_failures=table.positive("consecutive_failures", int, defaults.consecutive_failures),
        max_failed_ratio=float(table.get("max_failed_ratio", (int, float), defaults.max_failed_ratio)),
        min_probes=table.positive("min_probes", int, defaults.min_probes),
        max_visitor_5xx=table.positive("max_visitor_5xx", int, defaults.max_visitor_5xx),
        max_visitor_5xx_ratio=float(table.get("max_visitor_5xx_ratio", (int, float), defaults.max_visitor_5xx_ratio)),
    )
    for key in ("max_failed_ratio", "max_visitor_5xx_ratio"):
        if not 0 <= getattr(watch, key) < 1:
            raise table.fail(key, f"must be a share from 0 up to (not including) 1, not {getattr(watch, key)}")
    table.reject_unknown()
    return watch


def _parse_check(item: Any, index: int) -> SmokeCheck:
    if not isinstance(item, dict):
        raise ConfigError(f"site.toml: smoke.checks[{index}]: must be a table")
    check = _Table(item, "site.toml", f"smoke.checks[{index}].")
    path = check.get("path", str, required=True)
    if not path.startswith("/") or any(ch.isspace() for ch in path):
        raise check.fail("path", "must start with / and contain no spaces")
    status = check.get("status", int, 200)
    if not 100 <= status <= 599:
        raise check.fail("status", "must be an HTTP status code")
    method = check.choice("method", ("GET", "POST"), "GET")
    form = check.get("form", dict, {})
    if any(not isinstance(v, str) for v in form.values()):
        raise check.fail("form", "values must be strings")
    json_status = check.get("json_status", list, [])
    if any(not isinstance(v, str) for v in json_status):
        raise check.fail("json_status", "must be a list of strings")
    csrf_from = check.get("csrf_from", str, "")
    if csrf_from and not csrf_from.startswith("/"):
        raise check.fail("csrf_from", "must start with /")
    result = SmokeCheck(
        path=path,
        status=status,
        method=method,
        content_type=check.get("content_type", str, ""),
        contains=check.get("contains", str, ""),
        json_status=tuple(json_status),
        form=tuple(form.items()),
        csrf_from=csrf_from,
    )
    check.reject_unknown()
    return result


# ---------------------------------------------------------------- writing site.toml


def render_site_toml(site: SiteConfig) -> str:
    """site.toml as `sumbg init` writes it: every setting spelled out, so people can edit it."""
    q = _toml_string
    lines = [
        "# Written by `sumbg init`; edit freely, sumbg validates it before every operation.",
        f"slug = {q(site.slug)}",
        "# The first domain is canonical (checks use it); the others answer too.",
        f"domains = [{', '.join(q(d) for d in site.domains)}]",
        f"repo = {q(site.repo)}",
        f"environment = {q(site.environment)}",
        f"notes = {q(site.notes)}",
        "",
        "[app]",
        f"project = {q(site.project)}",
        f"settings = {q(site.settings_module)}",
        f"wsgi = {q(site.wsgi)}",
        f"web_workers = {site.web_workers}",
        "# A shell command for a background worker (e.g. celery -A proj worker); empty for none.",
        f"worker_command = {q(site.worker_command)}",
        "",
        "[env]",
        *(f"{key} = {q(value)}" for key, value in site.extra_env),
        "",
        "[database]",
        "# Publish Postgres on 127.0.0.1:PORT for diagnosis; 0 keeps it private.",
        f"publish_port = {site.db_publish_port}",
        "",
        "[health]",
        f"timeout = {_number(site.health_timeout)}",
        "",
        "[upgrade]",
        f"keep_backups = {site.keep_backups}",
        f"watch = {_number(site.watch_seconds)}",
        "# Stop the idle colour this long after an upgrade went live (`sumbg retire --due`, from cron):",
        "# less memory, and a rollback then restarts it (not instant). 0 keeps it; unset: sumbg.toml's.",
        (
            f"retire_idle_after = {_number(site.retire_idle_after)}"
            if site.retire_idle_after is not None
            else '# retire_idle_after = "2d"'
        ),
        "",
        "# The watch after a switch reverts only on a failure that persists: this many failed",
        "# probes in a row, or more than max_failed_ratio of them (after min_probes), or at least",
        "# max_visitor_5xx answers in the 5xx range that Caddy gave the site's visitors, above",
        "# max_visitor_5xx_ratio of its requests.",
        "[watch]",
        f"interval = {_number(site.watch.interval)}",
        f"consecutive_failures = {site.watch.consecutive_failures}",
        f"max_failed_ratio = {_number(site.watch.max_failed_ratio)}",
        f"min_probes = {site.watch.min_probes}",
        f"max_visitor_5xx = {site.watch.max_visitor_5xx}",
        f"max_visitor_5xx_ratio = {_number(site.watch.max_visitor_5xx_ratio)}",
        "",
        "# Before `migrate` touches the live database, an upgrade restores the fresh backup into a",
        "# scratch database, migrates that copy, and runs the smoke checks and read_paths against",
        "# the LIVE release pointed at the migrated copy: if it fails there, the release is breaking",
        "# and is refused unless `--maintenance` or `--accept-breaking` is given. Databases larger",
        "# than rehearsal_max_mb skip the rehearsal (say so) to keep the upgrade short.",
        "[migrations]",
        f"rehearsal = {str(site.migrations.rehearsal).lower()}",
        f"rehearsal_max_mb = {site.migrations.rehearsal_max_mb}",
        f"read_paths = [{', '.join(q(p) for p in site.migrations.read_paths)}]",
        "",
        *_render_caddy(site.caddy),
        *render_build_toml(site.build),
    ]
    for check in site.smoke_checks:
        lines.append("[[smoke.checks]]")
        lines.append(f"path = {q(check.path)}")
        if check.method != "GET":
            lines.append(f"method = {q(check.method)}")
        lines.append(f"status = {check.status}")
        if check.content_type:
            lines.append(f"content_type = {q(check.content_type)}")
        if check.contains:
            lines.append(f"contains = {q(check.contains)}")
        if check.json_status:
            lines.append(f"json_status = [{', '.join(q(s) for s in check.json_status)}]")
        if check.csrf_from:
            lines.append(f"csrf_from = {q(check.csrf_from)}")
        if check.form:
            lines.append("form = { " + ", ".join(f"{q(k)} = {q(v)}" for k, v in check.form) + " }")
        lines.append("")
    if not site.smoke_checks:
        lines += ["[smoke]", "checks = []", ""]
    return "\n".join(lines)


def _render_caddy(caddy: CaddySettings) -> list[str]:
    q = _toml_string
    lines = [
        "# The site's block in the edge Caddy (the SUM golden path by default). After editing,",
        "# `sumbg apply` renders, validates (caddy validate) and reloads the edge.",
        "[caddy]",
        "# Other domains redirect (308) to the first one; false: every domain serves the site.",
        f"redirect_to_canonical = {str(caddy.redirect_to_canonical).lower()}",
        "encode = " + str(caddy.encode).lower() + "  # gzip and zstd",
        "# X-Content-Type-Options, X-Frame-Options, Referrer-Policy, Permissions-Policy as on the golden path.",
        f"security_headers = {str(caddy.security_headers).lower()}",
        "# true: TLS ends at a proxy in front of the edge (the host Caddy `sumbg adopt` kept), plain HTTP here.",
        f"behind_proxy = {str(caddy.behind_proxy).lower()}",
        "# Raw Caddyfile directives inside the site block (braces must balance), e.g. for a path matcher.",
        f"extra = {q(caddy.extra)}",
        '# Response headers added or overridden ("" removes one): { "X-Frame-Options" = "SAMEORIGIN" }',
        "headers = { " + ", ".join(f"{q(k)} = {q(v)}" for k, v in caddy.headers) + (" }" if caddy.headers else "}"),
        "",
    ]
    if not caddy.basic_auth:
        lines += [
            "# Basic auth on a path (e.g. staging's /admin/*); hash from `caddy hash-password`:",
            "# [[caddy.basic_auth]]",
            '# path = "/admin/*"',
            '# user = "staging"',
            '# hash = "$2a$14$..."',
            "",
        ]
    for rule in caddy.basic_auth:
        lines += [
            "[[caddy.basic_auth]]",
            f"path = {q(rule.path)}",
            f"user = {q(rule.user)}",
            f"hash = {q(rule.hash)}",
            "",
        ]
    return lines


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, provided non-ASCII stays literal (TOML has
    # no surrogate-pair escapes) and DEL is escaped (TOML forbids it raw).
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ---------------------------------------------------------------- fleet file

FLEET_ENV = "SUMBG_FLEET"
# An SSH destination as ssh(1) takes it: [user@]host or ssh://[user@]host[:port]; never an option.
_SSH_DESTINATION = re.compile(
    r"^(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9._-]+$|^ssh://(?:[A-Za-z0-9._%+-]+@)?[A-Za-z0-9._-]+(?::\d{1,5})?$"
)


@dataclass(frozen=True)
class FleetHost:
    name: str
    ssh: str  # an SSH destination, or "local": this machine, no SSH
    root: str = str(DEFAULT_ROOT)
    sumbg: str = "sumbg"  # the command on that host (e.g. /opt/sumbg/.venv/bin/sumbg)

    @property
    def local(self) -> bool:
        return self.ssh == "local"


@dataclass(frozen=True)
class FleetConfig:
    path: Path
    hosts: tuple[FleetHost, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    parallel: int = 1  # upgrades at a time on one host
    max_parallel: int = 4  # upgrades at a time in the whole fleet
    ssh_config: Path | None = None
    connect_timeout: int = 10
    runs_dir: Path = Path(".sumbg-fleet")
    matrix: Path = Path("SITES.md")

    def host(self, name: str) -> FleetHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise UsageError(f"{self.path.name}: no host named {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")


def fleet_path(given: str | None) -> Path:
    value = given or os.environ.get(FLEET_ENV)
    if not value:
        raise UsageError(f"name the fleet file with --fleet PATH or ${FLEET_ENV}")
    return Path(value).absolute()


def load_fleet(path: Path) -> FleetConfig:
    label = path.name
    table = _Table(_load_toml(path, label), label)
    beside = path.parent

    def relative(value: str) -> Path:
        return (beside / value).absolute() if not Path(value).is_absolute() else Path(value)

    fleet_t = table.table("fleet")
    parallel = fleet_t.positive("parallel", int, 1)
    max_parallel = fleet_t.positive("max_parallel", int, 4)
    runs_dir = relative(fleet_t.get("runs", str, ".sumbg-fleet"))
    matrix = relative(fleet_t.get("matrix", str, "SITES.md"))
    fleet_t.reject_unknown()

    ssh_t = table.table("ssh")
    ssh_config = ssh_t.get("config", str, None)
    connect_timeout = ssh_t.positive("connect_timeout", int, 10)
    ssh_t.reject_unknown()

    hosts_t = table.table("hosts")
    hosts = []
    for name in hosts_t.data:
        if not naming.SLUG_PATTERN.fullmatch(name):
            raise hosts_t.fail(name, "a host name must match ^[a-z0-9][a-z0-9-]{0,62}$")
        host_t = hosts_t.table(name)
        ssh = host_t.get("ssh", str, required=True)
        if ssh != "local" and (ssh.startswith("-") or not _SSH_DESTINATION.fullmatch(ssh)):
            raise host_t.fail(
                "ssh", f'must be an SSH destination ([user@]host, ssh://[user@]host:port) or "local", not {ssh!r}'
            )
        root = host_t.get("root", str, str(DEFAULT_ROOT))
        if not root.startswith("/") or any(ch.isspace() for ch in root):
            raise host_t.fail("root", f"must be an absolute path with no spaces, not {root!r}")
        command = host_t.get("sumbg", str, "sumbg")
        if not command.strip() or "\n" in command:
            raise host_t.fail("sumbg", "must be the sumbg command on that host, on one line")
        host_t.reject_unknown()
        hosts.append(FleetHost(name=name, ssh=ssh, root=root, sumbg=command))
    if not hosts:
        raise ConfigError(
            f'{label}: hosts: at least one host is needed: [hosts.NAME] with ssh = "user@host" (or "local")'
        )

    groups_t = table.table("groups")
    groups = {}
    for name in groups_t.data:
        members = groups_t.get(name, list)
        if not naming.SLUG_PATTERN.fullmatch(name) or not members or not all(isinstance(m, str) for m in members):
            raise groups_t.fail(name, 'must be NAME = ["slug", "host/slug", ...] with a lowercase name')
        groups[name] = tuple(members)
    groups_t.reject_unknown()
    table.reject_unknown()
    return FleetConfig(
        path=path,
        hosts=tuple(hosts),
        groups=groups,
        parallel=parallel,
        max_parallel=max_parallel,
        ssh_config=relative(ssh_config) if ssh_config else None,
        connect_timeout=connect_timeout,
        runs_dir=runs_dir,
        matrix=matrix,
    )
