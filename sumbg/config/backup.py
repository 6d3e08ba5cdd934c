"""`[backup]`: where a site's backups go besides its own disk, how many are kept, how old the
last good one may be. In sumbg.toml (every site) and site.toml (one site, key by key)."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass

DAY = 86400.0


@dataclass(frozen=True)
class BackupSettings:
    """`[backup]` of sumbg.toml. The credential files are paths (mode 0600); sumbg never reads
    a password or key into its records, its argv or its output."""

    repository: str = ""  # a restic repository: /path, sftp:user@host:/path, s3:https://host/bucket/path
    password_file: str = ""  # the repository's password (RESTIC_PASSWORD_FILE)
    env_file: str = ""  # restic's documented variables (AWS_ACCESS_KEY_ID=...), one per line
    ssh_key_file: str = ""  # for an sftp: repository
    ssh_known_hosts: str = ""  # the sftp server's host key; "" = ~/.ssh/known_hosts, new hosts accepted
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 6
    max_age: float = 26 * 3600.0  # an older last good backup is a problem in `status`
    schedule: str = ""  # "" = daily at a minute of 02:00-04:00 picked from the host's name; "HH:MM"; OnCalendar


@dataclass(frozen=True)
class SiteBackupSettings:
    """`[backup]` of site.toml: each key overrides sumbg.toml's ("" or unset: the host's)."""

    repository: str = ""
    password_file: str = ""
    env_file: str = ""
    ssh_key_file: str = ""
    ssh_known_hosts: str = ""
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    max_age: float | None = None


@dataclass(frozen=True)
class Retention:
    """Which backups are kept: the newest `last`, plus the newest of each of the last `daily` days,
    `weekly` ISO weeks and `monthly` months that have one (restic's --keep-* rules)."""

    last: int = 10
    daily: int = 7
    weekly: int = 4
    monthly: int = 6


@dataclass(frozen=True)
class BackupPolicy:
    """A site's backup settings, the site's over the host's key by key, with where each came from."""

    repository: str
    password_file: str
    env_file: str
    ssh_key_file: str
    ssh_known_hosts: str
    retention: Retention
    max_age: float
    repository_source: str = ""  # "site.toml backup.repository", for messages

    @property
    def offsite(self) -> bool:
        return bool(self.repository)


def backup_policy(host: BackupSettings, site: SiteBackupSettings, keep_last: int) -> BackupPolicy:
    def pick(site_value: str, host_value: str) -> str:
        return site_value or host_value

    def number(site_value: int | None, host_value: int) -> int:
        return host_value if site_value is None else site_value

    return BackupPolicy(
        repository=pick(site.repository, host.repository),
        password_file=pick(site.password_file, host.password_file),
        env_file=pick(site.env_file, host.env_file),
        ssh_key_file=pick(site.ssh_key_file, host.ssh_key_file),
        ssh_known_hosts=pick(site.ssh_known_hosts, host.ssh_known_hosts),
        retention=Retention(
            last=keep_last,
            daily=number(site.keep_daily, host.keep_daily),
            weekly=number(site.keep_weekly, host.keep_weekly),
            monthly=number(site.keep_monthly, host.keep_monthly),
        ),
        max_age=host.max_age if site.max_age is None else site.max_age,
        repository_source=(
            "site.toml backup.repository"
            if site.repository
            else "sumbg.toml backup.repository"
            if host.repository
            else ""
        ),
    )


def default_backup_time(seed: str | None = None) -> str:
    """A minute of 02:00-04:00, the same on every install on this host (spread over a fleet's
    hosts, so they do not all upload at once)."""
    digest = hashlib.sha256((seed if seed is not None else socket.gethostname()).encode()).digest()
    minute = int.from_bytes(digest[:4], "big") % 120
    return f"{2 + minute // 60:02d}:{minute % 60:02d}"
