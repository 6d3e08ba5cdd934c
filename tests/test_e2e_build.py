"""The client image build on the real engine: sum-core pinned as git+https from a private repo.

A local HTTPS git server (the sum-core repository of examples/sum-site, served read-only
over git's dumb HTTP protocol by a Caddy container with `tls internal` and basic auth,
published on 127.0.0.1 only) stands in for a private GitHub repository. The example
releases v1.7.0-git-pin and v1.8.0-git-pin pin
`sum-core @ git+https://git.sum-core.invalid/acme/sum-core.git@v0.9.x#subdirectory=core`:
a host that does not exist, so they build only through `[build] git_url_rewrites`.
The credential is a token file given in sumbg.toml `[build]`; the server's internal CA
reaches git and pip through `[build] ca_bundle`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import secrets
import ssl
import subprocess
import threading
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import LOCAL_HOST_CONF, REPO, Host, docker, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e

SLUG = "b-git"
DOMAIN = f"{SLUG}.example.test"
GIT_USER = "sumbot"
PIN_HOST = "https://git.sum-core.invalid/acme/"
LOCAL_IMAGES = tomllib.loads(LOCAL_HOST_CONF.read_text()).get("images", {}) if LOCAL_HOST_CONF.exists() else {}
CADDY_IMAGE = LOCAL_IMAGES.get("caddy", "caddy:2")
PYTHON_IMAGE = LOCAL_IMAGES.get("python", "python:3.12-slim")
# A Python base image of our own for the site setting build.python_image: the host's, plus a marker.
SITE_PYTHON_IMAGE = "sumbg-test/b-python:marked"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _example_module():
    spec = importlib.util.spec_from_file_location("sum_site_build_repo", REPO / "examples/sum-site/build_repo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class GitServer:
    base: str  # https://127.0.0.1:PORT/
    token: str  # the right password for GIT_USER
    token_file: Path  # mode 0600
    wrong_token: str
    wrong_token_file: Path  # mode 0600, a wrong password
    ca_bundle: Path  # the system CAs plus Caddy's internal root
    container: str
    core_commits: dict


def _write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def git_server(engine, tmp_path_factory) -> GitServer:
    work = tmp_path_factory.mktemp("b-gitserver")
    srv = work / "srv"
    made = _example_module().build_core_repo(srv / "acme" / "sum-core.git", quiet=True)
    os.chmod(work, 0o755)  # the container's caddy reads /srv
    token, wrong = "tok-" + secrets.token_urlsafe(24), "tok-" + secrets.token_urlsafe(24)
    hashed = (
        subprocess.run(
            ["docker", "run", "-i", "--rm", CADDY_IMAGE, "caddy", "hash-password"],
            input=f"{token}\n{token}\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    (work / "Caddyfile").write_text(f"""\
{{
	admin off
	skip_install_trust
	default_sni 127.0.0.1
	auto_https disable_redirects
}}
https://127.0.0.1:443 {{
	tls internal
	basic_auth {{
		{GIT_USER} {hashed}
	}}
	root * /srv
	file_server
}}
""")
    port = free_port()
    name = f"b-gitserver-{os.getpid()}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "sumbg-test=b",
        "-p",
        f"127.0.0.1:{port}:443",
        "-v",
        f"{srv}:/srv:ro",
        "-v",
        f"{work / 'Caddyfile'}:/etc/caddy/Caddyfile:ro",
        CADDY_IMAGE,
        "caddy",
        "run",
        "--config",
        "/etc/caddy/Caddyfile",
        "--adapter",
        "caddyfile",
    )
    try:
        root_ca = wait_until(
            lambda: docker("exec", name, "cat", "/data/caddy/pki/authorities/local/root.crt", check=False).stdout,
            timeout=30,
        )
        assert "BEGIN CERTIFICATE" in root_ca, docker("logs", name, check=False).stderr
        bundle = work / "ca-bundle.pem"
        bundle.write_text(SYSTEM_BUNDLE.read_text() + "\n" + root_ca)
        server = GitServer(
            base=f"https://127.0.0.1:{port}/",
            token=token,
            wrong_token=wrong,
            token_file=_write_secret(work / "token", token),
            wrong_token_file=_write_secret(work / "wrong-token", wrong),
            ca_bundle=bundle,
            container=name,
            core_commits=dict(made),
        )
        # The server answers only with the credential, over TLS trusted through the bundle.
        assert wait_until(lambda: _get(server, "acme/sum-core.git/info/refs", token)[0] == 200, timeout=30)
        assert _get(server, "acme/sum-core.git/info/refs", None)[0] == 401
        assert _get(server, "acme/sum-core.git/info/refs", wrong)[0] == 401
        yield server
    finally:
        docker("rm", "-f", name, check=False)


def _get(server: GitServer, path: str, password: str | None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(server.ca_bundle))
    request = urllib.request.Request(server.base + path)
    if password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{GIT_USER}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


# ---------------------------------------------------------------- host configuration


def _toml_value(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else str(value)


def write_host_toml(root: Path, base: dict, build: dict) -> None:
    data = {**base, "build": build}
    lines = []
    for table, values in data.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    (root / "sumbg.toml").write_text("\n".join(lines))


@pytest.fixture(scope="module")
def configure(host: Host, git_server: GitServer):
    """configure(**build) rewrites the test host's sumbg.toml [build]; the original comes back afterwards."""
    path = host.root / "sumbg.toml"
    original = path.read_text()
    base = {k: v for k, v in tomllib.loads(original).items() if k != "build"}

    def apply(**build) -> None:
        write_host_toml(host.root, base, {"ca_bundle": str(git_server.ca_bundle), **build})

    yield apply
    path.write_text(original)


