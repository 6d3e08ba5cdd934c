"""Building a client image at a git ref, from the ref's tree only.

Private git dependencies (`sum-core @ git+https://...` in requirements.txt) are fetched
by sumbg on the host, before the build, not by pip inside it. Why: the credential then
never enters the Docker engine at all: not a build argument (visible in `docker history`),
not a file of the build context (a layer), and not a BuildKit secret, which needs BuildKit:
plain `docker build` here has no buildx plugin and falls back to the legacy builder, where
`RUN --mount=type=secret` does not exist, while `docker compose build` secrets depend on the
Compose and engine versions of each host. The host-side fetch works the same with the
legacy builder, BuildKit, Debian's docker.io 20.10 and the official Docker on a VPS; git
runs with the credential from a file (askpass or ssh -i, never argv), with no user git
configuration, and a wrong credential fails in seconds, before any layer is built. Only the
fetched source tree goes into the build context, and the requirement is rewritten to it;
the image needs no git (a site whose dependencies themselves pull git URLs can add git
to `[build] build_packages`: the build stage only).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from sumbg import naming
from sumbg.adapters import gitdeps, pydeps, wheels
from sumbg.adapters.docker import COMPOSE_DIR, Engine
from sumbg.adapters.gitrepo import GitAuth, Mirror, Resolved, fetch_tree
from sumbg.config import HostConfig, SiteConfig
from sumbg.errors import GitError

DEFAULT_DOCKERFILE = COMPOSE_DIR / "sum-site.Dockerfile"
TOOLCHAIN_DOCKERFILE = wheels.TOOLCHAIN_DOCKERFILE


@dataclass(frozen=True)
class ImageSpec:
    tag: str
    labels: dict[str, str]

    @property
    def commit(self) -> str:
        return self.labels["sumbg.commit"]


def image_spec(slug: str, resolved: Resolved, sum_core: str | None) -> ImageSpec:
    return ImageSpec(
        tag=naming.image_tag(slug, resolved.ref),
        labels={
            "sumbg.slug": slug,
            "sumbg.ref": resolved.ref,
            "sumbg.commit": resolved.commit,
            "sumbg.sum-core": sum_core or "",
        },
    )


@dataclass(frozen=True)
class BuildOptions:
    """Everything that shapes a site's image besides its source, from sumbg.toml and site.toml."""

    python_image: str
    ca_bundle: str = ""
    build_packages: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    url_rewrites: tuple[tuple[str, str], ...] = ()
    auth: GitAuth = GitAuth()
    cpu_shares: int | None = None  # the build's CPU weight (not part of the image)

    def fingerprint(self) -> str:
        """Identifies the image-shaping settings and sumbg's Dockerfiles (no credential): a change rebuilds."""
        dockerfiles = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (DEFAULT_DOCKERFILE, TOOLCHAIN_DOCKERFILE)]
        shape = [self.python_image, list(self.build_packages), list(self.packages), *dockerfiles]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    def build_args(self) -> dict[str, str]:
        return {
            "PYTHON_IMAGE": self.python_image,
            "BUILD_PACKAGES": " ".join(self.build_packages),
            "PACKAGES": " ".join(self.packages),
        }


def options_for(host: HostConfig, site: SiteConfig | None) -> BuildOptions:
    """The site's [build] over the host's, key by key; URL rewrites merged (the site's win)."""
    hb = host.build
    sb = site.build if site is not None else type(hb)()

    def pick(key: str, site_value: str, host_value: str) -> tuple[str, str]:
        """The setting and where it came from: the site's, else the host's, else unset."""
        if site_value:
            return site_value, f"site.toml build.{key}"
        if host_value:
            return host_value, f"sumbg.toml build.{key}"
        return "", ""

    token, token_source = pick("git_token_file", sb.git_token_file, hb.git_token_file)
    key, key_source = pick("git_ssh_key_file", sb.git_ssh_key_file, hb.git_ssh_key_file)
    rewrites = dict(hb.git_url_rewrites)
    rewrites.update(sb.git_url_rewrites)
    return BuildOptions(
        python_image=sb.python_image or host.images.python,
        ca_bundle=host.ca_bundle,
        build_packages=sb.build_packages,
        packages=sb.packages,
        url_rewrites=tuple(rewrites.items()),
        auth=GitAuth(
            token_file=token,
            token_source=token_source,
            username=pick("git_username", sb.git_username, hb.git_username)[0],
            ssh_key_file=key,
            ssh_key_source=key_source,
            ssh_known_hosts=pick("git_ssh_known_hosts", sb.git_ssh_known_hosts, hb.git_ssh_known_hosts)[0],
            ca_bundle=host.ca_bundle,
        ),
        cpu_shares=host.background_cpu_shares,
    )


