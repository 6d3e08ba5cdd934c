"""The fleet file (`--fleet PATH` or $SUMBG_FLEET): the hosts a `sumbg fleet` command drives."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sumbg import naming
from sumbg.config.host import DEFAULT_ROOT
from sumbg.config.tables import Table, load_toml
from sumbg.errors import ConfigError, UsageError

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
    table = Table(load_toml(path, label), label)
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
    hosts: list[FleetHost] = []
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
    groups: dict[str, tuple[str, ...]] = {}
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
