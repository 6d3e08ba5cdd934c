"""A site deployed the runbook way, before sumbg: read it, and drive its units and host Caddy.

The golden path: /srv/sum/<slug>/{app,venv,static,media,backups,.env}, gunicorn (and
optionally Celery) as systemd units, gunicorn bound to a unix socket (optionally handed over
by a `.socket` unit), PostgreSQL and Redis on the host, Caddy from the system package with
one sites-enabled/sum-<slug>.caddy per site.

Unit files are read as systemd.syntax(7) and systemd.exec(5) say (continuations, comments,
quoting, prefixes, drop-ins, specifiers); the host Caddy's configuration is read by Caddy
itself (`caddy adapt`, run by a `CaddyRunner`), never by pattern matching. `read_deployment`
only reads files; `RunbookServices` is the only code that runs systemctl.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import shlex
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sumbg.adapters import gitrepo, systemd
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
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    """A systemd unit as systemd reads it: the file, then its drop-ins (later wins)."""

    name: str
    path: Path
    exec_start: str  # the command (ExecStart= without its prefixes), shell-quoted, variables expanded
    working_directory: str
    environment: tuple[tuple[str, str], ...]  # Environment=, in order
    environment_files: tuple[str, ...]  # EnvironmentFile=, in order (without the "-")
    optional_environment_files: frozenset[str] = frozenset()  # those given with "-"
    argv: tuple[str, ...] = ()  # the command as words (the program first)
    user: str = ""
    group: str = ""
    umask: str = ""
    listen_streams: tuple[str, ...] = ()  # a .socket unit's ListenStream=
    service: str = ""  # a .socket unit's Service=
    sockets: tuple[str, ...] = ()  # a service's Sockets=
    dropins: tuple[Path, ...] = ()
    words: tuple[str, ...] = field(default=(), repr=False)  # ExecStart= words before $VARIABLE expansion
    expands_variables: bool = True  # False with ExecStart=:...
    problem: str = ""  # what sumbg cannot read in it (said only if the unit turns out to matter)

    def with_environment(self, env: dict[str, str]) -> Unit:
        """The command as the service manager runs it, with this environment."""
        argv = expand_variables(self.words, env) if self.expands_variables else list(self.words)
        return dataclass_replace(self, argv=tuple(argv), exec_start=shlex.join(argv))


@dataclass(frozen=True)
class HeaderOp:
    """One response header operation of a Caddy `header` directive."""

    op: str  # "set", "add" or "delete"
    name: str
    value: str = ""
    deferred: bool = False


@dataclass(frozen=True)
class CaddySite:
    """One file of the host Caddy's sites-enabled/, as Caddy itself reads it."""

    file: Path
    domains: tuple[str, ...]  # the names of the blocks that proxy to the app first, then the others
    upstreams: tuple[str, ...]  # every reverse_proxy dial address, as Caddy dials it
    tls_lines: tuple[str, ...]  # the `tls` line that gives the same TLS policy, if any
    tls_mode: str = ""  # "internal", "acme", "manual", or "" (Caddy's defaults)
    email: str = ""  # the ACME account's email, if one is set
    encodings: tuple[str, ...] = ()  # `encode` of the serving block
    headers: tuple[HeaderOp, ...] = ()  # `header` operations of the serving block
    not_kept: tuple[str, ...] = ()  # what the serving block does that sumbg's files cannot keep


@dataclass(frozen=True)
class HostCaddy:
    """The host Caddy's configuration: its ports and what each sites-enabled file serves."""

    caddyfile: Path
    http_port: int
    https_port: int
    email: str  # the global ACME email, if any
    sites: tuple[CaddySite, ...]

    @property
    def ports(self) -> tuple[int, int]:
        return self.http_port, self.https_port

    def site(self, path: Path) -> CaddySite:
        return next(site for site in self.sites if site.file == path)

    def proxying_to(self, app_address: str) -> list[CaddySite]:
        return [site for site in self.sites if any(dial_matches(d, app_address) for d in site.upstreams)]


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
    app_address: str  # "unix:/run/sum-<slug>/gunicorn.sock" or "host:port"
    caddy_site_file: Path
    domains: tuple[str, ...]
    tls_lines: tuple[str, ...]
    caddy_ports: tuple[int, int]
    checkout: gitrepo.Checkout
    web_socket: Unit | None = None  # the .socket unit that hands gunicorn its socket, if any
    caddy_site: CaddySite | None = None

    @property
    def units(self) -> tuple[Unit, ...]:
        """Every unit of the old app; a socket unit before its service (started first, stopped with it)."""
        return tuple(u for u in (self.web_socket, self.web_unit, self.worker_unit, self.beat_unit) if u)

    def facts(self) -> dict:
        return {
            "from": str(self.source),
            "commit": self.checkout.commit,
            "origin": self.checkout.origin,
            "domains": list(self.domains),
            "database": self.database.describe(),
            "media": str(self.media_dir),
            "units": [u.name for u in self.units],
            "app_address": self.app_address,
            "caddy_site_file": str(self.caddy_site_file),
            "caddy_ports": list(self.caddy_ports),
            "tls": list(self.tls_lines),
            "settings": self.settings_module,
            "carried_env": sorted(k for k in self.env if k not in OWNED_BY_SUMBG),
        }


