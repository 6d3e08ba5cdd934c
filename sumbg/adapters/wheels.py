"""The host-wide wheel cache, and resolving a build's requirements into wheels with it.

Why a one-off container: the legacy builder (Debian's docker.io, no buildx) has no
`RUN --mount=type=cache`, and a cache copied into the build context would cost every build
the whole cache. So a build resolves first, in a one-off container of its toolchain image
(`sumbg-toolchain:<hash>`: the Python image, [build] build_packages, a pinned pip) with the
cache mounted: pip picks every wheel from the cache before the package index, downloads or
compiles only what is missing, and the wheels it chose are handed to the image build in its
context, to the build stages only (never the final image). This works the same with BuildKit.

The cache, `$SUMBG_ROOT/.cache/wheels/<python image>.<arch>.bp-<build packages>/`, holds:
  wheelhouse/  every third-party wheel a build used, renamed with build tag 0: pip sorts the
               index's copy of the same file first, and a build tag makes ours the preferred one;
  pip/         pip's own cache (wheels it compiled from source, e.g. Pillow with --no-binary);
  local/       wheels of the dependencies sumbg fetched from git, one folder per commit.
It is pruned by size ([build] wheel_cache_max_gb), least recently used first; 0 turns it off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg.adapters import pydeps
from sumbg.adapters.docker import COMPOSE_DIR, Engine
from sumbg.errors import BuildError, DockerError, tail

TOOLCHAIN_DOCKERFILE = COMPOSE_DIR / "sum-toolchain.Dockerfile"
TOOLCHAIN_REPOSITORY = "sumbg-toolchain"
# The resolver's own tools (in /sumbg-build; the image's /venv keeps its Python image's pip).
# Pinned so that what builds wheels changes only with sumbg; pip >= 23.1 reuses the wheels it
# compiled even under --no-binary.
PIP_VERSION, SETUPTOOLS_VERSION, WHEEL_VERSION = "26.3", "80.9.0", "0.45.1"
CACHE_FOLDER = Path(".cache") / "wheels"  # under $SUMBG_ROOT; no slug starts with a dot
BUILD_TAG = "0"
BACKGROUND_IO_WEIGHT = 100  # blkio weight (10-1000, Docker's default 500) of builds' one-offs
RESOLVE_SCRIPT = Path(__file__).with_name("resolve_script.py")
_MARKER = "SUMBG-RESOLVE "


@dataclass(frozen=True)
class WheelCache:
    root: Path  # $SUMBG_ROOT/.cache/wheels
    max_gb: float  # 0: no cache

    @property
    def enabled(self) -> bool:
        return self.max_gb > 0

    def folder(self, key: str) -> Path:
        return self.root / key

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held while a build uses the cache: pruning waits for no one and skips a busy cache."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root.parent, 0o700)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def size(self) -> int:
        return sum(path.stat().st_size for path in self._files())

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.rglob("*") if p.is_file() and p.name != ".lock" and not p.is_symlink()]

    def prune(self) -> dict[str, Any]:
        """Delete the least recently used files until the cache is under 90% of its size limit."""
        limit = int(self.max_gb * 1024**3)
        if not self.enabled or not self.root.is_dir():
            return {}
        with (self.root / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return {"pruned": 0, "reason": "another build is using the cache"}
            try:
                files = [(path, path.stat()) for path in self._files()]
                total = sum(stat.st_size for _, stat in files)
                if total <= limit:
                    return {"bytes": total}
                removed, goal = 0, int(limit * 0.9)
                for path, stat in sorted(files, key=lambda item: max(item[1].st_mtime, item[1].st_atime)):
                    if total <= goal:
                        break
                    path.unlink(missing_ok=True)
                    total -= stat.st_size
                    removed += 1
                for folder in sorted(self.root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if folder.is_dir() and not any(folder.iterdir()):
                        folder.rmdir()
                return {"bytes": total, "pruned": removed}
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def cache_key(python_image: str, architecture: str, build_packages: tuple[str, ...]) -> str:
    """One cache per Python image, architecture and set of build packages (what compiled wheels link to)."""
    image = re.sub(r"[^A-Za-z0-9_.-]", "_", python_image)[:100]
    packages = " ".join(sorted(build_packages))
    bp = hashlib.sha256(packages.encode()).hexdigest()[:8] if packages else "none"
    return f"{image}.{architecture}.bp-{bp}"


# ---------------------------------------------------------------- the toolchain image


@dataclass(frozen=True)
class Toolchain:
    tag: str
    cache_key: str


def ensure_toolchain(
    engine: Engine,
    *,
    python_image: str,
    build_packages: tuple[str, ...],
    ca_bundle: str,
    cpu_shares: int | None,
    work_dir: Path,
) -> Toolchain:
    """The toolchain image for these settings, built unless it exists (once per host, shared by sites)."""
    identity = engine.image_identity(python_image)
    if identity is None:
        raise BuildError(
            f"the Python image {python_image} is not on this host (docker pull it, or set sumbg.toml "
            "[images] python / site.toml [build] python_image)"
        )
    image_id, architecture = identity
    ca = Path(ca_bundle).read_bytes() if ca_bundle else b""
    shape = [
        image_id,
        sorted(build_packages),
        hashlib.sha256(ca).hexdigest(),
        hashlib.sha256(TOOLCHAIN_DOCKERFILE.read_bytes()).hexdigest(),
        PIP_VERSION,
        SETUPTOOLS_VERSION,
        WHEEL_VERSION,
    ]
    tag = f"{TOOLCHAIN_REPOSITORY}:{hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]}"
    toolchain = Toolchain(tag, cache_key(python_image, architecture, build_packages))
    if engine.image_labels(tag) is not None:
        return toolchain
    work_dir.mkdir(parents=True, exist_ok=True)
    context = work_dir / f"toolchain-{os.getpid()}-{time.monotonic_ns()}"
    context.mkdir()
    try:
        shutil.copyfile(TOOLCHAIN_DOCKERFILE, context / "Dockerfile")
        (context / "ca.crt").write_bytes(ca)
        engine.build(
            context,
            context / "Dockerfile",
            tag,
            {"sumbg.toolchain": python_image},
            build_args={
                "PYTHON_IMAGE": python_image,
                "BUILD_PACKAGES": " ".join(build_packages),
                "PIP_VERSION": PIP_VERSION,
                "SETUPTOOLS_VERSION": SETUPTOOLS_VERSION,
                "WHEEL_VERSION": WHEEL_VERSION,
            },
            cpu_shares=cpu_shares,
        )
    except DockerError as exc:
        raise exc.refined(message=f"{exc.message} (the toolchain for {python_image})") from exc
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return toolchain


# ---------------------------------------------------------------- resolving


@dataclass(frozen=True)
class LocalSource:
    """A dependency sumbg fetched from git: its source tree is built into a wheel."""

    name: str  # canonical project name
    directory: str  # its folder under the resolution's sumbg-deps/
    commit: str
    subdirectory: str

    @property
    def cache_name(self) -> str:
        digest = hashlib.sha256(self.subdirectory.encode()).hexdigest()[:8]
        return f"{self.directory}-{digest}"


@dataclass
class Resolution:
    """The wheels a build installs, and what they are."""

    index_wheels: list[Path]
    local_wheels: list[Path]
    dependencies: list[pydeps.Dependency]
    environment: dict[str, str]
    from_cache: int  # wheels taken from the wheel cache
    fetched: int  # wheels downloaded or compiled now
    built_local: list[str]
    relaxed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wheels": len(self.index_wheels) + len(self.local_wheels),
            "from_cache": self.from_cache,
            "fetched": self.fetched,
            "seconds": round(self.seconds, 3),
        }
        if self.relaxed:
            out["released"] = self.relaxed
        return out


@dataclass(frozen=True)
class ResolveJob:
    """Everything a resolution needs besides the engine."""

    toolchain: Toolchain
    image_tag: str  # for messages
    requirements: str  # requirements.txt with each git requirement pointing at file:///sumbg-deps/<dir>
    constraints: tuple[pydeps.Constraint, ...]
    relax: tuple[str, ...]  # constraint origins that may be released on a conflict (lock = "live")
    local: tuple[LocalSource, ...]
    deps_dir: Path  # the fetched source trees (mounted at /sumbg-deps)
    vendor_dir: Path  # the repo's vendor/ (mounted at /app/vendor)
    out_dir: Path  # where the index wheels go (in the build context)
    local_out_dir: Path  # where the client's own wheels go (in the build context)
    scratch: Path
    cache: WheelCache
    ca_bundle: bool
    cpu_shares: int | None
    compile_hint: Any = None  # output -> a hint ("" if none)


def resolve(engine: Engine, job: ResolveJob) -> Resolution:
    """Resolve, releasing (for lock = "live") a pin that conflicts with what a changed requirement needs."""
    started = time.monotonic()
    constraints = list(job.constraints)
    relaxed: list[dict[str, str]] = []
    with job.cache.shared() if job.cache.enabled else _nothing():
        for _ in range(6):
            result, output, returncode = _run(engine, job, constraints)
            if result is not None:
                break
            conflict = parse_conflict(output)
            releasable = [c for c in constraints if c.name in conflict.constrained and c.origin in job.relax]
            if not releasable:
                raise _failure(job, output, returncode, constraints, conflict)
            for item in releasable:
                constraints.remove(item)
                relaxed.append({"name": item.name, "pin": item.spec, "why": "; ".join(conflict.causes)})
        else:
            raise BuildError(f"resolving the requirements of {job.image_tag} kept conflicting after releasing pins")
    resolution = _collect(job, result)
    resolution.relaxed = relaxed
    resolution.seconds = time.monotonic() - started
    return resolution


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _run(
    engine: Engine, job: ResolveJob, constraints: list[pydeps.Constraint]
) -> tuple[dict[str, Any] | None, str, int]:
    """One resolution attempt: (its report, its output, its exit code), the report None if pip failed."""
    given = job.scratch / "in"
    work = job.scratch / "work"
    for folder in (given, work):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    shutil.rmtree(job.out_dir, ignore_errors=True)
    job.out_dir.mkdir(parents=True)
    shutil.copyfile(RESOLVE_SCRIPT, given / "resolve.py")
    (given / "requirements.txt").write_text(job.requirements)
    (given / "constraints.txt").write_text("".join(f"{c.line}\n" for c in constraints))
    (given / "spec.json").write_text(
        json.dumps({"local": [{"dir": s.directory, "cache": s.cache_name} for s in job.local]})
    )
    volumes = [
        (str(given), "/in", "ro"),
        (str(work), "/work", "rw"),
        (str(job.deps_dir), "/sumbg-deps", "rw"),  # pip builds a source tree in place
        (str(job.out_dir), "/out", "rw"),
    ]
    if job.vendor_dir.is_dir():
        volumes.append((str(job.vendor_dir), "/app/vendor", "ro"))
    env = {
        "HOME": "/tmp",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Wheels built from the same source come out byte for byte the same (Docker's layer cache).
        "SOURCE_DATE_EPOCH": "315532800",
    }
    if job.ca_bundle:
        env.update({"PIP_CERT": "/etc/sumbg-ca.crt", "GIT_SSL_CAINFO": "/etc/sumbg-ca.crt"})
    if job.cache.enabled:
        folder = job.cache.folder(job.toolchain.cache_key)
        for name in ("wheelhouse", "pip", "local"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        volumes += [
            (str(folder / "wheelhouse"), "/wheelhouse", "ro"),
            (str(folder / "pip"), "/pipcache", "rw"),
            (str(folder / "local"), "/local-cache", "rw"),
        ]
        env["PIP_CACHE_DIR"] = "/pipcache"
    else:
        env["PIP_NO_CACHE_DIR"] = "1"
    done = engine.run_oneoff(
        job.toolchain.tag,
        ["/sumbg-build/bin/python", "/in/resolve.py"],
        volumes=volumes,
        env=env,
        user=f"{os.getuid()}:{os.getgid()}",
        workdir="/app",
        cpu_shares=job.cpu_shares,
        io_weight=BACKGROUND_IO_WEIGHT,
    )
    output = done.output
    report = None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARKER):
            report = json.loads(line[len(_MARKER) :])
            break
    if done.returncode != 0 or report is None:
        _corrupt_cache_entry(job, output)
        return None, output, done.returncode
    return report, output, 0


def _collect(job: ResolveJob, report: dict[str, Any] | None) -> Resolution:
    """Sort the wheels pip chose into the client's own and the third-party ones, check each is whole,
    and keep what the cache did not have yet."""
    assert report is not None
    # A git requirement may not name its project (`-e git+...#egg=`): the wheels built from it do.
    by_dir = {source.directory: source for source in job.local}
    commits = {source.name: source.commit for source in job.local}
    for directory, filename in (report.get("local") or {}).items():
        parsed_local = pydeps.wheel_name(str(filename))
        if parsed_local is not None and directory in by_dir:
            commits[parsed_local.name] = by_dir[directory].commit
    local_names = set(commits)
    vendored = {p.name for p in job.vendor_dir.glob("*.whl")} if job.vendor_dir.is_dir() else set()
    job.local_out_dir.mkdir(parents=True, exist_ok=True)
    folder = job.cache.folder(job.toolchain.cache_key)
    index, local, dependencies = [], [], []
    from_cache = fetched = 0
    for wheel in sorted(job.out_dir.glob("*.whl")):
        parsed = pydeps.wheel_name(wheel.name)
        problem = pydeps.wheel_problem(wheel)
        if parsed is None or problem:
            raise _corrupt(job, wheel, problem or "not a wheel file name")
        if parsed.name in local_names or wheel.name in vendored:
            source = pydeps.GIT if parsed.name in local_names else pydeps.VENDOR
            moved = job.local_out_dir / wheel.name
            shutil.move(wheel, moved)
            local.append(moved)
            dependencies.append(pydeps.wheel_dependency(moved, source=source, commit=commits.get(parsed.name, "")))
            continue
        cached = parsed.build == BUILD_TAG
        tagged = job.out_dir / pydeps.with_build_tag(wheel.name, BUILD_TAG)
        if tagged != wheel:
            wheel.rename(tagged)
        if job.cache.enabled:
            kept = folder / "wheelhouse" / tagged.name
            if cached and kept.exists():
                os.utime(kept)  # recently used: pruned last
            elif not kept.exists():
                partial = kept.with_name(f".{kept.name}.partial")
                shutil.copyfile(tagged, partial)
                os.replace(partial, kept)
        from_cache += cached
        fetched += not cached
        index.append(tagged)
        dependencies.append(pydeps.wheel_dependency(tagged))
    if job.cache.enabled:
        for local_source in job.local:
            kept_dir = folder / "local" / local_source.cache_name
            if kept_dir.is_dir():
                os.utime(kept_dir)
                for kept in kept_dir.iterdir():
                    os.utime(kept)
    built = list(report.get("built") or [])
    from_cache += len(job.local) - len(built)
    fetched += len(built)
    return Resolution(
        index_wheels=index,
        local_wheels=local,
        dependencies=sorted(
            (d for d in dependencies if pydeps.canonical(d.name) not in pydeps.INSTALLER_TOOLS), key=lambda d: d.key
        ),
        environment={str(k): str(v) for k, v in (report.get("environment") or {}).items()},
        from_cache=from_cache,
        fetched=fetched,
        built_local=built,
    )


# ---------------------------------------------------------------- when it fails: one line


@dataclass
class Conflict:
    causes: list[str]  # "celery 5.4.0 depends on vine<6.0 and >=5.1.0", "The user requested celery==5.4.0"
    constrained: set[str]  # canonical names of the constraints pip names
    unavailable: set[str]  # projects with no distribution for this environment


_CONSTRAINT = re.compile(r"The user requested \(constraint\) ([A-Za-z0-9._-]+)")
_NO_MATCH = re.compile(r"No matching distribution found for ([A-Za-z0-9._-]+)")
_INVALID_WHEEL = re.compile(r"Wheel '([^']+)' located at (\S+?) is invalid")


def parse_conflict(output: str) -> Conflict:
    causes: list[str] = []
    unavailable: set[str] = set()
    block = ""
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("The conflict is caused by"):
            block = "causes"
            continue
        if stripped.startswith("Additionally, some packages") or "no matching distributions available" in stripped:
            block = "unavailable"
            continue
        if not stripped or stripped.startswith(("To fix this", "ERROR:", "INFO:")):
            block = "" if stripped.startswith(("To fix", "ERROR:")) else block
            continue
        if block == "causes" and line.startswith(" "):
            causes.append(stripped)
        elif block == "unavailable" and line.startswith(" "):
            unavailable.add(pydeps.canonical(stripped))
    for match in _NO_MATCH.finditer(output):
        name = pydeps.requirement_name(match.group(1).rstrip("."))
        if name:
            unavailable.add(name)
    constrained = {pydeps.canonical(m.group(1).split("=")[0]) for m in _CONSTRAINT.finditer(output)}
    constrained |= {pydeps.canonical(re.split(r"[=<>!~]", c.split()[-1])[0]) for c in causes if "(constraint)" in c}
    return Conflict(causes, constrained, unavailable)


def _failure(
    job: ResolveJob, output: str, returncode: int, constraints: list[pydeps.Constraint], conflict: Conflict
) -> BuildError | DockerError:
    evidence = tail(output, 25)
    pinned = {c.name: c for c in constraints}
    named = [pinned[name] for name in sorted(conflict.constrained) if name in pinned]
    if not named:
        # A project pip could not find at all may be pinned by a constraint pip does not repeat.
        named = [pinned[name] for name in sorted(conflict.unavailable) if name in pinned]
    if named:
        first = named[0]
        why = "; ".join(c for c in conflict.causes if "(constraint)" not in c) or "; ".join(conflict.causes)
        missing = " (no such version on the package index)" if first.name in conflict.unavailable else ""
        return BuildError(
            f"{first.origin} pins {first.line}{missing}, which the requirements of {job.image_tag} cannot take"
            + (f": {why}" if why else ""),
            output_tail=evidence,
        )
    if conflict.causes:
        return BuildError(
            f"the requirements of {job.image_tag} conflict: {'; '.join(conflict.causes)}", output_tail=evidence
        )
    if conflict.unavailable:
        names = ", ".join(sorted(conflict.unavailable))
        return BuildError(
            f"requirements.txt of {job.image_tag} asks for {names}, which the package index does not have "
            "(for this Python and platform)",
            output_tail=evidence,
        )
    local_failed = re.search(r"SUMBG-LOCAL-FAILED (\S+)", output)
    if local_failed:
        return BuildError(
            f"building a wheel of {local_failed.group(1)} (fetched from git) for {job.image_tag} failed",
            output_tail=evidence,
        )
    hint = job.compile_hint(output) if job.compile_hint else ""
    # Worded as the image build's failure was before the resolution ran apart from it.
    return DockerError(
        f"building image {job.image_tag} failed (exit {returncode})" + (f"; {hint}" if hint else ""),
        output_tail=evidence,
    )


def _corrupt_cache_entry(job: ResolveJob, output: str) -> None:
    """pip refused a wheel of the cache: name it, remove it (the next build fetches it again), stop."""
    match = _INVALID_WHEEL.search(output)
    if not match or not job.cache.enabled:
        return
    project, where = match.group(1), match.group(2)
    folder = job.cache.folder(job.toolchain.cache_key)
    mounts = {"/wheelhouse/": folder / "wheelhouse", "/pipcache/": folder / "pip", "/local-cache/": folder / "local"}
    for prefix, host_folder in mounts.items():
        if where.startswith(prefix):
            path = host_folder / where[len(prefix) :]
            parsed = pydeps.wheel_name(path.name)
            path.unlink(missing_ok=True)
            version = f" {parsed.version}" if parsed else ""
            raise BuildError(
                f"the wheel cache's {path} ({project}{version}) is corrupt (pip: invalid wheel); removed it, "
                "so the next build fetches it again",
                output_tail=tail(output, 5),
            )


def _corrupt(job: ResolveJob, wheel: Path, problem: str) -> BuildError:
    parsed = pydeps.wheel_name(wheel.name)
    what = f"{parsed.name} {parsed.version}" if parsed else wheel.name
    if job.cache.enabled:
        folder = job.cache.folder(job.toolchain.cache_key)
        size = wheel.stat().st_size
        candidates = [folder / "wheelhouse" / wheel.name, *(folder / "pip").rglob(wheel.name)]
        candidates += [p for p in (folder / "local").rglob(wheel.name)]
        for path in candidates:
            if path.is_file() and path.stat().st_size == size and _same_bytes(path, wheel):
                path.unlink()
                return BuildError(
                    f"the wheel cache's {path} ({what}) is corrupt ({problem}); removed it, so the next build "
                    "fetches it again"
                )
    return BuildError(f"the wheel {wheel.name} ({what}) that pip fetched for {job.image_tag} is corrupt ({problem})")


def _same_bytes(a: Path, b: Path) -> bool:
    def digest(path: Path) -> str:
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        return sha.hexdigest()

    return digest(a) == digest(b)
