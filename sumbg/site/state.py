"""What state.json records about a site, as types, and the transitions between its states.

state.json is a contract (operators and other tools read it), so these types read and write
exactly its JSON shape, keep keys they do not know (a newer sumbg's), and carry a schema
version: a file written before the version existed is read as version 1 and rewritten as the
current one the next time the site's records are saved. `SiteRecords.save_state` is the
only code that writes the file; everything that changes it goes through the methods here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sumbg import naming
from sumbg.adapters.build import ImageSpec
from sumbg.adapters.pydeps import Dependency
from sumbg.errors import UsageError
from sumbg.util import utc_now

JSON = dict[str, Any]
SCHEMA_VERSION = 2

# A colour's place in the site's life.
LIVE, IDLE, CANDIDATE, RETIRED = "live", "idle", "candidate", "retired"
# A release's outcome, once known: it went live and passed its watch, or it did not.
HEALTHY, FAILED = "healthy", "failed"
# A release's worker, as an operation last left it: ready (waited for), not ready (with why),
# started in the background (a rollback's), stopped (it finishes its tasks, then it is removed).
WORKER_READY, WORKER_NOT_READY, WORKER_STARTING, WORKER_STOPPED = "ready", "not ready", "starting", "stopped"
# A release's after-switch migrations: waiting for the watch, started, done, failed part way.
AFTER_SWITCH_PENDING, AFTER_SWITCH_RUNNING, AFTER_SWITCH_RAN, AFTER_SWITCH_FAILED = (
    "pending",
    "running",
    "ran",
    "failed",
)


def _known(cls: type, data: JSON) -> tuple[JSON, JSON]:
    """(the keys `cls` declares, the rest), from a JSON object."""
    names = {f.metadata.get("json", f.name) for f in dataclasses.fields(cls) if f.name != "extra"}
    return {k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names}


def _to_json(record: Any) -> JSON:
    """A record's JSON object: declared fields (under their JSON names) that are set, then unknown keys."""
    out: JSON = {}
    for f in dataclasses.fields(record):
        if f.name == "extra":
            continue
        value = getattr(record, f.name)
        if value is None and not f.metadata.get("always"):
            continue
        out[f.metadata.get("json", f.name)] = value.to_json() if hasattr(value, "to_json") else value
    out.update(record.extra)
    return out


@dataclass
class ColourRecord:
    """The release a colour holds: its image and what it was built from, and how it fared."""

    image: str
    ref: str | None = None
    commit: str | None = None
    sum_core: str | None = None
    deployed_at: str | None = None
    status: str | None = None  # LIVE, IDLE, CANDIDATE or RETIRED
    outcome: str | None = None  # HEALTHY or FAILED, once known
    reason: str | None = None  # why it failed
    failed_at: str | None = None
    backup: str | None = None  # the dump taken before this release went live (the way back)
    breaks_previous: str | None = None  # why leaving it needs the pre-upgrade database back
    after_switch_migrations: list[str] | None = None
    after_switch: str | None = None  # AFTER_SWITCH_*
    # The release's worker as sumbg last saw it: {"status": WORKER_*, "at": ..., "detail"?: ...}.
    worker: JSON | None = None
    # What its image holds: [{"name", "version"[, "commit", "source"]}] (sumbg.adapters.pydeps.Dependency).
    dependencies: list[dict[str, str]] | None = None
    extra: JSON = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: JSON) -> ColourRecord:
        known, extra = _known(cls, data)
        return cls(**{"image": "", **known}, extra=extra)

    def to_json(self) -> JSON:
        out = _to_json(self)
        if not self.image:  # read from a record that named none: written back the same
            out.pop("image")
        return out

    @property
    def version(self) -> dict[str, str | None]:
        """What /health/ reports for this release (sumbg sets GIT_SHA and BUILD_ID)."""
        return {"build": self.ref, "git_sha": self.commit}

    @property
    def failed(self) -> bool:
        return self.outcome == FAILED

    def describe(self, colour: str) -> str:
        return f"{colour} ({self.ref or 'unknown release'})"


@dataclass
class Operation:
    """The operation running on the site (or interrupted), journalled before each step."""

    id: str
    kind: str
    pid: int
    started_at: str
    step: str | None = field(default=None, metadata={"always": True})
    facts: JSON = field(default_factory=dict)  # the plan's facts, stored beside the journal's keys

    @classmethod
    def from_json(cls, data: JSON) -> Operation:
        keys = ("id", "kind", "pid", "started_at", "step")
        return cls(
            id=str(data.get("id", "")),
            kind=str(data.get("kind", "")),
            pid=int(data.get("pid") or 0),
            started_at=str(data.get("started_at", "")),
            step=data.get("step"),
            facts={k: v for k, v in data.items() if k not in keys},
        )

    def to_json(self) -> JSON:
        return {
            **self.facts,
            "id": self.id,
            "kind": self.kind,
            "step": self.step,
            "pid": self.pid,
            "started_at": self.started_at,
        }


