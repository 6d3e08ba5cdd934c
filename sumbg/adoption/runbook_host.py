"""A site deployed the runbook way, before sumbg: read it, and drive its units and host Caddy.

The golden path: /srv/sum/<slug>/{app,venv,static,media,backups,.env}, gunicorn (and
optionally Celery) as systemd units, PostgreSQL and Redis on the host, Caddy from the
system package with one sites-enabled/sum-<slug>.caddy per site. `read_deployment`
only reads files; `RunbookServices` is the only code that runs systemctl.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sumbg.adapters import gitrepo
from sumbg.errors import RunbookError, UsageError, tail

# Variables sumbg sets itself for the containers (their host values point at the host's
# services and folders); everything else in the old .env is carried over unchanged.
OWNED_BY_SUMBG = frozenset(
    {
        "DJANGO_SETTINGS_MODULE",
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "DJANGO_DB_NAME",
        "DJANGO_DB_USER",
        "DJANGO_DB_PASSWORD",
        "DJANGO_DB_HOST",
        "DJANGO_DB_PORT",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_HOST",
        "DB_PORT",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "DJANGO_STATIC_ROOT",
        "DJANGO_MEDIA_ROOT",
    }
)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


@dataclass(frozen=True)
class DatabaseSource:
    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


@dataclass(frozen=True)
class Unit:
    name: str
    path: Path
    exec_start: str
    working_directory: str
    environment: tuple[tuple[str, str], ...]
    environment_files: tuple[str, ...]


@dataclass(frozen=True)
class Deployment:
    """Everything sumbg needs to know about a runbook deployment, read from its files."""

    source: Path
    env: dict[str, str] = field(repr=False)
    settings_module: str
    database: DatabaseSource
    media_dir: Path
    web_unit: Unit
    worker_unit: Unit | None
    beat_unit: Unit | None
    app_address: str
    caddy_site_file: Path
    domains: tuple[str, ...]
    tls_lines: tuple[str, ...]
    caddy_ports: tuple[int, int]
    checkout: gitrepo.Checkout

    @property
    def units(self) -> tuple[Unit, ...]:
        return (self.web_unit,) + tuple(u for u in (self.worker_unit, self.beat_unit) if u)

    def facts(self) -> dict:
        return {
            "from": str(self.source),
            "commit": self.checkout.commit,
            "origin": self.checkout.origin,
            "domains": list(self.domains),
            "database": self.database.describe(),
            "media": str(self.media_dir),
            "units": [u.name for u in self.units],
            "caddy_site_file": str(self.caddy_site_file),
            "settings": self.settings_module,
            "carried_env": sorted(k for k in self.env if k not in OWNED_BY_SUMBG),
        }


@dataclass(frozen=True)
class RunbookPaths:
    """Where the host keeps what the runbook set up (the Debian packages' defaults)."""

    systemd_dir: Path = Path("/etc/systemd/system")
    caddy_dir: Path = Path("/etc/caddy")


# ------------------------------------------------------------------ parsing (pure)


def parse_env_file(text: str) -> dict[str, str]:
    """A .env as systemd's EnvironmentFile and `set -a; .` both read it (KEY=VALUE, optional quotes)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def parse_unit(name: str, path: Path, text: str) -> Unit:
    exec_start, workdir, env, env_files = "", "", [], []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Service" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key == "ExecStart":
            exec_start = value.lstrip("-@+!:")
        elif key == "WorkingDirectory":
            workdir = value.lstrip("-")
        elif key == "Environment":
            for item in shlex.split(value):
                k, sep, v = item.partition("=")
                if sep:
                    env.append((k, v))
        elif key == "EnvironmentFile":
            env_files.append(value.lstrip("-"))
    return Unit(name, path, exec_start, workdir, tuple(env), tuple(env_files))


def gunicorn_address(exec_start: str) -> str:
    """The address gunicorn binds (`--bind X`, `--bind=X`, `-b X`), 127.0.0.1:8000 by default."""
    args = shlex.split(exec_start)
    for index, arg in enumerate(args):
        if arg in ("--bind", "-b") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--bind="):
            return arg.split("=", 1)[1]
        if arg.startswith("-b") and len(arg) > 2:
            return arg[2:]
    return "127.0.0.1:8000"


def database_from_env(env: dict[str, str]) -> DatabaseSource | None:
    url = env.get("DATABASE_URL", "")
    if url:
        parts = urlsplit(url)
        if parts.scheme.split("+")[0] not in ("postgres", "postgresql", "pgsql") or not parts.path.strip("/"):
            return None
        return DatabaseSource(
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            name=unquote(parts.path.strip("/")),
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
        )
    for prefix in ("DJANGO_DB_", "DB_", "POSTGRES_"):
        name = env.get(prefix + "NAME") or (env.get(prefix + "DB") if prefix == "POSTGRES_" else None)
        if name:
            port = env.get(prefix + "PORT") or "5432"
            if not port.isdigit():
                return None
            return DatabaseSource(
                host=env.get(prefix + "HOST") or "localhost",
                port=int(port),
                name=name,
                user=env.get(prefix + "USER") or name,
                password=env.get(prefix + "PASSWORD", ""),
            )
    return None


def _strip_comments(text: str) -> str:
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def caddy_blocks(text: str) -> list[tuple[str, str]]:
    """Top-level blocks of a Caddyfile: (what stands before `{`, the body)."""
    text = _strip_comments(text)
    blocks, depth, head, body, start = [], 0, "", [], 0
    for index, char in enumerate(text):
        if char == "{":
            if depth == 0:
                head = text[start:index].strip()
                body = []
            else:
                body.append(char)
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise UsageError("unbalanced braces in the Caddy site file")
            if depth == 0:
                blocks.append((head, "".join(body)))
                start = index + 1
            else:
                body.append(char)
        elif depth > 0:
            body.append(char)
    if depth:
        raise UsageError("unbalanced braces in the Caddy site file")
    return blocks


def _address_host(address: str) -> str:
    address = re.sub(r"^[a-z]+://", "", address.strip().rstrip(","))
    return address.rsplit(":", 1)[0] if re.search(r":\d+$", address) else address


def site_domains(site_file_text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(domains, tls lines) of a golden-path site file: the names of the block that proxies to the
    app first, then the names of the other blocks (a www redirect, say)."""
    serving, others, tls = [], [], []
    for head, body in caddy_blocks(site_file_text):
        if not head or head.startswith("(") or head.startswith("import"):
            continue
        names = [_address_host(a) for a in re.split(r"[,\s]+", head.splitlines()[-1]) if a.strip()]
        if "reverse_proxy" in body:
            serving.extend(names)
            tls.extend(line.strip() for line in body.splitlines() if line.strip().startswith("tls "))
        else:
            others.extend(names)
    return tuple(dict.fromkeys(serving + others)), tuple(tls)


def caddy_ports(main_caddyfile_text: str) -> tuple[int, int]:
    """The host Caddy's http and https ports (global options), 80 and 443 by default."""
    blocks = caddy_blocks(main_caddyfile_text)
    global_body = next((body for head, body in blocks if head == ""), "")
    ports = {"http_port": 80, "https_port": 443}
    for line in global_body.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] in ports and words[1].isdigit():
            ports[words[0]] = int(words[1])
    return ports["http_port"], ports["https_port"]


