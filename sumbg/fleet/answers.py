"""What each host's sumbg answers the fleet, read into typed records.

Two documents cross the link: `sumbg status --json` (every site of the host) and `sumbg
releases --json` (each named site's tags). They are read here once, field by field, into
frozen records; the rest of the fleet never indexes a host's JSON. A field may be absent
(an older sumbg on the host); one of another type makes that host's answer unreadable,
reported like a host that did not answer (HostUnreachable), never as a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sumbg.errors import HostUnreachable

# The one health value the fleet shows: the app's own word, else why it gave none, else the HTTP status.
Health = str | int | None


@dataclass(frozen=True)
class Rollback:
    possible: bool = False
    instant: bool = False  # the previous colour still runs: a rollback is a switch
    ref: str | None = None


@dataclass(frozen=True)
class BackupView:
    """A site's last good backups as its host's status reported them (ages in seconds)."""

    local_age: float | None = None  # None: no good backup on the host
    offsite_age: float | None = None  # None: none offsite (or no repository)
    repository: str | None = None  # None: the site has no [backup] repository
    problems: tuple[str, ...] = ()  # older than max_age, or the last backup failed


@dataclass(frozen=True)
class WorkerState:
    """One colour's worker, as the host's `status --json` says Docker has it."""

    colour: str
    state: str  # none, running, starting, restarting, stopped
    restart_count: int = 0
    exit_code: int | None = None

    def describe(self) -> str:
        if self.state == "restarting":
            return f"restarting ({self.restart_count}x, exit {self.exit_code})"
        if self.state == "stopped" and self.exit_code is not None:
            return f"stopped (exit {self.exit_code})"
        return self.state


@dataclass(frozen=True)
class SiteView:
    """One site as its host's `sumbg status --json` described it (the fields the fleet reads)."""

    slug: str
    domain: str | None = None
    domains: tuple[str, ...] = ()
    environment: str | None = None
    notes: str | None = None
    live: str | None = None  # the live colour; None: no live release
    ref: str | None = None
    sum_core: str | None = None
    deployed_at: str | None = None
    last_deploy_outcome: str | None = None
    health: Health = None
    rollback: Rollback = field(default_factory=Rollback)
    problems: tuple[str, ...] = ()  # where its records, Caddy's files and what answers disagree
    operation: str | None = None  # the kind of operation running (or interrupted) on it
    interrupted: bool = False
    backup: BackupView = field(default_factory=BackupView)
    workers: tuple[WorkerState, ...] = ()  # by colour (an older sumbg says nothing)
    worker_problem: str | None = None  # the live colour's worker is down or restarting

    def worker(self, colour: str | None) -> WorkerState | None:
        return next((w for w in self.workers if w.colour == colour), None)


@dataclass(frozen=True)
class HostStatus:
    """A host's whole `sumbg status --json`."""

    sumbg: str | None  # the version of sumbg there
    sites: tuple[SiteView, ...]


@dataclass(frozen=True)
class Tag:
    tag: str
    commit: str | None = None
    sum_core: str | None = None  # the version its requirements pin, if any


@dataclass(frozen=True)
class SiteReleases:
    """One site's tags, newest first (its entry of `sumbg releases --json`), or why there are none."""

    tags: tuple[Tag, ...] = ()
    note: str | None = None  # e.g. "not fetched: ..."
    error: str | None = None  # they could not be read at all


