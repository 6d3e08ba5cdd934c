"""The one declaration of every setting of sumbg.toml and site.toml.

A `Key` says where a setting lives in its file (table and name), its type, its default, the
rules a value must pass (each with the message it fails with), a one-line help, where the
value lands in the frozen configuration object, and, for `sumbg init`, the option that sets
it. Everything else reads these declarations: the parser (`tables.Table.read_file`), the
site.toml that `sumbg init` writes and the in-place edits (`render`), the re-run-init check
(`site.refuse_changes_to_kept_config`) and the reference (`reference`, docs/configuration.md).
A unit test holds the dataclasses' defaults to the declared ones.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, get_type_hints

from sumbg import naming
from sumbg.config.notify import MANAGE_PREFIX, selector_problem
from sumbg.util import parse_duration

T = TypeVar("T")
TLS_MODES = ("auto", "internal", "off")
LOCK_MODES = ("none", "live", "file")  # [build] lock
LIVE_CPU_SHARES = 1024  # Docker's default weight: the live colour, the data stack and the edge keep it


# ---------------------------------------------------------------- what a declaration is made of


def _same(value: Any) -> Any:
    return value


def _pairs(value: Any) -> Any:
    return tuple(value.items())


def _number(value: Any) -> Any:
    return float(value)


def _whole_if_integral(value: Any) -> Any:
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True)
class Kind:
    """A TOML type as a setting uses it."""

    doc: str  # for the reference
    types: tuple[type, ...]  # what the file may hold, in the order an error names them
    convert: Callable[[Any], Any] = _same  # to the configuration object's type; ValueError: the message
    to_toml: Callable[[Any], Any] = _same  # back, for the file (plain Python values)


STRING = Kind("string", (str,))
INTEGER = Kind("integer", (int,))
NUMBER = Kind("number", (int, float), _number, _whole_if_integral)
BOOLEAN = Kind("true or false", (bool,))
STRINGS = Kind("list of strings", (list,), tuple, list)
STRING_TABLE = Kind("table of strings", (dict,), _pairs, dict)
DURATION = Kind('duration: seconds, or "30m", "36h", "2d"', (str, int, float), parse_duration, _whole_if_integral)
TABLES = Kind("list of tables", (list,), tuple, list)


class Problem(NamedTuple):
    """What is wrong with a value, and where below its key (e.g. "[2]", ".X-Frame-Options")."""

    message: str
    at: str = ""


Check = Callable[[Any], str | Problem | None]


@dataclass(frozen=True)
class Rule:
    """A condition on a value already of the right type."""

    doc: str  # what a value must be, for the reference ("" when the type says it all)
    check: Check  # what is wrong with a value, or None


@dataclass(frozen=True)
class Option:
    """How `sumbg init` sets a key: its keyword (the parameter of ops.init.init) and its flag."""

    param: str
    flag: str


@dataclass(frozen=True)
class Key:
    """A setting: where it is, what it may be, what it does."""

    name: str
    kind: Kind
    default: Any  # the value in the configuration object when the file does not say
    help: str
    rules: tuple[Rule, ...] = ()
    attr: str = ""  # where the value lives in the configuration object (dotted); "" = the section's + name
    required: bool = False
    option: Option | None = None
    example: str = ""  # written commented out when there is no value (None, or no tables)
    default_doc: str = ""  # the default in words, when other settings decide it
    item: Section | None = None  # TABLES: the keys of each table
    if_set: bool = False  # in a table of a list: written only when not the default


@dataclass(frozen=True)
class Entries:
    """A table whose names are the user's: NAME = "value" ([env])."""

    help: str
    check: Callable[[str, str], str | None]  # what is wrong with one entry, or None
    doc: str  # what an entry must be, for the reference
    attr: str
    option: Option | None = None


@dataclass(frozen=True)
class Section:
    """A table of a file ("" is the top of it): its keys in the order they are written."""

    name: str
    help: str
    keys: tuple[Key, ...] = ()
    into: str = ""  # the attribute of the configuration object that holds this table ("" = the object)
    entries: Entries | None = None
    checks: tuple[Rule, ...] = ()  # rules over the table's values together, by key name

    def attr(self, key: Key) -> str:
        return key.attr or (f"{self.into}.{key.name}" if self.into else key.name)


@dataclass(frozen=True)
class ConfigFile:
    name: str
    help: str
    sections: tuple[Section, ...]

    def find(self, dotted: str) -> tuple[Section, Key] | None:
        """The declaration of `table.key` (or a key of the top), if there is one."""
        table, _, name = dotted.rpartition(".")
        for section in self.sections:
            if section.name == table:
                for key in section.keys:
                    if key.name == name:
                        return section, key
        return None

    def options(self) -> dict[str, str]:
        """`sumbg init`'s keywords and the attributes they set."""
        found = {}
        for section in self.sections:
            for key in section.keys:
                if key.option:
                    found[key.option.param] = section.attr(key)
            if section.entries and section.entries.option:
                found[section.entries.option.param] = section.entries.attr
        return found


# ---------------------------------------------------------------- rules


def port(*, allow_zero: bool = False) -> Rule:
    low = 0 if allow_zero else 1
    return Rule(f"{low}-65535", lambda v: None if low <= v <= 65535 else f"must be a port number {low}-65535, not {v}")


POSITIVE = Rule("greater than 0", lambda v: None if v > 0 else f"must be greater than 0, not {v}")
NOT_NEGATIVE = Rule("0 or more", lambda v: None if v >= 0 else "must not be negative")
SHARE = Rule(
    "from 0 up to (not including) 1",
    lambda v: None if 0 <= v < 1 else f"must be a share from 0 up to (not including) 1, not {float(v)}",
)


def one_of(*choices: str) -> Rule:
    return Rule(
        f"one of {', '.join(choices)}",
        lambda v: None if v in choices else f"must be one of {', '.join(choices)}, not {v!r}",
    )


def matching(pattern: re.Pattern[str], doc: str, message: str) -> Rule:
    return Rule(doc, lambda v: None if pattern.fullmatch(v) else message)


SLUG = matching(naming.SLUG_PATTERN, "lowercase letters, digits, hyphens", "must match ^[a-z0-9][a-z0-9-]{0,62}$")
SINGLE_LINE = Rule("one line", lambda v: "must be a single line" if "\n" in v else None)


def _image_ref(example: str, *, empty_ok: bool) -> Rule:
    def check(value: str) -> str | None:
        if not value and empty_ok:
            return None
        if not value or any(ch.isspace() for ch in value) or value.startswith("-"):
            return f"must be an image reference like {example!r}"
        return None

    return Rule("an image reference", check)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


IP_ADDRESS = Rule("an IP address", lambda v: None if _is_ip(v) else f"must be an IP address, not {v!r}")


