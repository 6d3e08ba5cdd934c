"""Python distributions and requirements (PEP 440, 503, 508): the only importer of `packaging`.

What an image contains is a set of distributions (`Dependency`: name, version, and for a
dependency sumbg fetched from git, the commit). This module reads them from wheel files
and from the JSON the image itself prints, writes and reads the image label that carries
them, parses requirements, constraint and lock files line by line, and answers the one
question the dependency diff asks: does a version still satisfy what the new release
requires?
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

# The installer's own tools: every venv has them from its Python image, no requirement asks for
# them, and pinning them means nothing. Records and diffs leave them out.
INSTALLER_TOOLS = frozenset({"pip", "setuptools", "wheel"})

GIT, VENDOR = "git", "vendor"  # where a dependency came from, besides the package index


def canonical(name: str) -> str:
    """PEP 503: Django, django and DJANGO are one project; so are zope.interface and zope-interface."""
    return str(canonicalize_name(name))


@dataclass(frozen=True)
class Dependency:
    """One distribution installed in an image."""

    name: str  # as its metadata spells it
    version: str
    commit: str = ""  # the git commit sumbg fetched it from
    source: str = ""  # "" (the package index), GIT or VENDOR (a wheel the repo ships)
    requires: tuple[str, ...] = field(default=(), compare=False)  # Requires-Dist, for the diff only

    @property
    def key(self) -> str:
        return canonical(self.name)

    @property
    def local(self) -> bool:
        """Built from the client's own sources (git, vendored): never pinned by a constraint."""
        return bool(self.source)

    def describe(self) -> str:
        return f"{self.version} (git {self.commit[:12]})" if self.commit else self.version

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name, "version": self.version}
        if self.commit:
            out["commit"] = self.commit
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dependency:
        return cls(
            name=str(data.get("name", "")),
            version=str(data.get("version", "")),
            commit=str(data.get("commit") or ""),
            source=str(data.get("source") or ""),
        )


def dependencies_from_json(items: Iterable[Mapping[str, Any]] | None) -> list[Dependency]:
    return sorted((Dependency.from_json(item) for item in items or ()), key=lambda d: d.key)


# ---------------------------------------------------------------- the image label

LABEL = "sumbg.dependencies"


def to_label(dependencies: Iterable[Dependency]) -> str:
    """`Django==5.1.4 sum-core==0.9.1@<commit>+git ...`: readable in `docker inspect`, parsed back by from_label."""
    parts = []
    for dep in sorted(dependencies, key=lambda d: d.key):
        suffix = f"@{dep.commit}" if dep.commit else ""
        parts.append(f"{dep.name}=={dep.version}{suffix}{'+' + dep.source if dep.source else ''}")
    return " ".join(parts)


_LABEL_ITEM = re.compile(
    r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^@+\s]+)(?:@(?P<commit>[0-9a-f]+))?(?:\+(?P<src>\w+))?$"
)


def from_label(text: str) -> list[Dependency]:
    found = []
    for item in text.split():
        match = _LABEL_ITEM.match(item)
        if match:
            found.append(
                Dependency(match["name"], match["version"], commit=match["commit"] or "", source=match["src"] or "")
            )
    return sorted(found, key=lambda d: d.key)


# ---------------------------------------------------------------- wheels


@dataclass(frozen=True)
class WheelName:
    name: str  # canonical
    version: str
    build: str  # the build tag ("" when none)


def wheel_name(filename: str) -> WheelName | None:
    try:
        name, version, build, _tags = parse_wheel_filename(filename)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    return WheelName(str(name), str(version), "".join(str(part) for part in build))


def with_build_tag(filename: str, tag: str) -> str:
    """`Django-5.1.4-py3-none-any.whl` -> `Django-5.1.4-0-py3-none-any.whl` (a wheel with a build tag
    already keeps its name)."""
    parsed = wheel_name(filename)
    if parsed is None or parsed.build:
        return filename
    parts = filename[: -len(".whl")].split("-")
    return "-".join([*parts[:2], tag, *parts[2:]]) + ".whl"


def wheel_dependency(path: Path, *, source: str = "", commit: str = "") -> Dependency:
    """What a wheel installs: its name, version and Requires-Dist, from its METADATA (ValueError if unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(names) != 1:
                raise ValueError(f"{path.name} has no single *.dist-info/METADATA")
            text = archive.read(names[0]).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path.name}: {exc}") from None
    headers = HeaderParser().parsestr(text)
    return Dependency(
        name=str(headers.get("Name") or ""),
        version=str(headers.get("Version") or ""),
        commit=commit,
        source=source,
        requires=tuple(str(value) for value in headers.get_all("Requires-Dist") or ()),
    )


def wheel_problem(path: Path) -> str:
    """Why a wheel file cannot be installed ('' when it is whole): every member's CRC is checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # noqa: BLE001 - zipfile raises zlib.error, EOFError, OSError, BadZipFile...
        return f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    return f"bad CRC in {bad}" if bad else ""


# ---------------------------------------------------------------- requirement and constraint lines


def requirement_name(line: str) -> str | None:
    """The canonical project name a requirements-file line asks for (None for options, URLs without a name...)."""
    text = re.sub(r"(^|\s)#.*$", "", line).strip()
    if not text or text.startswith("-"):
        return None
    try:
        return canonical(Requirement(text).name)
    except InvalidRequirement:
        return None


def requirement_lines(text: str) -> dict[str, str]:
    """{canonical name: the line, normalised} of a requirements file (continued lines joined)."""
    found: dict[str, str] = {}
    for line in _logical_lines(text):
        name = requirement_name(line)
        if name:
            found[name] = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
    return found


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    return lines