@dataclass
class Displaced:
    """The rollback target an upgrade removed to make room for the new release, until it is back."""

    colour: str
    record: ColourRecord

    @classmethod
    def from_json(cls, data: JSON) -> Displaced:
        return cls(colour=str(data["colour"]), record=ColourRecord.from_json(data["record"]))

    def to_json(self) -> JSON:
        return {"colour": self.colour, "record": self.record.to_json()}


@dataclass
class RehearsalRecord:
    """A rehearsal's scratch database and stand-in stack, while they exist (recover removes them)."""

    database: str
    project: str

    def to_json(self) -> JSON:
        return {"database": self.database, "project": self.project}


# Where an adoption stands.
ADOPTION_IMPORTING, ADOPTION_CUTTING_OVER, ADOPTION_ADOPTED = "importing", "cutting-over", "adopted"
ADOPTION_FAILED, ADOPTION_UNDONE = "failed", "undone"


@dataclass
class AdoptionRecord:
    """How a site deployed the runbook way came onto sumbg, and how to put it back."""

    status: str
    source: str | None = field(default=None, metadata={"json": "from"})  # the old deployment's folder
    commit: str | None = None
    mode: str | None = None  # "proxy" (the host Caddy in front) or "takeover" (the edge took its ports)
    caddy_site_file: str | None = None
    kept: str | None = None  # the original host Caddy site file, byte for byte
    units: list[str] | None = None
    app_address: str | None = None
    database: str | None = None
    media: str | None = None
    caddy_ports: list[int] | None = None
    systemd_dir: str | None = None
    caddy_dir: str | None = None
    backup: str | None = None
    adopted_at: str | None = None
    undo_until: str | None = None
    cutover_window_seconds: float | None = None
    disabled: list[str] | None = None
    extra: JSON = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: JSON) -> AdoptionRecord:
        known, extra = _known(cls, data)
        if "from" in known:
            known["source"] = known.pop("from")
        return cls(**{"status": "", **known}, extra=extra)

    def to_json(self) -> JSON:
        return _to_json(self)

    @property
    def in_progress(self) -> bool:
        return self.status in (ADOPTION_IMPORTING, ADOPTION_CUTTING_OVER)

    def mark(self, status: str) -> None:
        """A new status, stamped (`<status>_at`), as the undo and a failed adoption record it."""
        self.status = status
        if status == ADOPTION_ADOPTED:
            self.adopted_at = utc_now()
        else:
            self.extra[f"{status}_at"] = utc_now()


