"""The edge Caddy: config rendered from templates/caddy, validated before it
replaces anything, reloaded only when its structure changes; traffic moves by
atomically rewriting per-site state files Caddy reads on every request."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jinja2

from sumbg import naming
from sumbg.adapters.docker import ComposeProject, Engine
from sumbg.config import CaddySettings, EdgeSettings, HostConfig, SiteConfig
from sumbg.errors import CaddyError, tail
from sumbg.lock import SiteLock
from sumbg.naming import METRICS_HOST
from sumbg.util import atomic_write, poll

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "caddy"
PREVIEW_PORT_IN_CONTAINER = 8081
# `{file.*}` arrived in 2.8.0 but only trims the trailing newline from 2.9.0 (caddy PR #6411);
# before that every proxied request dials "acme-blue\n-web" and fails (templates/caddy/NOTES.md).
MIN_CADDY_VERSION = (2, 9, 0)
CONTAINER_CADDY_DIR = "/etc/caddy"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)


def _checked_domain(domain: str) -> str:
    # Rendering never trusts its caller: only a hostname may reach a Caddyfile.
    return naming.validate_domain(domain)


ACME_ROOT_FILE = "acme-ca-root.pem"  # a copy of [edge] acme_ca_root, beside the Caddyfile


def render_main(edge: EdgeSettings) -> str:
    return _env.get_template("Caddyfile.j2").render(
        tls=edge.tls,
        acme_email=edge.acme_email,
        admin="localhost:2019",
        acme_ca=edge.acme_ca,
        acme_ca_root=f"{CONTAINER_CADDY_DIR}/{ACME_ROOT_FILE}" if edge.acme_ca_root else "",
        preview_port=PREVIEW_PORT_IN_CONTAINER,
        metrics_host=METRICS_HOST,
    )


def render_site(
    slug: str, domain: str, edge: EdgeSettings, *, aliases: tuple[str, ...] = (), caddy: CaddySettings | None = None
) -> str:
    return _env.get_template("site.caddy.j2").render(
        slug=naming.validate_slug(slug),
        domain=_checked_domain(domain),
        tls="off" if caddy and caddy.behind_proxy else edge.tls,
        aliases=[_checked_domain(alias) for alias in aliases],
        caddy=caddy or CaddySettings(),
        preview_port=PREVIEW_PORT_IN_CONTAINER,
    )


_TLS_LINE = re.compile(r"^tls [^{}\"\n]+$")


def _host_site_context(
    slug: str, domains: tuple[str, ...], tls_lines: tuple[str, ...], kept: str
) -> dict[str, str | list[str]]:
    return {
        "slug": naming.validate_slug(slug),
        "domains": [_checked_domain(d) for d in domains],
        "tls_lines": [line for line in tls_lines if _TLS_LINE.fullmatch(line)],
        "kept": kept,
    }


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_HEADER_VALUE = re.compile(r"[^\\\x00-\x1f\x7f]*")


class HeaderOperation(Protocol):
    """One response header operation of a Caddy `header` directive (as adoption reads them)."""

    @property
    def op(self) -> str: ...  # "set", "add" or "delete"
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> str: ...
    @property
    def deferred(self) -> bool: ...


def _header_blocks(headers: Sequence[HeaderOperation]) -> list[tuple[bool, list[str]]]:
    """`header` blocks keeping a site's response header operations (objects with op, name, value,
    deferred): names are HTTP tokens, values quoted, so nothing can open or close a block."""
    blocks: dict[bool, list[str]] = {}
    for header in headers:
        if not _HEADER_NAME.fullmatch(header.name) or not _HEADER_VALUE.fullmatch(header.value):
            raise CaddyError(f"refusing to render the header {header.name!r}")
        value = '"' + header.value.replace('"', '\\"') + '"'
        line = {"set": f"{header.name} {value}", "add": f"+{header.name} {value}", "delete": f"-{header.name}"}
        blocks.setdefault(bool(header.deferred), []).append(line[header.op])
    return sorted(blocks.items())


def render_host_proxy(
    slug: str,
    domains: tuple[str, ...],
    tls_lines: tuple[str, ...],
    *,
    edge_address: str,
    kept: str,
    since: str,
    encodings: tuple[str, ...] = (),
    headers: Sequence[HeaderOperation] = (),
) -> str:
    """A runbook host Caddy's site file once sumbg serves the site: TLS there, and the site's own
    compression and response headers (`encodings`, `headers`), the rest at the edge."""
    if not re.fullmatch(r"[0-9.]+:[0-9]+|\[[0-9a-f:]+\]:[0-9]+", edge_address):
        raise CaddyError(f"refusing to render a proxy to {edge_address!r}")
    if not all(re.fullmatch(r"[a-z0-9]+", encoding) for encoding in encodings):
        raise CaddyError(f"refusing to render the encodings {encodings!r}")
    return _env.get_template("host-proxy.caddy.j2").render(
        **_host_site_context(slug, domains, tls_lines, kept),
        edge_address=edge_address,
        since=since,
        encodings=list(encodings),
        header_blocks=_header_blocks(headers),
    )


def render_host_maintenance(slug: str, domains: tuple[str, ...], tls_lines: tuple[str, ...], *, kept: str) -> str:
    """The runbook host Caddy's site file while the last writes are copied: 503 with Retry-After."""
    return _env.get_template("host-maintenance.caddy.j2").render(**_host_site_context(slug, domains, tls_lines, kept))


