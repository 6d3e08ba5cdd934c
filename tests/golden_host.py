"""A simulated "golden-path" host: one SUM client site deployed by hand, the runbook way.

One Docker container (host network) plays a Debian VPS: PostgreSQL 15, Redis, Debian's
Caddy 2.6 and the site's gunicorn (and optionally celery), with supervisord standing in
for systemd. Everything sumbg reads lives under a temporary base dir B and is bind-mounted
at the SAME absolute path inside the container, so the paths in .env and in the unit files
are valid for sumbg running on the test machine:

    B/srv/sum/<slug>/{app,venv,static,media,backups,.env}   the site (app/ is a git clone)
    B/etc/systemd/system/sum-<slug>-*.{service,socket}       the units (read by sumbg only)
    B/etc/caddy/{Caddyfile,sites-enabled/sum-<slug>.caddy}   the host Caddy config
    B/run/sum-<slug>/gunicorn.sock                           gunicorn's socket
    B/var/lib/caddy/.local/share/caddy                       Caddy's data (its internal CA)
    B/var/log/sum/<program>.log                              each supervised program's output
    B/bin/systemctl                                          a systemctl shim (put B/bin first on PATH)
    B/var/lib/systemd-sim/{enabled/,calls.log}               the shim's state and call log

The site is deployed as the SUM platform's own templates deploy it (the golden path): the
gunicorn unit writes ExecStart= over several lines with commented-out alternatives, runs as
User=deploy, Group=www-data, UMask=0007 with EnvironmentFile=.env, and binds a unix socket
(`bind="unix"`, the default), or gets it from a `.socket` unit (`bind="socket"`: --bind fd://0,
SocketGroup=www-data; the stand-in holds the listening socket and hands it over as systemd does,
LISTEN_FDS, but does not start the service on the first connection), or binds 127.0.0.1:<port>
(`bind="tcp"`). The host Caddy's site file names the site and its www alias on one line,
compresses, sets the golden-path headers and serves /static/ and /media/ with handle_path.
Celery runs `celery -A acme worker -l INFO`.

Every port (PostgreSQL, Redis, gunicorn over TCP, Caddy http/https/admin) is a free port bound
on 127.0.0.1 only. The image (`sumbg-test/golden-host:<hash of its inputs>`) is built once from
the local base image and reused; it carries a wheelhouse of the example client's
third-party requirements, so a site venv installs offline in seconds.

    host = start_golden_host(tmp_path_factory.mktemp("golden"), example_repo)
    try: ... finally: host.stop()

or use the `golden_host_factory` fixture (import it into a test module).
"""

from __future__ import annotations

import fcntl
import hashlib
import html
import json
import os
import re
import secrets
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from .conftest import docker, free_port

HERE = Path(__file__).resolve().parent / "golden_host"
REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "sumbg-local/debian:bookworm"
IMAGE_REPO = "sumbg-test/golden-host"
LABEL = "sumbg.test=golden-host"
OWNER_LABEL = "sumbg.golden.owner"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_CONTAINER = "/etc/golden-host-ca.crt"
WHEELHOUSE = "/opt/golden/wheelhouse"
DEPLOY_USER = "deploy"  # the golden path's User=; Group= is www-data
BINDS = ("unix", "socket", "tcp")
SENTRY_DSN = "https://0123456789abcdef@sentry.invalid/42"
MIN_FREE_BYTES = 2 * 1024**3
# Letters and digits only: a .env a shell can source and systemd can read alike.
_ALPHABET = string.ascii_letters + string.digits


class GoldenHostError(RuntimeError):
    pass


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _run(
    args: list[str], *, timeout: float = 600, input: str | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        env=env,
    )


def _wait(what: str, predicate, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise GoldenHostError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the image


def _thirdparty_requirements() -> str:
    """The example client's requirements without sum-core (vendored in each release)."""
    lines = (REPO / "examples/sum-site/client/requirements.txt").read_text().splitlines()
    return "".join(
        line + "\n" for line in lines if line.strip() and not line.startswith("#") and not line.startswith("sum-core")
    )


def image_tag() -> str:
    base = docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE, check=False)
    if base.returncode != 0:
        raise GoldenHostError(f"the local base image {BASE_IMAGE} is missing; run `make setup`")
    digest = hashlib.sha256()
    for part in (
        base.stdout.strip(),
        (HERE / "Dockerfile").read_text(),
        (HERE / "boot.sh").read_text(),
        _thirdparty_requirements(),
    ):
        digest.update(part.encode() + b"\0")
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