@dataclass(frozen=True)
class RunbookPaths:
    """Where the host keeps what the runbook set up (the Debian packages' defaults)."""

    systemd_dir: Path = Path("/etc/systemd/system")
    caddy_dir: Path = Path("/etc/caddy")


# ------------------------------------------------------------------ environment files (pure)


def parse_env_file(text: str) -> dict[str, str]:
    """A .env as systemd's EnvironmentFile= reads it (env-file.c: KEY=VALUE, '#' and ';' comments,
    single and double quotes, backslash escapes and continuations), plus the `export ` prefix a
    shell's `set -a; .` accepts. Lines that are no assignment are skipped, as systemd does."""
    values: dict[str, str] = {}
    state, key, value, value_end = "pre_key", "", "", 0

    def push() -> None:
        name = key.strip()
        if name.startswith("export ") or name.startswith("export\t"):
            name = name[len("export") :].strip()
        if _ENV_NAME.fullmatch(name):
            values[name] = value

    for char in text + "\n":
        newline = char in "\n\r"
        if state == "pre_key":
            if char in "#;":
                state = "comment"
            elif not char.isspace():
                state, key = "key", char
        elif state == "key":
            if newline:
                state, key = "pre_key", ""
            elif char == "=":
                state, value, value_end = "pre_value", "", 0
            else:
                key += char
        elif state == "pre_value":
            if newline:
                push()
                state, key = "pre_key", ""
            elif char == "'":
                state = "single"
            elif char == '"':
                state = "double"
            elif char == "\\":
                state = "value_escape"
            elif not char.isspace():
                state, value = "value", value + char
                value_end = len(value)
        elif state == "value":
            if newline:
                value = value[:value_end]  # trailing blanks of an unquoted value are dropped
                push()
                state, key = "pre_key", ""
            elif char == "\\":
                state = "value_escape"
            else:
                value += char
                if not char.isspace():
                    value_end = len(value)
        elif state == "value_escape":
            state = "value"
            if not newline:  # a backslash before the line's end continues the value
                value += char
                value_end = len(value)
        elif state == "single":
            if char == "'":
                state, value_end = "pre_value", len(value)
            else:
                value += char
        elif state == "double":
            if char == '"':
                state, value_end = "pre_value", len(value)
            elif char == "\\":
                state = "double_escape"
            else:
                value += char
        elif state == "double_escape":
            state = "double"
            if char in '"\\`$':
                value += char
            elif not newline:
                value += "\\" + char
        elif state == "comment":
            if char == "\\":
                state = "comment_escape"
            elif newline:
                state = "pre_key"
        elif state == "comment_escape":
            state = "comment"
    return values


# ------------------------------------------------------------------ systemd unit files (pure)

_SERVICE_SECTIONS = ("Service", "Socket")
_KEYS_WITH_SPECIFIERS = (
    "ExecStart",
    "WorkingDirectory",
    "Environment",
    "EnvironmentFile",
    "User",
    "Group",
    "ListenStream",
    "Service",
    "Sockets",
)
_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "s": " "}