def good_build_settings(server: GitServer) -> dict:
    return {
        "git_token_file": str(server.token_file),
        "git_username": GIT_USER,
        # The longest matching prefix wins, as with git's insteadOf: the shorter entry leads nowhere.
        "git_url_rewrites": {
            "https://git.sum-core.invalid/": server.base + "nothing-here/",
            PIN_HOST: server.base + "acme/",
        },
    }


# ---------------------------------------------------------------- leak detection


class ProcessWatcher:
    """Samples every process's argv and environment while a command runs.

    One pass over /proc takes about 6 ms of CPU here: with a 10 ms pause between passes the watcher
    took a third of a core for the whole build, beside the build it watches; a pass every 50 ms or
    so still sees every git, pip or docker process several times over."""

    PAUSE = 0.05

    def __init__(self, needles: list[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.hits: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        data = (proc / part).read_bytes()
                    except OSError:
                        continue
                    if any(n in data for n in self.needles):
                        self.hits.append(f"{proc.name}/{part}: {data[:200]!r}")
            self.samples += 1
            time.sleep(self.PAUSE)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def stream_contains(argv: list[str], needle: bytes) -> bool:
    """Whether a command's (possibly huge) stdout contains needle."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    found, tail, total = False, b"", 0
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
        if needle in tail + chunk:
            found = True
        tail = chunk[-len(needle) :]
    assert proc.wait() == 0 and total > 1_000_000, f"{argv}: exit {proc.returncode}, {total} bytes"
    return found


def files_containing(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


def assert_image_free_of(image: str, needle: str) -> None:
    history = docker("history", "--no-trunc", image).stdout
    assert "sumbg" in history and needle not in history
    inspect = docker("image", "inspect", image).stdout
    assert '"sumbg.commit"' in inspect and needle not in inspect
    # Every layer of the image, byte for byte (docker save writes them uncompressed).
    assert not stream_contains(["docker", "save", image], needle.encode())


# ---------------------------------------------------------------- configuration errors


def test_credential_file_readable_by_others_is_refused(engine, example_repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    token = _write_secret(tmp_path / "token", "tok-not-used", mode=0o644)
    (root / "sumbg.toml").write_text(f'[build]\ngit_token_file = "{token}"\n')
    other = Host(root, 0, 0, example_repo)
    result = other.sumbg(
        "init", "b-mode", "--repo", str(example_repo), "--domain", "b-mode.example.test", "--ref", "v1.7.0-git-pin"
    )
    assert result.returncode == 2, str(result)
    assert result.stdout == ""
    assert result.stderr == (
        f"sumbg: error: sumbg.toml: build.git_token_file: {token} has mode 0644; "
        f"a credential file must be 0600 (chmod 600 {token})\n"
    )
    assert sorted(p.name for p in root.iterdir()) == ["sumbg.toml"]

    # The same rule for a deploy key given in a site's own site.toml.
    token.chmod(0o600)
    key = _write_secret(tmp_path / "deploy-key", "not a real key", mode=0o640)
    (root / "sumbg.toml").write_text(f'[build]\ngit_token_file = "{token}"\n')
    (root / "b-mode").mkdir()
    (root / "b-mode" / "site.toml").write_text(
        f'slug = "b-mode"\ndomain = "b-mode.example.test"\nrepo = "{example_repo}"\n'
        f'[app]\nproject = "acme"\n[build]\ngit_ssh_key_file = "{key}"\n'
    )
    result = other.sumbg("status", "b-mode")
    assert result.returncode == 2, str(result)
    assert result.stderr == (
        f"sumbg: error: site.toml: build.git_ssh_key_file: {key} has mode 0640; "
        f"a credential file must be 0600 (chmod 600 {key})\n"
    )


# ---------------------------------------------------------------- the git pin, end to end


def test_init_builds_the_git_pin_with_the_credential_and_leaks_it_nowhere(
    host: Host, git_server: GitServer, configure
) -> None:
    configure(**good_build_settings(git_server))
    pin = subprocess.run(
        ["git", "-C", str(host.repo), "show", "v1.7.0-git-pin:requirements.txt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "sum-core @ git+https://git.sum-core.invalid/acme/sum-core.git@v0.9.0#subdirectory=core\n" in pin

    # The watcher sees what it looks for (a control), then watches the whole init.
    with ProcessWatcher(["b-watch-control-needle"]) as control:
        subprocess.run(["sh", "-c", "sleep 0.3", "b-watch-control-needle"], check=True)
    assert control.hits
    docker("rmi", "-f", f"sum-{SLUG}:v1.7.0-git-pin", f"sum-{SLUG}:v1.8.0-git-pin", check=False)  # a real build
    with ProcessWatcher([git_server.token]) as watcher:
        init = host.init(SLUG, "v1.7.0-git-pin")
    assert watcher.samples > 50 and watcher.hits == []

    # The site is up behind the edge, running sum-core 0.9.0 from the git server.
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200, body
    assert json.loads(body)["version"]["build"] == "v1.7.0-git-pin"
    status, _, body = http_get(host.http_port, DOMAIN, "/")
    assert status == 200
    assert re.search(rb'id="sum-core-version">\s*0\.9\.0\s*<', body), body[:2000]

    # What was fetched, from where, is recorded (the rewritten URL, no credential).
    build = next(step for step in host.history(SLUG)[-1]["steps"] if step["name"] == "build")
    assert build["git_dependencies"] == [
        {
            "requirement": "sum-core",
            "url": "https://git.sum-core.invalid/acme/sum-core.git",
            "fetched_from": git_server.base + "acme/sum-core.git",
            "ref": "v0.9.0",
            "commit": git_server.core_commits["v0.9.0"],
        }
    ]
    image = f"sum-{SLUG}:v1.7.0-git-pin"
    labels = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]["Labels"]
    assert labels["sumbg.git-dependencies"] == f"sum-core@{git_server.core_commits['v0.9.0'][:12]}"
    assert labels["sumbg.sum-core"] == "0.9.0"

    # Wagtail-style dependencies: Pillow with JPEG support; no git in the final image.
    check = docker(
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "python -c 'from PIL import features; import sum_core; "
        'print(features.check("jpg"), sum_core.__version__)\'; command -v git || echo no-git',
    )
    assert check.stdout == "True 0.9.0\nno-git\n", check.stderr

    # The credential is nowhere: image history, inspect, layers, records, output, logs.
    assert_image_free_of(image, git_server.token)
    assert files_containing(host.root, git_server.token.encode()) == []
    status_json = host.sumbg("status", SLUG, "--json")
    history_json = host.sumbg("history", SLUG, "--json")
    assert status_json.returncode == 0 and history_json.returncode == 0
    assert json.loads(status_json.stdout) and json.loads(history_json.stdout)
    for output in (init.stdout, init.stderr, status_json.stdout, status_json.stderr, history_json.stdout):
        assert git_server.token not in output
    web = f"sum-{SLUG}-blue-web"
    logs = docker("logs", web)
    assert "Booting worker" in logs.stdout + logs.stderr
    assert git_server.token not in logs.stdout + logs.stderr
    if Path("/var/log/dockerd.log").is_file():
        assert git_server.token.encode() not in Path("/var/log/dockerd.log").read_bytes()


@pytest.mark.parametrize("case", ["wrong-token", "no-token", "no-repository"])
def test_fetch_failures_stop_the_upgrade_with_one_clear_line(
    host: Host, git_server: GitServer, configure, case: str
) -> None:
    settings = good_build_settings(git_server)
    if case == "wrong-token":
        settings["git_token_file"] = str(git_server.wrong_token_file)
        reason = f"authentication failed with the token from sumbg.toml build.git_token_file (user {GIT_USER})"
    elif case == "no-token":
        del settings["git_token_file"]
        reason = "the server asks for a credential: set [build] git_token_file in sumbg.toml or site.toml"
    else:
        settings["git_url_rewrites"] = {PIN_HOST: git_server.base + "nothing-here/"}
        reason = "no git repository at that URL"
    configure(**settings)
    before = host.state(SLUG)
    result = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0")
    assert result.returncode == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sumbg: error:")]
    fetched = (
        git_server.base + "acme/sum-core.git"
        if case != "no-repository"
        else git_server.base + "nothing-here/sum-core.git"
    )
    assert errors == [f"sumbg: error: cannot fetch {fetched}@v0.9.1: {reason} [site {SLUG}, step build]"]
    assert "Traceback" not in result.stderr
    for secret in (git_server.token, git_server.wrong_token):
        assert secret not in result.stdout + result.stderr
        assert files_containing(host.root, secret.encode()) == []
    # Nothing moved: the same colour, release and image are live.
    assert host.state(SLUG)["live"] == before["live"]
    assert host.state(SLUG)["colours"] == before["colours"]
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.7.0-git-pin"
    assert docker("image", "inspect", f"sum-{SLUG}:v1.8.0-git-pin", check=False).returncode != 0


def test_upgrade_between_git_pins_with_the_site_build_settings(host: Host, git_server: GitServer, configure) -> None:
    configure(**good_build_settings(git_server))
    marked = subprocess.run(
        ["docker", "build", "-q", "-t", SITE_PYTHON_IMAGE, "-"],
        input=f"FROM {PYTHON_IMAGE}\nRUN echo b-python > /etc/sumbg-b-python\n",
        text=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        timeout=300,
    )
    assert marked.returncode == 0, marked.stderr
    _set_site_build(host, python_image=f'"{SITE_PYTHON_IMAGE}"', build_packages='["git"]', packages='["file"]')

    with ProcessWatcher([git_server.token]) as watcher:
        result = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0")
    assert result.returncode == 0, str(result)
    assert watcher.hits == []
    assert "0.9.0 -> 0.9.1" in result.stderr + result.stdout
    status, _, body = http_get(host.http_port, DOMAIN, "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.8.0-git-pin"

    image = f"sum-{SLUG}:v1.8.0-git-pin"
    check = docker(
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "cat /etc/sumbg-b-python; file --brief /app/manage.py; "
        "python -c 'import sum_core; print(sum_core.__version__)'; command -v git || echo no-git",
    )
    # The site's base image, its runtime package, the new sum-core; git stayed in the build stage.
    assert check.stdout == "b-python\nPython script, ASCII text executable\n0.9.1\nno-git\n", check.stderr
    build = next(step for step in host.history(SLUG)[-1]["steps"] if step["name"] == "build")
    assert build["python_image"] == SITE_PYTHON_IMAGE
    assert build["git_dependencies"][0]["commit"] == git_server.core_commits["v0.9.1"]
    assert_image_free_of(image, git_server.token)
    assert git_server.token not in result.stdout + result.stderr
    assert files_containing(host.root, git_server.token.encode()) == []


def exited_containers(host: Host) -> set[str]:
    """The exited containers of this host's sites, and those Compose did not make (a build step's:
    the legacy builder names them at random). Other sessions' stopped sites are not ours."""
    ours = tuple(f"sum-{slug}-" for slug in host.sites())
    listing = docker(
        "ps", "-a", "--filter", "status=exited", "--format", '{{.ID}} {{.Label "com.docker.compose.project"}}'
    ).stdout.splitlines()
    return {line.split()[0] for line in listing if len(line.split()) == 1 or f"{line.split()[1]}-".startswith(ours)}


def _set_site_build(host: Host, **values: str) -> None:
    path = host.site_dir(SLUG) / "site.toml"
    text = path.read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    path.write_text(text)


def test_a_package_compiled_from_source_needs_the_build_packages_only_in_the_build_stage(
    host: Host, git_server: GitServer, configure
) -> None:
    configure(**good_build_settings(git_server))
    # v1.9.0-pillow-source: `--no-binary pillow`, as on a Python for which Pillow has no wheel.
    _set_site_build(host, build_packages="[]", packages="[]")
    exited = exited_containers(host)
    failed = host.sumbg("upgrade", SLUG, "v1.9.0-pillow-source", "--yes", "--watch", "0")
    assert failed.returncode == 1, str(failed)
    # No container left behind, the failed step's either (another session's build steps end meanwhile).
    assert wait_until(lambda: exited_containers(host) <= exited, timeout=20), exited_containers(host) - exited
    errors = [line for line in failed.stderr.splitlines() if line.startswith("sumbg: error:")]
    assert errors == [
        f"sumbg: error: building image sum-{SLUG}:v1.9.0-pillow-source failed (exit 1); pip had to compile a "
        'package: add what it needs to site.toml [build] build_packages, e.g. ["gcc", "libjpeg-dev", '
        f'"zlib1g-dev"] for Pillow, and its runtime libraries to packages [site {SLUG}, step build]'
    ]
    assert json.loads(http_get(host.http_port, DOMAIN, "/health/")[2])["version"]["build"] == "v1.8.0-git-pin"

    # Compiler and headers in the build stage (python3-dev: Debian's Python has no headers of its
    # own; the official python images do), the JPEG library in the final image.
    _set_site_build(
        host,
        build_packages='["gcc", "libc6-dev", "python3-dev", "libjpeg-dev", "zlib1g-dev"]',
        packages='["libjpeg62-turbo"]',
    )
    result = host.sumbg("upgrade", SLUG, "v1.9.0-pillow-source", "--yes", "--watch", "0")
    assert result.returncode == 0, str(result)
    assert json.loads(http_get(host.http_port, DOMAIN, "/health/")[2])["version"]["build"] == "v1.9.0-pillow-source"
    check = docker(
        "run",
        "--rm",
        f"sum-{SLUG}:v1.9.0-pillow-source",
        "sh",
        "-c",
        "python -c 'import io, PIL, PIL.Image; from PIL import features; b = io.BytesIO(); "
        'PIL.Image.new("RGB", (4, 4)).save(b, "JPEG"); print(features.check("jpg"), len(b.getvalue()) > 100)\'; '
        "ls -d /venv/lib/python3*/site-packages/pillow.libs 2>/dev/null || echo compiled-here; "
        "command -v gcc || echo no-gcc; ls /usr/include/jpeglib.h 2>/dev/null || echo no-headers",
    )
    # Pillow was compiled here (a wheel would bring its own pillow.libs) and encodes JPEG with the
    # runtime library; neither the compiler nor the headers reached the final image.
    assert check.stdout == "True True\ncompiled-here\nno-gcc\nno-headers\n", check.stderr


def test_a_credential_given_in_site_toml(host: Host, git_server: GitServer, configure) -> None:
    # The host has no credential at all; the site brings its own (and its own username).
    settings = good_build_settings(git_server)
    del settings["git_token_file"], settings["git_username"]
    configure(**settings)
    docker("rmi", "-f", f"sum-{SLUG}:v1.8.0-git-pin", check=False)  # fetch again
    _set_site_build(host, git_token_file=json.dumps(str(git_server.wrong_token_file)), git_username='"sumbot"')
    failed = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0")
    assert failed.returncode == 1, str(failed)
    # v1.8.0-git-pin was built here before: its rebuild fetches sum-core at the commit it was built with.
    recorded = git_server.core_commits["v0.9.1"][:12]
    assert [line for line in failed.stderr.splitlines() if line.startswith("sumbg: error:")] == [
        f"sumbg: error: cannot fetch {git_server.base}acme/sum-core.git@v0.9.1 (the recorded commit {recorded}): "
        f"authentication failed with the token from site.toml build.git_token_file (user {GIT_USER}) "
        f"[site {SLUG}, step build]"
    ]

    _set_site_build(host, git_token_file=json.dumps(str(git_server.token_file)))
    with ProcessWatcher([git_server.token]) as watcher:
        result = host.sumbg("upgrade", SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0")
    assert result.returncode == 0, str(result)
    assert watcher.hits == []
    assert json.loads(http_get(host.http_port, DOMAIN, "/health/")[2])["version"]["build"] == "v1.8.0-git-pin"
    build = next(step for step in host.history(SLUG)[-1]["steps"] if step["name"] == "build")
    assert build["git_dependencies"][0]["commit"] == git_server.core_commits["v0.9.1"]
    for output in (failed.stdout, failed.stderr, result.stdout, result.stderr):
        assert git_server.token not in output and git_server.wrong_token not in output
    assert files_containing(host.root, git_server.token.encode()) == []
    assert_image_free_of(f"sum-{SLUG}:v1.8.0-git-pin", git_server.token)


# ---------------------------------------------------------------- a deploy key over ssh

SSHD_IMAGE = "sumbg-test/b-sshd:1"
SSH_SLUG = "b-ssh"


@pytest.fixture
def ssh_server(engine, git_server: GitServer, tmp_path: Path):
    """An SSH git server (user git, the deploy key authorised) serving the same sum-core repository."""
    if docker("image", "inspect", SSHD_IMAGE, check=False).returncode != 0:
        made = subprocess.run(
            ["docker", "build", "-q", "-t", SSHD_IMAGE, "-"],
            text=True,
            capture_output=True,
            timeout=600,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
            input=f"FROM {PYTHON_IMAGE}\n"
            "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "--no-install-recommends openssh-server git >/dev/null && rm -rf /var/lib/apt/lists/* "
            "&& mkdir -p /run/sshd && ssh-keygen -A && useradd -m -s /bin/sh git "
            "&& git config --system safe.directory '*'\n"
            'CMD ["/usr/sbin/sshd", "-D", "-e"]\n',
        )
        assert made.returncode == 0, made.stderr
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "b-deploy", "-f", str(keys / "deploy_key")],
        check=True,
        capture_output=True,
    )
    (keys / "authorized_keys").write_text((keys / "deploy_key.pub").read_text())
    srv = tmp_path / "srv"
    _example_module().build_core_repo(srv / "acme" / "sum-core.git", quiet=True)
    os.chmod(tmp_path, 0o755)
    port = free_port()
    name = f"b-sshd-{os.getpid()}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "sumbg-test=b",
        "-p",
        f"127.0.0.1:{port}:22",
        "-v",
        f"{keys / 'authorized_keys'}:/home/git/.ssh/authorized_keys:ro",
        "-v",
        f"{srv}:/srv:ro",
        SSHD_IMAGE,
    )
    try:
        host_key = docker("exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
        assert wait_until(lambda: "Server listening" in docker("logs", name, check=False).stderr, timeout=30)
        yield {
            "url": f"ssh://git@127.0.0.1:{port}/srv/acme/",
            "key": keys / "deploy_key",
            "known_hosts": keys / "known_hosts",
            "keys": keys,
        }
    finally:
        docker("rm", "-f", name, check=False)


def test_init_with_a_deploy_key_over_ssh(host: Host, git_server: GitServer, configure, ssh_server) -> None:
    key_text = ssh_server["key"].read_text()
    assert oct(ssh_server["key"].stat().st_mode & 0o777) == "0o600"
    # A line from the middle of the private key: what must never appear anywhere.
    needle = key_text.splitlines()[2]
    assert len(needle) > 40
    configure(
        git_ssh_key_file=str(ssh_server["key"]),
        git_ssh_known_hosts=str(ssh_server["known_hosts"]),
        git_url_rewrites={PIN_HOST: ssh_server["url"]},
    )
    docker("rmi", "-f", f"sum-{SSH_SLUG}:v1.7.0-git-pin", check=False)
    with ProcessWatcher([needle]) as watcher:
        init = host.init(SSH_SLUG, "v1.7.0-git-pin")
    assert watcher.samples > 50 and watcher.hits == []
    status, _, body = http_get(host.http_port, f"{SSH_SLUG}.example.test", "/health/")
    assert status == 200 and json.loads(body)["version"]["build"] == "v1.7.0-git-pin"
    build = next(step for step in host.history(SSH_SLUG)[-1]["steps"] if step["name"] == "build")
    assert build["git_dependencies"] == [
        {
            "requirement": "sum-core",
            "url": "https://git.sum-core.invalid/acme/sum-core.git",
            "fetched_from": ssh_server["url"] + "sum-core.git",
            "ref": "v0.9.0",
            "commit": git_server.core_commits["v0.9.0"],
        }
    ]
    assert_image_free_of(f"sum-{SSH_SLUG}:v1.7.0-git-pin", needle)
    assert needle not in init.stdout + init.stderr
    assert files_containing(host.root, needle.encode()) == []

    # A server whose host key is not the pinned one is refused before anything is built.
    other = ssh_server["keys"] / "other_known_hosts"
    other.write_text(
        ssh_server["known_hosts"].read_text().split()[0]
        + " ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    configure(
        git_ssh_key_file=str(ssh_server["key"]),
        git_ssh_known_hosts=str(other),
        git_url_rewrites={PIN_HOST: ssh_server["url"]},
    )
    result = host.sumbg("upgrade", SSH_SLUG, "v1.8.0-git-pin", "--yes", "--watch", "0")
    assert result.returncode == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("sumbg: error:")]
    assert errors == [
        f"sumbg: error: cannot fetch {ssh_server['url']}sum-core.git@v0.9.1: the SSH server's host key "
        f"is not in {other} ([build] git_ssh_known_hosts) [site {SSH_SLUG}, step build]"
    ]
    assert needle not in result.stdout + result.stderr
