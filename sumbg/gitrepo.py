"""The client repository: resolve refs and read or export trees, never a working tree.

sumbg keeps a bare mirror of the client repo under the site folder and builds
from `git archive` of the resolved commit, so uncommitted files in someone's
checkout can never end up in an image.
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .errors import GitError, NotFound, tail

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def _git(args: list[str], *, cwd: Path | None = None, binary: bool = False, check: bool = True):
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, env={**os.environ, **_GIT_ENV}, timeout=600
        )
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than 10 minutes", command=["git", *args]) from None
    if check and proc.returncode != 0:
        raise GitError(
            f"git {args[0]} failed", command=["git", *args], returncode=proc.returncode,
            output_tail=tail(proc.stderr, 5),
        )
    return proc if binary else proc.stdout.decode("utf-8", "replace")


def normalise_repo(repo: str) -> str:
    """A local path becomes absolute; URLs are kept as given."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", repo) or re.match(r"^[\w.-]+@[\w.-]+:", repo):
        return repo
    return str(Path(repo).expanduser().absolute())


def check_reachable(repo: str) -> None:
    if "://" not in repo and "@" not in repo and not Path(repo).exists():
        raise NotFound(f"repository {repo} does not exist")
    proc = _git(["ls-remote", "--exit-code", "-q", repo, "HEAD"], check=False, binary=True)
    if proc.returncode not in (0, 2):
        raise NotFound(f"{repo} is not a readable git repository: {tail(proc.stderr, 1)}")


@dataclass(frozen=True)
class Resolved:
    ref: str
    commit: str


class Mirror:
    """A bare mirror of a client repo, kept under the site folder."""

    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin

    def sync(self) -> None:
        if not (self.path / "HEAD").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".partial")
            if tmp.exists():
                _git(["-C", str(tmp.parent), "worktree", "prune"], check=False)
                import shutil
                shutil.rmtree(tmp)
            _git(["clone", "--mirror", "--quiet", self.origin, str(tmp)])
            os.replace(tmp, self.path)
        else:
            _git(["-C", str(self.path), "remote", "set-url", "origin", self.origin])
            _git(["-C", str(self.path), "fetch", "--prune", "--tags", "--force", "--quiet", "origin",
                  "+refs/heads/*:refs/heads/*"])

    def resolve(self, ref: str) -> Resolved:
        proc = _git(["-C", str(self.path), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                    check=False, binary=True)
        if proc.returncode != 0:
            raise NotFound(f"ref {ref!r} does not exist in {self.origin}")
        return Resolved(ref=ref, commit=proc.stdout.decode().strip())

    def read_file(self, commit: str, path: str) -> str | None:
        proc = _git(["-C", str(self.path), "show", f"{commit}:{path}"], check=False, binary=True)
        return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None

    def list_files(self, commit: str) -> list[str]:
        return _git(["-C", str(self.path), "ls-tree", "-r", "--name-only", commit]).splitlines()

    def export(self, commit: str, dest: Path) -> None:
        proc = _git(["-C", str(self.path), "archive", "--format=tar", commit], binary=True)
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as archive:
            archive.extractall(dest, filter="data")


_PIN_EQ = re.compile(r"^\s*sum[-_]core\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*(?:[;#].*)?$", re.I)
_PIN_GIT = re.compile(
    r"^\s*sum[-_]core\s*@\s*git\+\S+?@v?([0-9][0-9A-Za-z.+-]*?)(?:#\S*)?(?:\s*;.*|\s+#.*)?\s*$", re.I)


def sum_core_pin(requirements: str | None) -> str | None:
    """The sum-core version pinned in a requirements.txt, in either form real SUM clients use."""
    for line in (requirements or "").splitlines():
        # pip-compile --generate-hashes output: "sum-core==0.7.0 \" then --hash lines.
        line = re.sub(r"\s+--hash[=\s]\S+", "", line).rstrip().removesuffix("\\")
        for pattern in (_PIN_EQ, _PIN_GIT):
            match = pattern.match(line)
            if match:
                return match.group(1)
    return None


def detect_project(files: list[str]) -> str | None:
    """The Django project package: the folder beside manage.py holding wsgi.py and settings/."""
    names = set(files)
    if "manage.py" not in names:
        return None
    for name in sorted(names):
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == "wsgi.py" and (
            f"{parts[0]}/settings/production.py" in names or f"{parts[0]}/settings.py" in names
        ):
            return parts[0]
    return None