def _ip_addresses(value: list[Any]) -> Problem | None:
    for index, address in enumerate(value):
        if not isinstance(address, str) or not _is_ip(address):
            return Problem(f"must be an IP address, not {address!r}", f"[{index}]")
    return None


IP_ADDRESSES = Rule("IP addresses", _ip_addresses)
EMAIL = Rule(
    "an email address",
    lambda v: (
        None
        if not v or ("@" in v and not any(ch.isspace() or ch in "{}\"'" for ch in v))
        else "must be an email address"
    ),
)
_ACME_DIRECTORY = re.compile(r"https://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?")
ACME_DIRECTORY = Rule(
    "an https:// URL",
    lambda v: (
        None if not v or _ACME_DIRECTORY.fullmatch(v) else f"must be the https:// URL of an ACME directory, not {v!r}"
    ),
)
PEM_FILE = Rule(
    "the absolute path of a PEM file",
    lambda v: (
        None
        if not v or (v.startswith("/") and Path(v).is_file())
        else f"must be the absolute path of a PEM file, not {v!r}"
    ),
)
EXISTING_FILE = Rule("a file", lambda v: None if not v or Path(v).is_file() else f"file {v} does not exist")
KNOWN_HOSTS_FILE = Rule(
    "the absolute path of a file",
    lambda v: (
        None if not v or (os.path.isabs(v) and Path(v).is_file()) else f"must be the absolute path of a file, not {v!r}"
    ),
)


def _credential_file(path: str) -> str | None:
    """A credential file: an absolute path to a regular file nobody but its owner can read."""
    if not path:
        return None
    if not os.path.isabs(path):
        return f"must be an absolute path, not {path!r}"
    try:
        info = os.stat(path)
    except OSError:
        return f"file {path} does not exist"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a file"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        return f"{path} has mode {mode:04o}; a credential file must be 0600 (chmod 600 {path})"
    return None


CREDENTIAL_FILE = Rule("the absolute path of a file of mode 0600 or 0400", _credential_file)
USER_NAME = Rule(
    "no spaces, ':' or '@'",
    lambda v: "must be a user name without spaces, ':' or '@'" if any(ch.isspace() or ch in ":@" for ch in v) else None,
)


def _url_rewrites(value: dict[str, Any]) -> str | None:
    for prefix, replacement in value.items():
        if (
            not prefix
            or not isinstance(replacement, str)
            or not replacement
            or any(ch.isspace() for ch in prefix + replacement)
        ):
            return f"{prefix!r} must map a URL prefix to a non-empty URL prefix without spaces"
    return None


URL_REWRITES = Rule("URL prefix = URL prefix", _url_rewrites)
_DEB_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?")
DEBIAN_PACKAGES = Rule(
    "Debian package names",
    lambda v: (
        None
        if all(isinstance(item, str) and _DEB_PACKAGE.fullmatch(item) for item in v)
        else 'must be a list of Debian package names like ["libjpeg62-turbo"]'
    ),
)


def _cpu_shares(value: int) -> str | None:
    if 2 <= value <= LIVE_CPU_SHARES:
        return None
    return f"must be from 2 to {LIVE_CPU_SHARES} (the live colour's), not {value}"


CPU_SHARES = Rule(f"2-{LIVE_CPU_SHARES}", _cpu_shares)


# ---------------------------------------------------------------- [network]: sumbg's address plan