def unit_assignments(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment in a unit file, as systemd.syntax(7) reads it:
    a line ending in a backslash continues on the next (the backslash becomes a space), comment
    lines ('#' or ';' first) are ignored, inside a continued line too, and an empty line ends one."""
    assignments: list[tuple[str, str, str]] = []
    section, continued = "", None

    def take(line: str) -> None:
        nonlocal section
        line = line.strip()
        if not line:
            return
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            return
        key, sep, value = line.partition("=")
        if sep:  # systemd warns about a line without "=" and ignores it
            assignments.append((section, key.strip(), value.strip()))

    for raw in text.splitlines():
        stripped = raw.lstrip()
        if stripped and stripped[0] in "#;":
            continue
        line = raw if continued is None else continued + raw
        if _ends_in_escape(line):
            continued = line[:-1] + " "
            continue
        continued = None
        take(line)
    if continued is not None:
        take(continued)
    return assignments


def _ends_in_escape(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def split_words(value: str, *, what: str = "") -> list[str]:
    """Words as systemd splits a command line or an Environment= value: whitespace separates,
    single and double quotes group (anywhere in a word), C-style backslash escapes."""
    words: list[str] = []
    word, quote, in_word, index = [], "", False, 0
    while index < len(value):
        char = value[index]
        index += 1
        if char == "\\" and index < len(value):
            escaped, index = _c_escape(value, index)
            word.append(escaped)
            in_word = True
        elif quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif char in "'\"":
            quote, in_word = char, True
        elif char.isspace():
            if in_word:
                words.append("".join(word))
            word, in_word = [], False
        else:
            word.append(char)
            in_word = True
    if quote:
        raise UsageError(f"{what or 'a value'}: a quote is not closed")
    if in_word:
        words.append("".join(word))
    return words


def _c_escape(value: str, index: int) -> tuple[str, int]:
    """The character a backslash escape at value[index] stands for, and the index after it."""
    char = value[index]
    if char in _C_ESCAPES:
        return _C_ESCAPES[char], index + 1
    if char == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", value[index + 1 : index + 3]):
        return chr(int(value[index + 1 : index + 3], 16)), index + 3
    if char == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", value[index + 1 : index + 5]):
        return chr(int(value[index + 1 : index + 5], 16)), index + 5
    if char == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", value[index + 1 : index + 9]):
        return chr(int(value[index + 1 : index + 9], 16)), index + 9
    if re.fullmatch(r"[0-7]{3}", value[index : index + 3]):
        return chr(int(value[index : index + 3], 8)), index + 3
    return char, index + 1  # \\ \" \' \; \$ and the like: the character itself


def expand_variables(words: Iterable[str], env: dict[str, str]) -> list[str]:
    """$NAME as a whole word becomes the variable's value split at whitespace (no word if unset);
    ${NAME} anywhere becomes its value as it is; $$ is a dollar (systemd.service(5))."""
    argv: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv.extend(env.get(whole.group(1), "").split())
            continue
        argv.append(
            re.sub(
                r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), ""),
                word,
            )
        )
    return argv


def _unescape_unit_part(text: str) -> str:
    """systemd-escape --unescape: "-" is "/", \\xNN a byte."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text.replace("-", "/"))


SUPPORTED_SPECIFIERS = "%n %N %p %P %i %I %j %J %f %h %u %U %g %G %t %S %C %L %E %T %V %H %l %%"


def resolve_specifiers(value: str, unit_name: str, key: str) -> str:
    """systemd.unit(5)'s specifiers in a value of a system unit (the service manager runs as root,
    so %h is /root and %u root, whatever User= says). Raises UsageError naming one sumbg cannot read."""
    if "%" not in value:
        return value
    stem, _, _ = unit_name.rpartition(".")
    prefix, at, instance = stem.partition("@")
    prefix_last = prefix.rsplit("-", 1)[-1]
    host = socket.gethostname()
    table = {
        "%": "%",
        "n": unit_name,
        "N": stem,
        "p": prefix,
        "P": _unescape_unit_part(prefix),
        "i": instance,
        "I": _unescape_unit_part(instance),
        "j": prefix_last,
        "J": _unescape_unit_part(prefix_last),
        "f": "/" + _unescape_unit_part(instance if at else prefix).lstrip("/"),
        "h": "/root",
        "u": "root",
        "U": "0",
        "g": "root",
        "G": "0",
        "t": "/run",
        "S": "/var/lib",
        "C": "/var/cache",
        "L": "/var/log",
        "E": "/etc",
        "T": "/tmp",
        "V": "/var/tmp",
        "H": host,
        "l": host.split(".")[0],
    }

    def one(match: re.Match) -> str:
        letter = match.group(1)
        if letter not in table:
            raise UsageError(
                f"{unit_name}: {key}= uses the specifier %{letter}, which sumbg adopt does not read "
                f"(it reads {SUPPORTED_SPECIFIERS})"
            )
        return table[letter]

    return re.sub(r"%(.?)", one, value)


def parse_unit(name: str, path: Path, text: str, dropins: Iterable[tuple[Path, str]] = ()) -> Unit:
    """A unit file and its drop-ins (in order), read as systemd reads them: a later assignment of a
    single setting wins, an empty assignment of a list (ExecStart=, Environment=,
    EnvironmentFile=, ListenStream=, Sockets=) empties it. Problems that matter only if the unit
    runs the app (an unsupported specifier, several commands) are kept in `problem`."""
    dropins = list(dropins)
    commands: list[str] = []
    environment: list[tuple[str, str]] = []
    env_files: list[tuple[str, bool]] = []
    listen: list[str] = []
    sockets: list[str] = []
    single: dict[str, str] = {}
    problems: list[str] = []
    for source_text in [text, *(body for _, body in dropins)]:
        for section, key, value in unit_assignments(source_text):
            if section not in _SERVICE_SECTIONS:
                continue
            if key in _KEYS_WITH_SPECIFIERS:
                try:
                    value = resolve_specifiers(value, name, key)
                except UsageError as exc:
                    problems.append(exc.message)
                    continue
            if key == "ExecStart":
                commands = [*commands, value] if value else []
            elif key == "Environment":
                if not value:
                    environment = []
                    continue
                try:
                    items = split_words(value, what=f"{name}: Environment=")
                except UsageError as exc:
                    problems.append(exc.message)
                    continue
                for item in items:
                    variable, sep, setting = item.partition("=")
                    if sep and _ENV_NAME.fullmatch(variable):
                        environment.append((variable, setting))
            elif key == "EnvironmentFile":
                env_files = [*env_files, (value.removeprefix("-"), value.startswith("-"))] if value else []
            elif key == "ListenStream":
                listen = [*listen, value] if value else []
            elif key == "Sockets":
                sockets = [*sockets, *value.split()] if value else []
            else:
                single[key] = value
    words: list[str] = []
    expands = True
    if len(commands) > 1:
        problems.append(
            f"{name} has {len(commands)} ExecStart= lines, which systemd allows only for Type=oneshot: "
            "not a service that serves the app"
        )
    elif commands:
        words, expands, problem = _exec_words(name, commands[0])
        if problem:
            problems.append(problem)
    known = dict(environment)
    # A variable only an EnvironmentFile= sets is not known yet: the words stay as written until
    # `with_environment` expands them with everything the service gets.
    if expands and not any(_unset_variables(word, known) for word in words):
        argv = expand_variables(words, known)
    else:
        argv = list(words)
    return Unit(
        name=name,
        path=path,
        exec_start=shlex.join(argv),
        working_directory=single.get("WorkingDirectory", "").removeprefix("-"),
        environment=tuple(environment),
        environment_files=tuple(p for p, _ in env_files),
        optional_environment_files=frozenset(p for p, optional in env_files if optional),
        argv=tuple(argv),
        user=single.get("User", ""),
        group=single.get("Group", ""),
        umask=single.get("UMask", ""),
        listen_streams=tuple(listen),
        service=single.get("Service", ""),
        sockets=tuple(sockets),
        dropins=tuple(p for p, _ in dropins),
        words=tuple(words),
        expands_variables=expands,
        problem=problems[0] if problems else "",
    )


def _unset_variables(word: str, env: dict[str, str]) -> list[str]:
    names = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^\$([A-Za-z_][A-Za-z0-9_]*)$", word)
    return [a or b for a, b in names if (a or b) not in env]


def _exec_words(name: str, value: str) -> tuple[list[str], bool, str]:
    """The words of one ExecStart= value without its prefixes (systemd.service(5): "-", "@", ":",
    "+", "!", "!!"), whether $VARIABLES are expanded, and a problem if sumbg cannot read it."""
    prefixes = re.match(r"[-@:+!]*", value).group(0)
    rest = value[len(prefixes) :]
    if rest.startswith("|"):
        return [], True, f"{name}: ExecStart=| (a command run by a shell) is not read by sumbg adopt"
    try:
        words = split_words(rest, what=f"{name}: ExecStart=")
    except UsageError as exc:
        return [], True, exc.message
    if "@" in prefixes and len(words) >= 2:
        words = [words[0], *words[2:]]  # the second word is only argv[0]
    return words, ":" not in prefixes, ""


def dropin_dirs(systemd_dir: Path, name: str) -> list[Path]:
    """Where systemd looks for drop-ins of `name` in one unit folder, least specific first:
    <type>.d, each dash-truncated prefix (`sum-.service.d`), the template, the unit itself."""
    stem, _, suffix = name.rpartition(".")
    dirs = [systemd_dir / f"{suffix}.d"]
    parts = stem.split("@", 1)[0].split("-")
    dirs += [systemd_dir / f"{'-'.join(parts[:n])}-.{suffix}.d" for n in range(1, len(parts))]
    if "@" in stem:
        dirs.append(systemd_dir / f"{stem.split('@', 1)[0]}@.{suffix}.d")
    dirs.append(systemd_dir / f"{name}.d")
    return dirs


def load_unit(systemd_dir: Path, name: str) -> Unit | None:
    """Unit `name` from `systemd_dir` (an instance from its template) with its drop-ins, or None
    if it has no file there (or cannot be read)."""
    path = systemd_dir / name
    stem, _, suffix = name.rpartition(".")
    if not path.is_file() and "@" in stem:
        path = systemd_dir / f"{stem.split('@', 1)[0]}@.{suffix}"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    confs: dict[str, Path] = {}
    for folder in dropin_dirs(systemd_dir, name):
        for conf in folder.glob("*.conf") if folder.is_dir() else []:
            confs[conf.name] = conf  # the same name in a more specific folder wins
    dropins = []
    for conf_name in sorted(confs):
        try:
            dropins.append((confs[conf_name], confs[conf_name].read_text()))
        except (OSError, UnicodeDecodeError):
            continue
    return parse_unit(name, path, text, dropins)


def unit_names(systemd_dir: Path, suffix: str) -> list[str]:
    """Every unit of that type `systemd_dir` defines: plain unit files, and the instances of
    templates that are enabled (a `*.wants/` or `*.requires/` link) or have a file of their own."""
    if not systemd_dir.is_dir():
        return []
    names = {p.name for p in systemd_dir.glob(f"*.{suffix}") if not p.name.endswith(f"@.{suffix}")}
    for pattern in (f"*.wants/*@*.{suffix}", f"*.requires/*@*.{suffix}"):
        names.update(p.name for p in systemd_dir.glob(pattern) if not p.name.endswith(f"@.{suffix}"))
    return sorted(names)


def unit_environment(unit: Unit) -> dict[str, str]:
    """What the service manager gives the unit's processes: Environment=, then each
    EnvironmentFile= in order (files override Environment=, a later file an earlier one)."""
    env = dict(unit.environment)
    for pattern in unit.environment_files:
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not paths and pattern not in unit.optional_environment_files:
            raise UsageError(f"{unit.name}: EnvironmentFile={pattern} matches no file")
        for name in paths:
            try:
                env.update(parse_env_file(Path(name).read_text()))
            except FileNotFoundError:
                if pattern not in unit.optional_environment_files:
                    raise UsageError(f"{unit.name}: EnvironmentFile={name} does not exist") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"{unit.name}: cannot read EnvironmentFile={name}: {exc}") from None
    return env