class GitDependency(TypedDict):
    """A git requirement sumbg fetched for a build, as the build's record names it (no password)."""

    requirement: str
    url: str
    fetched_from: NotRequired[str]  # the URL after [build] git_url_rewrites, when they changed it
    ref: str
    commit: str


@dataclass(frozen=True)
class Constraints:
    """Pins for a build's resolution, and where they come from (the build step says so)."""

    pins: tuple[pydeps.Constraint, ...] = ()
    source: str = ""  # e.g. "the record of v1.7.0 (built 2026-12-01T10:00:00Z)", "requirements.lock at v1.8.0"
    relax: bool = False  # lock = "live": a pin that conflicts with a changed requirement is released
    git_commits: tuple[tuple[str, str], ...] = ()  # (project, commit): fetched instead of the requirement's ref

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "pins": len(self.pins)}
        if self.git_commits:
            out["git_commits"] = dict(self.git_commits)
        return out


@dataclass
class BuildResult:
    """What the build step records (history), and what the image holds (for the records and the diff)."""

    record: dict[str, Any]
    dependencies: list[pydeps.Dependency] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # PEP 508 marker values of its Python


def wheel_cache(host: HostConfig) -> wheels.WheelCache:
    return wheels.WheelCache(host.root / wheels.CACHE_FOLDER, host.wheel_cache_max_gb)