# Where sumbg takes every site's subnets from by default: a private range that Docker's default
# pools (below) never hand out and that common VPC, VPN and Kubernetes defaults leave alone.
DEFAULT_POOL = "10.213.0.0/16"
DEFAULT_SITE_PREFIX = 27
# A stock engine's default-address-pools: 172.17-31.0.0/16 and 192.168.0.0/16 (in /20s).
DOCKER_DEFAULT_POOLS = (ipaddress.IPv4Network("172.17.0.0/16"), ipaddress.IPv4Network("192.168.0.0/16")) + tuple(
    ipaddress.IPv4Network(f"172.{n}.0.0/16") for n in range(18, 32)
)
_PRIVATE_RANGES = tuple(ipaddress.IPv4Network(r) for r in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# A site's block is cut in two halves: its own network (data stack and both colours) and its link
# to the edge. Its own network holds Postgres, Redis, each colour's web and worker, the rehearsal's
# web and two one-off commands at once, plus the gateway.
SITE_NETWORK_ADDRESSES = 10
LARGEST_SITE_PREFIX = 27  # its halves (/28) hold 14 addresses; a /28 block's (/29) only 6
SMALLEST_SITE_PREFIX = 16


def _pool(value: str) -> str | None:
    malformed = f"must be an IPv4 network like {DEFAULT_POOL!r}, not {value!r}"
    if "/" not in value:
        return malformed
    try:
        pool = ipaddress.IPv4Network(value)
    except ValueError as exc:
        if "host bits set" not in str(exc):
            return malformed
        return f"{value} has host bits set: the network is {ipaddress.IPv4Network(value, strict=False)}"
    if not any(pool.subnet_of(private) for private in _PRIVATE_RANGES):
        return f"{pool} is not a private range: use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
    for docker_pool in DOCKER_DEFAULT_POOLS:
        if pool.overlaps(docker_pool):
            return (
                f"{pool} overlaps Docker's default address pools (172.17.0.0-172.31.255.255 and 192.168.0.0/16, "
                "where the engine puts every network created without a subnet): choose another range"
            )
    return None


POOL = Rule("a private IPv4 network outside Docker's default pools", _pool)


def _site_prefix(value: int) -> str | None:
    if value > LARGEST_SITE_PREFIX:
        half = value + 1
        room = 2 ** (32 - half) - 2
        return (
            f"/{value} is too small for a site's containers: each of its two networks would be a /{half} with "
            f"{room} addresses, and a site's own network needs {SITE_NETWORK_ADDRESSES} (Postgres, Redis, each "
            f"colour's web and worker, the rehearsal, one-off commands, the gateway); use {LARGEST_SITE_PREFIX} or less"
        )
    if value < SMALLEST_SITE_PREFIX:
        return f"must be from {SMALLEST_SITE_PREFIX} to {LARGEST_SITE_PREFIX}, not {value}"
    return None


SITE_PREFIX = Rule(f"{SMALLEST_SITE_PREFIX}-{LARGEST_SITE_PREFIX}", _site_prefix)


def _pool_holds_a_block(values: Mapping[str, Any]) -> Problem | None:
    pool, prefix = ipaddress.IPv4Network(values["pool"]), values["site_prefix"]
    if pool.prefixlen <= prefix:
        return None
    return Problem(f"{pool} is smaller than one site's block (site_prefix = {prefix}): widen it", "pool")


POOL_HOLDS_A_BLOCK = Rule("the pool holds at least one site's block", _pool_holds_a_block)


def _ports_differ(values: Mapping[str, Any]) -> Problem | None:
    ports = {values["http_port"], values["https_port"], values["preview_port"]}
    if len(ports) == 3:
        return None
    return Problem("http_port, https_port and preview_port must all differ", "preview_port")


PORTS_DIFFER = Rule("http_port, https_port and preview_port all differ", _ports_differ)


HOSTNAME_MESSAGE = "must be a hostname (lowercase letters, digits, hyphens, dots)"


def _domains(value: list[Any]) -> str | Problem | None:
    if not value:
        return "must name at least one domain"
    for index, domain in enumerate(value):
        if not isinstance(domain, str) or not naming.DOMAIN_PATTERN.fullmatch(domain):
            return Problem(HOSTNAME_MESSAGE, f"[{index}]")
    if len(set(value)) != len(value):
        return "names a domain twice"
    return None


DOMAINS = Rule("hostnames, at least one, each once", _domains)
PROJECT = Rule(
    "a Python package name", lambda v: "must be a Python package name" if v and not v.isidentifier() else None
)
DOTTED_PATH_MESSAGE = "must be a dotted Python path (set app.project or app.settings/app.wsgi)"
DOTTED_PATH = Rule(
    "a dotted Python path",
    lambda v: (
        None if v and all(part.isidentifier() for part in v.replace(":", ".").split(".")) else DOTTED_PATH_MESSAGE
    ),
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_entry(name: str, value: str) -> str | None:
    if not _ENV_NAME.fullmatch(name) or "\n" in value:
        return 'must be NAME = "single-line value"'
    return None


def _read_paths(value: list[Any]) -> Problem | None:
    for index, path in enumerate(value):
        if not isinstance(path, str) or not path.startswith("/") or any(ch.isspace() for ch in path):
            return Problem("must be a path starting with / (no spaces)", f"[{index}]")
    return None


READ_PATHS = Rule("paths starting with /", _read_paths)


def _unbalanced(text: str) -> str | None:
    """Why raw directives could leave their place in the site block, or None."""
    if "\x00" in text:
        return "must not contain NUL"
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        depth += line.count("{") - line.count("}")
        if depth < 0:
            return f"line {number} closes a block it did not open: braces must balance"
    return None if depth == 0 else "braces must balance (a block is left open)"


BALANCED = Rule("Caddyfile directives, braces balanced", _unbalanced)
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_HEADER_VALUE = re.compile(r'[^"\\{}`\x00-\x1f\x7f]*')


def _headers(value: dict[str, Any]) -> Problem | None:
    for name, text in value.items():
        if not isinstance(text, str):
            return Problem(f"must be a string, not {text!r}", f".{name}")
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(text):
            return Problem(
                'must be Header-Name = "value" without quotes, backslashes, braces or control characters', f".{name}"
            )
    return None


HEADERS = Rule('Header-Name = "value"', _headers)


def each_a_table(message: str) -> Rule:
    def check(value: list[Any]) -> Problem | None:
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                return Problem(message, f"[{index}]")
        return None

    return Rule("", check)


_AUTH_PATH = re.compile(r"/[A-Za-z0-9/_.*-]*")
_AUTH_USER = re.compile(r"[A-Za-z0-9._-]+")
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_CHECK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _check_names(value: list[Any]) -> Problem | None:
    for index, name in enumerate(value):
        if not isinstance(name, str) or not _CHECK_NAME.fullmatch(name):
            return Problem("must be the name of a check of /health/ (letters, digits, _ . -)", f"[{index}]")
    return None


CHECK_NAMES = Rule("names of checks of /health/", _check_names)
_CHECK_PATH = Rule(
    "starts with /, no spaces",
    lambda v: (
        None if v.startswith("/") and not any(ch.isspace() for ch in v) else "must start with / and contain no spaces"
    ),
)
_HTTP_STATUS = Rule("100-599", lambda v: None if 100 <= v <= 599 else "must be an HTTP status code")
_FORM = Rule("", lambda v: None if all(isinstance(x, str) for x in v.values()) else "values must be strings")
_JSON_STATUS = Rule("", lambda v: None if all(isinstance(x, str) for x in v) else "must be a list of strings")
_CSRF_FROM = Rule("a path starting with /", lambda v: "must start with /" if v and not v.startswith("/") else None)


# ---------------------------------------------------------------- [build]: in both files

_GIT_KEYS = (
    Key(
        "git_token_file",
        STRING,
        "",
        "A file (mode 0600) holding a token for git+https requirements (a read-only one); empty: none.",
        (CREDENTIAL_FILE,),
    ),
    Key(
        "git_username",
        STRING,
        "",
        "The user name sent with the token; empty: x-access-token (GitHub accepts any name).",
        (USER_NAME,),
    ),
    Key(
        "git_ssh_key_file",
        STRING,
        "",
        "A file (mode 0600) holding a deploy key for git+ssh requirements; empty: none.",
        (CREDENTIAL_FILE,),
    ),
    Key(
        "git_ssh_known_hosts",
        STRING,
        "",
        "The git servers' host keys (known_hosts format); empty: ~/.ssh/known_hosts, new hosts accepted.",
        (KNOWN_HOSTS_FILE,),
    ),
    Key(
        "git_url_rewrites",
        STRING_TABLE,
        (),
        'Like git\'s insteadOf: { "https://github.com/acme/" = "https://mirror.example/acme/" }.',
        (URL_REWRITES,),
    ),
)


# ---------------------------------------------------------------- [backup]: in both files

# restic's own repository kinds (`restic init --help`): a local folder, or a backend's prefix.
RESTIC_BACKENDS = ("sftp:", "s3:", "rest:", "b2:", "azure:", "gs:", "swift:", "rclone:")


def _repository(value: str) -> str | None:
    if not value:
        return None
    if "\n" in value or value != value.strip():
        return "must be one line without surrounding spaces"
    if value.startswith("/") or value.startswith(RESTIC_BACKENDS):
        return None
    return f"must be an absolute path or a restic repository like sftp:user@host:/srv/restic or s3:https://host/bucket, not {value!r}"


REPOSITORY = Rule("an absolute path, or sftp:..., s3:..., rest:... (restic's repositories)", _repository)
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _schedule(value: str) -> str | None:
    if not value or _CLOCK.fullmatch(value):
        return None
    if "\n" in value or not re.fullmatch(r"[A-Za-z0-9*/:.,~ -]+", value):
        return 'must be "HH:MM" (daily) or a systemd OnCalendar expression like "Mon..Fri *-*-* 03:30:00"'
    return None


SCHEDULE = Rule('"HH:MM" or a systemd OnCalendar expression', _schedule)


SITE_DEFAULT = "sumbg.toml's"


def _backup_keys(*, site: bool) -> tuple[Key, ...]:
    """The keys of [backup]; in site.toml each is unset by default (sumbg.toml's applies)."""

    def said(what: str, empty: str) -> str:
        return f"{what}; empty: {SITE_DEFAULT if site else empty}."

    def count(name: str, default: int, what: str) -> Key:
        if site:
            return Key(
                name,
                INTEGER,
                None,
                f"{what}; unset: sumbg.toml's.",
                (NOT_NEGATIVE,),
                example=str(default),
                default_doc="sumbg.toml's",
            )
        return Key(name, INTEGER, default, f"{what}.", (NOT_NEGATIVE,))

    keys = (
        Key(
            "repository",
            STRING,
            "",
            said(
                "The restic repository each backup is uploaded to once verified here: an absolute path, "
                "sftp:user@host:/path or s3:https://host/bucket/path",
                "backups stay on this host",
            ),
            (REPOSITORY,),
        ),
        Key(
            "password_file",
            STRING,
            "",
            said("A file (mode 0600) holding the repository's password (restic's RESTIC_PASSWORD_FILE)", "none"),
            (CREDENTIAL_FILE,),
        ),
        Key(
            "env_file",
            STRING,
            "",
            said(
                "A file (mode 0600) of restic's documented variables, NAME=value per line (AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY, ...)",
                "those in sumbg's own environment",
            ),
            (CREDENTIAL_FILE,),
        ),
        Key(
            "ssh_key_file",
            STRING,
            "",
            said("A file (mode 0600) holding the key for an sftp: repository", "ssh's own"),
            (CREDENTIAL_FILE,),
        ),
        Key(
            "ssh_known_hosts",
            STRING,
            "",
            said("The sftp server's host key (known_hosts format)", "~/.ssh/known_hosts, new hosts accepted"),
            (KNOWN_HOSTS_FILE,),
        ),
        count("keep_daily", 7, "The newest backup of each of this many last days with one is kept (here and offsite)"),
        count("keep_weekly", 4, "...and of this many last weeks"),
        count("keep_monthly", 6, "...and of this many last months"),
    )
    if site:
        return (
            *keys,
            Key(
                "max_age",
                DURATION,
                None,
                "A last good backup older than this is a problem in `status` (exit 1); unset: sumbg.toml's.",
                example='"26h"',
                default_doc="sumbg.toml's",
            ),
        )
    return (
        *keys,
        Key(
            "max_age",
            DURATION,
            26 * 3600.0,
            "A last good backup (here, and offsite when there is a repository) older than this is a problem "
            "in `status` and `fleet status` (exit 1).",
        ),
        Key(
            "schedule",
            STRING,
            "",
            'When `sumbg schedule install` runs `sumbg backup --all`: "HH:MM" daily, or a systemd OnCalendar '
            "expression; empty: daily at a minute of 02:00-04:00 that the host's name picks.",
            (SCHEDULE,),
        ),
    )


# ---------------------------------------------------------------- [[notify]]: in both files


def _event_names(value: list[Any]) -> Problem | str | None:
    if not value:
        return "must name at least one event or group (all, failures)"
    for index, name in enumerate(value):
        problem = selector_problem(name) if isinstance(name, str) else "must be a string"
        if problem:
            return Problem(problem, f"[{index}]")
    return None


EVENT_NAMES = Rule("event names, groups (all, failures) or `operation.*`", _event_names)
_HTTP_URL = re.compile(r"https?://[^\s/?#@]+(/[^\s]*)?")
HTTP_URL = Rule(
    "an http(s):// URL",
    lambda v: None if not v or _HTTP_URL.fullmatch(v) else "must be an http:// or https:// URL without spaces",
)
_ADDRESSES = Rule(
    "email addresses",
    lambda v: next(
        (Problem("must be an email address", f"[{i}]") for i, a in enumerate(v) if EMAIL.check(a) or not a), None
    ),
)
_WEBHOOK = ("webhook_url", "webhook_url_file")
_ONLY_FOR = {
    "webhook_secret_file": "webhook",
    "email_from": "email",
    "smtp_host": "email",
    "smtp_user": "email",
    "smtp_password_file": "email",
    "smtp_ca_file": "email",
}


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _one_target(values: Mapping[str, Any]) -> Problem | None:
    kinds = [
        kind
        for kind, keys in (("webhook", _WEBHOOK), ("slack", ("slack_url_file",)), ("email", ("email_to",)))
        if any(values[key] for key in keys)
    ]
    if len(kinds) != 1:
        return Problem(
            "must have exactly one target: webhook_url (or webhook_url_file), slack_url_file or email_to",
            "webhook_url" if not kinds else "slack_url_file" if "slack" in kinds else "email_to",
        )
    if values["webhook_url"] and values["webhook_url_file"]:
        return Problem("give webhook_url or webhook_url_file, not both", "webhook_url_file")
    for key, kind in _ONLY_FOR.items():
        if values[key] and kind != kinds[0]:
            return Problem(f"is for {_a(kind)} target, not {_a(kinds[0])} one", key)
    if kinds[0] == "email" and not values["smtp_host"]:
        return Problem("is required for an email target", "smtp_host")
    if values["smtp_password_file"] and not values["smtp_user"]:
        return Problem("is required with smtp_password_file", "smtp_user")
    return None


_NOTIFY = Section(
    "notify",
    "Who hears about which events (docs/events.md). One target per table: a webhook (the event as JSON, "
    "optionally signed), a Slack incoming webhook (a readable message) or email. A URL with a token, the "
    "HMAC secret and the SMTP password are read from files of mode 0600, never written here.",
    (
        Key(
            "name",
            STRING,
            "",
            "A name for messages and `sumbg status` (never the URL); empty: the kind.",
            (SINGLE_LINE,),
        ),
        Key(
            "events", STRINGS, ("failures",), 'Event names, groups ("all", "failures") or "upgrade.*".', (EVENT_NAMES,)
        ),
        Key(
            "webhook_url",
            STRING,
            "",
            "POST each event as JSON here (a URL without a secret in it).",
            (HTTP_URL,),
            if_set=True,
        ),
        Key(
            "webhook_url_file",
            STRING,
            "",
            "A file (mode 0600) holding the webhook's URL, when the URL carries a token.",
            (CREDENTIAL_FILE,),
            if_set=True,
        ),
        Key(
            "webhook_secret_file",
            STRING,
            "",
            "A file (mode 0600) holding a key: each POST is signed, X-Sumbg-Signature: sha256=HMAC(key, body).",
            (CREDENTIAL_FILE,),
            if_set=True,
        ),
        Key(
            "slack_url_file",
            STRING,
            "",
            "A file (mode 0600) holding a Slack incoming-webhook URL: each event as one readable paragraph.",
            (CREDENTIAL_FILE,),
            if_set=True,
        ),
        Key("email_to", STRINGS, (), "Send each event by email to these addresses.", (_ADDRESSES,), if_set=True),
        Key("email_from", STRING, "", "The sender; empty: sumbg@<this host's name>.", (EMAIL,), if_set=True),
        Key("smtp_host", STRING, "", "The SMTP server (required for email).", (SINGLE_LINE,), if_set=True),
        Key("smtp_port", INTEGER, 587, "Its port.", (port(),), if_set=True),
        Key(
            "smtp_starttls",
            BOOLEAN,
            True,
            "Upgrade the connection with STARTTLS (refused if the server cannot).",
            if_set=True,
        ),
        Key("smtp_user", STRING, "", "Log in as this user; empty: no login.", (SINGLE_LINE,), if_set=True),
        Key(
            "smtp_password_file",
            STRING,
            "",
            "A file (mode 0600) holding smtp_user's password.",
            (CREDENTIAL_FILE,),
            if_set=True,
        ),
        Key(
            "smtp_ca_file",
            STRING,
            "",
            "A CA bundle trusted for STARTTLS (an in-house relay); empty: the system's CAs.",
            (EXISTING_FILE,),
            if_set=True,
        ),
    ),
    checks=(
        Rule(
            "exactly one target: webhook_url or webhook_url_file, slack_url_file, or email_to with smtp_host",
            _one_target,
        ),
    ),
)


def _notify_key(where: str) -> Key:
    return Key(
        "notify",
        TABLES,
        (),
        f"Notifications of {where} events: a table per target (docs/events.md).",
        (each_a_table("must be a table with events and one target"),),
        example='name = "ops"\nevents = ["failures"]\nslack_url_file = "/etc/sumbg/slack-url"',
        item=_NOTIFY,
    )


# ---------------------------------------------------------------- [hooks]: site.toml


def _hook_command(value: str) -> str | None:
    if "\n" in value:
        return "must be a single line"
    if value.startswith(MANAGE_PREFIX) and not value[len(MANAGE_PREFIX) :].strip():
        return 'must name the management command after "manage:", e.g. "manage: wagtail_update_index"'
    return None


HOOK_COMMAND = Rule('one line: a host command, or "manage: <command>"', _hook_command)


def _hook(name: str, when: str) -> Key:
    return Key(name, STRING, "", f"{when}; empty: none.", (HOOK_COMMAND,))


# ---------------------------------------------------------------- sumbg.toml

SUMBG_TOML = ConfigFile(
    "sumbg.toml",
    "`$SUMBG_ROOT/sumbg.toml` (default /srv/sum): settings of the host, for every site. The file and "
    "every key in it are optional; sumbg never writes it except `sumbg takeover`, which sets [edge] in place.",
    (
        Section("", "", (_notify_key("every site's"),)),
        Section(
            "edge",
            "The edge: one Caddy in front of every site, which sumbg runs and reloads.",
            (
                Key("http_port", INTEGER, 80, "The published HTTP port.", (port(),)),
                Key("https_port", INTEGER, 443, "The published HTTPS port.", (port(),)),
                Key(
                    "preview_port",
                    INTEGER,
                    8081,
                    "The port on 127.0.0.1 where sumbg checks a colour before it goes live (loopback only).",
                    (port(),),
                ),
                Key("bind", STRING, "0.0.0.0", "The address the HTTP and HTTPS ports are published on.", (IP_ADDRESS,)),
                Key(
                    "tls",
                    STRING,
                    "auto",
                    "auto: certificates from ACME; internal: from Caddy's own CA; off: plain HTTP (TLS ends in front).",
                    (one_of(*TLS_MODES),),
                ),
                Key("acme_email", STRING, "", "The email address given to the ACME CA; empty: none.", (EMAIL,)),
                Key(
                    "acme_ca",
                    STRING,
                    "",
                    "Another ACME directory (a staging or in-house CA); empty: Let's Encrypt (Caddy's default).",
                    (ACME_DIRECTORY,),
                ),
                Key(
                    "acme_ca_root",
                    STRING,
                    "",
                    "The root that acme_ca's API certificate chains to, when it is not a public one; empty: none.",
                    (PEM_FILE,),
                ),
                Key(
                    "name",
                    STRING,
                    "sum-edge",
                    "The edge's Compose project, network and container prefix; change it only to run a second "
                    "root on one host.",
                    (SLUG,),
                ),
            ),
            into="edge",
            checks=(PORTS_DIFFER,),
        ),
        Section(
            "images",
            "The images of the stacks; the defaults are the official public images.",
            (
                Key(
                    "python",
                    STRING,
                    "python:3.12-slim",
                    "The Python base image of client builds.",
                    (_image_ref("python:3.12-slim", empty_ok=False),),
                ),
                Key(
                    "postgres",
                    STRING,
                    "postgres:16",
                    "Each site's PostgreSQL.",
                    (_image_ref("postgres:16", empty_ok=False),),
                ),
                Key("redis", STRING, "redis:7", "Each site's Redis.", (_image_ref("redis:7", empty_ok=False),)),
                Key(
                    "caddy",
                    STRING,
                    "caddy:2",
                    "The edge; must be Caddy 2.9.0 or later.",
                    (_image_ref("caddy:2", empty_ok=False),),
                ),
            ),
            into="images",
        ),
        Section(
            "build",
            "How client images are built, for every site (a site's [build] overrides each key; "
            "git_url_rewrites are merged).",
            (
                Key(
                    "ca_bundle",
                    STRING,
                    "",
                    "A CA bundle trusted by pip and git in builds and by sumbg's git fetch (it replaces the "
                    "default CAs: include them); empty: the defaults.",
                    (EXISTING_FILE,),
                    attr="ca_bundle",
                ),
                Key(
                    "lock",
                    STRING,
                    "none",
                    "What a new build resolves against: none (newest within requirements.txt's ranges), live "
                    "(the live release's versions for all that requirements.txt does not change), or file (the "
                    "repo's requirements.lock or constraints.txt). A release built before is rebuilt with the "
                    "versions it was built with, whatever this says.",
                    (one_of(*LOCK_MODES),),
                    attr="build_lock",
                ),
                Key(
                    "wheel_cache_max_gb",
                    NUMBER,
                    5.0,
                    "Size (GB) of the host-wide wheel cache every build reuses ($SUMBG_ROOT/.cache/wheels), "
                    "least recently used wheels pruned first; 0 turns it off.",
                    (NOT_NEGATIVE,),
                    attr="wheel_cache_max_gb",
                ),
                *_GIT_KEYS,
            ),
            into="build",
        ),
        Section(
            "preflight",
            "What an upgrade checks before it starts.",
            (
                Key(
                    "min_free_gb",
                    NUMBER,
                    2.0,
                    "Free space (GB) needed under the root and Docker's data root, for the backup and the image.",
                    (NOT_NEGATIVE,),
                ),
            ),
        ),
        Section(
            "upgrade",
            "Upgrades of every site.",
            (
                Key(
                    "retire_idle_after",
                    DURATION,
                    0.0,
                    "How long after a switch `sumbg retire --due` (from cron) stops the idle colour; 0: it is kept.",
                ),
                Key(
                    "background_cpu_shares",
                    INTEGER,
                    128,
                    "The CPU weight (Docker cpu-shares; the live colour has 1024) of builds, one-off commands and "
                    "a colour not yet live.",
                    (CPU_SHARES,),
                ),
            ),
        ),
        Section(
            "backup",
            "Backups of every site: `sumbg backup` (and the schedule `sumbg schedule install` writes) dumps the "
            "database and copies the media, verifies them here, then uploads them to the restic repository.",
            _backup_keys(site=False),
            into="backup",
        ),
        Section(
            "logs",
            "The logs of every colour sumbg removes (retire, an upgrade replacing its idle colour, an undo), "
            "kept compressed in `<slug>/logs/` for `sumbg logs SLUG --release REF`.",
            (
                Key(
                    "keep_mb",
                    NUMBER,
                    100.0,
                    "Compressed logs kept per site (MB; a site's [logs] keep_mb overrides it); the oldest go "
                    "first, and one colour's logs keep their newest lines within it. 0 keeps none.",
                    (NOT_NEGATIVE,),
                    attr="logs_keep_mb",
                ),
            ),
        ),
        Section(
            "doctor",
            "What `sumbg doctor` holds the host to.",
            (
                Key(
                    "addresses",
                    STRINGS,
                    (),
                    "The addresses the sites' domains must resolve to (list them behind NAT); empty: [edge] bind "
                    "when it is one address, else the addresses of this host's interfaces.",
                    (IP_ADDRESSES,),
                    attr="doctor_addresses",
                ),
            ),
        ),
        Section(
            "network",
            "sumbg's address plan: every site's networks get their subnets from this pool, not from Docker's "
            "default pools (about 30 networks per engine), so a host holds as many sites as its memory allows. "
            "Each site gets one block, cut in two: its own network (data stack and colours) and its link to the "
            "edge, which no other site shares. Allocations are recorded in `$SUMBG_ROOT/networks.json`; changing "
            "these settings affects new sites only.",
            (
                Key(
                    "pool",
                    STRING,
                    DEFAULT_POOL,
                    "The private IPv4 range site networks come from; it must not overlap the host's routes "
                    "(checked when a site is added) nor Docker's default pools.",
                    (POOL,),
                ),
                Key(
                    "site_prefix",
                    INTEGER,
                    DEFAULT_SITE_PREFIX,
                    "The size of each site's block (a /27 is 32 addresses: two /28 networks).",
                    (SITE_PREFIX,),
                ),
            ),
            into="network",
            checks=(POOL_HOLDS_A_BLOCK,),
        ),
    ),
)


# ---------------------------------------------------------------- site.toml

_SMOKE_CHECK = Section(
    "smoke.checks",
    "One request through the preview listener, with the site's Host header and X-Forwarded-Proto: https.",
    (
        Key("path", STRING, "", "The path requested.", (_CHECK_PATH,), required=True),
        Key("method", STRING, "GET", "GET, or POST to submit a form.", (one_of("GET", "POST"),), if_set=True),
        Key("status", INTEGER, 200, "The status code expected.", (_HTTP_STATUS,)),
        Key("content_type", STRING, "", "The Content-Type expected to start with this; empty: any.", if_set=True),
        Key("contains", STRING, "", "Text the body must contain; empty: any.", if_set=True),
        Key(
            "json_status",
            STRINGS,
            (),
            'The body is JSON whose "status" is one of these, e.g. ["ok", "degraded"]; empty: not checked.',
            (_JSON_STATUS,),
            if_set=True,
        ),
        Key(
            "csrf_from",
            STRING,
            "",
            "A POST first GETs this path for Django's CSRF token and cookie; empty: none.",
            (_CSRF_FROM,),
            if_set=True,
        ),
        Key("form", STRING_TABLE, (), "The form fields a POST sends.", (_FORM,), if_set=True),
    ),
)

_BASIC_AUTH = Section(
    "caddy.basic_auth",
    "Basic auth on a path.",
    (
        Key(
            "path",
            STRING,
            "",
            "A Caddy path pattern.",
            (matching(_AUTH_PATH, "a path pattern", "must be a path pattern like /admin/*"),),
            required=True,
        ),
        Key(
            "user",
            STRING,
            "",
            "The user name.",
            (matching(_AUTH_USER, "letters, digits, . _ -", "must be letters, digits, dots, hyphens or underscores"),),
            required=True,
        ),
        Key(
            "hash",
            STRING,
            "",
            "The password's bcrypt hash, from `caddy hash-password` (never the password).",
            (
                matching(
                    _BCRYPT,
                    "a bcrypt hash",
                    "must be a bcrypt hash from `caddy hash-password` (never a plain password)",
                ),
            ),
            required=True,
        ),
    ),
)

SITE_TOML = ConfigFile(
    "site.toml",
    "`$SUMBG_ROOT/<slug>/site.toml`: one site's settings. `sumbg init` writes it with every setting spelled "
    "out; edit it freely: sumbg validates it before every operation (`sumbg apply` after editing [caddy]).",
    (
        Section(
            "",
            "",
            (
                Key(
                    "slug",
                    STRING,
                    "",
                    "The site's name: its folder under the root, its containers, network and database.",
                    (SLUG,),
                    required=True,
                ),
                Key(
                    "domains",
                    STRINGS,
                    (),
                    "Every name the site answers to; the first is canonical (checks use it). An older "
                    '`domain = "..."` still loads.',
                    (DOMAINS,),
                    required=True,
                    option=Option("domains", "--domain"),
                ),
                Key(
                    "repo",
                    STRING,
                    "",
                    "The client repository: a path or a git URL.",
                    required=True,
                    option=Option("repo", "--repo"),
                ),
                Key(
                    "environment",
                    STRING,
                    "production",
                    "A label for the sites matrix (production, staging, ...).",
                    option=Option("environment", "--environment"),
                ),
                Key("notes", STRING, "", "Free text for the sites matrix (the client, a contact, ...)."),
                _notify_key("this site's"),
            ),
        ),
        Section(
            "app",
            "The Django project in the client's repository.",
            (
                Key(
                    "project",
                    STRING,
                    "",
                    "The Django project's package (found by `sumbg init` beside manage.py).",
                    (PROJECT,),
                    option=Option("project", "--project"),
                ),
                Key(
                    "settings",
                    STRING,
                    "",
                    "The settings module (DJANGO_SETTINGS_MODULE).",
                    (DOTTED_PATH,),
                    attr="settings_module",
                    default_doc="`<project>.settings.production`",
                ),
                Key(
                    "wsgi",
                    STRING,
                    "",
                    "The WSGI application gunicorn serves.",
                    (DOTTED_PATH,),
                    default_doc="`<project>.wsgi:application`",
                ),
                Key("web_workers", INTEGER, 2, "gunicorn's worker processes in each colour.", (POSITIVE,)),
                Key(
                    "worker_command",
                    STRING,
                    "",
                    "A background worker's shell command (`init --worker`: SUM's Celery worker); empty: none.",
                    (SINGLE_LINE,),
                    option=Option("worker_command", "--worker-command"),
                ),
                Key(
                    "stop_timeout",
                    NUMBER,
                    30.0,
                    "Seconds a stopping web lets its in-flight requests finish (gunicorn's graceful timeout); "
                    "Docker kills it 5 s after that.",
                    (POSITIVE,),
                    attr="web_stop_timeout",
                ),
            ),
        ),
        Section(
            "worker",
            "The background worker ([app] worker_command), part of each release: an operation that starts it "
            "waits until it is ready (running, not restarted for ready_after seconds, and for a Celery worker "
            "answering `celery inspect ping`); after a switch the old colour's worker finishes its tasks "
            "(SIGTERM, Celery's warm shutdown) while the new one already consumes.",
            (
                Key(
                    "ready_after",
                    NUMBER,
                    10.0,
                    "Seconds a worker must run without restarting to count as ready.",
                    (POSITIVE,),
                ),
                Key(
                    "ping_timeout",
                    NUMBER,
                    5.0,
                    "Seconds a Celery worker has to answer `celery inspect ping`.",
                    (POSITIVE,),
                ),
                Key(
                    "ready_timeout",
                    NUMBER,
                    90.0,
                    "Seconds an operation waits for the worker it started to be ready before it fails.",
                    (POSITIVE,),
                ),
                Key(
                    "stop_timeout",
                    NUMBER,
                    300.0,
                    "Seconds an old worker has to finish its tasks after SIGTERM; then SIGKILL.",
                    (POSITIVE,),
                ),
            ),
            into="worker",
        ),
        Section(
            "env",
            'Extra non-secret environment variables of the app, NAME = "value" (secrets go in `<slug>/.env`).',
            entries=Entries(
                "An environment variable of the app.",
                _env_entry,
                "one line; NAME: letters, digits and _, not first a digit",
                "extra_env",
                Option("env", "--env KEY=VALUE"),
            ),
        ),
        Section(
            "database",
            "The site's PostgreSQL.",
            (
                Key(
                    "publish_port",
                    INTEGER,
                    0,
                    "Publish Postgres on 127.0.0.1:PORT for diagnosis; 0 keeps it private.",
                    (port(allow_zero=True),),
                    attr="db_publish_port",
                    option=Option("db_publish_port", "--db-port"),
                ),
            ),
        ),
        Section(
            "health",
            "The health check of a new colour.",
            (
                Key(
                    "timeout",
                    NUMBER,
                    120.0,
                    "Seconds a new colour has to answer /health/ with the new version.",
                    (POSITIVE,),
                    attr="health_timeout",
                ),
                Key(
                    "required_checks",
                    STRINGS,
                    (),
                    'Checks of /health/ (e.g. ["celery"]) whose failure makes the site unhealthy, even when it '
                    'answers "degraded".',
                    (CHECK_NAMES,),
                ),
            ),
        ),
        Section(
            "upgrade",
            "Upgrades of this site.",
            (
                Key(
                    "keep_backups",
                    INTEGER,
                    10,
                    "The newest backups kept, besides [backup] keep_daily/keep_weekly/keep_monthly; older ones "
                    "are deleted.",
                    (POSITIVE,),
                ),
                Key(
                    "watch",
                    NUMBER,
                    30.0,
                    "Seconds the watch after a switch keeps probing ([watch]); 0: no watch. `--watch` overrides it.",
                    (NOT_NEGATIVE,),
                    attr="watch_seconds",
                ),
                Key(
                    "retire_idle_after",
                    DURATION,
                    None,
                    "Stop the idle colour this long after an upgrade went live (`sumbg retire --due`, from cron): "
                    "less memory, and a rollback then restarts it (not instant). 0 keeps it; unset: sumbg.toml's.",
                    example='"2d"',
                    default_doc="sumbg.toml's",
                ),
            ),
        ),
        Section(
            "watch",
            "The watch after a switch reverts only on a failure that persists: consecutive_failures failed "
            "probes in a row, or more than max_failed_ratio of them (after min_probes), or at least "
            "max_visitor_5xx answers in the 5xx range that Caddy gave the site's visitors, above "
            "max_visitor_5xx_ratio of its requests.",
            (
                Key("interval", NUMBER, 1.0, "Seconds between probes.", (POSITIVE,)),
                Key("consecutive_failures", INTEGER, 3, "This many failed probes in a row revert.", (POSITIVE,)),
                Key("max_failed_ratio", NUMBER, 0.3, "More than this share of failed probes reverts...", (SHARE,)),
                Key("min_probes", INTEGER, 10, "...once at least this many probes were made.", (POSITIVE,)),
                Key(
                    "max_visitor_5xx",
                    INTEGER,
                    10,
                    "At least this many 5xx answers to the site's visitors revert...",
                    (POSITIVE,),
                ),
                Key(
                    "max_visitor_5xx_ratio",
                    NUMBER,
                    0.05,
                    "...when they are more than this share of its requests.",
                    (SHARE,),
                ),
            ),
            into="watch",
        ),
        Section(
            "hooks",
            'Commands run around an operation: a host command (run with sh -c), or "manage: <command>" '
            "(a management command in a one-off container of the release), with SUMBG_SLUG, SUMBG_OPERATION, "
            "SUMBG_OUTCOME, SUMBG_FROM_REF, SUMBG_TO_REF, SUMBG_FROM_COLOUR, SUMBG_TO_COLOUR and SUMBG_HISTORY_ID in their environment "
            "(docs/events.md). A failing pre_* hook stops the operation before anything changes; a failing post_* "
            "hook is reported and recorded, and undoes nothing.",
            (
                _hook("pre_upgrade", "Before an upgrade's backup, once the new release is built (a failure stops it)"),
                _hook("post_switch", "Once an upgrade's new release is live and confirmed, before the watch"),
                _hook("post_upgrade", "Once an upgrade succeeded"),
                _hook("post_rollback", "Once traffic went back: `sumbg rollback`, or the watch's revert"),
                _hook("pre_backup", "Before every backup (`sumbg backup`, an upgrade's)"),
                Key(
                    "hook_timeout", NUMBER, 60.0, "Seconds a hook may run before it is killed (and fails).", (POSITIVE,)
                ),
            ),
            into="hooks",
        ),
        Section(
            "migrations",
            "Before `migrate` touches the live database, an upgrade restores the fresh backup into a scratch "
            "database, migrates that copy, and runs the smoke checks and read_paths against the LIVE release "
            "pointed at the migrated copy: if it fails there, the release is breaking and is refused unless "
            "`--maintenance` or `--accept-breaking` is given.",
            (
                Key("rehearsal", BOOLEAN, True, "Rehearse the migrations on a copy of the database."),
                Key(
                    "rehearsal_max_mb",
                    INTEGER,
                    2048,
                    "Databases larger than this (MB) skip the rehearsal (and say so) to keep the upgrade short.",
                    (POSITIVE,),
                ),
                Key(
                    "read_paths",
                    STRINGS,
                    (),
                    "More GET paths the live release must still serve on the migrated database.",
                    (READ_PATHS,),
                ),
            ),
            into="migrations",
        ),
        Section(
            "backup",
            "This site's backups: each key overrides sumbg.toml's [backup].",
            _backup_keys(site=True),
            into="backup",
        ),
        Section(
            "caddy",
            "The site's block in the edge Caddy (the SUM golden path by default). After editing, "
            "`sumbg apply` renders, validates (caddy validate) and reloads the edge.",
            (
                Key(
                    "redirect_to_canonical",
                    BOOLEAN,
                    True,
                    "Other domains redirect (308) to the first one; false: every domain serves the site.",
                ),
                Key("encode", BOOLEAN, True, "Compress responses (encode gzip zstd)."),
                Key(
                    "security_headers",
                    BOOLEAN,
                    True,
                    "The golden path's X-Content-Type-Options, X-Frame-Options, Referrer-Policy and "
                    "Permissions-Policy.",
                ),
                Key(
                    "behind_proxy",
                    BOOLEAN,
                    False,
                    "TLS ends at a proxy in front of the edge (the host Caddy `sumbg adopt` kept): plain HTTP here.",
                ),
                Key(
                    "extra",
                    STRING,
                    "",
                    "Raw Caddyfile directives inside the site block (braces must balance), e.g. for a path matcher.",
                    (BALANCED,),
                ),
                Key(
                    "headers",
                    STRING_TABLE,
                    (),
                    'Response headers added or overridden ("" removes one): { "X-Frame-Options" = "SAMEORIGIN" }.',
                    (HEADERS,),
                ),
                Key(
                    "basic_auth",
                    TABLES,
                    (),
                    "Basic auth on a path (e.g. staging's /admin/*); the hash from `caddy hash-password`.",
                    (each_a_table("must be a table with path, user and hash"),),
                    example='path = "/admin/*"\nuser = "staging"\nhash = "$2a$14$..."',
                    item=_BASIC_AUTH,
                ),
            ),
            into="caddy",
        ),
        Section(
            "build",
            "How the client image is built; empty values take sumbg.toml's [build] and [images].",
            (
                Key(
                    "python_image",
                    STRING,
                    "",
                    "The Python base image; empty: sumbg.toml's images.python.",
                    (_image_ref("python:3.12-slim", empty_ok=True),),
                ),
                Key(
                    "build_packages",
                    STRINGS,
                    (),
                    "Debian packages for the build stage only (compilers, -dev headers).",
                    (DEBIAN_PACKAGES,),
                ),
                Key("packages", STRINGS, (), "Debian packages for the final image.", (DEBIAN_PACKAGES,)),
                Key(
                    "lock",
                    STRING,
                    "",
                    "none, live or file (see sumbg.toml [build] lock); empty: sumbg.toml's.",
                    (one_of("", *LOCK_MODES),),
                ),
                *_GIT_KEYS,
            ),
            into="build",
        ),
        Section(
            "smoke",
            "The smoke checks a colour must pass before it goes live, and the watch's GET probes.",
            (
                Key(
                    "checks",
                    TABLES,
                    None,
                    "The checks, in order; checks = [] for none.",
                    (each_a_table("must be a table"),),
                    attr="smoke_checks",
                    item=_SMOKE_CHECK,
                    default_doc="`/health/` (ok or degraded), `/`, `/static/sum_core/css/main.css` (text/css), "
                    "`/admin/login/` (401 when behind basic_auth)",
                ),
            ),
        ),
        Section(
            "logs",
            "The logs of this site's removed colours, kept in `<slug>/logs/`.",
            (
                Key(
                    "keep_mb",
                    NUMBER,
                    None,
                    "Compressed logs kept for this site (MB); 0 keeps none; unset: sumbg.toml's [logs] keep_mb.",
                    (NOT_NEGATIVE,),
                    attr="logs_keep_mb",
                    example="200",
                    default_doc="sumbg.toml's",
                ),
            ),
        ),
    ),
)

FILES = (SUMBG_TOML, SITE_TOML)


# ---------------------------------------------------------------- values in configuration objects


def lookup(config: object, attr: str) -> Any:
    """The value at a dotted attribute of a configuration object."""
    value: Any = config
    for part in attr.split("."):
        value = getattr(value, part)
    return value


_TYPE_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    if cls not in _TYPE_HINTS:
        _TYPE_HINTS[cls] = get_type_hints(cls)
    return _TYPE_HINTS[cls]


def assemble(cls: type[T], values: Mapping[str, Any], **given: Any) -> T:
    """A frozen configuration object (and the dataclasses in it) from values by dotted attribute."""
    hints = _type_hints(cls)
    kwargs = dict(given)
    used = set()
    for field in fields(cls):  # type: ignore[arg-type]
        if field.name in values:
            kwargs[field.name] = values[field.name]
            used.add(field.name)
            continue
        prefix = f"{field.name}."
        inner = {attr[len(prefix) :]: value for attr, value in values.items() if attr.startswith(prefix)}
        if inner:
            kind = hints[field.name]
            assert isinstance(kind, type) and is_dataclass(kind), f"{cls.__name__}.{field.name} holds no table"
            kwargs[field.name] = assemble(kind, inner)
            used.update(prefix + attr for attr in inner)
    left = set(values) - used
    assert not left, f"{cls.__name__} has no field for {sorted(left)}"
    return cls(**kwargs)
