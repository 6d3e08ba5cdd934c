"""Git requirements of a client's requirements.txt: found, rewritten, and described safely.

Real SUM client repos pin ``sum-core @ git+https://github.com/<org>/sum-core.git@vX.Y.Z#subdirectory=core``,
often from a private repository. sumbg fetches such dependencies itself, on the host, before
the image build (gitrepo.fetch_tree, with the credential given by environment and a file,
never argv), puts only the fetched source tree into the build context and rewrites the
requirement to that local copy. This module is the pure part: parsing a requirement line,
git's ``insteadOf`` URL rewriting, the rewritten requirements file, the rewritten
.dockerignore, and URLs with any password removed for messages and records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

# Where the build stage of the default Dockerfile finds the fetched sources.
DEPS_DIR_IN_IMAGE = "/sumbg-deps"
GIT_SCHEMES = ("https", "http", "ssh", "git", "file")

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PEP508 = re.compile(
    rf"^(?P<name>{_NAME})\s*(?P<extras>\[[^\]]*\])?\s*@\s*git\+(?P<url>\S+)(?:\s+(?P<marker>;.*?))?\s*$"
)
_BARE = re.compile(r"^(?P<editable>(?:-e|--editable)(?:\s+|=))?git\+(?P<url>\S+)(?:\s+(?P<marker>;.*?))?\s*$")
_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True)
class GitRequirement:
    """One `git+` line of a requirements file."""

    line: int  # 0-based physical line number
    name: str  # the distribution name, "" when the line does not say
    extras: str  # "[extra1,extra2]" or ""
    url: str  # the repository URL as written, without git+, @ref and #fragment
    ref: str  # tag, branch or commit; "" = the remote HEAD
    subdirectory: str  # #subdirectory=..., "" = repository root
    marker: str  # "; python_version >= '3.12'" or ""

    @property
    def label(self) -> str:
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def parse_git_requirement(text: str, line: int = 0) -> GitRequirement | None:
    """The git dependency on one physical line of requirements.txt, or None if it is not one."""
    stripped = _COMMENT.sub("", text).strip()
    match = _PEP508.match(stripped) or _BARE.match(stripped)
    if not match:
        return None
    raw = match.group("url")
    body, _, fragment = raw.partition("#")
    params = dict(parse_qsl(fragment))
    scheme, sep, rest = body.partition("://")
    if not sep or scheme not in GIT_SCHEMES:
        return None
    netloc, _, path = rest.partition("/")
    ref = ""
    if "@" in path:
        path, ref = path.rsplit("@", 1)
    groups = match.groupdict()
    name = groups.get("name") or params.get("egg", "")
    return GitRequirement(
        line=line,
        name=name,
        extras=groups.get("extras") or "",
        url=f"{scheme}://{netloc}/{path}",
        ref=ref,
        subdirectory=params.get("subdirectory", "").strip("/"),
        marker=groups.get("marker") or "",
    )


def find_git_requirements(text: str) -> list[GitRequirement]:
    """Every git requirement of a requirements file (continued lines are left alone)."""
    found, continued = [], False
    for number, line in enumerate(text.splitlines()):
        this_continues = line.rstrip().endswith("\\")
        if not continued and not this_continues:
            requirement = parse_git_requirement(line, number)
            if requirement:
                found.append(requirement)
        continued = this_continues
    return found


def local_requirement(requirement: GitRequirement, directory: str) -> str:
    """The requirement line that installs `requirement` from a directory of the build stage."""
    marker = f" {requirement.marker}" if requirement.marker else ""
    if requirement.name:
        return f"{requirement.name}{requirement.extras} @ file://{directory}{marker}"
    return f"{directory}{marker}"


def rewrite_requirements(text: str, replacements: dict[int, str]) -> str:
    """`text` with the given physical lines replaced (line number -> new line)."""
    lines = text.splitlines()
    for number, new in replacements.items():
        lines[number] = new
    return "\n".join(lines) + ("\n" if lines else "")


def rewrite_url(url: str, rewrites: tuple[tuple[str, str], ...]) -> str:
    """git's `url.<base>.insteadOf <prefix>`: the longest matching prefix is replaced."""
    best = max((pair for pair in rewrites if url.startswith(pair[0])), key=lambda pair: len(pair[0]), default=None)
    return best[1] + url[len(best[0]) :] if best else url


def redact_url(url: str) -> str:
    """The URL with the password (or token) of its user part replaced by ***."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)([^/@:]*):[^/@]*@", r"\1\2:***@", url)


def dependency_dir_name(requirement: GitRequirement, commit: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", requirement.label) or "dependency"
    return f"{safe}-{commit[:12]}"


def prefixed_dockerignore(text: str, prefix: str) -> str:
    """A repo's .dockerignore, for a build context where the repo sits in `prefix`/.

    The default Dockerfile's context holds the repo under app/ beside sumbg's own files, so
    the repo's patterns must name app/... to keep excluding what the repo meant to exclude.
    """
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            out.append(line)
            continue
        negate = stripped.startswith("!")
        pattern = stripped[1:].strip() if negate else stripped
        pattern = pattern.lstrip("/")
        out.append(("!" if negate else "") + prefix.rstrip("/") + "/" + pattern)
    return "\n".join(out) + ("\n" if out else "")
