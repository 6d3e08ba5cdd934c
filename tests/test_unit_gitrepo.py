"""sumbg.gitrepo: sum-core pins, project detection, and the bare mirror against a real git repo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sumbg.adapters import gitrepo
from sumbg.adapters.gitrepo import Mirror, Resolved, detect_project, sum_core_pin
from sumbg.cli import exit_code_of
from sumbg.errors import GitError, NotFound

GIT_SOURCE = "sum-core @ git+https://github.com/org/sum-platform.git@v0.7.0#subdirectory=core"


# ---------------------------------------------------------------- sum-core pins


@pytest.mark.parametrize(
    "requirements, pin",
    [
        ("sum-core==0.7.0", "0.7.0"),
        ("sum-core==0.7.0\n", "0.7.0"),
        ("  sum-core == 0.7.0  ", "0.7.0"),
        ("sum-core==0.7.0  # pinned by the platform team", "0.7.0"),
        ("sum-core==0.7.0#comment", "0.7.0"),
        ('sum-core==0.7.0 ; python_version >= "3.11"', "0.7.0"),
        ("sum_core==0.7.0", "0.7.0"),
        ("SUM-Core==0.7.0", "0.7.0"),
        ("sum-core==1.2.3rc1", "1.2.3rc1"),
        ("sum-core==0.7.0+local.1", "0.7.0+local.1"),
        (GIT_SOURCE, "0.7.0"),
        ("  " + GIT_SOURCE + "  ", "0.7.0"),
        ("sum-core@git+https://github.com/org/sum-platform.git@v0.7.0#subdirectory=core", "0.7.0"),
        (GIT_SOURCE + ' ; python_version >= "3.11"', "0.7.0"),
        ("sum-core @ git+https://github.com/org/sum-platform.git@0.8.1#subdirectory=core", "0.8.1"),
        ("sum-core @ git+ssh://git@github.com/org/sum-platform.git@v0.7.0#subdirectory=core", "0.7.0"),
        ("sum-core @ git+https://github.com/org/sum-platform.git@v0.7.0", "0.7.0"),
        ("# the platform\nDjango==5.0.4\nwagtail>=6\n\n" + GIT_SOURCE + "\ngunicorn==22.0.0\n", "0.7.0"),
        ("django==5.0\nsum-core==0.7.0\nsum-core==0.8.0\n", "0.7.0"),
    ],
)
def test_sum_core_pin(requirements, pin):
    assert sum_core_pin(requirements) == pin


@pytest.mark.parametrize(
    "requirements",
    [
        None,
        "",
        "django==5.0\nwagtail==6.0\n",
        "# sum-core==0.7.0",
        "#sum-core==0.7.0",
        "sum-core>=0.7",
        "sum-core~=0.7.0",
        "sum-core",
        "sum-core-extras==1.0",
        "my-sum-core==1.0",
        "sum-core @ git+https://github.com/org/sum-platform.git@main#subdirectory=core",
        "sum-core @ git+https://github.com/org/sum-platform.git#subdirectory=core",
    ],
)
def test_no_sum_core_pin(requirements):
    assert sum_core_pin(requirements) is None


def test_sum_core_pin_git_form_with_trailing_comment():
    assert sum_core_pin(GIT_SOURCE + "  # platform release") == "0.7.0"


def test_sum_core_pin_with_hashes():
    requirements = "sum-core==0.7.0 \\\n    --hash=sha256:0123abcd \\\n    --hash=sha256:4567ef01\n"
    assert sum_core_pin(requirements) == "0.7.0"


# ---------------------------------------------------------------- project detection


def test_detect_project_with_a_settings_package():
    files = [
        "manage.py",
        "requirements.txt",
        "acme/__init__.py",
        "acme/wsgi.py",
        "acme/settings/__init__.py",
        "acme/settings/base.py",
        "acme/settings/production.py",
        "home/models.py",
    ]
    assert detect_project(files) == "acme"


def test_detect_project_with_a_settings_module():
    assert detect_project(["manage.py", "shop/wsgi.py", "shop/settings.py"]) == "shop"


@pytest.mark.parametrize(
    "files",
    [
        [],
        ["acme/wsgi.py", "acme/settings.py"],  # no manage.py
        ["manage.py", "acme/settings.py"],  # no wsgi.py
        ["manage.py", "acme/wsgi.py"],  # no settings
        ["manage.py", "acme/wsgi.py", "acme/settings/base.py"],  # settings package without production.py
        ["manage.py", "src/acme/wsgi.py", "src/acme/settings.py"],  # not beside manage.py
        ["site/manage.py", "site/acme/wsgi.py", "site/acme/settings.py"],
    ],
)
def test_detect_project_finds_nothing(files):
    assert detect_project(files) is None


def test_detect_project_picks_the_first_in_sorted_order():
    files = ["manage.py", "zeta/wsgi.py", "zeta/settings.py", "alpha/wsgi.py", "alpha/settings.py"]
    assert detect_project(files) == "alpha"


# ---------------------------------------------------------------- repository paths


def test_normalise_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert gitrepo.normalise_repo("https://github.com/org/acme.git") == "https://github.com/org/acme.git"
    assert gitrepo.normalise_repo("ssh://git@github.com/org/acme.git") == "ssh://git@github.com/org/acme.git"
    assert gitrepo.normalise_repo("file:///srv/acme.git") == "file:///srv/acme.git"
    assert gitrepo.normalise_repo("git@github.com:org/acme.git") == "git@github.com:org/acme.git"
    assert gitrepo.normalise_repo("repos/acme") == str(tmp_path / "repos" / "acme")
    assert gitrepo.normalise_repo("/srv/repos/acme") == "/srv/repos/acme"


# ---------------------------------------------------------------- a real repository


@pytest.fixture(autouse=True)
def git_env(tmp_path, monkeypatch):
    """git that ignores the machine's config and never asks for anything."""
    home = tmp_path / "home"
    home.mkdir()
    for key, value in {
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    }.items():
        monkeypatch.setenv(key, value)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, body in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(body)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def source(tmp_path) -> dict:
    """A client repo: v1.0.0 (annotated tag) and v1.1.0 (lightweight tag) on main."""
    repo = tmp_path / "acme-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    v1 = commit(
        repo,
        {
            "manage.py": "# manage\n",
            "acme/wsgi.py": "app = None\n",
            "acme/settings.py": "",
            "requirements.txt": "sum-core==0.7.0\n",
        },
        "v1",
    )
    git(repo, "tag", "-a", "v1.0.0", "-m", "release 1.0.0")
    v11 = commit(
        repo, {"requirements.txt": f"{GIT_SOURCE.replace('0.7.0', '0.8.0')}\n", "home/views.py": "VIEW = 2\n"}, "v1.1"
    )
    git(repo, "tag", "v1.1.0")
    return {"path": repo, "v1": v1, "v11": v11}


