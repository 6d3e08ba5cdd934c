"""Runs inside a build's toolchain container (`/sumbg-build/bin/python`), never imported by sumbg itself.

Resolves a client's requirements into wheels, the one part of a build that downloads and
compiles, in a one-off container with the host's wheel cache mounted (sumbg/adapters/wheels.py):

1. each dependency sumbg fetched from git (a source tree under /sumbg-deps) becomes a wheel,
   built once per commit (kept in /local-cache), without build isolation when the build
   environment already has what its pyproject.toml asks for (setuptools, wheel);
2. `pip wheel` resolves requirements.txt under the constraints, taking wheels from the
   wheelhouse (/wheelhouse) before the package index, into /out.

It reads /in/spec.json and prints one line, `SUMBG-RESOLVE {json}`, after pip's own output.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib

PIP = [sys.executable, "-m", "pip"]


def build_env_satisfies(requires: list[str]) -> bool:
    """Whether this build environment has every build requirement (then no isolation is needed)."""
    from pip._vendor.packaging.requirements import Requirement

    for text in requires:
        try:
            req = Requirement(text)
            installed = importlib.metadata.version(req.name)
        except Exception:  # noqa: BLE001 - unparsable or missing: let pip isolate the build
            return False
        if req.marker is not None and not req.marker.evaluate():
            continue
        if not req.specifier.contains(installed, prereleases=True):
            return False
    return True


def build_local(source: dict[str, str], cache_dir: str | None, out_dir: str) -> tuple[str, bool]:
    """The wheel of one fetched source tree: from the local cache, or built now."""
    target = os.path.join(cache_dir, source["cache"]) if cache_dir else None
    if target and os.path.isdir(target):
        found = [name for name in os.listdir(target) if name.endswith(".whl")]
        if len(found) == 1:
            return os.path.join(target, found[0]), False
    path = os.path.join("/sumbg-deps", source["dir"])
    requires: list[str] = ["setuptools>=40.8.0"]
    pyproject = os.path.join(path, "pyproject.toml")
    if os.path.exists(pyproject):
        with open(pyproject, "rb") as handle:
            requires = tomllib.load(handle).get("build-system", {}).get("requires", requires)
    scratch = tempfile.mkdtemp(prefix="local-", dir=out_dir)
    argv = [*PIP, "wheel", "--no-deps", "--progress-bar", "off", "--wheel-dir", scratch, path]
    if build_env_satisfies(requires):
        argv.insert(4, "--no-build-isolation")
    done = subprocess.run(argv)
    if done.returncode != 0:
        print(f"SUMBG-LOCAL-FAILED {source['dir']}", flush=True)
        sys.exit(done.returncode)
    wheel = next(name for name in os.listdir(scratch) if name.endswith(".whl"))
    if target:
        staging = target + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        shutil.move(os.path.join(scratch, wheel), os.path.join(staging, wheel))
        os.replace(staging, target)
        shutil.rmtree(scratch, ignore_errors=True)
        return os.path.join(target, wheel), True
    return os.path.join(scratch, wheel), True


def environment() -> dict[str, str]:
    """PEP 508 marker values of this Python, for evaluating what the installed distributions require."""
    from pip._vendor.packaging.markers import default_environment

    return {key: str(value) for key, value in default_environment().items()}


def main() -> None:
    with open("/in/spec.json") as handle:
        spec = json.load(handle)
    started = time.monotonic()
    cache_dir = "/local-cache" if os.path.isdir("/local-cache") else None
    local: dict[str, str] = {}
    built: list[str] = []
    requirements = open("/in/requirements.txt").read()
    for source in spec["local"]:
        wheel, new = build_local(source, cache_dir, "/work")
        local[source["dir"]] = os.path.basename(wheel)
        if new:
            built.append(source["dir"])
        # `name @ file:///sumbg-deps/<dir>` (or a bare path) now names the wheel built from it.
        pattern = re.escape(f"/sumbg-deps/{source['dir']}") + r"(?=[\s;]|$)"
        requirements = re.sub(pattern, wheel.replace("\\", r"\\"), requirements, flags=re.M)
    with open("/work/requirements.txt", "w") as handle:
        handle.write(requirements)
    local_seconds = time.monotonic() - started
    argv = [*PIP, "wheel", "--progress-bar", "off", "--wheel-dir", "/out", "-r", "/work/requirements.txt"]
    argv += ["-c", "/in/constraints.txt"]
    for links in ("/wheelhouse", "/app/vendor"):
        if os.path.isdir(links):
            argv += ["--find-links", links]
    done = subprocess.run(argv)
    report = {
        "local": local,
        "built": built,
        "environment": environment(),
        "local_seconds": round(local_seconds, 3),
        "resolve_seconds": round(time.monotonic() - started - local_seconds, 3),
    }
    print("SUMBG-RESOLVE " + json.dumps(report), flush=True)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
