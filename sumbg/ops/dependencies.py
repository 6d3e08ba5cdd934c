"""What a release's image holds, what changed since the live release and why, and what a build resolves against.

Requirements are ranges, so one tag resolves to different versions on different days. Every
build records the distributions its image holds (name, version, the git commit of what sumbg
fetched); an upgrade prints the difference from the live release, each change marked:

- `requirements`: requirements.txt (or a git pin) changed it, or what the release now requires
  no longer allows the live version (a bumped sum-core that needs a newer celery);
- `resolver`: the live version would still do; the ranges merely resolved differently.

What a build resolves against (`constraints_for`): a release built before gets exactly the
versions recorded for it (a rollback target after a prune, a retired colour, a site moved to
another host); otherwise `[build] lock`: "none" (the newest the ranges allow), "live" (the live
release's versions for everything requirements.txt does not change) or "file" (the repo's
requirements.lock or constraints.txt).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sumbg.adapters import gitdeps, pydeps
from sumbg.adapters.build import Constraints, ImageSpec
from sumbg.adapters.pydeps import Dependency
from sumbg.errors import BuildError
from sumbg.ops.seams import GitMirror
from sumbg.site.records import HistoryEntry
from sumbg.site.state import ColourRecord, SiteState

REQUIREMENTS, RESOLVER = "requirements", "resolver"
LOCK_FILES = ("requirements.lock", "constraints.txt")


# ---------------------------------------------------------------- the diff


@dataclass(frozen=True)
class Change:
    name: str
    before: str | None  # None: added
    after: str | None  # None: removed
    why: str  # REQUIREMENTS or RESOLVER

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "from": self.before, "to": self.after, "why": self.why}

    def describe(self) -> str:
        if self.before is None:
            return f"+ {self.name} {self.after}"
        if self.after is None:
            return f"- {self.name} {self.before}"
        return f"{self.name} {self.before} -> {self.after}"


@dataclass
class DependencyDiff:
    live_ref: str
    new_ref: str
    changed: list[Change] = field(default_factory=list)
    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changes(self) -> list[Change]:
        return [*self.changed, *self.added, *self.removed]

    def summary(self) -> str:
        if not self.changes:
            return f"dependencies: the same {self.unchanged} as the live {self.live_ref}"
        marks = {why: sum(1 for c in self.changes if c.why == why) for why in (REQUIREMENTS, RESOLVER)}
        why = ", ".join(f"{count} {mark}" for mark, count in marks.items() if count)
        return (
            f"dependencies, live {self.live_ref} -> {self.new_ref}: {len(self.changed)} changed, "
            f"{len(self.added)} added, {len(self.removed)} removed ({why})"
        )

    def lines(self) -> list[str]:
        width = max((len(c.describe()) for c in self.changes), default=0)
        return [self.summary(), *(f"  {c.describe():<{width}}  {c.why}" for c in self.changes)]

    def one_line(self) -> str:
        """For WHAT-BROKE.md."""
        if not self.changes:
            return self.summary()
        return "; ".join(f"{c.describe()} ({c.why})" for c in self.changes)

    def record(self) -> dict[str, Any]:
        return {
            "from": self.live_ref,
            "to": self.new_ref,
            "changed": [c.record() for c in self.changed],
            "added": [c.record() for c in self.added],
            "removed": [c.record() for c in self.removed],
            "unchanged": self.unchanged,
        }


def diff_line(record: dict[str, Any]) -> str:
    """A recorded diff (`DependencyDiff.record`) in one line."""
    changes = [*record.get("changed", ()), *record.get("added", ()), *record.get("removed", ())]
    if not changes:
        return f"the same {record.get('unchanged', 0)} as the live {record.get('from')}"
    return "; ".join(f"{Change(c['name'], c['from'], c['to'], c['why']).describe()} ({c['why']})" for c in changes)


def changed_requirements(live_text: str | None, new_text: str) -> set[str]:
    """Projects whose line in requirements.txt differs between the two releases (added, removed or edited,
    a git pin's ref included). An unknown live requirements.txt counts every line as changed."""
    live, new = _lines_by_name(live_text or ""), _lines_by_name(new_text)
    return {name for name in live.keys() | new.keys() if live.get(name) != new.get(name)}


def _lines_by_name(text: str) -> dict[str, str]:
    found = pydeps.requirement_lines(text)
    for requirement in gitdeps.find_git_requirements(text):  # `-e git+...#egg=name` is no PEP 508 line
        key = pydeps.canonical(requirement.label)
        found.setdefault(key, f"{requirement.url}@{requirement.ref}#{requirement.subdirectory}")
    return found


def explain(
    live: Iterable[Dependency],
    new: Iterable[Dependency],
    *,
    live_requirements: str | None,
    new_requirements: str,
    environment: dict[str, str] | None = None,
    live_ref: str,
    new_ref: str,
) -> DependencyDiff:
    """The live -> new difference, each change marked REQUIREMENTS or RESOLVER (see the module's doc)."""
    before = {d.key: d for d in live if d.key not in pydeps.INSTALLER_TOOLS}
    after = {d.key: d for d in new if d.key not in pydeps.INSTALLER_TOOLS}
    edited = changed_requirements(live_requirements, new_requirements)
    asked = pydeps.demands(new_requirements, after.values(), environment)
    diff = DependencyDiff(live_ref, new_ref)
    why: dict[str, str] = {}
    for key in sorted(before.keys() & after.keys()):
        old, now = before[key], after[key]
        # An image built before the label existed names its git commits by 12 characters.
        same_commit = old.commit.startswith(now.commit) or now.commit.startswith(old.commit)
        if old.version == now.version and same_commit:
            diff.unchanged += 1
            continue
        forced = key in edited or not asked.allows(key, old.version)
        why[key] = REQUIREMENTS if forced else RESOLVER
        diff.changed.append(Change(now.name, old.describe(), now.describe(), why[key]))
    # A new distribution is there for whoever requires it: marked like them, unless its own line is new.
    added = sorted(after.keys() - before.keys())
    for key in added:
        why[key] = REQUIREMENTS if key in edited else RESOLVER
    settled = False
    while not settled:
        settled = True
        for key in added:
            parents = asked.required_by.get(key, set())
            if why[key] == RESOLVER and any(why.get(parent) == REQUIREMENTS for parent in parents):
                why[key] = REQUIREMENTS
                settled = False
    diff.added = [Change(after[key].name, None, after[key].describe(), why[key]) for key in added]
    # A distribution nothing requires any more went with whatever dropped it (the live release's
    # Requires-Dist are not recorded): requirements if any requirement changed, else the resolver.
    dropped_by = REQUIREMENTS if edited or any(w == REQUIREMENTS for w in why.values()) else RESOLVER
    diff.removed = [
        Change(before[key].name, before[key].describe(), None, REQUIREMENTS if key in edited else dropped_by)
        for key in sorted(before.keys() - after.keys())
    ]
    return diff


# ---------------------------------------------------------------- records


def record_dependencies(record: ColourRecord | None) -> list[Dependency] | None:
    if record is None or record.dependencies is None:
        return None
    return pydeps.dependencies_from_json(record.dependencies)


@dataclass(frozen=True)
class RecordedBuild:
    """The distributions recorded for a commit built before on this site."""

    dependencies: list[Dependency]
    ref: str
    where: str  # "state.json (green)", "the history (upgrade, 2026-12-06T10:00:00Z)"


def recorded_build(state: SiteState, history: list[HistoryEntry], commit: str) -> RecordedBuild | None:
    """What a commit's image held when this site built it: its colour's record, else its newest build
    step in the history (which keeps the builds of failed and retired releases too)."""
    records: list[tuple[str, ColourRecord]] = list(state.colours.items())
    if state.displaced is not None:
        records.append((state.displaced.colour, state.displaced.record))
    for colour, record in records:
        if record.commit == commit and record.dependencies:
            return RecordedBuild(
                pydeps.dependencies_from_json(record.dependencies), record.ref or commit[:12], f"state.json ({colour})"
            )
    for entry in reversed(history):
        for step in entry.get("steps") or ():
            if step.get("name") == "build" and step.get("commit") == commit and step.get("dependencies"):
                ref = str(entry.get("to") or entry.get("ref") or commit[:12])
                return RecordedBuild(
                    pydeps.dependencies_from_json(step["dependencies"]),
                    ref,
                    f"the history ({entry.get('operation')}, {entry.get('at')})",
                )
    return None


# ---------------------------------------------------------------- what a build resolves against


def recorded_constraints(recorded: RecordedBuild) -> Constraints:
    """A release built before is rebuilt as it was: every recorded version pinned, git dependencies
    fetched at their recorded commits."""
    origin = f"the versions recorded for {recorded.ref} in {recorded.where}"
    return Constraints(
        pins=tuple(pydeps.pins(recorded.dependencies, origin)),
        source=origin + " (a release built before is rebuilt as it was)",
        git_commits=tuple((d.key, d.commit) for d in recorded.dependencies if d.commit and len(d.commit) == 40),
    )


def constraints_for(
    image: ImageSpec,
    *,
    lock: str,
    recorded: RecordedBuild | None,
    mirror: GitMirror,
    live: list[Dependency] | None,
    live_ref: str | None,
    live_requirements: str | None,
    new_requirements: str,
) -> Constraints:
    ref = image.labels["sumbg.ref"]
    if recorded is not None:
        return recorded_constraints(recorded)
    if lock == "file":
        for name in LOCK_FILES:
            text = mirror.read_file(image.commit, name)
            if text is not None:
                label = f"{name} at {ref}"
                try:
                    pins = pydeps.lock_constraints(text, label)
                except pydeps.LockFileError as exc:
                    raise BuildError(f'{exc} ([build] lock = "file")') from None
                return Constraints(pins=tuple(pins), source=f'{label} ([build] lock = "file")')
        raise BuildError(
            f'[build] lock = "file", but {ref} ships neither {" nor ".join(LOCK_FILES)} at the top of its repository'
        )
    if lock == "live":
        if live is None or live_ref is None:
            why = "no release is live yet" if live_ref is None else f"the versions of {live_ref} are not known"
            return Constraints(source=f'nothing: [build] lock = "live", but {why}')
        edited = changed_requirements(live_requirements, new_requirements)
        origin = f'the live {live_ref} ([build] lock = "live")'
        kept = [d for d in live if d.key not in edited]
        return Constraints(pins=tuple(pydeps.pins(kept, origin)), source=origin, relax=True)
    return Constraints()