@pytest.fixture
def mirror(tmp_path, source) -> Mirror:
    m = Mirror(tmp_path / "site" / "repo.git", str(source["path"]))
    m.sync()
    return m


def test_sync_creates_a_bare_mirror(tmp_path, mirror):
    assert (mirror.path / "HEAD").is_file()
    assert git(mirror.path, "rev-parse", "--is-bare-repository") == "true"
    assert sorted(p.name for p in mirror.path.parent.iterdir()) == ["repo.git"]  # no .partial left


def test_resolve_tags_and_branches_to_commits(mirror, source):
    # An annotated tag resolves to its commit, not to the tag object.
    assert mirror.resolve("v1.0.0") == Resolved(ref="v1.0.0", commit=source["v1"])
    assert git(mirror.path, "rev-parse", "v1.0.0") != source["v1"]
    assert mirror.resolve("v1.1.0") == Resolved(ref="v1.1.0", commit=source["v11"])
    assert mirror.resolve("main") == Resolved(ref="main", commit=source["v11"])
    assert mirror.resolve(source["v1"]) == Resolved(ref=source["v1"], commit=source["v1"])
    assert len(source["v1"]) == 40


def test_resolve_unknown_ref(mirror, source):
    with pytest.raises(NotFound) as info:
        mirror.resolve("v9.9.9")
    assert info.value.message == f"ref 'v9.9.9' does not exist in {source['path']}"
    assert exit_code_of(info.value) == 2


def test_read_file_at_a_ref(mirror, source):
    assert mirror.read_file(source["v1"], "requirements.txt") == "sum-core==0.7.0\n"
    assert mirror.read_file("v1.1.0", "requirements.txt") == GIT_SOURCE.replace("0.7.0", "0.8.0") + "\n"
    assert sum_core_pin(mirror.read_file("v1.0.0", "requirements.txt")) == "0.7.0"
    assert sum_core_pin(mirror.read_file("v1.1.0", "requirements.txt")) == "0.8.0"
    assert mirror.read_file(source["v1"], "home/views.py") is None
    assert mirror.read_file(source["v1"], "no/such/file") is None