class _Reading:
    """One answer being read: every complaint names the host, the command and the place in it."""

    def __init__(self, host: str, command: str) -> None:
        self.host = host
        self.command = command

    def fail(self, where: str, what: str) -> NoReturn:
        raise HostUnreachable(
            f"host {self.host}: `sumbg {self.command}` answered what this sumbg cannot read: {where}: {what}"
        )

    def table(self, value: object, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(where, f"an object was expected, not {type(value).__name__}")
        return value

    def items(self, doc: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
        value = doc.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(f"{where}{key}", f"a list was expected, not {type(value).__name__}")
        return [self.table(item, f"{where}{key}[{index}]") for index, item in enumerate(value)]

    def text(self, doc: Mapping[str, Any], key: str, where: str) -> str | None:
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(f"{where}{key}", f"text was expected, not {type(value).__name__}")
        return value

    def required_text(self, doc: Mapping[str, Any], key: str, where: str) -> str:
        value = self.text(doc, key, where)
        if not value:
            self.fail(f"{where}{key}", "missing")
        return value

    def number(self, doc: Mapping[str, Any], key: str, where: str) -> float | None:
        value = doc.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            self.fail(f"{where}{key}", f"a number was expected, not {type(value).__name__}")
        return None if value is None else float(value)

    def integer(self, doc: Mapping[str, Any], key: str, where: str) -> int | None:
        value = doc.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(f"{where}{key}", f"an integer was expected, not {type(value).__name__}")
        return value

    def texts(self, doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = doc.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(f"{where}{key}", "a list of text was expected")
        return tuple(value)


def read_status(host: str, doc: Mapping[str, Any]) -> HostStatus:
    """`sumbg status --json` of host `host`."""
    reading = _Reading(host, "status")
    sites = tuple(
        _site(reading, item, f"sites[{index}].") for index, item in enumerate(reading.items(doc, "sites", ""))
    )
    return HostStatus(sumbg=reading.text(doc, "sumbg", ""), sites=sites)


def _site(reading: _Reading, doc: Mapping[str, Any], where: str) -> SiteView:
    domain = reading.text(doc, "domain", where)
    rollback = reading.table(doc.get("rollback"), f"{where}rollback")
    operation = reading.table(doc.get("operation"), f"{where}operation")
    return SiteView(
        slug=reading.required_text(doc, "site", where),
        domain=domain,
        domains=reading.texts(doc, "domains", where) or ((domain,) if domain else ()),
        environment=reading.text(doc, "environment", where),
        notes=reading.text(doc, "notes", where),
        live=reading.text(doc, "live", where),
        ref=reading.text(doc, "ref", where),
        sum_core=reading.text(doc, "sum_core", where),
        deployed_at=reading.text(doc, "deployed_at", where),
        last_deploy_outcome=reading.text(doc, "last_deploy_outcome", where),
        health=_health(reading.table(doc.get("health"), f"{where}health")),
        rollback=Rollback(
            possible=bool(rollback.get("possible")),
            instant=bool(rollback.get("instant")),
            ref=reading.text(rollback, "ref", f"{where}rollback."),
        ),
        problems=reading.texts(
            reading.table(doc.get("agreement"), f"{where}agreement"), "problems", f"{where}agreement."
        ),
        operation=str(operation.get("kind")) if operation else None,
        interrupted=bool(doc.get("interrupted")),
        workers=_workers(reading, reading.table(doc.get("workers"), f"{where}workers"), f"{where}workers."),
        worker_problem=reading.text(doc, "worker_problem", where),
        backup=_backup(reading, reading.table(doc.get("backup"), f"{where}backup"), f"{where}backup."),
    )


def _backup(reading: _Reading, doc: Mapping[str, Any], where: str) -> BackupView:
    """A site's `backup` (absent from an older sumbg: nothing known, no problem claimed)."""
    local = reading.table(doc.get("local"), f"{where}local")
    offsite = reading.table(doc.get("offsite"), f"{where}offsite")
    return BackupView(
        local_age=reading.number(local, "age_seconds", f"{where}local."),
        offsite_age=reading.number(offsite, "age_seconds", f"{where}offsite."),
        repository=reading.text(doc, "repository", where),
        problems=reading.texts(doc, "problems", where),
    )


def _workers(reading: _Reading, workers: Mapping[str, Any], where: str) -> tuple[WorkerState, ...]:
    found = []
    for colour in sorted(workers):
        view = reading.table(workers[colour], f"{where}{colour}")
        found.append(
            WorkerState(
                colour=colour,
                state=reading.required_text(view, "state", f"{where}{colour}."),
                restart_count=reading.integer(view, "restart_count", f"{where}{colour}.") or 0,
                exit_code=reading.integer(view, "exit_code", f"{where}{colour}."),
            )
        )
    return tuple(found)


def _health(health: Mapping[str, Any]) -> Health:
    # The app's own status comes from its /health/ body, which sumbg does not control: shown as text
    # whatever it is, rather than making the whole host unreadable.
    shown = health.get("status") or health.get("error") or health.get("http_status")
    return shown if shown is None or isinstance(shown, str | int) else str(shown)


def read_releases(host: str, doc: Mapping[str, Any]) -> dict[str, SiteReleases]:
    """`sumbg releases SLUG... --json` of host `host`: slug -> that site's releases."""
    reading = _Reading(host, "releases")
    found = {}
    for index, item in enumerate(reading.items(doc, "sites", "")):
        where = f"sites[{index}]."
        tags = tuple(
            Tag(
                tag=reading.required_text(tag, "tag", f"{where}tags[{number}]."),
                commit=reading.text(tag, "commit", f"{where}tags[{number}]."),
                sum_core=reading.text(tag, "sum_core", f"{where}tags[{number}]."),
            )
            for number, tag in enumerate(reading.items(item, "tags", where))
        )
        found[reading.required_text(item, "site", where)] = SiteReleases(
            tags=tags, note=reading.text(item, "note", where), error=reading.text(item, "error", where)
        )
    return found
