#!/usr/bin/env python3
"""Materialise the example SUM client site as a git repository with tagged releases.

    python examples/sum-site/build_repo.py DEST [--force]

DEST becomes a git repository (branch main) with one commit and one annotated
tag per entry of releases.RELEASES, in order. Each commit holds the whole
Acme client project at that release, its requirements.txt pinning
``sum-core==X.Y.Z``, and the matching wheel at ``vendor/sum_core-X.Y.Z-py3-none-any.whl``.

Nothing here needs the network, nor the user's git configuration: commits use
a fixed identity and fixed dates, so the same sources give the same commits.
The wheel is built with ``pip wheel --no-deps --no-build-isolation --no-index``
when this interpreter can build wheels (setuptools >= 70.1, or the ``wheel``
package), otherwise it is written directly with zipfile (a wheel is a zip
with a .dist-info); ``--wheel-builder`` forces one or the other.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from releases import LAYERS, RELEASES, SUM_CORE_GIT_URL  # noqa: E402

CORE_SRC = HERE / "sum-core"
CLIENT_SRC = HERE / "client"
WHEEL_NAME = "sum_core-{version}-py3-none-any.whl"

GIT_NAME = "SUM Release Bot"
GIT_EMAIL = "releases@example.com"
FIRST_RELEASE_DATE = datetime(2024, 3, 1, 10, 0, 0, tzinfo=timezone.utc)

_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


# --------------------------------------------------------------------------- trees

def apply_layer(root: Path, name: str) -> None:
    """Apply one layer of releases.LAYERS to ROOT (which holds sum-core/ and client/)."""
    layer = LAYERS[name]
    for path in layer.get("delete", []):
        (root / path).unlink()
    for path, text in layer.get("files", {}).items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for path, edits in layer.get("edits", {}).items():
        target = root / path
        text = target.read_text()
        for old, new in edits:
            count = text.count(old)
            if count != 1:
                raise SystemExit(f"layer {name!r}: {path}: expected 1 occurrence of {old!r}, found {count}")
            text = text.replace(old, new)
        target.write_text(text)


def set_core_version(core_dir: Path, version: str) -> None:
    init = core_dir / "sum_core" / "__init__.py"
    text, n = re.subn(r'^__version__ = ".*"$', f'__version__ = "{version}"', init.read_text(), flags=re.M)
    if n != 1:
        raise SystemExit(f"{init}: no __version__ line to rewrite")
    init.write_text(text)


def pin_core(client_dir: Path, version: str) -> None:
    req = client_dir / "requirements.txt"
    text, n = re.subn(r"^sum-core==\S+$", f"sum-core=={version}", req.read_text(), flags=re.M)
    if n != 1:
        raise SystemExit(f"{req}: no sum-core== line to rewrite")
    req.write_text(text)


def git_pin_line(version: str) -> str:
    """The requirement real SUM clients use: sum-core from its git repository, subdirectory core."""
    return f"sum-core @ git+{SUM_CORE_GIT_URL}@v{version}#subdirectory=core"


def pin_core_git(client_dir: Path, version: str) -> None:
    req = client_dir / "requirements.txt"
    text, n = re.subn(r"^sum-core==\S+$", git_pin_line(version), req.read_text(), flags=re.M)
    if n != 1:
        raise SystemExit(f"{req}: no sum-core== line to rewrite")
    req.write_text(text)


def render_release(release: dict, workdir: Path) -> tuple[Path, Path]:
    """Write the sum-core and client trees of RELEASE under WORKDIR; return both paths."""
    core_dir, client_dir = workdir / "sum-core", workdir / "client"
    shutil.copytree(CORE_SRC, core_dir, ignore=_IGNORED)
    shutil.copytree(CLIENT_SRC, client_dir, ignore=_IGNORED)
    for name in release["layers"]:
        apply_layer(workdir, name)
    set_core_version(core_dir, release["sum_core"])
    if release.get("git_pin"):
        pin_core_git(client_dir, release["sum_core"])
    else:
        pin_core(client_dir, release["sum_core"])
    return core_dir, client_dir


# --------------------------------------------------------------------------- wheels

def pip_can_build_wheels() -> bool:
    if importlib.util.find_spec("wheel") is not None:
        return True
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)  # setuptools ships bdist_wheel itself from 70.1


def build_wheel_pip(core_dir: Path, version: str, outdir: Path, epoch: int) -> Path:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), PIP_NO_INPUT="1")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(outdir), str(core_dir)],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    return outdir / WHEEL_NAME.format(version=version)


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel_zip(core_dir: Path, version: str, outdir: Path, epoch: int) -> Path:
    """Write a pure-Python wheel for sum-core without any build tool."""
    import tomllib

    project = tomllib.loads((core_dir / "pyproject.toml").read_text())["project"]
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {version}",
        f"Summary: {project.get('description', '')}",
    ]
    if "requires-python" in project:
        metadata.append(f"Requires-Python: {project['requires-python']}")
    metadata += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]

    dist_info = f"sum_core-{version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    pkg = core_dir / "sum_core"
    for path in sorted(pkg.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        entries.append((path.relative_to(core_dir).as_posix(), path.read_bytes()))
    entries += [
        (f"{dist_info}/METADATA", ("\n".join(metadata) + "\n").encode()),
        (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: sum-site build_repo.py\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        (f"{dist_info}/top_level.txt", b"sum_core\n"),
    ]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode()))

    stamp = datetime.fromtimestamp(max(epoch, 315532800), timezone.utc).timetuple()[:6]
    wheel = outdir / WHEEL_NAME.format(version=version)
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


def build_wheel(core_dir: Path, version: str, outdir: Path, epoch: int, builder: str = "auto") -> Path:
    if builder == "auto":
        builder = "pip" if pip_can_build_wheels() else "zip"
    build = build_wheel_pip if builder == "pip" else build_wheel_zip
    wheel = build(core_dir, version, outdir, epoch)
    if not wheel.is_file():
        raise SystemExit(f"wheel build ({builder}) did not produce {wheel.name}; got {sorted(os.listdir(outdir))}")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        init = zf.read("sum_core/__init__.py").decode()
    for needed in ("sum_core/static/sum_core/css/main.css", "sum_core/templates/sum_core/home.html",
                   "sum_core/migrations/0001_initial.py", "sum_core/tasks.py"):
        if needed not in names:
            raise SystemExit(f"{wheel.name} lacks {needed}")
    if f'__version__ = "{version}"' not in init:
        raise SystemExit(f"{wheel.name}: sum_core.__version__ is not {version}")
    return wheel


# --------------------------------------------------------------------------- git

def git_env(when: datetime) -> dict:
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME=GIT_NAME, GIT_AUTHOR_EMAIL=GIT_EMAIL, GIT_AUTHOR_DATE=stamp,
        GIT_COMMITTER_NAME=GIT_NAME, GIT_COMMITTER_EMAIL=GIT_EMAIL, GIT_COMMITTER_DATE=stamp,
        GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0",
    )
    return env


def git(repo: Path, *args: str, when: datetime = FIRST_RELEASE_DATE, capture: bool = False) -> str:
    cmd = ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "core.autocrlf=false",
           "-c", "core.hooksPath=/dev/null", "-C", str(repo), *args]
    result = subprocess.run(cmd, check=True, env=git_env(when), text=True,
                            stdout=subprocess.PIPE if capture else subprocess.DEVNULL)
    return (result.stdout or "").strip()


def replace_worktree(repo: Path, tree: Path) -> None:
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(tree, repo, dirs_exist_ok=True)


# --------------------------------------------------------------------------- main

def prepare_dest(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise SystemExit(f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        if not force:
            raise SystemExit(f"{dest} exists and is not empty (use --force to wipe it)")
        resolved = dest.resolve()
        if resolved == Path(resolved.anchor) or resolved == Path.home().resolve() or resolved in HERE.parents \
                or resolved == HERE:
            raise SystemExit(f"refusing to wipe {resolved}")
        shutil.rmtree(resolved)
    dest.mkdir(parents=True, exist_ok=True)


def build_repo(dest: Path, force: bool = False, builder: str = "auto", quiet: bool = False) -> list[tuple[str, str]]:
    """Build the repository at DEST; return [(tag, commit sha), ...]."""
    dest = Path(dest)
    prepare_dest(dest, force)
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True, env=git_env(FIRST_RELEASE_DATE))
    made = []
    with tempfile.TemporaryDirectory(prefix="sum-site-") as tmp:
        tmp = Path(tmp)
        for i, release in enumerate(RELEASES):
            when = FIRST_RELEASE_DATE + timedelta(days=7 * i)
            work = tmp / f"{i:02d}-{release['tag']}"
            work.mkdir()
            core_dir, client_dir = render_release(release, work)
            if not release.get("git_pin"):  # a git-pinned release gets sum-core from git, not vendor/
                wheel_dir = work / "wheel"
                wheel_dir.mkdir()
                wheel = build_wheel(core_dir, release["sum_core"], wheel_dir, int(when.timestamp()), builder)
                (client_dir / "vendor").mkdir()
                shutil.copy2(wheel, client_dir / "vendor" / wheel.name)
            replace_worktree(dest, client_dir)
            git(dest, "add", "-A", when=when)
            message = f"Release {release['tag']}: sum-core {release['sum_core']}\n\n{release['description']}\n"
            git(dest, "commit", "-q", "-m", message, when=when)
            git(dest, "tag", "-a", release["tag"], "-m", f"{release['tag']} (sum-core {release['sum_core']})",
                when=when)
            sha = git(dest, "rev-parse", "HEAD", capture=True)
            made.append((release["tag"], sha))
            if not quiet:
                print(f"{release['tag']:<26} sum-core {release['sum_core']:<6} {sha[:12]}  {release['description']}")
    return made


def build_core_repo(dest: Path, force: bool = False, quiet: bool = False) -> list[tuple[str, str]]:
    """The sum-core git repository the git-pinned releases point at, as a bare repository.

    One commit per release with "git_pin": the sum-core tree of that release under core/
    (hence ``#subdirectory=core``), tagged v<sum_core>. Ready to be served over dumb HTTP
    (``git update-server-info`` has run). Return [(tag, commit sha), ...].
    """
    dest = Path(dest)
    prepare_dest(dest, force)
    made = []
    with tempfile.TemporaryDirectory(prefix="sum-core-") as tmp:
        tmp = Path(tmp)
        work_repo = tmp / "repo"
        work_repo.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(work_repo)], check=True,
                       env=git_env(FIRST_RELEASE_DATE))
        for i, release in enumerate(RELEASES):
            if not release.get("git_pin"):
                continue
            when = FIRST_RELEASE_DATE + timedelta(days=7 * i, hours=1)
            work = tmp / f"{i:02d}-{release['tag']}"
            work.mkdir()
            core_dir, _ = render_release(release, work)
            tree = tmp / f"{i:02d}-tree"
            shutil.copytree(core_dir, tree / "core")
            (tree / "README.md").write_text("# sum-core\n\nThe shared SUM Django app; the package is in core/.\n")
            replace_worktree(work_repo, tree)
            tag = f"v{release['sum_core']}"
            git(work_repo, "add", "-A", when=when)
            git(work_repo, "commit", "-q", "-m", f"sum-core {release['sum_core']}", when=when)
            git(work_repo, "tag", "-a", tag, "-m", f"sum-core {release['sum_core']}", when=when)
            made.append((tag, git(work_repo, "rev-parse", "HEAD", capture=True)))
            if not quiet:
                print(f"{tag:<10} {made[-1][1][:12]}")
        dest.rmdir()
        subprocess.run(["git", "clone", "-q", "--bare", str(work_repo), str(dest)], check=True,
                       env=git_env(FIRST_RELEASE_DATE))
        git(dest, "update-server-info")
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", type=Path, help="where to create the git repository")
    parser.add_argument("--force", action="store_true", help="wipe DEST first if it is not empty")
    parser.add_argument("--wheel-builder", choices=["auto", "pip", "zip"], default="auto",
                        help="how to build the sum-core wheels (default: pip when possible, else zip)")
    parser.add_argument("--list", action="store_true", help="list the releases and exit")
    parser.add_argument("--core-repo", type=Path, metavar="CORE_DEST",
                        help="also build the bare sum-core git repository the git-pinned releases use")
    args = parser.parse_args(argv)
    if args.list:
        for release in RELEASES:
            print(f"{release['tag']:<26} sum-core {release['sum_core']:<6} {release['description']}")
        return 0
    if args.dest is None:
        parser.error("DEST is required")
    build_repo(args.dest, force=args.force, builder=args.wheel_builder)
    if args.core_repo:
        build_core_repo(args.core_repo, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
