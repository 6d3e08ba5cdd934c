"""The client repository: resolve refs and read or export trees, never a working tree.

sumbg keeps a bare mirror of the client repo under the site folder and builds
from `git archive` of the resolved commit, so uncommitted files in someone's
checkout can never end up in an image.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

from sumbg.errors import GitError, NotFound, tail

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


@overload
def _git(args: list[str], *, cwd: Path | None = None, binary: Literal[False] = False, check: bool = True) -> str: ...


@overload
def _git(
    args: list[str], *, cwd: Path | None = None, binary: Literal[True], check: bool = True
) -> subprocess.CompletedProcess[bytes]: ...


def _git(
    args: list[str], *, cwd: Path | None = None, binary: bool = False, check: bool = True
) -> str | subprocess.CompletedProcess[bytes]:
    """git's output as text, or with `binary` the whole finished process (exit code, bytes)."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, env={**os.environ, **_GIT_ENV}, timeout=600)
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than 10 minutes", command=["git", *args]) from None
    if check and proc.returncode != 0:
        raise GitError(
            f"git {args[0]} failed",
            command=["git", *args],
            returncode=proc.returncode,
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
class Checkout:
    """What a hand-made deployment's working copy runs: its origin, commit and local edits."""

    origin: str
    commit: str
    changed: tuple[str, ...]


def read_checkout(path: Path) -> Checkout:
    """A deployed app/ folder (a git clone): where it came from, what is checked out, what was edited."""
    if not (path / ".git").exists():
        raise NotFound(f"{path} is not a git checkout (no .git): sumbg builds the deployed commit from its origin")
    commit = _git(["-C", str(path), "rev-parse", "--verify", "HEAD^{commit}"]).strip()
    origin = _git(["-C", str(path), "remote", "get-url", "origin"], check=False).strip()
    if not origin:
        raise NotFound(f"{path} has no remote 'origin' to build its commit {commit[:12]} from")
    status = _git(["-C", str(path), "status", "--porcelain", "--untracked-files=no"], check=False)
    changed = tuple(line[3:] for line in status.splitlines() if line.strip())
    return Checkout(origin=origin, commit=commit, changed=changed)


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
        if not self.exists():
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
            _git(
                [
                    "-C",
                    str(self.path),
                    "fetch",
                    "--prune",
                    "--tags",
                    "--force",
                    "--quiet",
                    "origin",
                    "+refs/heads/*:refs/heads/*",
                ]
            )

    def exists(self) -> bool:
        return (self.path / "HEAD").exists()

    def tags(self) -> list[tuple[str, str, int]]:
        """(tag, the commit it names, its date as a Unix time) for every tag."""
        out = _git(
            [
                "-C",
                str(self.path),
                "for-each-ref",
                "refs/tags",
                "--format=%(refname:strip=2)%00%(objectname)%00%(*objectname)%00%(creatordate:unix)",
            ]
        )
        found = []
        for line in out.splitlines():
            tag, obj, peeled, date = line.split("\0")
            found.append((tag, peeled or obj, int(date or 0)))
        return found

    def resolve(self, ref: str) -> Resolved:
        proc = _git(
            ["-C", str(self.path), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], check=False, binary=True
        )
        if proc.returncode != 0:
            raise NotFound(f"ref {ref!r} does not exist in {self.origin}")
        return Resolved(ref=ref, commit=proc.stdout.decode().strip())

    def tags_at(self, commit: str) -> list[str]:
        return sorted(_git(["-C", str(self.path), "tag", "--points-at", commit]).split())

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
_PIN_GIT = re.compile(r"^\s*sum[-_]core\s*@\s*git\+\S+?@v?([0-9][0-9A-Za-z.+-]*?)(?:#\S*)?(?:\s*;.*|\s+#.*)?\s*$", re.I)


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
        if (
            len(parts) == 2
            and parts[1] == "wsgi.py"
            and (f"{parts[0]}/settings/production.py" in names or f"{parts[0]}/settings.py" in names)
        ):
            return parts[0]
    return None


# ---------------------------------------------------------------- git dependencies of a build


@dataclass(frozen=True)
class GitAuth:
    """How sumbg authenticates to the git servers of a site's git requirements.

    Only file paths: the token and the key stay in their files (mode 0600) and reach git
    through an askpass program that reads the file, or ssh's -i option; never argv, never
    the environment, never sumbg's records.
    """

    token_file: str = ""
    username: str = ""
    ssh_key_file: str = ""
    ssh_known_hosts: str = ""
    ca_bundle: str = ""
    token_source: str = ""  # e.g. "sumbg.toml build.git_token_file", for messages
    ssh_key_source: str = ""

    def secrets(self) -> list[str]:
        """The credential itself, only to scrub it from any output sumbg shows or records."""
        found = []
        for path in (self.token_file, self.ssh_key_file):
            try:
                text = Path(path).read_text() if path else ""
            except OSError:
                continue
            found += [line.strip() for line in text.splitlines() if len(line.strip()) >= 4]
        return found


DEFAULT_GIT_USERNAME = "x-access-token"  # GitHub's name for token auth; other forges accept any
_PASSED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)
_ASKPASS = """#!/bin/sh
# Written by sumbg for one build: git asks, this answers from the token file (never argv).
case "$1" in
  Username*) printf '%s\\n' "$SUMBG_GIT_USERNAME" ;;
  *) exec head -n 1 -- "$SUMBG_GIT_TOKEN_FILE" ;;
esac
"""


