"""The build's pure parts (git requirements, URL rewrites, settings) and the host-side git fetch.

No Docker: the fetch tests use local git repositories over file://, and a fake engine
records what would be built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from sumbg.adapters import build, gitdeps, pydeps, wheels
from sumbg.adapters.docker import ExecResult
from sumbg.adapters.gitdeps import GitRequirement, parse_git_requirement
from sumbg.adapters.gitrepo import GitAuth, Mirror, dependency_env, fetch_tree
from sumbg.cli import exit_code_of
from sumbg.config import BuildSettings, HostConfig, Images, SiteConfig
from sumbg.errors import BuildError, GitError

PIN = "sum-core @ git+https://github.com/acme/sum-core.git@v0.9.0#subdirectory=core"


# ---------------------------------------------------------------- requirement lines


@pytest.mark.parametrize(
    "line, expected",
    [
        (PIN, GitRequirement(0, "sum-core", "", "https://github.com/acme/sum-core.git", "v0.9.0", "core", "")),
        (
            "sum_core[celery,redis] @ git+ssh://git@github.com/acme/sum-core.git@main#subdirectory=/core/ "
            "; python_version >= '3.12'  # the core",
            GitRequirement(
                0,
                "sum_core",
                "[celery,redis]",
                "ssh://git@github.com/acme/sum-core.git",
                "main",
                "core",
                "; python_version >= '3.12'",
            ),
        ),
        (
            "git+https://gitlab.example/acme/tools.git@0123456789abcdef0123456789abcdef01234567#egg=acme-tools",
            GitRequirement(
                0,
                "acme-tools",
                "",
                "https://gitlab.example/acme/tools.git",
                "0123456789abcdef0123456789abcdef01234567",
                "",
                "",
            ),
        ),
        (
            "-e git+https://x-access-token:s3cr3t@github.com/acme/lib.git#egg=lib&subdirectory=src",
            GitRequirement(0, "lib", "", "https://x-access-token:s3cr3t@github.com/acme/lib.git", "", "src", ""),
        ),
        ("git+file:///srv/git/thing.git", GitRequirement(0, "", "", "file:///srv/git/thing.git", "", "", "")),
    ],
)
def test_git_requirement_lines(line, expected):
    assert parse_git_requirement(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "sum-core==0.9.0",
        "Django>=5.1,<5.2",
        "# sum-core @ git+https://github.com/acme/sum-core.git@v1",
        "",
        "-r base.txt",
        "--find-links vendor",
        "sum-core @ https://example.com/sum_core-1.0-py3-none-any.whl",
        "pkg @ git+svn://example.com/repo",
        "git+https",
        "hg+https://example.com/repo#egg=x",
    ],
)
def test_lines_that_are_not_git_requirements(line):
    assert parse_git_requirement(line) is None


def test_requirements_file_rewritten_to_the_fetched_sources():
    text = (
        "Django==5.1.4\n"
        f"{PIN}\n"
        "psycopg[binary]==3.2.3 \\\n"
        "    --hash=sha256:abc\n"
        "git+https://example.com/tools.git@v2#egg=tools ; sys_platform == 'linux'\n"
    )
    found = gitdeps.find_git_requirements(text)
    assert [(r.line, r.label, r.ref) for r in found] == [(1, "sum-core", "v0.9.0"), (4, "tools", "v2")]
    replacements = {r.line: gitdeps.local_requirement(r, f"/sumbg-deps/{r.label}-0123456789ab") for r in found}
    assert gitdeps.rewrite_requirements(text, replacements) == (
        "Django==5.1.4\n"
        "sum-core @ file:///sumbg-deps/sum-core-0123456789ab\n"
        "psycopg[binary]==3.2.3 \\\n"
        "    --hash=sha256:abc\n"
        "tools @ file:///sumbg-deps/tools-0123456789ab ; sys_platform == 'linux'\n"
    )


def test_a_requirement_without_a_name_becomes_a_path():
    requirement = parse_git_requirement("git+https://example.com/acme/thing.git@v1")
    assert requirement.label == "thing"
    assert gitdeps.local_requirement(requirement, "/sumbg-deps/thing-0123") == "/sumbg-deps/thing-0123"
    assert gitdeps.dependency_dir_name(requirement, "0123456789abcdef") == "thing-0123456789ab"


def test_url_rewrites_work_like_git_insteadof():
    rewrites = (
        ("https://github.com/", "https://mirror.local/gh/"),
        ("https://github.com/acme/", "https://mirror.local/acme/"),
        ("git@github.com:", "ssh://git@github.com/"),
    )
    assert (
        gitdeps.rewrite_url("https://github.com/acme/sum-core.git", rewrites)
        == "https://mirror.local/acme/sum-core.git"
    )
    assert gitdeps.rewrite_url("https://github.com/other/x.git", rewrites) == "https://mirror.local/gh/other/x.git"
    assert gitdeps.rewrite_url("https://gitlab.com/acme/x.git", rewrites) == "https://gitlab.com/acme/x.git"
    assert gitdeps.rewrite_url("https://github.com/acme/x.git", ()) == "https://github.com/acme/x.git"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://x-access-token:ghp_secret@github.com/acme/a.git", "https://x-access-token:***@github.com/acme/a.git"),
        ("https://github.com/acme/a.git", "https://github.com/acme/a.git"),
        ("ssh://git@github.com/acme/a.git", "ssh://git@github.com/acme/a.git"),
        ("https://:tok@host/a@b", "https://:***@host/a@b"),
    ],
)
def test_redact_url(url, shown):
    assert gitdeps.redact_url(url) == shown


def test_dockerignore_follows_the_repo_into_app():
    assert gitdeps.prefixed_dockerignore("# caches\n*.pyc\n/media\n!keep.txt\n**/node_modules\n\n", "app") == (
        "# caches\napp/*.pyc\napp/media\n!app/keep.txt\napp/**/node_modules\n\n"
    )


# ---------------------------------------------------------------- settings


def _site(**build_settings) -> SiteConfig:
    return SiteConfig(
        slug="acme",
        domain="acme.example.com",
        repo="/r",
        project="acme",
        settings_module="acme.settings.production",
        wsgi="acme.wsgi:application",
        build=BuildSettings(**build_settings),
    )


def test_build_options_from_the_host_alone():
    host = HostConfig(
        root=Path("/srv/sum"),
        images=Images(python="python:3.13-slim"),
        ca_bundle="/etc/ca.pem",
        build=BuildSettings(
            git_token_file="/etc/sumbg/token",
            git_username="bot",
            git_url_rewrites=(("https://github.com/", "https://m/"),),
        ),
    )
    assert build.options_for(host, _site()) == build.BuildOptions(
        python_image="python:3.13-slim",
        ca_bundle="/etc/ca.pem",
        url_rewrites=(("https://github.com/", "https://m/"),),
        auth=GitAuth(
            token_file="/etc/sumbg/token",
            username="bot",
            ca_bundle="/etc/ca.pem",
            token_source="sumbg.toml build.git_token_file",
        ),
        cpu_shares=128,
    )


def test_site_build_settings_override_the_host_key_by_key():
    host = HostConfig(
        root=Path("/srv/sum"),
        build=BuildSettings(
            git_token_file="/etc/sumbg/token",
            git_username="bot",
            git_ssh_key_file="/etc/sumbg/key",
            git_url_rewrites=(("https://github.com/", "https://m/"), ("https://gitlab.com/", "https://g/")),
        ),
    )
    site = _site(
        python_image="python:3.12-bookworm",
        build_packages=("gcc", "libjpeg-dev"),
        packages=("libjpeg62-turbo",),
        git_token_file="/srv/sum/acme/token",
        git_url_rewrites=(("https://github.com/", "https://site-mirror/"),),
    )
    options = build.options_for(host, site)
    assert options == build.BuildOptions(
        python_image="python:3.12-bookworm",
        build_packages=("gcc", "libjpeg-dev"),
        packages=("libjpeg62-turbo",),
        url_rewrites=(("https://github.com/", "https://site-mirror/"), ("https://gitlab.com/", "https://g/")),
        auth=GitAuth(
            token_file="/srv/sum/acme/token",
            username="bot",
            ssh_key_file="/etc/sumbg/key",
            token_source="site.toml build.git_token_file",
            ssh_key_source="sumbg.toml build.git_ssh_key_file",
        ),
        cpu_shares=128,
    )
    assert options.build_args() == {
        "PYTHON_IMAGE": "python:3.12-bookworm",
        "BUILD_PACKAGES": "gcc libjpeg-dev",
        "PACKAGES": "libjpeg62-turbo",
    }
    # The fingerprint changes with what shapes the image, never with a credential.
    base = build.options_for(HostConfig(root=Path("/x")), _site())
    assert (
        build.options_for(HostConfig(root=Path("/x")), _site(git_token_file="/t")).fingerprint() == base.fingerprint()
    )
    assert build.options_for(HostConfig(root=Path("/x")), _site(packages=("file",))).fingerprint() != base.fingerprint()
    assert build.options_for(HostConfig(root=Path("/x")), _site(python_image="p:1")).fingerprint() != base.fingerprint()


def test_git_environment_carries_file_paths_never_the_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_TRACE", "1")
    monkeypatch.setenv("GIT_CURL_VERBOSE", "1")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    token = tmp_path / "token"
    token.write_text("tok-very-secret\n")
    env = dependency_env(GitAuth(token_file=str(token), ssh_key_file="/keys/deploy key", ca_bundle="/ca.pem"), tmp_path)
    askpass = tmp_path / "askpass.sh"
    assert env == {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ["HOME"],
        "https_proxy": "http://proxy:3128",
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_SSL_CAINFO": "/ca.pem",
        "GIT_ASKPASS": str(askpass),
        "SUMBG_GIT_TOKEN_FILE": str(token),
        "SUMBG_GIT_USERNAME": "x-access-token",
        "GIT_SSH_COMMAND": "ssh -i '/keys/deploy key' -o IdentitiesOnly=yes -o BatchMode=yes "
        "-o StrictHostKeyChecking=accept-new",
    } | ({"LANG": os.environ["LANG"]} if "LANG" in os.environ else {})
    assert askpass.stat().st_mode & 0o777 == 0o700
    assert "tok-very-secret" not in askpass.read_text()

    def ask(prompt):
        return subprocess.run([str(askpass), prompt], env=env, capture_output=True, text=True).stdout

    assert ask("Username for 'https://git.example': ") == "x-access-token\n"
    assert ask("Password for 'https://x-access-token@git.example': ") == "tok-very-secret\n"


# ---------------------------------------------------------------- the host-side fetch (local repositories)


def _git(*args, cwd=None):
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def core_repo(tmp_path) -> tuple[Path, str]:
    work = tmp_path / "core-work"
    (work / "core" / "sum_core").mkdir(parents=True)
    (work / "core" / "pyproject.toml").write_text('[project]\nname = "sum-core"\n')
    (work / "core" / "sum_core" / "__init__.py").write_text('__version__ = "0.9.0"\n')
    (work / "README.md").write_text("root\n")
    _git("init", "-q", "-b", "main", str(work))
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "0.9.0", cwd=work)
    _git("tag", "v0.9.0", cwd=work)
    bare = tmp_path / "srv" / "acme" / "sum-core.git"
    _git("clone", "-q", "--bare", str(work), str(bare))
    return bare, _git("rev-parse", "HEAD", cwd=work)


def test_fetch_tree_exports_the_subdirectory_at_the_ref(tmp_path, core_repo):
    bare, commit = core_repo
    dest = tmp_path / "dest"
    got = fetch_tree(
        f"file://{bare}",
        "v0.9.0",
        "core",
        dest,
        auth=GitAuth(),
        scratch=tmp_path / "scratch",
        shown_url=f"file://{bare}",
    )
    assert got == commit
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "pyproject.toml",
        "sum_core",
        "sum_core/__init__.py",
    ]
    assert list((tmp_path / "scratch").glob("clone-*")) == []


def test_fetch_tree_failures_say_what_to_fix(tmp_path, core_repo):
    bare, _ = core_repo
    url = f"file://{bare}"
    with pytest.raises(GitError) as info:
        fetch_tree(url, "v9.9.9", "core", tmp_path / "d1", auth=GitAuth(), scratch=tmp_path / "s", shown_url=url)
    assert info.value.message == f"cannot fetch {url}: it has no tag, branch or commit 'v9.9.9'"
    with pytest.raises(GitError) as info:
        fetch_tree(url, "v0.9.0", "src", tmp_path / "d2", auth=GitAuth(), scratch=tmp_path / "s", shown_url=url)
    assert info.value.message == f"cannot fetch {url}@v0.9.0: it has no directory 'src' (#subdirectory=)"
    with pytest.raises(GitError) as info:
        fetch_tree(url, "--output=/tmp/x", "", tmp_path / "d4", auth=GitAuth(), scratch=tmp_path / "s", shown_url=url)
    assert info.value.message == f"cannot fetch {url}: '--output=/tmp/x' is not a tag, branch or commit name"
    missing = f"file://{tmp_path}/nothing.git"
    with pytest.raises(GitError) as info:
        fetch_tree(missing, "v1", "", tmp_path / "d3", auth=GitAuth(), scratch=tmp_path / "s", shown_url=missing)
    assert info.value.message == f"cannot fetch {missing}@v1: no git repository at that URL"
    assert exit_code_of(info.value) == 1


def make_wheel(path: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A small real wheel: a module and its .dist-info/METADATA."""
    module = name.replace("-", "_").lower()
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{module}/__init__.py", f"__version__ = {version!r}\n")
        archive.writestr(f"{module}-{version}.dist-info/METADATA", metadata)
        archive.writestr(f"{module}-{version}.dist-info/RECORD", "")
    return path