def ensure_image() -> str:
    """Build the golden-host image unless an image with the same inputs exists (one build at a
    time on this machine: a second session waits for the first and then reuses its image)."""
    tag = image_tag()
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    with open(Path(tempfile.gettempdir()) / "sumbg-golden-host-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if docker("image", "inspect", tag, check=False).returncode == 0:
            return tag
        root = docker("info", "--format", "{{.DockerRootDir}}", check=False).stdout.strip() or "/"
        probe = Path(root) if Path(root).exists() else Path("/")
        if shutil.disk_usage(probe).free < MIN_FREE_BYTES:
            raise GoldenHostError(
                f"less than {MIN_FREE_BYTES >> 30} GB free under {probe}: not building the golden-host image"
            )
        if not HOST_CA.exists():
            raise GoldenHostError(f"{HOST_CA} is missing: pip in the image build could not reach PyPI")
        with tempfile.TemporaryDirectory(prefix="golden-host-ctx-") as ctx:
            for name in ("Dockerfile", "boot.sh"):
                shutil.copy2(HERE / name, Path(ctx) / name)
            (Path(ctx) / "requirements-thirdparty.txt").write_text(_thirdparty_requirements())
            shutil.copyfile(HOST_CA, Path(ctx) / "host-ca.crt")
            built = _run(
                ["docker", "build", "-q", "--build-arg", f"BASE={BASE_IMAGE}", "-t", tag, ctx],
                timeout=1200,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
        if built.returncode != 0:
            raise GoldenHostError(f"building {tag} failed:\n{built.stdout}\n{built.stderr}")
        # Older builds (other inputs): removed unless a container still uses them.
        for old in docker("images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout.split():
            if old != tag:
                docker("rmi", old, check=False)
    return tag


# --------------------------------------------------------------------------- cleanup


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_golden_hosts() -> list[str]:
    """Remove golden-host containers whose owning test process is gone (a killed session).
    Containers of live processes (another session beside this one) are left alone."""
    listing = docker(
        "ps",
        "-a",
        "--filter",
        f"label={LABEL}",
        "--format",
        f'{{{{.Names}}}} {{{{.Label "{OWNER_LABEL}"}}}}',
        check=False,
    ).stdout
    removed = []
    for line in listing.splitlines():
        name, _, owner = line.partition(" ")
        if not owner.strip().isdigit() or not _pid_alive(int(owner)):
            docker("rm", "-f", "-v", name, check=False)
            removed.append(name)
    return removed


# --------------------------------------------------------------------------- the handle


class _PinnedTransport(httpx.HTTPTransport):
    """Connects requests for `domain` to 127.0.0.1:<port in the URL>, keeping Host and SNI = domain
    (Caddy picks the site and the certificate by them)."""

    def __init__(self, domain: str) -> None:
        super().__init__(verify=False)
        self.domain = domain

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self.domain:
            return super().handle_request(request)
        headers = request.headers.copy()
        if headers.get("Host") == request.url.netloc.decode():
            headers["Host"] = self.domain  # as a browser on port 443 sends it
        # A copy: the client keeps the original (URL with the domain) for cookies and redirects.
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": self.domain},
        )
        return super().handle_request(pinned)


_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class GoldenHost:
    container: str
    base: Path
    slug: str
    domain: str
    site_dir: Path
    systemd_dir: Path
    caddy_dir: Path
    caddy_data_dir: Path
    bin_dir: Path
    http_port: int
    https_port: int
    app_port: int
    pg_port: int
    redis_port: int
    admin_password: str
    caddy_admin: str = ""  # 127.0.0.1:<port> of Caddy's admin API
    celery: bool = False
    bind: str = "unix"  # "unix" (gunicorn binds its socket), "socket" (a .socket unit hands it over), "tcp"
    log_dir: Path = field(default=Path())  # B/var/log/sum: one log per supervised program
    state_dir: Path = field(default=Path())  # B/var/lib/systemd-sim: the shim's state and calls.log
    startup_seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # seconds per start-up step

    # ------------------------------------------------------------------ reading
    @property
    def env_file(self) -> Path:
        return self.site_dir / ".env"

    @property
    def app_dir(self) -> Path:
        return self.site_dir / "app"

    @property
    def db_name(self) -> str:
        return self.slug.replace("-", "_")

    def env(self) -> dict[str, str]:
        pairs = (
            line.split("=", 1)
            for line in self.env_file.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")
        )
        return {key.strip(): value for key, value in pairs}

    @property
    def www(self) -> str:
        return f"www.{self.domain}"

    @property
    def app_socket(self) -> Path:
        return self.base / "run" / f"sum-{self.slug}" / "gunicorn.sock"

    @property
    def app_address(self) -> str:
        """What sumbg must read as the old app's address."""
        return f"127.0.0.1:{self.app_port}" if self.bind == "tcp" else f"unix:{self.app_socket}"

    @property
    def socket_unit(self) -> str:
        """The .socket unit of the socket-activated variant ("" otherwise)."""
        return f"sum-{self.slug}-gunicorn.socket" if self.bind == "socket" else ""

    def unit(self, kind: str) -> str:
        """The unit (and supervisord program) name of "gunicorn" or "celery"."""
        return f"sum-{self.slug}-{kind}"

    def unit_files(self) -> list[str]:
        """The unit file names sumbg must find, in the order it reports them (a socket first)."""
        names = [self.socket_unit] if self.socket_unit else []
        return names + [f"{self.unit(kind)}.service" for kind in _commands(self)]

    def path_env(self) -> dict[str, str]:
        """os.environ with B/bin first on PATH, so `systemctl` is the shim."""
        return {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def systemctl(self, *args: str) -> subprocess.CompletedProcess:
        return _run([str(self.bin_dir / "systemctl"), *args], timeout=120, env=self.path_env())

    def shim_calls(self) -> list[list[str]]:
        log = self.state_dir / "calls.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    # ------------------------------------------------------------------ HTTP through the host Caddy
    def client(self, *, cookies: dict | None = None, follow: bool = False, timeout: float = 15) -> httpx.Client:
        return httpx.Client(
            transport=_PinnedTransport(self.domain), cookies=cookies, follow_redirects=follow, timeout=timeout
        )

    def url(self, path: str) -> str:
        return f"https://{self.domain}:{self.https_port}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict | None = None,
        data=None,
        cookies: dict | None = None,
        follow: bool = False,
        timeout: float = 15,
    ) -> httpx.Response:
        with self.client(cookies=cookies, follow=follow, timeout=timeout) as client:
            return client.request(method, self.url(path), headers=headers, data=data)

    def _csrf(self, path: str) -> tuple[str, str]:
        """GET path; returns (csrftoken cookie, the form's csrfmiddlewaretoken)."""
        page = self.request("GET", path)
        cookie = page.cookies.get("csrftoken")
        match = _CSRF_INPUT.search(page.text)
        if page.status_code != 200 or not cookie or not match:
            raise GoldenHostError(f"GET {path}: {page.status_code}, no CSRF cookie/token\n{page.text[:2000]}")
        return cookie, html.unescape(match.group(1))

    def post_lead(self, name: str) -> int:
        cookie, token = self._csrf("/contact/")
        answer = self.request(
            "POST",
            "/contact/",
            cookies={"csrftoken": cookie},
            headers={"Referer": f"https://{self.domain}/contact/"},
            data={
                "csrfmiddlewaretoken": token,
                "name": name,
                "email": f"{re.sub(r'[^a-z0-9]+', '.', name.lower()).strip('.') or 'lead'}@example.com",
                "message": f"Hello from {name}",
            },
        )
        return answer.status_code

    def login_admin(self) -> str:
        cookie, token = self._csrf("/admin/login/?next=/admin/")
        answer = self.request(
            "POST",
            "/admin/login/?next=/admin/",
            cookies={"csrftoken": cookie},
            headers={"Referer": f"https://{self.domain}/admin/login/?next=/admin/"},
            data={
                "csrfmiddlewaretoken": token,
                "username": "admin",
                "password": self.admin_password,
                "next": "/admin/",
            },
        )
        session = answer.cookies.get("sessionid")
        if answer.status_code != 302 or not session:
            raise GoldenHostError(f"admin login failed: {answer.status_code}\n{answer.text[:2000]}")
        return session

    # ------------------------------------------------------------------ inside the container
    def exec(
        self,
        *args: str,
        user: str | None = None,
        workdir: str | None = None,
        env: dict | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        cmd = ["docker", "exec"]
        if user:
            cmd += ["-u", user]
        if workdir:
            cmd += ["-w", workdir]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        return _run([*cmd, self.container, *args], timeout=timeout)

    def psql(self, sql: str, *, database: str | None = None) -> str:
        done = self.exec(
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            str(self.pg_port),
            "-d",
            database or self.db_name,
            "-At",
            "-c",
            sql,
            user="postgres",
            timeout=60,
        )
        if done.returncode != 0:
            raise GoldenHostError(f"psql {sql!r}: exit {done.returncode}\n{done.stderr}")
        return done.stdout.rstrip("\n")

    def lead_count(self) -> int:
        return int(self.psql("SELECT count(*) FROM sum_core_lead"))

    def manage(
        self, *args: str, check: bool = False, env: dict | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """venv/bin/python app/manage.py ARGS in the container, with the site's .env loaded."""
        done = self.exec(
            "sh",
            "-c",
            f'set -a; . {self.env_file}; set +a; exec ../venv/bin/python manage.py "$@"',
            "manage.py",
            *args,
            workdir=str(self.app_dir),
            env=env,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise GoldenHostError(f"manage.py {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def make_media(self, count: int) -> list[str]:
        """COUNT text files uploads/file-1.txt ... (distinct, a few KB each) and one binary file
        uploads/blob-<count>.bin, saved through Django's default_storage. Returns their names."""
        code = f"""
import hashlib
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage as storage
names = []
def put(name, body):
    if storage.exists(name):
        storage.delete(name)
    names.append(storage.save(name, ContentFile(body)))
for i in range(1, {count} + 1):
    lines = (f"file {{i}} line {{j}} {{hashlib.sha256(f'{{i}}-{{j}}'.encode()).hexdigest()}}\\n" for j in range(40))
    put(f"uploads/file-{{i}}.txt", "".join(lines).encode())
put("uploads/blob-{count}.bin", bytes(range(256)) * 16 + hashlib.sha256(b"{count}").digest())
print("\\n".join(names))
"""
        done = self.manage("shell", "-c", code, check=True)
        return done.stdout.split()

    def supervisor_status(self) -> str:
        return self.exec("supervisorctl", "status", timeout=60).stdout

    def is_enabled(self, unit: str) -> bool:
        name = unit if unit.endswith((".service", ".socket")) else f"{unit}.service"
        return (self.state_dir / "enabled" / name).exists()

    def program_state(self, unit: str) -> str:
        """supervisord's state (RUNNING, STOPPED, ...) of a unit's program."""
        program = _program_name(unit)
        for line in self.supervisor_status().splitlines():
            words = line.split()
            if len(words) > 1 and words[0] == program:
                return words[1]
        return "UNKNOWN"

    def rebind(self, bind: str) -> None:
        """Redeploy the running site with another of the three bindings, as an operator would
        (units, the host Caddy's site file, the programs), and start it again."""
        if bind not in BINDS:
            raise GoldenHostError(f"unknown bind {bind!r}")
        for kind in _commands(self):
            self.exec("supervisorctl", "stop", self.unit(kind), timeout=120)
        if self.socket_unit:
            self.exec("supervisorctl", "stop", _program_name(self.socket_unit), timeout=120)
            (self.systemd_dir / self.socket_unit).unlink(missing_ok=True)
            (self.state_dir / "enabled" / self.socket_unit).unlink(missing_ok=True)
        self.bind = bind
        _write_units_and_site(self)
        (self.base / ".golden/programs.conf").write_text(_programs_conf(self))
        _check(self.exec("cp", "/golden/programs.conf", "/etc/supervisor/conf.d/golden.conf"), "cp programs.conf")
        _check(self.exec("supervisorctl", "update", timeout=120), "supervisorctl update")
        _write_shim(self)
        for unit in self.unit_files():
            (self.state_dir / "enabled" / unit).touch()
        _check(self.systemctl("reload", "caddy"), "reload caddy")
        _check(self.systemctl("start", *self.unit_files()), "start the site")
        _wait_healthy(self)

    def logs(self) -> str:
        """docker logs, supervisord's view and the tail of every program's log: for failure reports."""
        parts = []
        out = docker("logs", "--tail", "200", self.container, check=False)
        parts.append(f"--- docker logs {self.container}\n{out.stdout}{out.stderr}")
        status = self.exec("supervisorctl", "status", timeout=30)
        parts.append(f"--- supervisorctl status\n{status.stdout}{status.stderr}")
        for log in sorted(self.log_dir.glob("*.log")) if self.log_dir.is_dir() else []:
            lines = log.read_text(errors="replace").splitlines()[-60:]
            parts.append(f"--- {log}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        docker("rm", "-f", "-v", self.container, check=False)


# --------------------------------------------------------------------------- the layout


def _caddyfile(host: GoldenHost) -> str:
    """Debian's main Caddyfile as the runbook leaves it: global options, then only the import."""
    return (
        "{\n"
        f"\tadmin {host.caddy_admin}\n"
        f"\thttp_port {host.http_port}\n"
        f"\thttps_port {host.https_port}\n"
        "\tdefault_bind 127.0.0.1\n"
        "\tskip_install_trust\n"
        "}\n\n"
        f"import {host.caddy_dir}/sites-enabled/*\n"
    )


def _site_caddy(host: GoldenHost) -> str:
    upstream = f"127.0.0.1:{host.app_port}" if host.bind == "tcp" else f"unix/{host.app_socket}"
    return (
        f"# {host.slug}: deployed by hand following the SUM runbook\n"
        f"{host.domain} {host.www} {{\n"
        "\ttls internal\n"
        "\tencode gzip zstd\n\n"
        "\theader {\n"
        "\t\tX-Content-Type-Options nosniff\n"
        "\t\tX-Frame-Options DENY\n"
        "\t\tReferrer-Policy strict-origin-when-cross-origin\n"
        '\t\tPermissions-Policy "geolocation=(), microphone=(), camera=()"\n'
        "\t\t-Server\n"
        "\t}\n\n"
        "\thandle_path /static/* {\n"
        f"\t\troot * {host.site_dir}/static\n"
        "\t\tfile_server\n"
        "\t}\n\n"
        "\thandle_path /media/* {\n"
        f"\t\troot * {host.site_dir}/media\n"
        "\t\tfile_server\n"
        "\t}\n\n"
        f"\treverse_proxy {upstream}\n"
        "}\n"
    )


def _commands(host: GoldenHost) -> dict[str, list[str]]:
    """Each program's command, as words: gunicorn with its options one per unit line."""
    venv = host.site_dir / "venv"
    if host.bind == "tcp":
        bind = ["--bind", f"127.0.0.1:{host.app_port}", "--forwarded-allow-ips", "127.0.0.1"]
    else:  # over a unix socket gunicorn trusts X-Forwarded-Proto from whoever connects
        bind = ["--bind", "fd://0" if host.bind == "socket" else f"unix:{host.app_socket}"]
    commands = {
        "gunicorn": [f"{venv}/bin/gunicorn", "--workers", "2", *bind, "--access-logfile", "-", "acme.wsgi:application"]
    }
    if host.celery:
        commands["celery"] = [f"{venv}/bin/celery", "-A", "acme", "worker", "-l", "INFO"]
    return commands


def _exec_start(argv: list[str]) -> str:
    """ExecStart= as the golden path's templates write gunicorn's: an option (and its value) a line,
    with commented-out alternatives inside the continued line (systemd skips them)."""
    lines, index = [argv[0]], 1
    while index < len(argv):
        word = argv[index]
        takes_value = word.startswith("-") and word != "-" and index + 1 < len(argv)
        if takes_value and (argv[index + 1] == "-" or not argv[index + 1].startswith("-")):
            lines.append(f"{word} {argv[index + 1]}")
            index += 2
        else:
            lines.append(word)
            index += 1
    if "--workers" in argv:
        lines.insert(2, "# --workers 4")
    if "--bind" in argv:
        lines.insert(next(n for n, line in enumerate(lines) if line.startswith("--bind")) + 1, "; --bind 0.0.0.0:8000")
    return " \\\n    ".join(lines)


def _unit_file(host: GoldenHost, kind: str, argv: list[str]) -> str:
    after = "network.target postgresql.service redis-server.service"
    socket_lines = service_lines = ""
    if kind == "gunicorn" and host.socket_unit:
        after += f" {host.socket_unit}"
        socket_lines = f"Requires={host.socket_unit}\n"
        service_lines = "StandardInput=socket\n"  # the socket as fd 0 too, for --bind fd://0
    alternative = ""
    if kind == "gunicorn":
        other = "fd://0" if host.bind != "socket" else f"unix:/run/sum-{host.slug}/gunicorn.sock"
        alternative = f"# ExecStart={argv[0]} --workers 2 --bind {other} acme.wsgi:application\n"
    return (
        "[Unit]\n"
        f"Description=SUM site {host.slug} ({kind})\n"
        f"After={after}\n"
        f"Wants={after.split(' ', 1)[1]}\n" + socket_lines + "\n[Service]\n"
        "Type=simple\n"
        f"User={DEPLOY_USER}\n"
        "Group=www-data\n"
        "UMask=0007\n" + service_lines + f"WorkingDirectory={host.app_dir}\n"
        f"EnvironmentFile={host.env_file}\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        f"ExecStart={_exec_start(argv) if kind == 'gunicorn' else shlex.join(argv)}\n"
        + alternative
        + ("ExecReload=/bin/kill -s HUP $MAINPID\n" if kind == "gunicorn" else "")
        + "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def _socket_unit_file(host: GoldenHost) -> str:
    return (
        "[Unit]\n"
        f"Description=SUM site {host.slug} (gunicorn socket)\n\n"
        "[Socket]\n"
        f"ListenStream={host.app_socket}\n"
        f"SocketUser={DEPLOY_USER}\n"
        "SocketGroup=www-data\n"
        "SocketMode=0660\n\n"
        "[Install]\n"
        "WantedBy=sockets.target\n"
    )


def _program_name(unit: str) -> str:
    """supervisord's program for a unit: the name without .service; a socket's with -socket."""
    name = unit.removesuffix(".service")
    return name[: -len(".socket")] + "-socket" if name.endswith(".socket") else name


def _control_socket(host: GoldenHost) -> str:
    return f"/run/golden-{_program_name(host.socket_unit)}.ctl"


def _program(
    name: str,
    command: str,
    log_dir: Path,
    *,
    user: str = "root",
    autostart: bool = True,
    directory: str | None = None,
    environment: str | None = None,
    stopsignal: str = "TERM",
    priority: int = 500,
) -> str:
    lines = [
        f"[program:{name}]",
        f"command={command}",
        f"user={user}",
        f"autostart={str(autostart).lower()}",
        "autorestart=unexpected",
        "startsecs=1",
        "startretries=2",
        f"stopsignal={stopsignal}",
        "stopwaitsecs=20",
        "stopasgroup=true",
        "killasgroup=true",
        f"priority={priority}",
        "redirect_stderr=true",
        f"stdout_logfile={log_dir}/{name}.log",
        "stdout_logfile_maxbytes=5MB",
        "stdout_logfile_backups=1",
    ]
    if directory:
        lines.append(f"directory={directory}")
    if environment:
        lines.append(f"environment={environment}")
    return "\n".join(lines) + "\n\n"


def _programs_conf(host: GoldenHost) -> str:
    caddy_home = host.base / "var/lib/caddy"
    conf = _program(
        "postgresql",
        "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main "
        "-c config_file=/etc/postgresql/15/main/postgresql.conf",
        host.log_dir,
        user="postgres",
        stopsignal="INT",
        priority=10,
    )
    conf += _program(
        "redis-server",
        f"/usr/bin/redis-server --port {host.redis_port} --bind 127.0.0.1 "
        "--dir /var/lib/redis --daemonize no --protected-mode yes",
        host.log_dir,
        user="redis",
        priority=10,
    )
    conf += _program(
        "caddy",
        f"/usr/bin/caddy run --config {host.caddy_dir}/Caddyfile --adapter caddyfile",
        host.log_dir,
        priority=20,
        environment=f'HOME="{caddy_home}",XDG_DATA_HOME="{caddy_home}/.local/share",'
        f'XDG_CONFIG_HOME="{caddy_home}/.config"',
    )
    if host.socket_unit:
        # The socket unit: holds the listening socket (SocketUser/Group/Mode) for the service.
        conf += _program(
            _program_name(host.socket_unit),
            shlex.join(
                [
                    "python3",
                    "/golden/socket_unit.py",
                    "listen",
                    str(host.app_socket),
                    _control_socket(host),
                    DEPLOY_USER,
                    "www-data",
                    "0660",
                ]
            ),
            host.log_dir,
            autostart=False,
        )
    for kind, argv in _commands(host).items():
        # As systemd runs a unit: the EnvironmentFile= read as root, then User=, Group= and UMask=.
        command = ["setpriv", "--reuid", DEPLOY_USER, "--regid", "www-data", "--init-groups", "--", *argv]
        if kind == "gunicorn" and host.socket_unit:
            command = ["python3", "/golden/socket_unit.py", "receive", _control_socket(host), "--", *command]
        # Not started by supervisord itself: the runbook starts the site once it is migrated.
        conf += _program(
            host.unit(kind),
            f"sh -c 'set -a; . {host.env_file}; set +a; umask 0007; exec {shlex.join(command)}'",
            host.log_dir,
            autostart=False,
            directory=str(host.app_dir),
        )
    return conf


def _write_shim(host: GoldenHost) -> None:
    units = [host.unit(kind) for kind in _commands(host)]
    config = {
        "container": host.container,
        "docker": shutil.which("docker") or "docker",
        "state_dir": str(host.state_dir),
        "caddyfile": str(host.caddy_dir / "Caddyfile"),
        "caddy_admin": host.caddy_admin,
        "programs": ["postgresql", "redis-server", "caddy", *units]
        + ([_program_name(host.socket_unit)] if host.socket_unit else []),
        "aliases": {
            "redis": "redis-server",
            "postgresql@15-main": "postgresql",
            **({host.socket_unit: _program_name(host.socket_unit)} if host.socket_unit else {}),
        },
        # Starting a socket-activated service starts its socket first, as systemd does.
        "requires": {host.unit("gunicorn"): host.socket_unit} if host.socket_unit else {},
    }
    shim = host.bin_dir / "systemctl"
    shim.write_text(f"#!{sys.executable}\nCONFIG = {json.dumps(config)}\n" + (HERE / "systemctl.in").read_text())
    shim.chmod(0o755)


def _write_units_and_site(host: GoldenHost) -> None:
    for kind, argv in _commands(host).items():
        (host.systemd_dir / f"{host.unit(kind)}.service").write_text(_unit_file(host, kind, argv))
    if host.socket_unit:
        (host.systemd_dir / host.socket_unit).write_text(_socket_unit_file(host))
    (host.caddy_dir / "sites-enabled" / f"sum-{host.slug}.caddy").write_text(_site_caddy(host))


def _lay_out(host: GoldenHost, example_repo: Path, ref: str) -> None:
    for path in (
        host.site_dir,
        host.systemd_dir,
        host.caddy_dir / "sites-enabled",
        host.caddy_data_dir,
        host.bin_dir,
        host.log_dir,
        host.state_dir / "enabled",
        host.base / ".golden",
        host.app_socket.parent,
    ):
        path.mkdir(parents=True, exist_ok=True)
    for sub in ("static", "media", "backups"):
        (host.site_dir / sub).mkdir(exist_ok=True)
    for args in (
        ["git", "clone", "-q", str(example_repo), str(host.app_dir)],
        ["git", "-C", str(host.app_dir), "-c", "advice.detachedHead=false", "checkout", "-q", ref],
    ):
        done = _run(args, timeout=120)
        if done.returncode != 0:
            raise GoldenHostError(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    db = host.db_name
    host.env_file.write_text(
        "DJANGO_SETTINGS_MODULE=acme.settings.production\n"
        f"DJANGO_SECRET_KEY={_random(50)}\n"
        f"ALLOWED_HOSTS={host.domain}\n"
        f"DJANGO_DB_NAME={db}\n"
        f"DJANGO_DB_USER={db}\n"
        f"DJANGO_DB_PASSWORD={_random(32)}\n"
        "DJANGO_DB_HOST=127.0.0.1\n"
        f"DJANGO_DB_PORT={host.pg_port}\n"
        f"REDIS_URL=redis://127.0.0.1:{host.redis_port}/0\n"
        f"CELERY_BROKER_URL=redis://127.0.0.1:{host.redis_port}/1\n"
        f"DJANGO_STATIC_ROOT={host.site_dir}/static\n"
        f"DJANGO_MEDIA_ROOT={host.site_dir}/media\n"
        f"SENTRY_DSN={SENTRY_DSN}\n"
        "ACME_FEATURE_BANNER=on\n"
    )
    host.env_file.chmod(0o600)
    (host.caddy_dir / "Caddyfile").write_text(_caddyfile(host))
    _write_units_and_site(host)
    golden = host.base / ".golden"
    (golden / "ports.env").write_text(f"GOLDEN_PG_PORT={host.pg_port}\n")
    (golden / "programs.conf").write_text(_programs_conf(host))
    shutil.copyfile(HERE / "socket_unit.py", golden / "socket_unit.py")
    _write_shim(host)
    for unit in ("postgresql", "redis-server", "caddy"):
        (host.state_dir / "enabled" / f"{unit}.service").touch()
    for unit in host.unit_files():
        (host.state_dir / "enabled" / unit).touch()


# --------------------------------------------------------------------------- start


def _check(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise GoldenHostError(f"{what}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def _runbook(host: GoldenHost, image: str, example_repo: Path) -> None:
    mounts = [
        host.base / "srv",
        host.base / "run",
        host.caddy_dir,
        host.base / "var/lib/caddy",
        host.log_dir,
        example_repo,
    ]
    args = [
        "docker",
        "run",
        "-d",
        "--name",
        host.container,
        "--network",
        "host",
        "--label",
        LABEL,
        "--label",
        f"{OWNER_LABEL}={os.getpid()}",
        "--label",
        f"sumbg.golden.slug={host.slug}",
        "-v",
        f"{host.base / '.golden'}:/golden:ro",
    ]
    for path in mounts:
        args += ["-v", f"{path}:{path}" + (":ro" if path == example_repo else "")]
    if HOST_CA.exists():
        args += ["-v", f"{HOST_CA}:{CA_IN_CONTAINER}:ro"]
    clock = [time.monotonic()]

    def mark(step: str) -> None:
        now = time.monotonic()
        host.timings[step] = round(now - clock[0], 2)
        clock[0] = now

    _check(_run([*args, image], timeout=120), "docker run")

    def running() -> bool:
        state = docker("inspect", "--format", "{{.State.Running}}", host.container, check=False).stdout.strip()
        if state == "false":
            raise GoldenHostError("the golden-host container exited")
        return state == "true"

    _wait("the container", running, 30)
    _wait(
        "supervisord", lambda: running() and host.exec("supervisorctl", "status", timeout=30).returncode in (0, 3), 60
    )
    _wait(
        "PostgreSQL",
        lambda: host.exec("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(host.pg_port), timeout=30).returncode == 0,
        60,
    )
    _wait(
        "Redis",
        lambda: host.exec("redis-cli", "-p", str(host.redis_port), "ping", timeout=30).stdout.strip() == "PONG",
        60,
    )
    _wait("Caddy's admin API", lambda: _answers(f"http://{host.caddy_admin}/config/"), 60)
    mark("container and services")

    # The deploy user the units run as (User=deploy, Group=www-data): it writes media, and owns
    # gunicorn's socket folder (systemd's RuntimeDirectory= or tmpfiles.d on a real host).
    _check(
        host.exec(
            "useradd", "--system", "--gid", "www-data", "--no-create-home", "--shell", "/usr/sbin/nologin", DEPLOY_USER
        ),
        f"useradd {DEPLOY_USER}",
    )
    _check(
        host.exec("chown", "-R", f"{DEPLOY_USER}:www-data", str(host.site_dir / "media"), str(host.app_socket.parent)),
        "chown media and the socket folder",
    )

    env = host.env()
    user, password = env["DJANGO_DB_USER"], env["DJANGO_DB_PASSWORD"]
    host.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'", database="postgres")
    host.psql(f"CREATE DATABASE {env['DJANGO_DB_NAME']} OWNER {user}", database="postgres")
    mark("database and role")

    # --no-compile: byte-compiling Django takes longer than the rest of the install.
    pip = "../venv/bin/pip install -q --disable-pip-version-check --no-input --no-compile"
    _check(
        host.exec(
            "sh",
            "-c",
            (
                "set -e; python3 -m venv ../venv; "
                f"{pip} --no-index --find-links {WHEELHOUSE} --find-links vendor -r requirements.txt "
                f"|| {{ echo 'golden-host: offline install failed, trying PyPI' >&2; "
                f"PIP_CERT={CA_IN_CONTAINER} {pip} --find-links vendor -r requirements.txt; }}"
            ),
            workdir=str(host.app_dir),
            timeout=900,
        ),
        "python3 -m venv && pip install -r requirements.txt",
    )
    mark("venv")
    host.manage("migrate", "--noinput", check=True)
    mark("migrate")
    host.manage("collectstatic", "--noinput", check=True)
    mark("collectstatic")
    host.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
        "--email",
        f"admin@{host.domain}",
        env={"DJANGO_SUPERUSER_PASSWORD": host.admin_password},
        check=True,
    )
    mark("createsuperuser")
    _check(host.systemctl("start", *host.unit_files()), "systemctl start the site's units")
    _wait_healthy(host)
    mark("start the site, healthy through Caddy")


def _wait_healthy(host: GoldenHost) -> None:
    def healthy() -> bool:
        try:
            answer = host.request("GET", "/health/", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200 and answer.json().get("status") == "ok"

    _wait("GET /health/ through the host Caddy", healthy, 90, interval=0.5)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_golden_host(
    base: Path,
    example_repo: Path,
    *,
    slug: str = "acme-old",
    domain: str | None = None,
    ref: str = "v1.0.0",
    celery: bool = False,
    bind: str = "unix",
) -> GoldenHost:
    """Build the image if needed, lay out BASE, start the container, run the runbook steps
    (venv, migrate, collectstatic, superuser, start the site) and wait until the site answers
    through the host Caddy. On failure, removes the container and raises with its logs."""
    if bind not in BINDS:
        raise GoldenHostError(f"unknown bind {bind!r} (one of {', '.join(BINDS)})")
    started = time.monotonic()
    remove_stale_golden_hosts()
    image = ensure_image()
    image_seconds = round(time.monotonic() - started, 2)
    base = Path(base).resolve()
    example_repo = Path(example_repo).resolve()
    ports: list[int] = []
    while len(ports) < 6:
        port = free_port()
        if port not in ports:
            ports.append(port)
    http_port, https_port, app_port, pg_port, redis_port, admin_port = ports
    host = GoldenHost(
        container=f"sumbg-golden-{slug}-{secrets.token_hex(3)}",
        base=base,
        slug=slug,
        domain=domain or f"{slug}.example.test",
        site_dir=base / "srv/sum" / slug,
        systemd_dir=base / "etc/systemd/system",
        caddy_dir=base / "etc/caddy",
        caddy_data_dir=base / "var/lib/caddy/.local/share/caddy",
        bin_dir=base / "bin",
        http_port=http_port,
        https_port=https_port,
        app_port=app_port,
        pg_port=pg_port,
        redis_port=redis_port,
        admin_password=_random(20),
        caddy_admin=f"127.0.0.1:{admin_port}",
        celery=celery,
        bind=bind,
        log_dir=base / "var/log/sum",
        state_dir=base / "var/lib/systemd-sim",
    )
    host.timings["image"] = image_seconds
    try:
        _lay_out(host, example_repo, ref)
        _runbook(host, image, example_repo)
    except BaseException as exc:
        report = host.logs() if docker("inspect", host.container, check=False).returncode == 0 else ""
        host.stop()
        if isinstance(exc, Exception):
            raise GoldenHostError(f"golden host {host.container} failed to start: {exc}\n{report}") from exc
        raise
    host.startup_seconds = round(time.monotonic() - started, 1)
    return host


@pytest.fixture
def golden_host_factory(engine, example_repo, tmp_path_factory):
    """start(**kwargs) -> GoldenHost under a fresh base dir; every host started is removed at teardown."""
    hosts: list[GoldenHost] = []

    def start(**kwargs) -> GoldenHost:
        host = start_golden_host(tmp_path_factory.mktemp("golden"), example_repo, **kwargs)
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()


@dataclass(eq=False)
class Visitor(threading.Thread):
    """A visitor of the site through the host Caddy: reads on one kept-alive connection, and
    every fourth request sends the contact form on its own connection."""

    golden: GoldenHost
    samples: list = field(default_factory=list)  # (monotonic time, kind, status, error)
    acknowledged: list = field(default_factory=list)  # names of the leads the site said it saved

    def __post_init__(self) -> None:
        super().__init__(daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.golden.client(timeout=10) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                at = time.monotonic()
                if n % 4 == 0:
                    name = f"visitor {n}"
                    status, error = self.write(name)
                    if status == 302:
                        self.acknowledged.append(name)
                    self.samples.append((at, "write", status, error))
                else:
                    try:
                        status, error = client.get(self.golden.url("/")).status_code, ""
                    except httpx.HTTPError as exc:
                        status, error = 0, f"{type(exc).__name__}: {exc}"
                    self.samples.append((at, "read", status, error))
                time.sleep(0.03)

    def write(self, name: str) -> tuple[int, str]:
        """The contact form on a connection of its own: (the status of the form page, or of the POST)."""
        try:
            with self.golden.client(timeout=10) as client:
                page = client.get(self.golden.url("/contact/"))
                token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
                if page.status_code != 200 or not token:
                    return page.status_code, ""
                answer = client.post(
                    self.golden.url("/contact/"),
                    headers={"Referer": f"https://{self.golden.domain}/contact/"},
                    data={
                        "csrfmiddlewaretoken": html.unescape(token.group(1)),
                        "name": name,
                        "email": "visitor@example.com",
                        "message": "hello",
                    },
                )
                return answer.status_code, ""
        except httpx.HTTPError as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def sumbg_at_failpoint(
    host: GoldenHost, root: Path, argv: list[str], point: str, resume: Path | None = None
) -> subprocess.Popen:
    """sumbg, as an operator runs it on the runbook host, stopped at failpoint `point` (until `resume`
    exists, or for good); the caller kills it. Fails the test if sumbg ends before reaching it."""
    from .conftest import SUMBG

    env = {
        **host.path_env(),
        "SUMBG_ROOT": str(root),
        "SUMBG_FAILPOINT": point,
        **({"SUMBG_FAILPOINT_RESUME": str(resume)} if resume else {}),
    }
    proc = subprocess.Popen(
        [str(SUMBG), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    for line in proc.stderr:
        if f"failpoint {point} reached" in line:
            return proc
    pytest.fail(f"sumbg never reached the failpoint {point}: exit {proc.wait()}")