def render_site_config(site: SiteConfig, edge: EdgeSettings) -> str:
    return render_site(site.slug, site.domain, edge, aliases=site.aliases, caddy=site.caddy)


def render_maintenance(domain: str) -> str:
    return _env.get_template("maintenance.html.j2").render(domain=_checked_domain(domain))


@dataclass(frozen=True)
class EdgeFiles:
    """The host side of /etc/caddy in the edge container."""

    dir: Path

    @property
    def main(self) -> Path:
        return self.dir / "Caddyfile"

    def site(self, slug: str) -> Path:
        return self.dir / "sites" / f"{slug}.caddy"

    def maintenance_page(self, slug: str) -> Path:
        return self.dir / "maintenance" / f"{slug}.html"

    def state(self, slug: str, name: str) -> Path:
        return self.dir / "state" / slug / name

    def read_colour(self, slug: str, which: str) -> str | None:
        try:
            value = self.state(slug, which).read_text().strip()
        except FileNotFoundError:
            return None
        return value if value in naming.COLOURS else None

    def write_colour(self, slug: str, which: str, colour: str) -> None:
        if colour not in naming.COLOURS:
            raise ValueError(colour)
        atomic_write(self.state(slug, which), f"{colour}\n")

    def maintenance_on(self, slug: str) -> bool:
        return self.state(slug, "maintenance").exists()

    def set_maintenance(self, slug: str, on: bool) -> None:
        flag = self.state(slug, "maintenance")
        if on:
            atomic_write(flag, "on\n")
        else:
            flag.unlink(missing_ok=True)