INDEX = {"Django": ("5.1.4", ("asgiref<4,>=3.8.1",)), "asgiref": ("3.13.0", ())}


class FakeEngine:
    """Records builds and one-off containers; plays pip's part in the resolution: every requirement
    (and what it requires) becomes a wheel in /out, from /wheelhouse when it has it, else "downloaded"."""

    def __init__(self, pip_output: str = "", pip_exit: int = 0) -> None:
        self.built: list[dict] = []
        self.images: dict[str, dict] = {"py:3.12": {}}
        self.oneoffs: list[dict] = []
        self.pip_output, self.pip_exit = pip_output, pip_exit

    def image_labels(self, tag):
        return self.images.get(tag)

    def image_identity(self, tag):
        return ("sha256:" + "1" * 64, "amd64") if tag in self.images else None

    def build(self, context, dockerfile, tag, labels, build_args, *, cpu_shares=None):
        files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
        self.built.append(
            {
                "files": files,
                "dockerfile": str(dockerfile.relative_to(context)),
                "labelled": dockerfile.read_text().rpartition("\nLABEL ")[2],
                "tag": tag,
                "labels": labels,
                "build_args": build_args,
                "cpu_shares": cpu_shares,
            }
        )
        self.images[tag] = labels or {"from": "Dockerfile"}

    def run_oneoff(
        self,
        image,
        argv,
        *,
        volumes,
        network=None,
        env=None,
        user=None,
        workdir=None,
        cpu_shares=None,
        io_weight=None,
        entrypoint=None,
    ):
        mounts = {target: Path(source) for source, target, _ in volumes}
        self.oneoffs.append(
            {
                "image": image,
                "argv": argv,
                "mounts": sorted(mounts),
                "env": dict(env or {}),
                "user": user,
                "workdir": workdir,
                "cpu_shares": cpu_shares,
            }
        )
        given = mounts["/in"]
        spec = json.loads((given / "spec.json").read_text())
        out, report = mounts["/out"], {"local": {}, "built": [], "environment": {"python_version": "3.12"}}
        for source in spec["local"]:
            tree = mounts["/sumbg-deps"] / source["dir"]
            assert (tree / "pyproject.toml").is_file()
            cached = mounts.get("/local-cache", Path("/nonexistent")) / source["cache"]
            if not cached.is_dir():
                cached.mkdir(parents=True)
                make_wheel(cached / "sum_core-0.9.0-py3-none-any.whl", "sum-core", "0.9.0", ("Django>=5.1,<5.2",))
                report["built"].append(source["dir"])
            report["local"][source["dir"]] = "sum_core-0.9.0-py3-none-any.whl"
            shutil.copyfile(cached / "sum_core-0.9.0-py3-none-any.whl", out / "sum_core-0.9.0-py3-none-any.whl")
        house = mounts.get("/wheelhouse")
        for name, (version, _) in INDEX.items():
            kept = house / f"{name}-{version}-0-py3-none-any.whl" if house else None
            if kept and kept.exists():
                shutil.copyfile(kept, out / kept.name)
            else:
                make_wheel(out / f"{name}-{version}-py3-none-any.whl", name, version, INDEX[name][1])
        if self.pip_exit:
            for wheel in out.iterdir():
                wheel.unlink()
        stdout = self.pip_output + "\nSUMBG-RESOLVE " + json.dumps(report)
        return ExecResult(self.pip_exit, stdout, "")

    def add_labels(self, tag, labels):
        self.images[tag] = {**self.images.get(tag, {}), **labels}