# ------------------------------------------------------------------ the app's address (pure)


def gunicorn_address(exec_start: str, env: dict[str, str] | None = None, workdir: str = "") -> str:
    """The address gunicorn binds, as gunicorn settles it (the command line over GUNICORN_CMD_ARGS
    over its config file, then $PORT, then 127.0.0.1:8000), normalised: `unix:PATH`, `fd://N`
    or `host:port`."""
    env = env or {}
    args = shlex.split(exec_start)[1:]
    bind = _bind_option(args)
    if bind is None and env.get("GUNICORN_CMD_ARGS"):
        bind = _bind_option(shlex.split(env["GUNICORN_CMD_ARGS"]))
    if bind is None:
        bind = _bind_in_config(_config_option(args), workdir)
    if bind is None and env.get("PORT", "").isdigit():
        bind = f"0.0.0.0:{env['PORT']}"
    address = normal_address(bind or "127.0.0.1:8000")
    if address.startswith("unix:") and not address[5:].startswith("/") and workdir:
        address = "unix:" + os.path.normpath(os.path.join(workdir, address[5:]))
    return address


def _bind_option(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg in ("--bind", "-b") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--bind="):
            return arg.split("=", 1)[1]
        if arg.startswith("-b") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:]
    return None


def _config_option(args: list[str]) -> str:
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return ""