class Edge:
    def __init__(self, host: HostConfig, engine: Engine) -> None:
        self.host = host
        self.engine = engine
        self.files = EdgeFiles(host.caddy_dir)
        self.container = host.edge.container

    def lock(self) -> SiteLock:
        return SiteLock(self.host.caddy_dir / ".lock", "the edge Caddy configuration")

    def desired_files(self, sites: dict[str, SiteConfig]) -> dict[Path, str]:
        """Every structural file for the given {slug: site configuration} sites."""
        files = {self.files.main: render_main(self.host.edge)}
        for slug, site in sites.items():
            files[self.files.site(slug)] = render_site_config(site, self.host.edge)
            files[self.files.maintenance_page(slug)] = render_maintenance(site.domain)
        return files

    def pending_changes(self, sites: dict[str, SiteConfig]) -> dict[Path, tuple[str | None, str]]:
        changes = {}
        for path, body in self.desired_files(sites).items():
            current = path.read_text() if path.exists() else None
            if current != body:
                changes[path] = (current, body)
        return changes

    def running(self) -> bool:
        state = self.engine.container(self.container)
        if state is None or not state.running:
            return False
        owner = state.labels.get("sumbg.root")
        if owner and owner != str(self.host.root):
            raise CaddyError(
                f"the edge Caddy on this host belongs to SUMBG_ROOT={owner}, not {self.host.root}; "
                "one host has one edge (stop the other or use the same root)"
            )
        return True

    def ensure_up(self) -> None:
        """Start the edge if it is not running (with the config already on disk), on every site's link."""
        address = self.engine.ensure_edge_network(self.host.edge.name)
        if self.running():
            self.join_site_links()
            return
        for slug_dir in (self.host.caddy_dir / "sites", self.host.caddy_dir / "state", self.host.www_dir):
            slug_dir.mkdir(parents=True, exist_ok=True)
        self.install_acme_root()
        if not self.files.main.exists():
            atomic_write(self.files.main, render_main(self.host.edge))
        self.engine.compose_up(edge_project(self.host, address), before_start=self.join_site_links)
        if not poll(lambda: self.engine.exec(self.container, ["caddy", "version"]).returncode == 0, 30):
            raise CaddyError("the edge Caddy did not start", output_tail=self.engine.logs(self.container))
        self.check_version()

    def recreate(self) -> None:
        """Start the edge afresh with the host's current settings (new published ports): every
        site on it is unreachable until Caddy is up again, so only `sumbg takeover` does this."""
        address = self.engine.ensure_edge_network(self.host.edge.name)
        self.engine.compose_up(edge_project(self.host, address), force_recreate=True, before_start=self.join_site_links)
        if not poll(lambda: self.engine.exec(self.container, ["caddy", "version"]).returncode == 0, 30):
            raise CaddyError("the edge Caddy did not start", output_tail=self.engine.logs(self.container))

    def join_site_links(self) -> list[str]:
        """The edge container on every site's link to it (sumbg.site.addresses), each at the address the
        link reserves for it: the edge's Compose file names only its own network, so a new container
        (recreate) or one that missed a site added meanwhile joins them here."""
        return self.engine.join_edge_links(self.host.edge.name, self.container)

    def import_storage(self, source: Path) -> list[str]:
        """Copy another Caddy's certificates, ACME accounts and local CA (its data directory) into
        the edge's storage, so the edge serves what that Caddy had and re-issues nothing."""
        parts = [name for name in ("certificates", "acme", "pki") if (source / name).is_dir()]
        if not parts:
            return []
        volume = f"{self.host.edge.name}-caddy-data"
        script = 'mkdir -p /data/caddy && for part in "$@"; do cp -a "/from/$part" /data/caddy/; done'
        result = self.engine.run_oneoff(
            self.host.images.caddy,
            ["sh", "-c", script, "sh", *parts],
            volumes=[(str(source), "/from", "ro"), (volume, "/data", "rw")],
        )
        if result.returncode != 0:
            raise CaddyError(
                f"copying {', '.join(parts)} from {source} into the edge's storage failed",
                output_tail=tail(result.output),
            )
        return parts

    def check_version(self) -> str:
        result = self.engine.exec(self.container, ["caddy", "version"])
        match = re.search(r"v(\d+)\.(\d+)\.(\d+)", result.stdout)
        if not match:
            raise CaddyError(f"cannot tell the edge Caddy's version: {result.output[:200]}")
        version = tuple(int(part) for part in match.groups())
        if version < MIN_CADDY_VERSION:
            wanted = ".".join(map(str, MIN_CADDY_VERSION))
            raise CaddyError(
                f"the edge runs Caddy {match.group(0)}; sumbg needs {wanted} or newer for per-request "
                f"traffic switching ({{file.*}} placeholders); set [images] caddy in sumbg.toml"
            )
        return match.group(0)

    def install_acme_root(self) -> None:
        """The edge container sees only the Caddy folder: [edge] acme_ca_root is copied into it."""
        if not self.host.edge.acme_ca_root:
            return
        body = Path(self.host.edge.acme_ca_root).read_bytes()
        target = self.host.caddy_dir / ACME_ROOT_FILE
        if not target.exists() or target.read_bytes() != body:
            atomic_write(target, body)

    def certificate_failure(self, domains: tuple[str, ...], since: float) -> str | None:
        """Caddy's error for the first of `domains` it could not get a certificate for, logged
        since `since` (Unix time), or None."""
        for line in self.engine.logs(self.container, 400).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(entry, dict)
                and entry.get("level") == "error"
                and entry.get("logger") == "tls.obtain"
                and entry.get("identifier") in domains
                and float(entry.get("ts") or 0) >= since
            ):
                return f"{entry['identifier']}: {entry.get('msg')}: {entry.get('error') or ''}".rstrip(": ")
        return None

    def validate(self, changes: dict[Path, tuple[str | None, str]]) -> None:
        """Validate the whole config as it would be after `changes`, without touching the live files."""
        staging = self.host.caddy_dir / ".staging"
        if staging.exists():
            shutil.rmtree(staging)
        (staging / "sites").mkdir(parents=True)
        if self.files.main.exists():
            shutil.copy2(self.files.main, staging / "Caddyfile")
        for existing in (self.host.caddy_dir / "sites").glob("*.caddy"):
            shutil.copy2(existing, staging / "sites" / existing.name)
        for path, (_, body) in changes.items():
            relative = path.relative_to(self.host.caddy_dir)
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            (staging / relative).write_text(body)
        argv = ["caddy", "validate", "--config", f"{CONTAINER_CADDY_DIR}/.staging/Caddyfile", "--adapter", "caddyfile"]
        try:
            if self.running():
                result = self.engine.exec(self.container, argv)
            else:
                result = self.engine.run_oneoff(
                    self.host.images.caddy,
                    argv,
                    volumes=[(str(self.host.caddy_dir), CONTAINER_CADDY_DIR, "ro")],
                )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if result.returncode != 0:
            raise CaddyError(
                "Caddy rejected the rendered configuration",
                command=argv,
                returncode=result.returncode,
                output_tail=tail(result.output, 10),
            )

    def reload(self) -> None:
        argv = ["caddy", "reload", "--config", f"{CONTAINER_CADDY_DIR}/Caddyfile", "--adapter", "caddyfile"]
        result = self.engine.exec(self.container, argv)
        if result.returncode != 0:
            raise CaddyError(
                "caddy reload failed", command=argv, returncode=result.returncode, output_tail=tail(result.output, 10)
            )

    def apply(self, sites: dict[str, SiteConfig], *, reload: bool = True) -> list[str]:
        """Bring the structural config to what `sites` needs: validate, write, reload.

        Returns the files that changed (empty: nothing to do, no reload). If the
        reload fails, the previous files are put back and reloaded. Without `reload`,
        the files wait on disk for the edge's next start (`recreate`).
        """
        self.install_acme_root()
        changes = self.pending_changes(sites)
        if not changes:
            return []
        self.validate(changes)
        for path, (_, body) in changes.items():
            atomic_write(path, body)
        if reload and self.running():
            try:
                self.reload()
            except CaddyError:
                self.restore(changes)
                raise
        return [str(path.relative_to(self.host.caddy_dir)) for path in changes]

    def restore(self, changes: dict[Path, tuple[str | None, str]]) -> None:
        for path, (before, _) in changes.items():
            if before is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, before)
        if self.running():
            self.reload()

    def remove_site(self, slug: str) -> None:
        for path in (self.files.site(slug), self.files.maintenance_page(slug)):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.host.caddy_dir / "state" / slug, ignore_errors=True)
        if self.running():
            self.reload()