def test_list_files_and_detect_project(mirror, source):
    assert mirror.list_files(source["v1"]) == ["acme/settings.py", "acme/wsgi.py", "manage.py", "requirements.txt"]
    assert detect_project(mirror.list_files(source["v11"])) == "acme"


def test_export_writes_the_committed_tree_only(tmp_path, mirror, source):
    # Uncommitted edits and untracked files in the source checkout must not leak into a build.
    (source["path"] / "manage.py").write_text("# EDITED, NOT COMMITTED\n")
    (source["path"] / "secret.env").write_text("PASSWORD=hunter2\n")
    mirror.sync()
    dest = tmp_path / "export"
    mirror.export(source["v1"], dest)
    exported = {str(p.relative_to(dest)): p.read_text() for p in sorted(dest.rglob("*")) if p.is_file()}
    assert exported == {
        "acme/settings.py": "",
        "acme/wsgi.py": "app = None\n",
        "manage.py": "# manage\n",
        "requirements.txt": "sum-core==0.7.0\n",
    }


def test_export_of_a_later_commit(tmp_path, mirror, source):
    dest = tmp_path / "export"
    mirror.export(source["v11"], dest)
    assert (dest / "home" / "views.py").read_text() == "VIEW = 2\n"


def test_sync_again_picks_up_new_tags_and_commits(mirror, source):
    with pytest.raises(NotFound):
        mirror.resolve("v2.0.0")
    v2 = commit(source["path"], {"home/views.py": "VIEW = 3\n"}, "v2")
    git(source["path"], "tag", "-a", "v2.0.0", "-m", "release 2.0.0")
    mirror.sync()
    assert mirror.resolve("v2.0.0") == Resolved("v2.0.0", v2)
    assert mirror.resolve("main") == Resolved("main", v2)
    assert mirror.read_file("v2.0.0", "home/views.py") == "VIEW = 3\n"


def test_sync_follows_a_moved_tag_and_a_rewritten_branch(mirror, source):
    git(source["path"], "reset", "-q", "--hard", source["v1"])
    fixed = commit(source["path"], {"acme/wsgi.py": "app = 'fixed'\n"}, "hotfix")
    git(source["path"], "tag", "-f", "v1.1.0")
    mirror.sync()
    assert mirror.resolve("v1.1.0") == Resolved("v1.1.0", fixed)
    assert mirror.resolve("main") == Resolved("main", fixed)


def test_sync_follows_a_changed_origin(tmp_path, mirror, source):
    moved = tmp_path / "moved-repo"
    source["path"].rename(moved)
    mirror.origin = str(moved)
    v3 = commit(moved, {"x.txt": "3\n"}, "v3")
    mirror.sync()
    assert mirror.resolve("main") == Resolved("main", v3)


def test_sync_replaces_a_leftover_partial_clone(tmp_path, source):
    path = tmp_path / "site" / "repo.git"
    partial = path.with_name("repo.git.partial")
    partial.mkdir(parents=True)
    (partial / "junk").write_text("from a killed clone\n")
    Mirror(path, str(source["path"])).sync()
    assert not partial.exists()
    assert Mirror(path, str(source["path"])).resolve("v1.0.0").commit == source["v1"]


def test_sync_of_a_missing_origin_fails_with_git_evidence(tmp_path):
    origin = tmp_path / "nowhere"
    with pytest.raises(GitError) as info:
        Mirror(tmp_path / "site" / "repo.git", str(origin)).sync()
    err = info.value
    assert err.message == "git clone failed"
    assert exit_code_of(err) == 1
    assert err.command[:4] == ["git", "clone", "--mirror", "--quiet"]
    assert err.returncode == 128
    assert "does not exist" in err.output_tail
    assert not (tmp_path / "site" / "repo.git").exists()


def test_check_reachable(tmp_path, source):
    gitrepo.check_reachable(str(source["path"]))
    with pytest.raises(NotFound) as info:
        gitrepo.check_reachable(str(tmp_path / "nowhere"))
    assert info.value.message == f"repository {tmp_path / 'nowhere'} does not exist"
    not_git = tmp_path / "plain"
    not_git.mkdir()
    with pytest.raises(NotFound) as info:
        gitrepo.check_reachable(str(not_git))
    assert info.value.message.startswith(f"{not_git} is not a readable git repository: ")
