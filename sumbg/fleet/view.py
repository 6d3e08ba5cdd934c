"""What the fleet shows of its hosts: `fleet status` as a table, as a JSON document and as
the fleet's sites matrix (SITES.md). Pure: the views come from the driver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sumbg.config import FleetHost
from sumbg.fleet.answers import Health, HostStatus, SiteView, read_status
from sumbg.ops import reports

FLEET_MATRIX_COLUMNS = ("Host", *reports.MATRIX_COLUMNS)


@dataclass(frozen=True)
class HostView:
    """What one host answered (its `status --json`), or why it did not."""

    host: FleetHost
    status: HostStatus | None = None
    error: str | None = None

    @classmethod
    def answered(cls, host: FleetHost, doc: Mapping[str, Any]) -> HostView:
        """The view of a host that answered `doc`; raises HostUnreachable if it cannot be read."""
        return cls(host, status=read_status(host.name, doc))

    @property
    def reachable(self) -> bool:
        return self.status is not None

    @property
    def sites(self) -> tuple[SiteView, ...]:
        return self.status.sites if self.status else ()


def site_names(views: Sequence[HostView]) -> dict[str, SiteView]:
    """Every site that answered, by host/slug, in fleet order."""
    return {f"{view.host.name}/{site.slug}": site for view in views for site in view.sites}


@dataclass(frozen=True)
class SiteRow:
    """One line of `fleet status`: what an operator looks at across the fleet."""

    host: str
    site: str
    domains: tuple[str, ...]
    live: str | None
    ref: str | None
    sum_core: str | None
    health: Health
    last: str | None
    rollback: str  # instant | restart | none
    rollback_to: str | None
    problem: str
    worker: str  # the live colour's worker (running, restarting (3x, exit 1), none, ...); "-": not said
    backup: str  # local/offsite ages of the last good backups, e.g. "3h/3h", "3h/-" (none offsite)
    backup_problems: tuple[str, ...] = ()

    @classmethod
    def of(cls, host: str, site: SiteView) -> SiteRow:
        if site.interrupted:
            problem = "interrupted: run sumbg recover"
        elif site.problems:
            problem = "disagrees: " + site.problems[0]
        elif site.worker_problem:
            problem = site.worker_problem
        elif site.backup.problems:
            problem = "backup: " + site.backup.problems[0]
        else:
            problem = ""
        live_worker = site.worker(site.live)
        rollback = site.rollback
        return cls(
            host=host,
            site=site.slug,
            domains=site.domains,
            live=site.live,
            ref=site.ref,
            sum_core=site.sum_core,
            health=site.health,
            last=site.last_deploy_outcome,
            rollback=("instant" if rollback.instant else "restart") if rollback.possible else "none",
            rollback_to=rollback.ref,
            problem=problem,
            worker=live_worker.describe() if live_worker else "-",
            backup=backup_ages(site),
            backup_problems=site.backup.problems,
        )

    def document(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "site": self.site,
            "domains": list(self.domains),
            "live": self.live,
            "ref": self.ref,
            "sum_core": self.sum_core,
            "health": self.health,
            "last": self.last,
            "rollback": self.rollback,
            "rollback_to": self.rollback_to,
            "problem": self.problem,
            "worker": self.worker,
            "backup": self.backup,
            "backup_problems": list(self.backup_problems),
        }


def backup_ages(site: SiteView) -> str:
    """The ages of a site's last good backups, here/offsite ("-": none; offsite "" without a repository)."""

    def age(seconds: float | None) -> str:
        if seconds is None:
            return "-"
        return f"{seconds / 3600:.0f}h" if seconds < 172800 else f"{seconds / 86400:.0f}d"

    here = age(site.backup.local_age)
    return f"{here}/{age(site.backup.offsite_age)}" if site.backup.repository else here


def status_document(views: Sequence[HostView]) -> dict[str, Any]:
    """`fleet status --json` (without the matrix's path, which the command adds)."""
    return {
        "hosts": [
            {
                "name": v.host.name,
                "ssh": v.host.ssh,
                "reachable": v.reachable,
                "error": v.error,
                "sumbg": v.status.sumbg if v.status else None,
                "sites": [SiteRow.of(v.host.name, s).document() for s in v.sites],
            }
            for v in views
        ]
    }


def status_lines(views: Sequence[HostView]) -> list[str]:
    header = ("HOST", "SITE", "DOMAINS", "LIVE", "SUM-CORE", "HEALTH", "WORKER", "ROLLBACK", "LAST OPERATION", "BACKUP")
    rows: list[tuple[str, ...]] = []
    notes = []
    for view in views:
        if not view.reachable:
            rows.append((view.host.name, "-", "-", "-", "-", "UNREACHABLE", "-", "-", "-", "-"))
            notes.append(f"{view.host.name}: {view.error}")
            continue
        if not view.sites:
            rows.append((view.host.name, "(no sites)", "", "", "", "", "", "", ""))
        for site in view.sites:
            row = SiteRow.of(view.host.name, site)
            rows.append(
                (
                    view.host.name,
                    row.site,
                    ",".join(row.domains),
                    row.ref or "-",
                    row.sum_core or "-",
                    str(row.health or "-"),
                    row.worker,
                    row.rollback + (f" ({row.rollback_to})" if row.rollback_to else ""),
                    row.last or "-",
                    row.backup,
                )
            )
            if row.problem:
                notes.append(f"{view.host.name}/{row.site}: {row.problem}")
            for problem in row.backup_problems[1 if row.problem.startswith("backup: ") else 0 :]:
                notes.append(f"{view.host.name}/{row.site}: backup: {problem}")
    return text_table(header, rows) + notes


def text_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest value; no trailing spaces."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=False)).rstrip()
        for row in (header, *rows)
    ]


def matrix(views: Sequence[HostView]) -> str:
    """The fleet's sites matrix (SITES.md): the runbook's columns, with the host first."""
    rows: list[tuple[str | None, ...]] = []
    for view in views:
        if not view.reachable:
            rows.append((view.host.name, None, None, None, None, None, None, f"UNREACHABLE: {view.error}", None))
        for site in view.sites:
            rows.append(
                (
                    view.host.name,
                    site.domain,
                    site.environment,
                    site.slug,
                    site.ref,
                    site.deployed_at,
                    site.last_deploy_outcome,
                    site.notes,
                    "; ".join(
                        f"{w.colour}{' (live)' if w.colour == site.live else ''} {w.describe()}" for w in site.workers
                    )
                    or None,
                )
            )
    return reports.matrix_markdown(FLEET_MATRIX_COLUMNS, rows, source="`sumbg fleet status` on every host")