def test_build_fetches_git_requirements_on_the_host_and_resolves_them_with_the_wheel_cache(tmp_path, core_repo):
    bare, core_commit = core_repo
    client = tmp_path / "client"
    client.mkdir()
    (client / "requirements.txt").write_text(
        "Django==5.1.4\nsum-core @ git+https://git.invalid/acme/sum-core.git@v0.9.0#subdirectory=core\n"
    )
    (client / "manage.py").write_text("")
    (client / ".dockerignore").write_text("*.log\n")
    _git("init", "-q", "-b", "main", str(client))
    _git("add", "-A", cwd=client)
    _git("commit", "-q", "-m", "c", cwd=client)
    mirror = Mirror(tmp_path / "mirror.git", str(client))
    mirror.sync()
    resolved = mirror.resolve("main")
    spec = build.image_spec("acme", resolved, "0.9.0")
    host = HostConfig(
        root=tmp_path,
        images=Images(python="py:3.12"),
        build=BuildSettings(git_url_rewrites=(("https://git.invalid/", f"file://{bare.parent.parent}/"),)),
    )
    engine = FakeEngine()
    pins = build.Constraints(pins=(pydeps.Constraint("asgiref", "==3.13.0", "the live v1"),), source="the live v1")
    result = build.build(
        engine, mirror, spec, host=host, site=_site(packages=("file",)), work_dir=tmp_path / "run", constraints=pins
    )
    cache = tmp_path / ".cache" / "wheels" / "py_3.12.amd64.bp-none"
    [toolchain, done] = engine.built
    assert toolchain["tag"].startswith("sumbg-toolchain:") and toolchain["files"] == ["Dockerfile", "ca.crt"]
    assert toolchain["build_args"] == {
        "PYTHON_IMAGE": "py:3.12",
        "BUILD_PACKAGES": "",
        "PIP_VERSION": wheels.PIP_VERSION,
        "SETUPTOOLS_VERSION": wheels.SETUPTOOLS_VERSION,
        "WHEEL_VERSION": wheels.WHEEL_VERSION,
    }
    deps = [
        {"name": "asgiref", "version": "3.13.0"},
        {"name": "Django", "version": "5.1.4"},
        {"name": "sum-core", "version": "0.9.0", "commit": core_commit, "source": "git"},
    ]
    assert {k: v for k, v in result.record.items() if k not in ("timings", "wheels")} == {
        "image": "sum-acme:main",
        "commit": resolved.commit,
        "dockerfile": "sumbg's default SUM Dockerfile",
        "python_image": "py:3.12",
        "toolchain": toolchain["tag"],
        "git_dependencies": [
            {
                "requirement": "sum-core",
                "url": "https://git.invalid/acme/sum-core.git",
                "fetched_from": f"file://{bare}",
                "ref": "v0.9.0",
                "commit": core_commit,
            }
        ],
        "constraints": {"source": "the live v1", "pins": 1},
        "dependencies": deps,
    }
    assert result.record["wheels"] == {
        "wheels": 3,
        "from_cache": 0,
        "fetched": 3,
        "seconds": result.record["wheels"]["seconds"],
        "cache": str(cache),
        "cache_bytes": result.record["wheels"]["cache_bytes"],
    }
    assert set(result.record["timings"]) == {"fetch", "toolchain", "resolve", "image"}
    assert [d.to_json() for d in result.dependencies] == deps
    assert result.environment == {"python_version": "3.12"}
    dep = f"sum-core-{core_commit[:12]}"
    # The resolution: a one-off container of the toolchain at the build's CPU weight, as this user.
    [resolve] = engine.oneoffs
    assert resolve["image"] == toolchain["tag"] and resolve["argv"] == ["/sumbg-build/bin/python", "/in/resolve.py"]
    assert resolve["mounts"] == [
        "/app/vendor",
        "/in",
        "/local-cache",
        "/out",
        "/pipcache",
        "/sumbg-deps",
        "/wheelhouse",
        "/work",
    ]
    assert resolve["user"] == f"{os.getuid()}:{os.getgid()}" and resolve["cpu_shares"] == 128
    assert resolve["env"]["PIP_CACHE_DIR"] == "/pipcache" and resolve["env"]["SOURCE_DATE_EPOCH"] == "315532800"
    # Only the app, the Dockerfile and the wheels reach the image build: no source tree, no cache.
    assert done == {
        "files": [
            ".dockerignore",
            "app/.dockerignore",
            "app/manage.py",
            "app/requirements.txt",
            "sumbg/Dockerfile",
            "sumbg/wheels/index/Django-5.1.4-0-py3-none-any.whl",
            "sumbg/wheels/index/asgiref-3.13.0-0-py3-none-any.whl",
            "sumbg/wheels/local/sum_core-0.9.0-py3-none-any.whl",
        ],
        "dockerfile": "sumbg/Dockerfile",
        "labelled": done["labelled"],
        "tag": "sum-acme:main",
        "labels": {},
        "build_args": {
            "PYTHON_IMAGE": "py:3.12",
            "BUILD_PACKAGES": "",
            "PACKAGES": "file",
            "GIT_SHA": resolved.commit,
            "BUILD_ID": "main",
            "TOOLCHAIN_IMAGE": toolchain["tag"],
        },
        "cpu_shares": 128,  # the build takes what the live site leaves
    }
    # The labels are one LABEL instruction at the end: what the image holds among them.
    assert "LABEL " + done["labelled"] == build.label_instruction(
        {
            **spec.labels,
            "sumbg.build-options": build.options_for(host, _site(packages=("file",))).fingerprint(),
            "sumbg.dependencies": f"asgiref==3.13.0 Django==5.1.4 sum-core==0.9.0@{core_commit}+git",
            "sumbg.git-dependencies": f"sum-core@{core_commit[:12]}",
        }
    )
    # The cache kept the third-party wheels (build tag 0) and sum-core's wheel for that commit.
    assert sorted(p.name for p in (cache / "wheelhouse").iterdir()) == [
        "Django-5.1.4-0-py3-none-any.whl",
        "asgiref-3.13.0-0-py3-none-any.whl",
    ]
    assert [p.name for p in (cache / "local").iterdir()] == [resolve_cache_name(dep, "core")]
    assert list((tmp_path / "run").iterdir()) == []  # the context and the scratch are gone

    # Built from the same commit with the same settings: reused; what it holds read from the image.
    engine.images["sum-acme:main"] = {**engine.images["sum-acme:main"], **spec.labels}
    engine.images["sum-acme:main"]["sumbg.build-options"] = build.options_for(
        host, _site(packages=("file",))
    ).fingerprint()
    engine.run_oneoff = lambda *a, **k: ExecResult(
        0,
        "SUMBG-DISTRIBUTIONS "
        + json.dumps(
            {
                "distributions": [
                    {"name": "Django", "version": "5.1.4", "requires": []},
                    {"name": "pip", "version": "26"},
                ],
                "environment": {"python_version": "3.12"},
            }
        ),
        "",
    )
    again = build.build(engine, mirror, spec, host=host, site=_site(packages=("file",)), work_dir=tmp_path / "run")
    assert again.record == {
        "outcome": "skipped",
        "reason": f"sum-acme:main already built from {resolved.commit[:12]}",
        "image": "sum-acme:main",
        "commit": resolved.commit,
        "dependencies": [{"name": "Django", "version": "5.1.4"}],
    }

    # Other packages: rebuilt, and every wheel comes from the cache now.
    del engine.run_oneoff
    rebuilt = build.build(engine, mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run")
    assert len(engine.built) == 3  # the toolchain was built once
    assert rebuilt.record["wheels"]["from_cache"] == 3 and rebuilt.record["wheels"]["fetched"] == 0


def resolve_cache_name(directory: str, subdirectory: str) -> str:
    return wheels.LocalSource("sum-core", directory, "c", subdirectory).cache_name


PILLOW_WITHOUT_HEADERS = """\
      The headers or library files could not be found for jpeg,
      a required dependency when compiling Pillow from source.
  ERROR: Failed building wheel for pillow"""


def test_compile_failures_point_at_build_packages():
    options = build.BuildOptions(python_image="py")
    assert build.compile_hint(PILLOW_WITHOUT_HEADERS, options) == (
        "pip had to compile a package: add what it needs to site.toml [build] build_packages, e.g. "
        '["gcc", "libjpeg-dev", "zlib1g-dev"] for Pillow, and its runtime libraries to packages'
    )
    assert build.compile_hint(
        PILLOW_WITHOUT_HEADERS, build.BuildOptions(python_image="py", build_packages=("gcc",))
    ) == (
        "pip could not compile a package (build_packages gcc); its -dev headers may be missing from "
        "site.toml [build] build_packages"
    )
    assert build.compile_hint("ERROR: No matching distribution found for Django==9.9", options) == ""


def _pillow_client(tmp_path: Path) -> Mirror:
    client = tmp_path / "client"
    client.mkdir()
    (client / "requirements.txt").write_text("Pillow==11.0.0\n")
    _git("init", "-q", "-b", "main", str(client))
    _git("add", "-A", cwd=client)
    _git("commit", "-q", "-m", "c", cwd=client)
    mirror = Mirror(tmp_path / "mirror.git", str(client))
    mirror.sync()
    return mirror


def test_a_failed_compile_says_which_setting_helps(tmp_path):
    from sumbg.errors import DockerError

    mirror = _pillow_client(tmp_path)
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    host = HostConfig(root=tmp_path, images=Images(python="py:3.12"))
    with pytest.raises(DockerError) as info:
        build.build(
            FakeEngine(PILLOW_WITHOUT_HEADERS, 1), mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run"
        )
    assert info.value.message == (
        "building image sum-acme:main failed (exit 1); pip had to compile a package: add what it needs to "
        'site.toml [build] build_packages, e.g. ["gcc", "libjpeg-dev", "zlib1g-dev"] for Pillow, and its '
        "runtime libraries to packages"
    )
    assert list((tmp_path / "run").iterdir()) == []


CONSTRAINT_CONFLICT = """ERROR: Cannot install -r /work/requirements.txt (line 2) because these package versions have conflicting dependencies.

The conflict is caused by:
    celery 5.4.0 depends on tzdata>=2022.7
    The user requested (constraint) tzdata==1999.1

Additionally, some packages in these conflicts have no matching distributions available for your environment:
    tzdata

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip to attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/"""


def test_an_unsatisfiable_lock_file_is_one_line_naming_the_file_and_the_package(tmp_path):
    mirror = _pillow_client(tmp_path)
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    host = HostConfig(root=tmp_path, images=Images(python="py:3.12"))
    pins = build.Constraints(
        pins=tuple(pydeps.lock_constraints("# pinned\ntzdata==1999.1\n", "constraints.txt at v2")),
        source="constraints.txt at v2",
    )
    engine = FakeEngine(CONSTRAINT_CONFLICT, 1)
    with pytest.raises(BuildError) as info:
        build.build(engine, mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run", constraints=pins)
    assert info.value.message == (
        "constraints.txt at v2 line 2 pins tzdata==1999.1 (no such version on the package index), which the "
        "requirements of sum-acme:main cannot take: celery 5.4.0 depends on tzdata>=2022.7"
    )
    assert exit_code_of(info.value) == 1
    assert [b["tag"] for b in engine.built if not b["tag"].startswith("sumbg-toolchain:")] == []  # no image built
    assert list((tmp_path / "run").iterdir()) == []


def test_a_live_pin_that_conflicts_with_a_changed_requirement_is_released(tmp_path):
    mirror = _pillow_client(tmp_path)
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    host = HostConfig(root=tmp_path, images=Images(python="py:3.12"))
    origin = 'the live v1 ([build] lock = "live")'
    pins = build.Constraints(
        pins=(pydeps.Constraint("tzdata", "==1999.1", origin), pydeps.Constraint("django", "==5.1.4", origin)),
        source=origin,
        relax=True,
    )
    engine = FakeEngine(CONSTRAINT_CONFLICT, 1)
    real = engine.run_oneoff
    given = []

    def resolve_once_released(*args, **kwargs):
        given.append((Path(kwargs["volumes"][0][0]) / "constraints.txt").read_text())
        engine.pip_exit = 1 if len(given) == 1 else 0
        return real(*args, **kwargs)

    engine.run_oneoff = resolve_once_released
    result = build.build(engine, mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run", constraints=pins)
    assert given == ["tzdata==1999.1\ndjango==5.1.4\n", "django==5.1.4\n"]
    assert result.record["wheels"]["released"] == [
        {
            "name": "tzdata",
            "pin": "==1999.1",
            "why": "celery 5.4.0 depends on tzdata>=2022.7; The user requested (constraint) tzdata==1999.1",
        }
    ]


def test_a_corrupt_wheel_of_the_cache_is_named_removed_and_stops_the_build(tmp_path):
    mirror = _pillow_client(tmp_path)
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    host = HostConfig(root=tmp_path, images=Images(python="py:3.12"))
    build.build(FakeEngine(), mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run")
    kept = tmp_path / ".cache/wheels/py_3.12.amd64.bp-none/wheelhouse/Django-5.1.4-0-py3-none-any.whl"
    data = bytearray(kept.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 40] = b"x" * 40  # same size, damaged inside: pip would copy it as it is
    kept.write_bytes(bytes(data))
    engine = FakeEngine()
    with pytest.raises(BuildError) as info:
        build.build(
            engine,
            mirror,
            build.image_spec("acme", mirror.resolve("main"), "x"),
            host=host,
            site=_site(packages=("file",)),
            work_dir=tmp_path / "run",
        )
    assert info.value.message.startswith(f"the wheel cache's {kept} (django 5.1.4) is corrupt (")
    assert info.value.message.endswith("); removed it, so the next build fetches it again")
    assert not kept.exists()
    assert [b["tag"] for b in engine.built if not b["tag"].startswith("sumbg-toolchain:")] == []


def test_pip_refusing_a_cached_wheel_names_it_too(tmp_path):
    mirror = _pillow_client(tmp_path)
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    host = HostConfig(root=tmp_path, images=Images(python="py:3.12"))
    build.build(FakeEngine(), mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run")
    kept = tmp_path / ".cache/wheels/py_3.12.amd64.bp-none/wheelhouse/asgiref-3.13.0-0-py3-none-any.whl"
    kept.write_bytes(kept.read_bytes()[:50])
    output = f"ERROR: Wheel 'asgiref' located at /wheelhouse/{kept.name} is invalid."
    with pytest.raises(BuildError) as info:
        build.build(
            FakeEngine(output, 1),
            mirror,
            build.image_spec("acme", mirror.resolve("main"), "y"),
            host=host,
            site=_site(packages=("x",)),
            work_dir=tmp_path / "run",
        )
    assert info.value.message == (
        f"the wheel cache's {kept} (asgiref 3.13.0) is corrupt (pip: invalid wheel); removed it, so the next "
        "build fetches it again"
    )
    assert not kept.exists()


def test_no_wheel_cache_when_its_size_is_zero(tmp_path):
    mirror = _pillow_client(tmp_path)
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    host = HostConfig(root=tmp_path, images=Images(python="py:3.12"), wheel_cache_max_gb=0)
    engine = FakeEngine()
    result = build.build(engine, mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run")
    [resolve] = engine.oneoffs
    assert resolve["mounts"] == ["/app/vendor", "/in", "/out", "/sumbg-deps", "/work"]
    assert resolve["env"]["PIP_NO_CACHE_DIR"] == "1" and "PIP_CACHE_DIR" not in resolve["env"]
    assert result.record["wheels"]["cache"] == "off ([build] wheel_cache_max_gb = 0)"
    assert not (tmp_path / ".cache").exists()


def test_the_cache_is_pruned_least_recently_used_first(tmp_path):
    cache = wheels.WheelCache(tmp_path / "wheels", max_gb=3000 / 1024**3)  # 3000 bytes
    house = tmp_path / "wheels" / "k" / "wheelhouse"
    house.mkdir(parents=True)
    for age, name in enumerate(["new", "middle", "old"]):
        path = house / f"{name}.whl"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1_000_000 - age * 100, 1_000_000 - age * 100))
    assert cache.prune() == {"bytes": 3000}  # at the limit: nothing to do
    (house / "newest.whl").write_bytes(b"x" * 1000)
    assert cache.prune() == {"bytes": 2000, "pruned": 2}  # down to 90% of the limit: the two oldest went
    assert sorted(p.name for p in house.iterdir()) == ["new.whl", "newest.whl"]


def test_pinned_ssh_host_keys(tmp_path):
    env = dependency_env(GitAuth(ssh_key_file="/k/deploy", ssh_known_hosts="/k/known_hosts"), tmp_path)
    assert env["GIT_SSH_COMMAND"] == (
        "ssh -i /k/deploy -o IdentitiesOnly=yes -o BatchMode=yes "
        "-o UserKnownHostsFile=/k/known_hosts -o StrictHostKeyChecking=yes"
    )
    assert "GIT_ASKPASS" not in env and "SUMBG_GIT_TOKEN_FILE" not in env
    assert dependency_env(GitAuth(), tmp_path)["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"


def test_io_weight_is_passed_only_where_the_kernel_honours_it(tmp_path):
    from sumbg.adapters.docker import io_weight_supported

    v1 = tmp_path / "v1"
    (v1 / "blkio").mkdir(parents=True)
    (v1 / "blkio" / "blkio.throttle.read_bps_device").write_text("")
    assert not io_weight_supported(v1)  # cgroup v1 without a proportional scheduler (this engine: mq-deadline)
    (v1 / "blkio" / "blkio.bfq.weight").write_text("100")
    assert io_weight_supported(v1)
    v2 = tmp_path / "v2"
    (v2 / "system.slice").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert not io_weight_supported(v2)
    (v2 / "system.slice" / "io.bfq.weight").write_text("default 100\n")
    assert io_weight_supported(v2)
    assert not io_weight_supported(tmp_path / "none")


def test_a_release_built_before_fetches_its_git_dependency_at_the_recorded_commit(tmp_path, core_repo):
    bare, core_commit = core_repo
    client = tmp_path / "client"
    client.mkdir()
    (client / "requirements.txt").write_text(
        "sum-core @ git+https://git.invalid/acme/sum-core.git@v0.9.0#subdirectory=core\n"
    )
    _git("init", "-q", "-b", "main", str(client))
    _git("add", "-A", cwd=client)
    _git("commit", "-q", "-m", "c", cwd=client)
    mirror = Mirror(tmp_path / "mirror.git", str(client))
    mirror.sync()
    spec = build.image_spec("acme", mirror.resolve("main"), "0.9.0")
    host = HostConfig(
        root=tmp_path,
        images=Images(python="py:3.12"),
        build=BuildSettings(git_url_rewrites=(("https://git.invalid/", f"file://{bare.parent.parent}/"),)),
    )
    recorded = build.Constraints(source="the record", git_commits=(("sum-core", core_commit),))
    result = build.build(
        FakeEngine(), mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run", constraints=recorded
    )
    assert result.record["git_dependencies"][0]["commit"] == core_commit
    gone = "f" * 40  # a commit the repository no longer has (its tag was moved and the old commit pruned)
    missing = build.Constraints(source="the record", git_commits=(("sum-core", gone),))
    with pytest.raises(GitError) as info:
        build.build(
            FakeEngine(),
            mirror,
            spec,
            host=host,
            site=_site(packages=("x",)),
            work_dir=tmp_path / "run",
            constraints=missing,
        )
    assert info.value.message == (
        f"cannot fetch file://{bare}: it has no tag, branch or commit ffffffffffff (recorded for v0.9.0 when it "
        "was built here)"
    )