def edge_project(host: HostConfig, address: str | None = None) -> ComposeProject:
    """`address`: the edge Caddy's reserved address on the edge network, if it has one."""
    return ComposeProject(
        name=host.edge.name,
        files=("edge.yml",) + (("edge.fixed-ip.yml",) if address else ()),
        env_file=host.caddy_dir / ".edge.env",
        variables=(
            ("SUMBG_EDGE_NAME", host.edge.name),
            ("SUMBG_CADDY_IMAGE", host.images.caddy),
            ("SUMBG_EDGE_BIND", host.edge.bind),
            ("SUMBG_HTTP_PORT", str(host.edge.http_port)),
            ("SUMBG_HTTPS_PORT", str(host.edge.https_port)),
            ("SUMBG_PREVIEW_PORT", str(host.edge.preview_port)),
            ("SUMBG_CADDY_DIR", str(host.caddy_dir)),
            ("SUMBG_WWW_DIR", str(host.www_dir)),
            ("SUMBG_ROOT_DIR", str(host.root)),
            ("SUMBG_EDGE_IP", address or ""),
        ),
    )


class OneOffCaddy:
    """Caddy as sumbg ships it (the edge's image), run once in a throwaway container to read
    another Caddy's configuration (a runbook host's, by `caddy adapt`): whatever Caddy the host
    runs, the reading is the same. A `CaddyRunner` (sumbg/ops/seams.py)."""

    def __init__(self, engine: Engine, image: str) -> None:
        self.engine = engine
        self.image = image

    def __call__(self, script: str, args: list[str], scratch: Path, mount_at: Path) -> tuple[int, str, str]:
        """`sh -c script sh args...` with `scratch` mounted read-write at `mount_at`."""
        result = self.engine.run_oneoff(
            self.image, ["sh", "-c", script, "sh", *args], volumes=[(str(scratch), str(mount_at), "rw")]
        )
        return result.returncode, result.stdout, result.stderr