def caddy_global_option(main_caddyfile_text: str, name: str) -> str:
    """A one-word global option of the host Caddy's main file (e.g. `email`), or ''."""
    global_body = next((body for head, body in caddy_blocks(main_caddyfile_text) if head == ""), "")
    for line in global_body.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == name:
            return words[1]
    return ""


def carried_env(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The old .env's variables the containers keep as they are, and warnings about values that
    only make sense on the old host (they reach the container unchanged; the operator decides)."""
    carried = {k: v for k, v in env.items() if k not in OWNED_BY_SUMBG and k != "DATABASE_URL"}
    warnings = []
    for key, value in carried.items():
        if "://" in value and (urlsplit(value).hostname or "") in _LOCAL_HOSTS:
            warnings.append(
                f"{key} points at this host ({urlsplit(value).hostname}), which from inside a "
                f"container is the container itself"
            )
        elif value.startswith("/srv/sum/") or value.startswith("/var/"):
            warnings.append(f"{key} names a path on the host ({value}), not inside the container")
    return carried, warnings


# ------------------------------------------------------------------ reading a deployment


def read_deployment(source: Path, slug: str, paths: RunbookPaths, *, domains: tuple[str, ...] = ()) -> Deployment:
    """Read a runbook deployment; every missing or unreadable part is one clear UsageError."""
    source = source.absolute()
    if not source.is_dir():
        raise UsageError(f"--from {source} is not a folder")
    env_path = source / ".env"
    if not env_path.is_file():
        raise UsageError(f"{env_path} does not exist: not a runbook deployment (expected app/, venv/, media/, .env)")
    try:
        env = parse_env_file(env_path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {env_path}: {exc.strerror}") from None
    app_dir = source / "app"
    if not app_dir.is_dir():
        raise UsageError(f"{app_dir} does not exist: not a runbook deployment (expected app/, venv/, media/, .env)")
    web_unit, worker_unit, beat_unit = find_units(source, paths.systemd_dir)
    merged = {**dict(web_unit.environment), **env}
    database = database_from_env(merged)
    if database is None:
        raise UsageError(f"{env_path} names no PostgreSQL database (DATABASE_URL or DJANGO_DB_NAME/USER/...)")
    settings = merged.get("DJANGO_SETTINGS_MODULE", "")
    media = Path(merged.get("DJANGO_MEDIA_ROOT") or merged.get("MEDIA_ROOT") or source / "media")
    if not media.is_absolute():
        media = source / media
    site_file = find_caddy_site(paths.caddy_dir, slug, source, gunicorn_address(web_unit.exec_start))
    found_domains, tls_lines = site_domains(site_file.read_text())
    if not found_domains and not domains:
        raise UsageError(f"{site_file} names no site address; give the domains with --domain")
    main = paths.caddy_dir / "Caddyfile"
    ports = caddy_ports(main.read_text()) if main.is_file() else (80, 443)
    checkout = gitrepo.read_checkout(app_dir)
    return Deployment(
        source=source,
        env=merged,
        settings_module=settings,
        database=database,
        media_dir=media,
        web_unit=web_unit,
        worker_unit=worker_unit,
        beat_unit=beat_unit,
        app_address=gunicorn_address(web_unit.exec_start),
        caddy_site_file=site_file,
        domains=tuple(domains) or found_domains,
        tls_lines=tls_lines,
        caddy_ports=ports,
        checkout=checkout,
    )


def find_units(source: Path, systemd_dir: Path) -> tuple[Unit, Unit | None, Unit | None]:
    """The units that run the app under `source`: gunicorn, and Celery's worker and beat if any."""
    web, worker, beat = [], [], []
    for path in sorted(systemd_dir.glob("*.service")) if systemd_dir.is_dir() else []:
        try:
            unit = parse_unit(path.name, path, path.read_text())
        except OSError:
            continue
        mentions = (
            str(source) in unit.exec_start
            or unit.working_directory.startswith(str(source))
            or any(f.startswith(str(source)) for f in unit.environment_files)
        )
        if not mentions or not unit.exec_start:
            continue
        words = [Path(word).name for word in shlex.split(unit.exec_start)]
        if "gunicorn" in words[:3]:
            web.append(unit)
        elif "celery" in " ".join(words):
            if words[0] != "celery" or "multi" in words:
                raise UsageError(
                    f"{path.name} does not run `celery ... worker` itself ({unit.exec_start[:60]}): "
                    "unknown layout; make it run one worker (celery -A <project> worker), then adopt"
                )
            (beat if "beat" in words and "worker" not in words else worker).append(unit)
    if not web:
        raise UsageError(f"no systemd unit in {systemd_dir} runs gunicorn for {source}: unknown layout")
    for kind, found in (("gunicorn", web), ("a Celery worker", worker), ("Celery beat", beat)):
        if len(found) > 1:
            raise UsageError(
                f"several units run {kind} for {source} ({', '.join(u.name for u in found)}): unknown layout"
            )
    return web[0], (worker[0] if worker else None), (beat[0] if beat else None)


def find_caddy_site(caddy_dir: Path, slug: str, source: Path, app_address: str) -> Path:
    """sites-enabled/sum-<slug>.caddy, or the one site file that proxies to the app's address."""
    enabled = caddy_dir / "sites-enabled"
    named = enabled / f"sum-{slug}.caddy"
    if named.is_file():
        return named
    port = app_address.rsplit(":", 1)[-1]
    matches = [
        p
        for p in sorted(enabled.glob("*"))
        if p.is_file() and re.search(rf"reverse_proxy\s+\S*:{re.escape(port)}\b", p.read_text(errors="replace"))
    ]
    if len(matches) == 1:
        return matches[0]
    raise UsageError(
        f"no Caddy site file for {slug} in {enabled} (expected sum-{slug}.caddy, or one file "
        f"that proxies to {app_address})"
    )


# ------------------------------------------------------------------ driving the old host


class RunbookServices:
    """The host's systemd (the old app's units) and its Caddy."""

    def __init__(self, systemctl: str = "systemctl") -> None:
        self.systemctl = systemctl

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [self.systemctl, *args],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
            )
        except FileNotFoundError:
            raise RunbookError(
                f"{self.systemctl} is not installed: sumbg adopt drives the old site's systemd units"
            ) from None
        except subprocess.TimeoutExpired:
            raise RunbookError(f"systemctl {' '.join(args)} took longer than 120 s") from None

    def _must(self, *args: str) -> None:
        proc = self._run(*args)
        if proc.returncode != 0:
            raise RunbookError(
                f"systemctl {' '.join(args)} failed",
                command=["systemctl", *args],
                returncode=proc.returncode,
                output_tail=tail(proc.stderr or proc.stdout, 5),
            )

    def is_active(self, unit: str) -> bool:
        return self._run("is-active", unit).returncode == 0

    def stop(self, *units: str) -> None:
        """Stopped together, as systemd stops the units of one command in parallel."""
        self._must("stop", *units)

    def start(self, unit: str) -> None:
        self._must("start", unit)

    def disable(self, unit: str) -> None:
        self._must("disable", unit)

    def enable(self, unit: str) -> None:
        self._must("enable", unit)

    def reload_caddy(self) -> None:
        self._must("reload", "caddy")