def dependency_env(auth: GitAuth, scratch: Path) -> dict[str, str]:
    """The whole environment of the git processes fetching dependencies.

    Built from scratch: no user or system git configuration (no credential helper can
    store the token, no GIT_TRACE/GIT_CURL_VERBOSE can print it), no terminal prompt.
    """
    env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
    env.update(
        LC_ALL="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_SSH_COMMAND="ssh -o BatchMode=yes",
    )
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if auth.ca_bundle:
        env["GIT_SSL_CAINFO"] = auth.ca_bundle
    if auth.token_file:
        askpass = scratch / "askpass.sh"
        askpass.write_text(_ASKPASS)
        askpass.chmod(0o700)
        env.update(
            GIT_ASKPASS=str(askpass),
            SUMBG_GIT_TOKEN_FILE=auth.token_file,
            SUMBG_GIT_USERNAME=auth.username or DEFAULT_GIT_USERNAME,
        )
    if auth.ssh_key_file or auth.ssh_known_hosts:
        import shlex

        ssh = ["ssh"]
        if auth.ssh_key_file:
            ssh += ["-i", shlex.quote(auth.ssh_key_file), "-o", "IdentitiesOnly=yes"]
        ssh += ["-o", "BatchMode=yes"]
        if auth.ssh_known_hosts:
            ssh += ["-o", f"UserKnownHostsFile={shlex.quote(auth.ssh_known_hosts)}", "-o", "StrictHostKeyChecking=yes"]
        else:
            ssh += ["-o", "StrictHostKeyChecking=accept-new"]
        env["GIT_SSH_COMMAND"] = " ".join(ssh)
    return env


def fetch_tree(
    url: str, ref: str, subdirectory: str, dest: Path, *, auth: GitAuth, scratch: Path, shown_url: str
) -> str:
    """Clone `url` into scratch, export REF[:subdirectory] into dest; return the commit.

    `shown_url` is the URL as messages may show it (no password). Every message and
    output tail is scrubbed of the credential.
    """
    if ref.startswith("-") or any(ch.isspace() for ch in ref):
        raise GitError(f"cannot fetch {shown_url}: {ref!r} is not a tag, branch or commit name")
    scratch.mkdir(parents=True, exist_ok=True)
    env = dependency_env(auth, scratch)
    secrets = auth.secrets()
    clone = scratch / f"clone-{len(list(scratch.glob('clone-*')))}"
    what = f"{shown_url}@{ref}" if ref else shown_url

    def run(args: list[str], shown: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(args, capture_output=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise GitError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"fetching {what} took longer than 10 minutes", command=shown or args) from None

    argv = ["git", "clone", "--bare", "--quiet", "--", url, str(clone)]
    shown = ["git", "clone", "--bare", "--quiet", "--", shown_url, str(clone)]
    proc = run(argv, shown)
    if proc.returncode != 0:
        stderr = _scrub(proc.stderr.decode("utf-8", "replace"), secrets, url, shown_url)
        raise GitError(
            f"cannot fetch {what}: {_clone_failure(stderr, auth, url)}",
            command=shown,
            returncode=proc.returncode,
            output_tail=tail(stderr, 3),
        )
    proc = run(["git", "-C", str(clone), "rev-parse", "--verify", "--quiet", f"{ref or 'HEAD'}^{{commit}}"])
    if proc.returncode != 0:
        raise GitError(f"cannot fetch {shown_url}: it has no tag, branch or commit {ref!r}")
    commit = proc.stdout.decode().strip()
    tree = f"{commit}:{subdirectory}" if subdirectory else commit
    proc = run(["git", "-C", str(clone), "archive", "--format=tar", tree])
    if proc.returncode != 0:
        raise GitError(f"cannot fetch {what}: it has no directory {subdirectory!r} (#subdirectory=)")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as archive:
        archive.extractall(dest, filter="data")
    shutil.rmtree(clone, ignore_errors=True)
    return commit


def _scrub(text: str, secrets: list[str], url: str, shown_url: str) -> str:
    text = text.replace(url, shown_url)
    for secret in secrets:
        text = text.replace(secret, "***")
    return re.sub(r"([a-z][a-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@", r"\1:***@", text)


def _clone_failure(stderr: str, auth: GitAuth, url: str) -> str:
    """One phrase saying why git could not fetch, and which setting to look at."""
    low = stderr.lower()
    if "could not resolve host" in low or "name or service not known" in low:
        host = re.search(r"resolve host(?:name)?:? '?([^\s':]+)", stderr, re.I)
        return (
            f"cannot resolve host {host.group(1) if host else ''}".rstrip()
            + " (for a mirror, map the URL with [build] git_url_rewrites)"
        )
    if "certificate" in low and ("problem" in low or "verif" in low):
        return "the server's TLS certificate is not trusted (add its CA to sumbg.toml [build] ca_bundle)"
    if "host key verification failed" in low:
        return (
            "the SSH server's host key is not in "
            + (auth.ssh_known_hosts or "~/.ssh/known_hosts")
            + " ([build] git_ssh_known_hosts)"
        )
    if "permission denied (publickey" in low:
        return (
            f"the SSH server refused the deploy key from {auth.ssh_key_source}"
            if auth.ssh_key_file
            else "the SSH server asks for a key: set [build] git_ssh_key_file"
        )
    if (
        "authentication failed" in low
        or "could not read username" in low
        or "could not read password" in low
        or " 401" in low
        or " 403" in low
    ):
        if auth.token_file:
            return (
                f"authentication failed with the token from {auth.token_source} "
                f"(user {auth.username or DEFAULT_GIT_USERNAME})"
            )
        return "the server asks for a credential: set [build] git_token_file in sumbg.toml or site.toml"
    if "not found" in low or " 404" in low or "does not appear to be a git repository" in low:
        return "no git repository at that URL"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "git clone failed"
