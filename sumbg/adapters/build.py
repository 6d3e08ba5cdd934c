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
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

from sumbg import naming
from sumbg.adapters import gitdeps
from sumbg.adapters.docker import COMPOSE_DIR, Engine
from sumbg.adapters.gitrepo import GitAuth, Mirror, Resolved, fetch_tree
from sumbg.config import HostConfig, SiteConfig
from sumbg.errors import DockerError

DEFAULT_DOCKERFILE = COMPOSE_DIR / "sum-site.Dockerfile"


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
        """Identifies the image-shaping settings and sumbg's Dockerfile (no credential): a change rebuilds."""
        dockerfile = hashlib.sha256(DEFAULT_DOCKERFILE.read_bytes()).hexdigest()
        shape = [self.python_image, list(self.build_packages), list(self.packages), dockerfile]
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


def build(
    engine: Engine, mirror: Mirror, spec: ImageSpec, *, host: HostConfig, site: SiteConfig | None, work_dir: Path
) -> dict[str, object]:
    """Build `spec` unless an image with that tag was already built from the same commit and settings.

    The site's [build] settings apply over the host's; scratch files go under work_dir. Returns
    the build step's record: `outcome` "skipped" and its `reason`, or the `image` built, which
    `dockerfile`, and for sumbg's default Dockerfile its `python_image` and `git_dependencies`.
    """
    options = options_for(host, site)
    labels = {**spec.labels, "sumbg.build-options": options.fingerprint()}
    existing = engine.image_labels(spec.tag)
    if existing is not None and all(existing.get(k) == labels[k] for k in ("sumbg.commit", "sumbg.build-options")):
        return {"outcome": "skipped", "reason": f"{spec.tag} already built from {spec.commit[:12]}"}
    work_dir.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="build-", dir=work_dir))
    # git's clones and askpass program live beside the context, never in it.
    scratch = Path(tempfile.mkdtemp(prefix="git-", dir=work_dir))
    try:
        if mirror.read_file(spec.commit, "Dockerfile") is not None:
            return _build_own_dockerfile(engine, mirror, spec, labels, options, context)
        return _build_default(engine, mirror, spec, labels, options, context, scratch)
    finally:
        shutil.rmtree(context, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _build_own_dockerfile(
    engine: Engine, mirror: Mirror, spec: ImageSpec, labels: dict[str, str], options: BuildOptions, context: Path
) -> dict[str, object]:
    """A repo with its own Dockerfile gets its tree as the context, plus .sumbg/ca.crt."""
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
    return {"image": spec.tag, "dockerfile": "the repo's own Dockerfile"}


def _build_default(
    engine: Engine,
    mirror: Mirror,
    spec: ImageSpec,
    labels: dict[str, str],
    options: BuildOptions,
    context: Path,
    scratch: Path,
) -> dict[str, object]:
    """sumbg's default SUM Dockerfile: context = app/ (the repo) + sumbg/ (sumbg's files)."""
    app, extras = context / "app", context / "sumbg"
    app.mkdir()
    mirror.export(spec.commit, app)
    (app / "vendor").mkdir(exist_ok=True)
    (extras / "deps").mkdir(parents=True)
    _write_ca(extras / "ca.crt", options.ca_bundle)
    shutil.copyfile(DEFAULT_DOCKERFILE, extras / "Dockerfile")
    ignore = app / ".dockerignore"
    if ignore.is_file():
        (context / ".dockerignore").write_text(gitdeps.prefixed_dockerignore(ignore.read_text(), "app"))
    requirements = app / "requirements.txt"
    text = requirements.read_text() if requirements.is_file() else ""
    fetched: list[GitDependency] = []
    replacements: dict[int, str] = {}
    for requirement in gitdeps.find_git_requirements(text):
        source = gitdeps.rewrite_url(requirement.url, options.url_rewrites)
        staging = scratch / "tree"
        commit = fetch_tree(
            source,
            requirement.ref,
            requirement.subdirectory,
            staging,
            auth=options.auth,
            scratch=scratch,
            shown_url=gitdeps.redact_url(source),
        )
        name = gitdeps.dependency_dir_name(requirement, commit)
        if not (extras / "deps" / name).exists():
            shutil.move(staging, extras / "deps" / name)
        shutil.rmtree(staging, ignore_errors=True)
        directory = f"{gitdeps.DEPS_DIR_IN_IMAGE}/{name}"
        replacements[requirement.line] = gitdeps.local_requirement(requirement, directory)
        fetched.append(_dependency_record(requirement, source, commit))
    (extras / "requirements.txt").write_text(gitdeps.rewrite_requirements(text, replacements))
    if fetched:
        labels = {
            **labels,
            "sumbg.git-dependencies": " ".join(f"{item['requirement']}@{item['commit'][:12]}" for item in fetched),
        }
    try:
        engine.build(
            context,
            extras / "Dockerfile",
            spec.tag,
            labels,
            build_args={**options.build_args(), **_version_args(spec)},
            cpu_shares=options.cpu_shares,
        )
    except DockerError as exc:
        hint = compile_hint(exc.output_tail or "", options)
        if hint:
            raise exc.refined(message=f"{exc.message}; {hint}") from exc
        raise
    result: dict[str, object] = {
        "image": spec.tag,
        "dockerfile": "sumbg's default SUM Dockerfile",
        "python_image": options.python_image,
    }
    if fetched:
        result["git_dependencies"] = fetched
    return result


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


def _write_ca(path: Path, ca_bundle: str) -> None:
    if ca_bundle:
        shutil.copyfile(ca_bundle, path)
    else:
        path.write_bytes(b"")


def _version_args(spec: ImageSpec) -> dict[str, str]:
    return {"GIT_SHA": spec.commit, "BUILD_ID": spec.labels["sumbg.ref"]}