@dataclass(frozen=True)
class Constraint:
    """One line of the constraints file sumbg hands pip, and where it came from (for messages)."""

    name: str  # canonical
    spec: str  # e.g. "==5.4.0"
    origin: str  # e.g. "requirements.lock line 12", "the live release v1.7.0"

    @property
    def line(self) -> str:
        return f"{self.name}{self.spec}"


class LockFileError(ValueError):
    """A line of a lock or constraints file sumbg cannot use; the message names it."""


def lock_constraints(text: str, label: str) -> list[Constraint]:
    """A repo's requirements.lock or constraints.txt as constraints: name and version specifier only.

    pip constraints cannot carry extras, URLs or hashes: extras and `--hash` options are dropped
    (pins stay exact), markers are kept, comments and blank lines ignored; a git, URL or editable
    line is left to requirements.txt (sumbg fetches git dependencies itself).
    """
    found: list[Constraint] = []
    number = 0
    for raw in text.splitlines():
        number += 1
        line = re.sub(r"(^|\s)#.*$", "", raw).strip().rstrip("\\").strip()
        if not line:
            continue
        line = re.sub(r"\s--hash[=\s]\S+", "", " " + line).strip()
        if not line or line.startswith("--hash"):
            continue
        if line.startswith("-"):
            if line.startswith(("-e", "--editable", "-r", "-c", "--requirement", "--constraint")):
                continue
            if line.startswith(("--index-url", "--extra-index-url", "-i", "--find-links", "-f", "--no-binary")):
                continue
            raise LockFileError(f"{label} line {number}: option {line.split()[0]} is not supported in a lock file")
        if "://" in line or line.startswith(("git+", "/", ".")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise LockFileError(f"{label} line {number}: {line!r} is not a requirement ({exc})") from None
        if requirement.url:
            continue
        marker = f"; {requirement.marker}" if requirement.marker else ""
        spec = str(requirement.specifier)
        if not spec:
            continue  # a name alone constrains nothing
        found.append(Constraint(canonical(requirement.name), spec + marker, f"{label} line {number}"))
    return found


def venv_dependencies(venv: Path) -> list[Dependency]:
    """What a virtualenv on this host has installed (a runbook deployment's venv/), installer tools left
    out; a distribution pip installed from git carries its commit (direct_url.json)."""
    found: dict[str, Dependency] = {}
    for packages in sorted(venv.glob("lib/python3*/site-packages")):
        for dist in importlib.metadata.distributions(path=[str(packages)]):
            name = dist.metadata["Name"]
            if not name or canonical(name) in INSTALLER_TOOLS or canonical(name) in found:
                continue
            try:
                direct = json.loads(dist.read_text("direct_url.json") or "null") or {}
            except (ValueError, OSError):
                direct = {}
            commit = str((direct.get("vcs_info") or {}).get("commit_id") or "")
            found[canonical(name)] = Dependency(name, dist.version, commit, GIT if commit else "")
    return sorted(found.values(), key=lambda d: d.key)


def pins(dependencies: Iterable[Dependency], origin: str) -> list[Constraint]:
    """`name==version` for every dependency from the package index."""
    return [Constraint(dep.key, f"=={dep.version}", origin) for dep in dependencies if not dep.local and dep.version]


# ---------------------------------------------------------------- what the new release asks for


@dataclass
class Demands:
    """Every version specifier the new release puts on each project: from its requirements file and from
    the Requires-Dist of what it installs (markers evaluated for the image's Python, extras followed)."""

    specs: dict[str, list[SpecifierSet]] = field(default_factory=dict)
    required_by: dict[str, set[str]] = field(default_factory=dict)  # project -> who requires it

    def allows(self, name: str, version: str) -> bool:
        try:
            parsed = Version(version)
        except InvalidVersion:
            return False
        return all(spec.contains(parsed, prereleases=True) for spec in self.specs.get(name, ()))


def demands(
    requirements: str, installed: Iterable[Dependency], environment: Mapping[str, str] | None = None
) -> Demands:
    found = Demands()
    extras: dict[str, set[str]] = {}
    env = dict(environment) if environment else None

    def note(req: Requirement, by: str) -> None:
        name = canonical(req.name)
        if not req.url and str(req.specifier):
            found.specs.setdefault(name, []).append(req.specifier)
        found.required_by.setdefault(name, set()).add(by)
        extras.setdefault(name, set()).update(canonical(extra) for extra in req.extras)

    for line in _logical_lines(requirements):
        text = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not text or text.startswith("-"):
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if _applies(req.marker, env, {""}):
            note(req, "requirements.txt")
    dists = list(installed)
    # Extras requested of a project widen what it requires: follow them until nothing changes.
    seen: set[tuple[str, str]] = set()
    changed = True
    while changed:
        changed = False
        for dist in dists:
            wanted = {""} | extras.get(dist.key, set())
            for text in dist.requires:
                if (dist.key, text) in seen:
                    continue
                try:
                    req = Requirement(text)
                except InvalidRequirement:
                    seen.add((dist.key, text))
                    continue
                if _applies(req.marker, env, wanted):
                    seen.add((dist.key, text))
                    note(req, dist.key)
                    changed = True
    return found


def _applies(marker: Marker | None, env: dict[str, str] | None, extras: set[str]) -> bool:
    if marker is None:
        return True
    for extra in extras:
        try:
            if marker.evaluate({**(env or {}), "extra": extra}):
                return True
        except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
            return True  # cannot tell: count it
    return False


def valid_spec(spec: str) -> bool:
    try:
        SpecifierSet(spec)
    except InvalidSpecifier:
        return False
    return True
