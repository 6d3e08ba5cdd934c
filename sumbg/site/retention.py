"""Which backups are kept: one rule for the dumps on this host and the snapshots offsite.

restic's --keep-last/--keep-daily/--keep-weekly/--keep-monthly, as plain data: newest first,
the newest `last` are kept, then for each rule the newest backup of each of the last N days
(ISO weeks, months) that have one. sumbg applies it itself to both places, so the backups
recorded for a colour (a rollback's way back) are never deleted in either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sumbg.config import Retention


@dataclass(frozen=True)
class Dated:
    """A backup by name (a dump's file name, a snapshot's id) and when it was taken (UTC)."""

    name: str
    at: dt.datetime


BUCKETS: tuple[tuple[str, Callable[[dt.datetime], object]], ...] = (
    ("daily", lambda at: at.date()),
    ("weekly", lambda at: at.isocalendar()[:2]),
    ("monthly", lambda at: (at.year, at.month)),
)


def kept(backups: Iterable[Dated], rules: Retention, protected: Iterable[str] = ()) -> set[str]:
    """The names to keep; every other one may be deleted."""
    newest_first = sorted(backups, key=lambda b: b.at, reverse=True)
    keep = {b.name for b in newest_first[: rules.last]} | set(protected)
    for rule, bucket in BUCKETS:
        left = getattr(rules, rule)
        last_bucket: object = None
        for backup in newest_first:
            if left <= 0:
                break
            here = bucket(backup.at)
            if here != last_bucket:
                keep.add(backup.name)
                left -= 1
                last_bucket = here
    return keep


def to_delete(backups: Sequence[Dated], rules: Retention, protected: Iterable[str] = ()) -> list[str]:
    """The names the rules let go, oldest first."""
    keep = kept(backups, rules, protected)
    return [b.name for b in sorted(backups, key=lambda b: b.at) if b.name not in keep]


def parse_time(text: str) -> dt.datetime | None:
    """A UTC time from sumbg's stamp (20261206T101500Z) or RFC 3339 (restic's, nanoseconds and all)."""
    text = text.strip()
    try:
        return dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        pass
    head, _, _ = text.partition(".")
    zone = ""
    if "." in text:
        rest = text.split(".", 1)[1]
        zone = rest.lstrip("0123456789")
    elif text.endswith("Z") or "+" in text[10:] or "-" in text[10:]:
        head, zone = text[:19], text[19:]
    try:
        at = dt.datetime.fromisoformat(head + (zone if zone and zone != "Z" else "+00:00"))
    except ValueError:
        return None
    return at.astimezone(dt.UTC)