@dataclass
class SiteState:
    """state.json: which colour is live, what each colour holds, and what is running now."""

    slug: str | None = None
    live: str | None = None
    previous: str | None = None
    colours: dict[str, ColourRecord] = field(default_factory=dict)
    operation: Operation | None = None
    displaced: Displaced | None = None
    rehearsal: RehearsalRecord | None = None
    adoption: AdoptionRecord | None = None
    updated_at: str | None = None
    schema: int = SCHEMA_VERSION
    extra: JSON = field(default_factory=dict)

    # ------------------------------------------------------------ JSON
    @classmethod
    def from_json(cls, data: JSON) -> SiteState:
        data = upgrade_schema(data)
        known = (
            "slug",
            "live",
            "previous",
            "colours",
            "operation",
            "displaced",
            "rehearsal",
            "adoption",
            "updated_at",
            "schema",
        )
        return cls(
            slug=data.get("slug"),
            live=data.get("live"),
            previous=data.get("previous"),
            colours={c: ColourRecord.from_json(r) for c, r in (data.get("colours") or {}).items()},
            operation=Operation.from_json(data["operation"]) if data.get("operation") else None,
            displaced=Displaced.from_json(data["displaced"]) if data.get("displaced") else None,
            rehearsal=RehearsalRecord(**data["rehearsal"]) if data.get("rehearsal") else None,
            adoption=AdoptionRecord.from_json(data["adoption"]) if data.get("adoption") else None,
            updated_at=data.get("updated_at"),
            schema=int(data.get("schema", SCHEMA_VERSION)),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def to_json(self) -> JSON:
        out: JSON = {
            "schema": self.schema,
            "slug": self.slug,
            "live": self.live,
            "previous": self.previous,
            "colours": {colour: record.to_json() for colour, record in self.colours.items()},
            "operation": self.operation.to_json() if self.operation else None,
            "updated_at": self.updated_at,
        }
        for name, value in (("displaced", self.displaced), ("rehearsal", self.rehearsal), ("adoption", self.adoption)):
            if value is not None:
                out[name] = value.to_json()
        out.update(self.extra)
        return out

    # ------------------------------------------------------------ reading
    def record(self, colour: str | None) -> ColourRecord | None:
        return self.colours.get(colour) if colour else None

    @property
    def live_record(self) -> ColourRecord | None:
        return self.record(self.live)

    @property
    def idle(self) -> str | None:
        return naming.other_colour(self.live) if self.live else None

    def describe(self, colour: str | None) -> str:
        record = self.record(colour)
        return f"{colour} ({record.ref if record and record.ref else 'unknown release'})"

    def ref(self, colour: str | None) -> str | None:
        record = self.record(colour)
        return record.ref if record else None

    # ------------------------------------------------------------ transitions
    def deploy_first(self, slug: str, colour: str, record: ColourRecord) -> None:
        """A site's first release (init, adopt): live on `colour`, nothing to roll back to."""
        record.status, record.outcome = LIVE, HEALTHY
        self.slug, self.live, self.previous = slug, colour, None
        self.colours = {colour: record}

    def flip(self, to: str, came_from: str | None) -> None:
        """Traffic is confirmed on `to`, coming from `came_from`: the records follow."""
        self.live = to
        record = self.colours.get(to)
        if record is not None:
            record.status = LIVE
        if came_from and came_from != to:
            self.previous = came_from
            left = self.colours.get(came_from)
            if left is not None and left.status == LIVE:  # a half-started candidate stays one
                left.status = IDLE

    def mark_failed(self, colour: str, reason: str) -> None:
        record = self.colours.get(colour)
        if record is not None:
            record.outcome, record.reason, record.failed_at = FAILED, reason, utc_now()

    def mark_healthy(self, colour: str) -> None:
        record = self.colours.get(colour)
        if record is not None:
            record.outcome, record.reason, record.failed_at = HEALTHY, None, None

    def note_worker(self, colour: str, status: str, detail: str | None = None) -> None:
        """What an operation found the colour's worker to be (WORKER_*)."""
        record = self.colours.get(colour)
        if record is not None:
            record.worker = {"status": status, "at": utc_now(), **({"detail": detail} if detail else {})}

    def add_candidate(self, colour: str, record: ColourRecord) -> None:
        """The release an upgrade is about to switch to."""
        record.status = CANDIDATE
        self.colours[colour] = record

    def displace(self, colour: str) -> ColourRecord | None:
        """The idle colour's release makes room for a new one; returned (and remembered, so a
        failure or `recover` can start it again) when it is a rollback target worth keeping."""
        record = self.colours.pop(colour, None)
        if self.previous == colour:
            self.previous = None
        keep = record is not None and not record.failed and bool(record.image)
        self.displaced = Displaced(colour, record) if keep and record is not None else None
        return record if keep else None

    def take_displaced(self) -> Displaced | None:
        displaced, self.displaced = self.displaced, None
        return displaced

    def return_displaced(self, displaced: Displaced) -> None:
        """The displaced release runs again in its colour, as the rollback target."""
        record = displaced.record
        record.status = IDLE
        self.colours[displaced.colour] = record
        self.previous = displaced.colour

    def retire(self, colour: str) -> None:
        record = self.colours.get(colour)
        if record is not None:
            record.status = RETIRED

    def forget(self, colour: str) -> None:
        self.colours.pop(colour, None)
        if self.previous == colour:
            self.previous = None

    def stand_down(self) -> None:
        """No colour is live (an adoption undone or failed): sumbg serves nothing for the site."""
        self.live, self.previous, self.colours = None, None, {}


def upgrade_schema(data: JSON) -> JSON:
    """A state.json of an older sumbg, in the current shape (version 1: no schema key, same shape)."""
    version = int(data.get("schema", 1))
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"state.json has schema {version}, newer than this sumbg understands ({SCHEMA_VERSION}): upgrade sumbg"
        )
    return {**data, "schema": SCHEMA_VERSION}


def colour_version(record: ColourRecord | None) -> dict[str, str | None]:
    """What /health/ reports for a recorded release (sumbg sets GIT_SHA and BUILD_ID)."""
    return record.version if record is not None else {"build": None, "git_sha": None}


def release_record(image: ImageSpec, dependencies: list[Dependency] | None = None) -> ColourRecord:
    """The record of a release about to be deployed from `image` (its labels say what it holds)."""
    return ColourRecord(
        image=image.tag,
        ref=image.labels["sumbg.ref"],
        commit=image.commit,
        sum_core=image.labels["sumbg.sum-core"] or None,
        deployed_at=utc_now(),
        dependencies=[d.to_json() for d in dependencies] if dependencies else None,
    )


def expected_version(image: ImageSpec) -> dict[str, str | None]:
    """What /health/ reports once a release built as `image` answers."""
    return release_record(image).version
