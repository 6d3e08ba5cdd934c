"""The build's pure parts (git requirements, URL rewrites, settings) and the host-side git fetch.

No Docker: the fetch tests use local git repositories over file://, and a fake engine
records what would be built.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sumbg.adapters import build, gitdeps
from sumbg.adapters.gitdeps import GitRequirement, parse_git_requirement
from sumbg.adapters.gitrepo import GitAuth, Mirror, dependency_env, fetch_tree
from sumbg.cli import exit_code_of
from sumbg.config import BuildSettings, HostConfig, Images, SiteConfig
from sumbg.errors import GitError

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


class FakeEngine:
    """Records builds; answers image_labels from what it built."""

    def __init__(self) -> None:
        self.built: list[dict] = []
        self.images: dict[str, dict] = {}

    def image_labels(self, tag):
        return self.images.get(tag)

    def build(self, context, dockerfile, tag, labels, build_args, *, cpu_shares=None):
        files = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
        self.built.append(
            {
                "files": files,
                "dockerfile": str(dockerfile.relative_to(context)),
                "tag": tag,
                "labels": labels,
                "build_args": build_args,
                "cpu_shares": cpu_shares,
                "requirements": (context / "sumbg" / "requirements.txt").read_text(),
            }
        )
        self.images[tag] = labels


def test_build_fetches_git_requirements_on_the_host_and_rewrites_them(tmp_path, core_repo):
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
    result = build.build(engine, mirror, spec, host=host, site=_site(packages=("file",)), work_dir=tmp_path / "run")
    assert result == {
        "image": "sum-acme:main",
        "dockerfile": "sumbg's default SUM Dockerfile",
        "python_image": "py:3.12",
        "git_dependencies": [
            {
                "requirement": "sum-core",
                "url": "https://git.invalid/acme/sum-core.git",
                "fetched_from": f"file://{bare}",
                "ref": "v0.9.0",
                "commit": core_commit,
            }
        ],
    }
    dep = f"sum-core-{core_commit[:12]}"
    [done] = engine.built
    assert done == {
        "files": [
            ".dockerignore",
            "app/.dockerignore",
            "app/manage.py",
            "app/requirements.txt",
            "sumbg/Dockerfile",
            "sumbg/ca.crt",
            f"sumbg/deps/{dep}/pyproject.toml",
            f"sumbg/deps/{dep}/sum_core/__init__.py",
            "sumbg/requirements.txt",
        ],
        "dockerfile": "sumbg/Dockerfile",
        "tag": "sum-acme:main",
        "labels": {
            **spec.labels,
            "sumbg.build-options": done["labels"]["sumbg.build-options"],
            "sumbg.git-dependencies": f"sum-core@{core_commit[:12]}",
        },
        "build_args": {
            "PYTHON_IMAGE": "py:3.12",
            "BUILD_PACKAGES": "",
            "PACKAGES": "file",
            "GIT_SHA": resolved.commit,
            "BUILD_ID": "main",
        },
        "cpu_shares": 128,  # the build takes what the live site leaves
        "requirements": f"Django==5.1.4\nsum-core @ file:///sumbg-deps/{dep}\n",
    }
    assert list((tmp_path / "run").iterdir()) == []  # the context is gone
    # Built from the same commit with the same settings: reused, nothing fetched.
    again = build.build(engine, mirror, spec, host=host, site=_site(packages=("file",)), work_dir=tmp_path / "run")
    assert again == {"outcome": "skipped", "reason": f"sum-acme:main already built from {resolved.commit[:12]}"}
    # Other packages: rebuilt.
    build.build(engine, mirror, spec, host=host, site=_site(), work_dir=tmp_path / "run")
    assert len(engine.built) == 2


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


def test_a_failed_compile_says_which_setting_helps(tmp_path):
    from sumbg.errors import DockerError

    class FailingEngine(FakeEngine):
        def build(self, context, dockerfile, tag, labels, build_args, *, cpu_shares=None):
            raise DockerError("building image sum-acme:main failed (exit 1)", output_tail=PILLOW_WITHOUT_HEADERS)

    client = tmp_path / "client"
    client.mkdir()
    (client / "requirements.txt").write_text("Pillow==11.0.0\n")
    _git("init", "-q", "-b", "main", str(client))
    _git("add", "-A", cwd=client)
    _git("commit", "-q", "-m", "c", cwd=client)
    mirror = Mirror(tmp_path / "mirror.git", str(client))
    mirror.sync()
    spec = build.image_spec("acme", mirror.resolve("main"), None)
    with pytest.raises(DockerError) as info:
        build.build(
            FailingEngine(), mirror, spec, host=HostConfig(root=tmp_path), site=_site(), work_dir=tmp_path / "run"
        )
    assert info.value.message == (
        "building image sum-acme:main failed (exit 1); pip had to compile a package: add what it needs to "
        'site.toml [build] build_packages, e.g. ["gcc", "libjpeg-dev", "zlib1g-dev"] for Pillow, and its '
        "runtime libraries to packages"
    )
    assert list((tmp_path / "run").iterdir()) == []


def test_pinned_ssh_host_keys(tmp_path):
    env = dependency_env(GitAuth(ssh_key_file="/k/deploy", ssh_known_hosts="/k/known_hosts"), tmp_path)
    assert env["GIT_SSH_COMMAND"] == (
        "ssh -i /k/deploy -o IdentitiesOnly=yes -o BatchMode=yes "
        "-o UserKnownHostsFile=/k/known_hosts -o StrictHostKeyChecking=yes"
    )
    assert "GIT_ASKPASS" not in env and "SUMBG_GIT_TOKEN_FILE" not in env
    assert dependency_env(GitAuth(), tmp_path)["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"