def build(
    engine: Engine,
    mirror: Mirror,
    spec: ImageSpec,
    *,
    host: HostConfig,
    site: SiteConfig | None,
    work_dir: Path,
    constraints: Constraints | None = None,
) -> BuildResult:
    """Build `spec` unless an image with that tag was already built from the same commit and settings.

    The site's [build] settings apply over the host's; scratch files go under work_dir. The
    record says `outcome` "skipped" and its `reason`, or the `image` built, which `dockerfile`,
    and for sumbg's default Dockerfile its `python_image`, `git_dependencies`, the `constraints`
    it resolved under and what the `wheels` cache did; always the image's `dependencies`.
    """
    constraints = constraints or Constraints()
    options = options_for(host, site)
    labels = {**spec.labels, "sumbg.build-options": options.fingerprint()}
    existing = engine.image_labels(spec.tag)
    if existing is not None and all(existing.get(k) == labels[k] for k in ("sumbg.commit", "sumbg.build-options")):
        found = image_dependencies(engine, spec.tag, options.cpu_shares)
        record: dict[str, Any] = {
            "outcome": "skipped",
            "reason": f"{spec.tag} already built from {spec.commit[:12]}",
            "image": spec.tag,
            "commit": spec.commit,
        }
        if found is None:
            return BuildResult(record)
        record["dependencies"] = [d.to_json() for d in found[0]]
        return BuildResult(record, found[0], found[1])
    work_dir.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="build-", dir=work_dir))
    # git's clones and askpass program, and the resolution's inputs, live beside the context, never in it.
    scratch = Path(tempfile.mkdtemp(prefix="git-", dir=work_dir))
    try:
        if mirror.read_file(spec.commit, "Dockerfile") is not None:
            return _build_own_dockerfile(engine, mirror, spec, labels, options, context)
        return _build_default(engine, mirror, spec, labels, options, context, scratch, constraints, wheel_cache(host))
    finally:
        shutil.rmtree(context, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _build_own_dockerfile(
    engine: Engine, mirror: Mirror, spec: ImageSpec, labels: dict[str, str], options: BuildOptions, context: Path
) -> BuildResult:
    """A repo with its own Dockerfile gets its tree as the context, plus .sumbg/ca.crt. Its Dockerfile
    decides how pip runs (no wheel cache, no constraints); what it installed is read from the image."""
    mirror.export(spec.commit, context)
    extras = context / ".sumbg"
    extras.mkdir(exist_ok=True)
    (context / "vendor").mkdir(exist_ok=True)
    _write_ca(extras / "ca.crt", options.ca_bundle)
    engine.build(
        context,
        context / "Dockerfile",
        spec.tag,
        labels,
        build_args={**options.build_args(), **_version_args(spec)},
        cpu_shares=options.cpu_shares,
    )
    record: dict[str, Any] = {"image": spec.tag, "commit": spec.commit, "dockerfile": "the repo's own Dockerfile"}
    found = image_dependencies(engine, spec.tag, options.cpu_shares)
    if found is None:
        record["dependencies_unknown"] = "the image has no python on its PATH to list its distributions"
        return BuildResult(record)
    engine.add_labels(spec.tag, {pydeps.LABEL: pydeps.to_label(found[0])})
    record["dependencies"] = [d.to_json() for d in found[0]]
    return BuildResult(record, found[0], found[1])


def _build_default(
    engine: Engine,
    mirror: Mirror,
    spec: ImageSpec,
    labels: dict[str, str],
    options: BuildOptions,
    context: Path,
    scratch: Path,
    constraints: Constraints,
    cache: wheels.WheelCache,
) -> BuildResult:
    """sumbg's default SUM Dockerfile: fetch git requirements on the host, resolve everything into wheels
    in a one-off container with the host's wheel cache, then build with those wheels in the context."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    app, extras = context / "app", context / "sumbg"
    app.mkdir()
    mirror.export(spec.commit, app)
    (app / "vendor").mkdir(exist_ok=True)
    extras.mkdir()
    shutil.copyfile(DEFAULT_DOCKERFILE, extras / "Dockerfile")
    ignore = app / ".dockerignore"
    if ignore.is_file():
        (context / ".dockerignore").write_text(gitdeps.prefixed_dockerignore(ignore.read_text(), "app"))
    requirements = app / "requirements.txt"
    text = requirements.read_text() if requirements.is_file() else ""
    deps_dir = scratch / "deps"
    deps_dir.mkdir()
    recorded = dict(constraints.git_commits)
    fetched: list[GitDependency] = []
    replacements: dict[int, str] = {}
    local: list[wheels.LocalSource] = []
    for requirement in gitdeps.find_git_requirements(text):
        source = gitdeps.rewrite_url(requirement.url, options.url_rewrites)
        project = pydeps.canonical(requirement.label)
        staging = scratch / "tree"
        wanted = recorded.get(project, "")
        try:
            commit = fetch_tree(
                source,
                wanted or requirement.ref,
                requirement.subdirectory,
                staging,
                auth=options.auth,
                scratch=scratch,
                shown_url=gitdeps.redact_url(source),
            )
        except GitError as exc:
            if not wanted:
                raise
            # A release built before fetches the commit it was built with, not what its ref names today.
            said = f"@{requirement.ref or 'HEAD'} (the recorded commit {wanted[:12]})"
            message = exc.message.replace(f"@{wanted}", said).replace(
                f"{wanted!r}", f"{wanted[:12]} (recorded for {requirement.ref or 'HEAD'} when it was built here)"
            )
            raise exc.refined(message=message) from exc
        name = gitdeps.dependency_dir_name(requirement, commit)
        if not (deps_dir / name).exists():
            shutil.move(staging, deps_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        replacements[requirement.line] = gitdeps.local_requirement(requirement, f"{gitdeps.DEPS_DIR_IN_IMAGE}/{name}")
        fetched.append(_dependency_record(requirement, source, commit))
        local.append(wheels.LocalSource(project, name, commit, requirement.subdirectory))
    timings["fetch"] = time.monotonic() - started
    mark = time.monotonic()
    toolchain = wheels.ensure_toolchain(
        engine,
        python_image=options.python_image,
        build_packages=options.build_packages,
        ca_bundle=options.ca_bundle,
        cpu_shares=options.cpu_shares,
        work_dir=scratch,
    )
    timings["toolchain"] = time.monotonic() - mark
    mark = time.monotonic()
    resolution = wheels.resolve(
        engine,
        wheels.ResolveJob(
            toolchain=toolchain,
            image_tag=spec.tag,
            requirements=gitdeps.rewrite_requirements(text, replacements),
            constraints=constraints.pins,
            relax=tuple(sorted({c.origin for c in constraints.pins})) if constraints.relax else (),
            local=tuple(local),
            deps_dir=deps_dir,
            vendor_dir=app / "vendor",
            out_dir=extras / "wheels" / "index",
            local_out_dir=extras / "wheels" / "local",
            scratch=scratch / "resolve",
            cache=cache,
            ca_bundle=bool(options.ca_bundle),
            cpu_shares=options.cpu_shares,
            compile_hint=lambda output: compile_hint(output, options),
        ),
    )
    timings["resolve"] = time.monotonic() - mark
    labels = {**labels, pydeps.LABEL: pydeps.to_label(resolution.dependencies)}
    if fetched:
        labels["sumbg.git-dependencies"] = " ".join(f"{item['requirement']}@{item['commit'][:12]}" for item in fetched)
    mark = time.monotonic()
    # One LABEL instruction at the end (the legacy builder makes a step of each --label).
    with (extras / "Dockerfile").open("a") as dockerfile:
        dockerfile.write(label_instruction(labels))
    engine.build(
        context,
        extras / "Dockerfile",
        spec.tag,
        {},
        build_args={**options.build_args(), **_version_args(spec), "TOOLCHAIN_IMAGE": toolchain.tag},
        cpu_shares=options.cpu_shares,
    )
    timings["image"] = time.monotonic() - mark
    pruned = cache.prune()
    record: dict[str, Any] = {
        "image": spec.tag,
        "commit": spec.commit,
        "dockerfile": "sumbg's default SUM Dockerfile",
        "python_image": options.python_image,
        "toolchain": toolchain.tag,
    }
    if fetched:
        record["git_dependencies"] = fetched
    if constraints.pins or constraints.source:
        record["constraints"] = constraints.record()
    record["wheels"] = {
        **resolution.record(),
        "cache": str(cache.folder(toolchain.cache_key)) if cache.enabled else "off ([build] wheel_cache_max_gb = 0)",
        **({"cache_bytes": pruned["bytes"]} if "bytes" in pruned else {}),
        **({"pruned_files": pruned["pruned"]} if pruned.get("pruned") else {}),
    }
    record["timings"] = {name: round(seconds, 3) for name, seconds in timings.items()}
    record["dependencies"] = [d.to_json() for d in resolution.dependencies]
    return BuildResult(record, resolution.dependencies, resolution.environment)


# ---------------------------------------------------------------- what an image holds

# Runs in a built image (`python -c`): its distributions, what each requires, how it was installed
# (direct_url.json), and the PEP 508 marker values of its Python.
_DISTRIBUTIONS_SCRIPT = """
import importlib.metadata as md, json, os, platform, sys
def env():
    impl = sys.implementation
    iver = "{0.major}.{0.minor}.{0.micro}".format(impl.version)
    if impl.version.releaselevel != "final":
        iver += impl.version.releaselevel[0] + str(impl.version.serial)
    return {"implementation_name": impl.name, "implementation_version": iver, "os_name": os.name,
            "platform_machine": platform.machine(), "platform_release": platform.release(),
            "platform_system": platform.system(), "platform_version": platform.version(),
            "python_full_version": platform.python_version(), "platform_python_implementation":
            platform.python_implementation(), "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform}
out, seen = [], set()
for dist in md.distributions():
    name = dist.metadata["Name"]
    if not name or name.lower() in seen:
        continue
    seen.add(name.lower())
    item = {"name": name, "version": dist.version, "requires": list(dist.requires or [])}
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null") or {}
    except Exception:
        direct = {}
    commit = (direct.get("vcs_info") or {}).get("commit_id")
    if commit:
        item["commit"], item["source"] = commit, "git"
    elif str(direct.get("url", "")).startswith("file:///sumbg-deps/"):
        item["source"] = "git"
    out.append(item)
print("SUMBG-DISTRIBUTIONS " + json.dumps({"distributions": out, "environment": env()}))
"""


def image_dependencies(
    engine: Engine, tag: str, cpu_shares: int | None = None
) -> tuple[list[pydeps.Dependency], dict[str, str]] | None:
    """The distributions installed in an image, read by a one-off container of it (None if it cannot
    say: no python). Where the image carries sumbg's label, its sources and git commits come from it
    (what sumbg fetched); an image built before the label existed gets its git commits from
    `sumbg.git-dependencies` (12 characters)."""
    result = engine.run_oneoff(
        tag,
        ["-c", _DISTRIBUTIONS_SCRIPT],
        volumes=[],
        entrypoint="python",
        cpu_shares=cpu_shares,
        io_weight=wheels.BACKGROUND_IO_WEIGHT,
    )
    report = None
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("SUMBG-DISTRIBUTIONS "):
            report = json.loads(line[len("SUMBG-DISTRIBUTIONS ") :])
            break
    if result.returncode != 0 or report is None:
        return None
    labels = engine.image_labels(tag) or {}
    known = {d.key: d for d in pydeps.from_label(labels.get(pydeps.LABEL, ""))}
    old_git = dict(item.split("@", 1) for item in labels.get("sumbg.git-dependencies", "").split() if "@" in item)
    found = []
    for item in report.get("distributions") or []:
        dep = pydeps.Dependency(
            name=str(item.get("name", "")),
            version=str(item.get("version", "")),
            commit=str(item.get("commit") or ""),
            source=str(item.get("source") or ""),
            requires=tuple(str(r) for r in item.get("requires") or ()),
        )
        if dep.key in pydeps.INSTALLER_TOOLS:
            continue
        labelled = known.get(dep.key)
        if labelled is not None:
            dep = pydeps.Dependency(dep.name, dep.version, labelled.commit, labelled.source, dep.requires)
        elif dep.source == pydeps.GIT and not dep.commit:
            commit = next((c for n, c in old_git.items() if pydeps.canonical(n) == dep.key), "")
            dep = pydeps.Dependency(dep.name, dep.version, commit, dep.source, dep.requires)
        found.append(dep)
    environment = {str(k): str(v) for k, v in (report.get("environment") or {}).items()}
    return sorted(found, key=lambda d: d.key), environment


def labelled_dependencies(engine: Engine, tag: str) -> list[pydeps.Dependency] | None:
    """What an image's label says it holds (None: no such image, or built before the label existed)."""
    labels = engine.image_labels(tag)
    if labels is None or pydeps.LABEL not in labels:
        return None
    return pydeps.from_label(labels[pydeps.LABEL])


def _dependency_record(requirement: gitdeps.GitRequirement, source: str, commit: str) -> GitDependency:
    url, ref = gitdeps.redact_url(requirement.url), requirement.ref or "HEAD"
    if source == requirement.url:
        return GitDependency(requirement=requirement.label, url=url, ref=ref, commit=commit)
    fetched_from = gitdeps.redact_url(source)
    return GitDependency(requirement=requirement.label, url=url, fetched_from=fetched_from, ref=ref, commit=commit)


_COMPILE_FAILURE = (
    "failed building wheel",
    "error: command 'gcc' failed",
    "gcc: not found",
    "command 'gcc' failed",
    "could not be found",
    "x86_64-linux-gnu-gcc",
    "fatal error:",
    "no such file or directory: 'gcc'",
    "unable to execute 'gcc'",
)


def compile_hint(output: str, options: BuildOptions) -> str:
    """When pip had to compile a package and could not: which site.toml setting helps."""
    low = output.lower()
    if not any(marker.lower() in low for marker in _COMPILE_FAILURE):
        return ""
    if options.build_packages:
        return (
            f"pip could not compile a package (build_packages {' '.join(options.build_packages)}); "
            "its -dev headers may be missing from site.toml [build] build_packages"
        )
    return (
        "pip had to compile a package: add what it needs to site.toml [build] build_packages, e.g. "
        '["gcc", "libjpeg-dev", "zlib1g-dev"] for Pillow, and its runtime libraries to packages'
    )


def label_instruction(labels: dict[str, str]) -> str:
    """`LABEL "key"="value" ...` for a Dockerfile: JSON-quoted, `$` escaped (no variable expansion)."""
    pairs = " \\\n    ".join(
        f"{json.dumps(key)}={json.dumps(value).replace('$', chr(92) + '$')}" for key, value in labels.items()
    )
    return f"LABEL {pairs}\n"


def _write_ca(path: Path, ca_bundle: str) -> None:
    if ca_bundle:
        shutil.copyfile(ca_bundle, path)
    else:
        path.write_bytes(b"")


def _version_args(spec: ImageSpec) -> dict[str, str]:
    return {"GIT_SHA": spec.commit, "BUILD_ID": spec.labels["sumbg.ref"]}