def _bind_in_config(config: str, workdir: str) -> str | None:
    """`bind = "..."` (or a list, its first) in gunicorn's Python config file, read without running
    it; gunicorn reads ./gunicorn.conf.py when no -c is given."""
    if config.startswith("python:"):
        return None
    path = Path(config or "gunicorn.conf.py")
    if not path.is_absolute():
        if not workdir:
            return None
        path = Path(workdir) / path
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    found = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "bind" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, str):
                found = value
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
                found = value[0]
    return found


def normal_address(bind: str) -> str:
    """gunicorn's ways to write an address, as one: `unix:PATH`, `fd://N` or `host:port`."""
    if bind.startswith("unix://"):
        return "unix:" + bind[len("unix://") :]
    if bind.startswith(("unix:", "fd://")):
        return bind
    bind = bind.removeprefix("tcp://")
    if re.search(r":\d+$", bind) and (bind.count(":") == 1 or bind.startswith("[")):
        return bind
    return f"{bind}:8000"


def listen_address(unit: Unit) -> str:
    """The address a .socket unit listens on (its first ListenStream=), as gunicorn's are written."""
    if not unit.listen_streams:
        raise UsageError(f"{unit.name} has no ListenStream=: sumbg adopt reads stream sockets only")
    value = unit.listen_streams[0]
    if value.startswith("/"):
        return f"unix:{value}"
    if value.isdigit():
        return f"0.0.0.0:{value}"
    if re.fullmatch(r"[0-9.]+:\d+|\[[0-9a-fA-F:.]+\]:\d+", value):
        return value
    raise UsageError(
        f"{unit.name}: ListenStream={value} is not a socket path or an address sumbg adopt can reach "
        "(abstract sockets, vsock and named interfaces are not read)"
    )


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `host:port` or `[v6]:port`."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


_ANY_HOST = ("0.0.0.0", "::", "", "*")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def dial_matches(dial: str, app_address: str) -> bool:
    """Whether Caddy dialling `dial` (an upstream of its JSON config) reaches the app on `app_address`."""
    network, slash, rest = dial.partition("/")
    if slash and network.split("+")[0] in ("unix", "tcp", "tcp4", "tcp6"):
        if network.startswith("unix"):
            return app_address.startswith("unix:") and os.path.normpath(rest) == os.path.normpath(app_address[5:])
        dial = rest
    port = re.compile(r".+:\d+")
    if app_address.startswith(("unix:", "fd://")) or not (port.fullmatch(dial) and port.fullmatch(app_address)):
        return False
    (dial_host, dial_port), (app_host, app_port) = split_address(dial), split_address(app_address)
    if dial_port != app_port:
        return False
    return dial_host == app_host or app_host in _ANY_HOST or (dial_host in _LOOPBACK and app_host in _LOOPBACK)


def probe_address(app_address: str) -> str:
    """Where sumbg, on the same host, reaches an app bound to `app_address` over TCP."""
    host, port = split_address(app_address)
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


# ------------------------------------------------------------------ the host Caddy, read by Caddy

# Run by `sh` where `caddy` is on the PATH, with a copy of the host Caddy's folder at its own
# path: the whole configuration adapted first, then with every sites-enabled file emptied (what
# the main file serves by itself), then with only each file in turn, so each route is known by
# the file it comes from. Each result follows a line `@@sumbg <name> ok|error`.
ADAPT_SCRIPT = r"""
main=$1; shift
out=$(mktemp); err=$(mktemp); keep=$(mktemp -d)
adapt() {
  if caddy adapt --config "$main" --adapter caddyfile >"$out" 2>"$err"; then
    printf '\n@@sumbg %s ok\n' "$1"; cat "$out"
  else
    printf '\n@@sumbg %s error\n' "$1"; cat "$err"; return 1
  fi
}
adapt whole || exit 0
n=0; for f in "$@"; do n=$((n+1)); cp "$f" "$keep/$n"; : > "$f"; done
adapt baseline || exit 0
n=0; for f in "$@"; do n=$((n+1)); cp "$keep/$n" "$f"; adapt "$n"; : > "$f"; done
"""

# (script, its arguments, a scratch folder, where it must appear) -> (exit code, stdout, stderr):
# runs `sh -c script sh args...` with Caddy, the scratch folder mounted read-write at that path.
CaddyRunner = Callable[[str, list[str], Path, Path], tuple[int, str, str]]


def read_host_caddy(
    caddy_dir: Path, run: CaddyRunner, *, replaced: dict[Path, bytes] | None = None, app_address: str = ""
) -> HostCaddy:
    """The host Caddy's configuration as Caddy itself reads it (`caddy adapt` on a copy of its
    folder, mounted at the same absolute path so absolute imports resolve as on the host).
    `replaced` reads some files with other contents (the originals sumbg kept). A configuration
    Caddy rejects is one UsageError with Caddy's own words (which name the file and line)."""
    caddy_dir = caddy_dir.absolute()
    main = caddy_dir / "Caddyfile"
    if not main.is_file():
        raise UsageError(f"{main} does not exist: give the host Caddy's folder with --caddy-dir")
    enabled = caddy_dir / "sites-enabled"
    files = sorted(p for p in enabled.iterdir() if p.is_file()) if enabled.is_dir() else []
    texts: dict[Path, str] = {}
    scratch = Path(tempfile.mkdtemp(prefix="sumbg-host-caddy-"))
    try:
        copy = scratch / "caddy"
        shutil.copytree(caddy_dir, copy, symlinks=False, ignore_dangling_symlinks=True)
        for path, body in (replaced or {}).items():
            (copy / path.relative_to(caddy_dir)).write_bytes(body)
        for path in files:
            texts[path] = (copy / path.relative_to(caddy_dir)).read_text(errors="replace")
        returncode, stdout, stderr = run(ADAPT_SCRIPT, [str(main), *map(str, files)], copy, caddy_dir)
    except OSError as exc:
        raise UsageError(f"cannot copy {caddy_dir} to read it with Caddy: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    sections = _adapt_sections(stdout)
    if "whole" not in sections:
        raise RunbookError(
            f"running Caddy to read {main} failed",
            returncode=returncode,
            output_tail=tail((stdout or "") + (stderr or ""), 10),
        )
    if sections["whole"][0] != "ok":
        raise UsageError(f"Caddy rejects the host Caddy's configuration ({main}): {caddy_error(sections['whole'][1])}")
    whole = _json_section(sections["whole"][1], main)
    baseline = {_route_id(route) for route in _top_routes(_json_section(sections["baseline"][1], main))}
    sites = []
    for index, path in enumerate(files, 1):
        status, body = sections.get(str(index), ("error", "no answer"))
        if status != "ok":
            raise UsageError(f"Caddy rejects {path} read on its own with {main}: {caddy_error(body)}")
        sites.append(site_from_adapted(path, _json_section(body, path), baseline, app_address, texts[path]))
    http = whole.get("apps", {}).get("http", {})
    return HostCaddy(
        caddyfile=main,
        http_port=int(http.get("http_port") or 80),
        https_port=int(http.get("https_port") or 443),
        email=_global_email(whole),
        sites=tuple(sites),
    )


def _adapt_sections(stdout: str) -> dict[str, tuple[str, str]]:
    sections = {}
    for chunk in ("\n" + (stdout or "")).split("\n@@sumbg ")[1:]:
        head, _, body = chunk.partition("\n")
        name, _, status = head.partition(" ")
        sections[name] = (status.strip(), body)
    return sections


def _json_section(body: str, where: Path) -> dict:
    try:
        value = json.loads(body) if body.strip() else {}
    except ValueError:
        raise RunbookError(f"Caddy's reading of {where} is not JSON", output_tail=tail(body, 5)) from None
    return value if isinstance(value, dict) else {}


def caddy_error(output: str) -> str:
    """Caddy's own error line from its output (JSON log lines or `Error: ...`), on one line."""
    found = ""
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                found = str(entry["msg"])
        elif line.startswith("Error:"):
            found = line[len("Error:") :].strip()
    found = found or next((line for line in reversed(output.splitlines()) if line.strip()), "no error message")
    return " ".join(found.split())


def _servers(adapted: dict) -> list[dict]:
    servers = adapted.get("apps", {}).get("http", {}).get("servers", {})
    return list(servers.values()) if isinstance(servers, dict) else []


def _top_routes(adapted: dict) -> list[dict]:
    return [route for server in _servers(adapted) for route in server.get("routes") or []]


def _route_id(route: dict) -> str:
    return json.dumps(route, sort_keys=True)


def _route_hosts(route: dict) -> list[str]:
    return [host for match in route.get("match") or [] for host in match.get("host") or []]


def _handlers(handlers: list[dict]) -> Iterable[dict]:
    for handler in handlers or []:
        yield handler
        for inner in handler.get("routes") or []:  # subroute
            yield from _handlers(inner.get("handle") or [])


def _dials(route: dict) -> list[str]:
    return [
        upstream["dial"]
        for handler in _handlers(route.get("handle") or [])
        if handler.get("handler") == "reverse_proxy"
        for upstream in handler.get("upstreams") or []
        if upstream.get("dial")
    ]


def site_from_adapted(path: Path, adapted: dict, baseline: set[str], app_address: str, text: str = "") -> CaddySite:
    """What one site file serves, from Caddy's JSON of the configuration with only that file:
    the routes the main file does not have by itself. Blocks that proxy to the app come first
    (to any upstream when none proxies to `app_address`); within each kind, names keep the
    order the file gives them."""
    routes = [route for route in _top_routes(adapted) if _route_id(route) not in baseline]
    upstreams = [dial for route in routes for dial in _dials(route)]
    named = [route for route in routes if _route_hosts(route)]
    serving_routes = [r for r in named if any(dial_matches(d, app_address) for d in _dials(r))]
    serving_routes = serving_routes or [route for route in named if _dials(route)]
    serving = [host for route in serving_routes for host in _route_hosts(route)]
    others = [host for route in named if route not in serving_routes for host in _route_hosts(route)]

    def in_file_order(names: list[str]) -> list[str]:
        unique = list(dict.fromkeys(names))

        def position(name: str) -> int:
            found = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", text)
            return found.start() if found else len(text)

        return sorted(unique, key=lambda name: (position(name), unique.index(name)))

    domains = tuple(dict.fromkeys(in_file_order(serving) + in_file_order(others)))
    tls_lines, mode, email = _tls_of(adapted, domains)
    encodings, headers, not_kept = _response_directives(serving_routes[0]) if serving_routes else ((), (), ())
    return CaddySite(
        file=path,
        domains=domains,
        upstreams=tuple(dict.fromkeys(upstreams)),
        tls_lines=tls_lines,
        tls_mode=mode,
        email=email,
        encodings=encodings,
        headers=headers,
        not_kept=not_kept,
    )


def _tls_of(adapted: dict, domains: tuple[str, ...]) -> tuple[tuple[str, ...], str, str]:
    """The `tls` line that keeps the names' TLS policy as Caddy has it, its mode and ACME email."""
    tls_app = adapted.get("apps", {}).get("tls", {})
    tags: set[str] = set()
    for server in _servers(adapted):
        for policy in server.get("tls_connection_policies") or []:
            if set((policy.get("match") or {}).get("sni") or []) & set(domains):
                tags.update((policy.get("certificate_selection") or {}).get("any_tag") or [])
    for loaded in (tls_app.get("certificates") or {}).get("load_files") or []:
        if tags & set(loaded.get("tags") or []) and loaded.get("certificate") and loaded.get("key"):
            return (f"tls {loaded['certificate']} {loaded['key']}",), "manual", ""
    policies = (tls_app.get("automation") or {}).get("policies") or []
    policy = next((p for p in policies if set(p.get("subjects") or []) & set(domains)), None)
    policy = policy or next((p for p in policies if not p.get("subjects")), {})
    issuers = policy.get("issuers") or []
    if any(issuer.get("module") == "internal" for issuer in issuers):
        return ("tls internal",), "internal", ""
    email = next((i["email"] for i in issuers if i.get("module") == "acme" and i.get("email")), "")
    if email:
        return (f"tls {email}",), "acme", email
    return (), "acme" if issuers else "", ""


def _global_email(adapted: dict) -> str:
    policies = adapted.get("apps", {}).get("tls", {}).get("automation", {}).get("policies") or []
    for policy in policies:
        if not policy.get("subjects"):
            for issuer in policy.get("issuers") or []:
                if issuer.get("email"):
                    return issuer["email"]
    return ""


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_HEADER_VALUE = re.compile(r"[^\\\x00-\x1f\x7f]*")


def _response_directives(route: dict) -> tuple[tuple[str, ...], tuple[HeaderOp, ...], tuple[str, ...]]:
    """`encode` and `header` directives at the top of a site block (not inside handle_path and
    the like), as Caddy adapted them, and what else of that kind sumbg cannot carry over."""
    encodings: tuple[str, ...] = ()
    headers: list[HeaderOp] = []
    not_kept: list[str] = []
    for handler in route.get("handle") or []:
        for inner in handler.get("routes") or [] if handler.get("handler") == "subroute" else []:
            if inner.get("match"):
                continue
            for directive in inner.get("handle") or []:
                if directive.get("handler") == "encode":
                    encodings = tuple(directive.get("prefer") or sorted(directive.get("encodings") or {}))
                elif directive.get("handler") == "headers":
                    response = directive.get("response") or {}
                    deferred = bool(response.get("deferred"))
                    for name, values in (response.get("set") or {}).items():
                        headers.append(HeaderOp("set", name, ", ".join(values), deferred))
                    for name, values in (response.get("add") or {}).items():
                        headers.extend(HeaderOp("add", name, value, deferred) for value in values)
                    headers.extend(HeaderOp("delete", name, "", deferred) for name in response.get("delete") or [])
                    for header in list(headers):
                        if not _HEADER_NAME.fullmatch(header.name) or not _HEADER_VALUE.fullmatch(header.value):
                            headers.remove(header)
                            not_kept.append(f"the header {header.name} (its value cannot be written back)")
                    if response.get("replace") or response.get("require"):
                        not_kept.append("a header replacement or condition")
                    if directive.get("request"):
                        not_kept.append("request_header")
    return encodings, tuple(headers), tuple(not_kept)


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


def read_deployment(
    source: Path,
    slug: str,
    paths: RunbookPaths,
    *,
    caddy: CaddyRunner,
    domains: tuple[str, ...] = (),
    replaced: dict[Path, bytes] | None = None,
) -> Deployment:
    """Read a runbook deployment; every missing or unreadable part is one clear UsageError.
    `caddy` runs Caddy to read the host Caddy's files; `replaced` reads some of them with other
    contents (the original site file sumbg kept, once its own stands in its place)."""
    source = source.absolute()
    if not source.is_dir():
        raise UsageError(f"--from {source} is not a folder")
    env_path = source / ".env"
    if not env_path.is_file():
        raise UsageError(f"{env_path} does not exist: not a runbook deployment (expected app/, venv/, media/, .env)")
    try:
        dotenv = parse_env_file(env_path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {env_path}: {exc.strerror}") from None
    app_dir = source / "app"
    if not app_dir.is_dir():
        raise UsageError(f"{app_dir} does not exist: not a runbook deployment (expected app/, venv/, media/, .env)")
    web_unit, web_socket, worker_unit, beat_unit = find_units(source, paths.systemd_dir)
    web_env = unit_environment(web_unit)
    web_unit = web_unit.with_environment(web_env)
    worker_unit = worker_unit and worker_unit.with_environment(unit_environment(worker_unit))
    beat_unit = beat_unit and beat_unit.with_environment(unit_environment(beat_unit))
    # What the app process gets from systemd wins; the .env fills in what the unit does not give
    # it (as python-dotenv does), and is the unit's own EnvironmentFile= on the golden path.
    merged = {**dotenv, **web_env}
    database = database_from_env(merged)
    if database is None:
        raise UsageError(f"{env_path} names no PostgreSQL database (DATABASE_URL or DJANGO_DB_NAME/USER/...)")
    settings = merged.get("DJANGO_SETTINGS_MODULE", "")
    media = Path(merged.get("DJANGO_MEDIA_ROOT") or merged.get("MEDIA_ROOT") or source / "media")
    if not media.is_absolute():
        media = source / media
    if web_socket:
        address = listen_address(web_socket)
    else:
        address = gunicorn_address(web_unit.exec_start, merged, web_unit.working_directory)
        if address.startswith("fd://"):
            raise UsageError(
                f"{web_unit.name}: gunicorn binds {address}, but no .socket unit in {paths.systemd_dir} "
                "hands it a socket (ListenStream=): unknown layout"
            )
    host_caddy = read_host_caddy(paths.caddy_dir, caddy, replaced=replaced, app_address=address)
    site = find_caddy_site(host_caddy, paths.caddy_dir, slug, address)
    if not site.domains and not domains:
        raise UsageError(f"{site.file} names no site address; give the domains with --domain")
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
        app_address=address,
        caddy_site_file=site.file,
        domains=tuple(domains) or site.domains,
        tls_lines=site.tls_lines,
        caddy_ports=host_caddy.ports,
        checkout=checkout,
        web_socket=web_socket,
        caddy_site=site,
    )


def _under(value: str, folder: str) -> bool:
    return value == folder or value.startswith(folder + "/")


def _mentions(unit: Unit, source: Path) -> bool:
    """Whether the unit runs something of the deployment in `source` (a path under it as a word
    of its command or an option's value, its working directory or an environment file)."""
    folder = str(source).rstrip("/")
    return (
        any(_under(word, folder) or _under(word.split("=", 1)[-1], folder) for word in unit.argv)
        or _under(unit.working_directory, folder)
        or any(_under(path, folder) for path in unit.environment_files)
    )


def find_units(source: Path, systemd_dir: Path) -> tuple[Unit, Unit | None, Unit | None, Unit | None]:
    """The units that run the app under `source`: gunicorn and the .socket unit that hands it its
    socket (if any), and Celery's worker and beat (if any)."""
    web, worker, beat = [], [], []
    for name in unit_names(systemd_dir, "service"):
        unit = load_unit(systemd_dir, name)
        if unit is None or not _mentions(unit, source):
            continue
        if unit.problem:
            raise UsageError(unit.problem)
        if not unit.argv:
            continue
        words = [Path(word).name for word in unit.argv]
        if "gunicorn" in words[:3]:
            web.append(unit)
        elif "celery" in " ".join(words):
            if words[0] != "celery" or "multi" in words:
                raise UsageError(
                    f"{name} does not run `celery ... worker` itself ({unit.exec_start[:60]}): "
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
    return web[0], socket_of(web[0], systemd_dir), (worker[0] if worker else None), (beat[0] if beat else None)


def socket_of(service: Unit, systemd_dir: Path) -> Unit | None:
    """The .socket unit that starts `service` and hands it its listening socket: one named in its
    Sockets=, one whose Service= names it, or one of the same name."""
    found = []
    for name in unit_names(systemd_dir, "socket"):
        unit = load_unit(systemd_dir, name)
        if unit is None:
            continue
        triggers = unit.service or f"{name.rsplit('.', 1)[0]}.service"
        if name in service.sockets or triggers == service.name:
            found.append(unit)
    for unit in found:
        if unit.problem:
            raise UsageError(unit.problem)
    if len(found) > 1:
        raise UsageError(
            f"several socket units start {service.name} ({', '.join(u.name for u in found)}): unknown layout"
        )
    return found[0] if found else None


def find_caddy_site(host_caddy: HostCaddy, caddy_dir: Path, slug: str, app_address: str) -> CaddySite:
    """sites-enabled/sum-<slug>.caddy, or the one site file that proxies to the app's address;
    either way it must proxy to that address (else sumbg has misread something, and says so)."""
    enabled = caddy_dir.absolute() / "sites-enabled"
    named = enabled / f"sum-{slug}.caddy"
    if any(site.file == named for site in host_caddy.sites):
        site = host_caddy.site(named)
        if not site.domains:
            raise UsageError(
                f"Caddy serves nothing from {named} (is it imported by {host_caddy.caddyfile}?): unknown layout"
            )
        if not any(dial_matches(dial, app_address) for dial in site.upstreams):
            raise UsageError(
                f"{named} proxies to {', '.join(site.upstreams) or 'nothing'}, not to the old app's "
                f"address {app_address}: unknown layout"
            )
        return site
    matches = host_caddy.proxying_to(app_address)
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

    def _run(self, *args: str) -> systemd.Completed:
        try:
            return systemd.run_systemctl(*args, systemctl=self.systemctl, timeout=120)
        except FileNotFoundError:
            raise RunbookError(
                f"{self.systemctl} is not installed: sumbg adopt drives the old site's systemd units"
            ) from None
        except TimeoutError:
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
