"""`sumbg doctor`: is this host ready for sumbg, and are its sites healthy from the outside?

One table, each line `ok`, `warn` or `fail` with the fix; any `fail` exits 1. `gather` reads the
facts (the engine and Compose, the edge Caddy, its ports, free disk, the kernel's clock, each
site's DNS, the certificates the edge serves, the backups' age, interrupted operations and
disagreements); `decide` turns them into findings with one pure check per concern, so every
decision is unit-tested on facts alone.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sumbg.adapters import hostinfo, probe
from sumbg.adapters.docker import EngineVersions
from sumbg.adapters.hostinfo import ClockState, Resolution
from sumbg.adapters.probe import ServedCertificate
from sumbg.errors import SumbgError
from sumbg.lock import is_held
from sumbg.ops.context import Context
from sumbg.ops.offsite import backup_status
from sumbg.ops.status import network_problems, site_status
from sumbg.site import retention
from sumbg.site.site import Site

OK, WARN, FAIL = "ok", "warn", "fail"
CERTIFICATE_WARN_DAYS = 14.0
MIN_ENGINE = (20, 10)  # the oldest engine sumbg is tested on (Debian 12's docker.io)
MIN_COMPOSE = (2, 20)  # older Compose v2 releases lack options sumbg passes (up --wait, --pull never)


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    level: str
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "check": self.check,
            "subject": self.subject,
            "level": self.level,
            "detail": self.detail,
            "fix": self.fix,
        }


# ---------------------------------------------------------------- the facts


@dataclass(frozen=True)
class PortFacts:
    role: str  # http, https or preview
    address: str
    port: int
    held_by_edge: bool
    in_use: bool | None  # None: this process may not tell


@dataclass(frozen=True)
class DiskFacts:
    label: str
    path: str
    free_bytes: int


@dataclass(frozen=True)
class SiteFacts:
    slug: str
    live: bool
    domains: dict[str, Resolution]
    certificates: dict[str, tuple[ServedCertificate | None, str]] = field(default_factory=dict)
    tls_note: str = ""  # why its certificates were not read ("" when they were)
    newest_backup: float | None = None  # Unix time of the last good backup here
    backup_problems: tuple[str, ...] = ()  # as `status` says them: too old ([backup] max_age), or failed
    interrupted: str = ""  # the interrupted operation, described
    problems: tuple[str, ...] = ()  # records, Caddy and containers disagree
    records_checked: bool = True
    worker_problem: str = ""  # the live colour's worker is down or restarting (as `status` says it)


@dataclass(frozen=True)
class HostFacts:
    versions: EngineVersions
    engine_error: str = ""
    edge_container: str = "sum-edge-caddy"
    edge_running: bool = False
    edge_version: str = ""
    edge_error: str = ""
    edge_fix: str = ""  # what to do about edge_error
    ports: tuple[PortFacts, ...] = ()
    disks: tuple[DiskFacts, ...] = ()
    min_free_gb: float = 2.0
    clock: ClockState = ClockState(None)
    addresses: tuple[str, ...] = ()  # what the sites' domains must resolve to
    addresses_from: str = ""
    tls: str = "auto"
    sites: tuple[SiteFacts, ...] = ()
    invalid_sites: tuple[tuple[str, str], ...] = ()  # (slug, the error)
    network_problems: tuple[str, ...] | None = None  # how networks stray from the address plan (None: not checked)


# ---------------------------------------------------------------- the decisions (pure)


def _version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def check_engine(facts: HostFacts) -> list[Finding]:
    if facts.engine_error:
        return [
            Finding(
                "engine",
                "host",
                FAIL,
                f"the Docker engine does not answer: {facts.engine_error}",
                "start dockerd (`make setup` starts one on a machine without systemd; else `systemctl start docker`)",
            )
        ]
    version = _version(facts.versions.engine)
    if version is not None and version < MIN_ENGINE:
        return [
            Finding(
                "engine",
                "host",
                WARN,
                f"Docker Engine {facts.versions.engine}, older than 20.10 (the oldest sumbg is tested on)",
                "upgrade Docker",
            )
        ]
    return [Finding("engine", "host", OK, f"Docker Engine {facts.versions.engine or 'of unknown version'}")]


def check_compose(facts: HostFacts) -> list[Finding]:
    if facts.engine_error:
        return []
    version = _version(facts.versions.compose)
    install = "install the Compose v2 plugin (Debian: docker-compose-plugin; here `make setup` adds it)"
    if version is None:
        return [
            Finding("compose", "host", FAIL, "Docker Compose v2 does not answer (`docker compose version`)", install)
        ]
    if version < (2, 0):
        return [Finding("compose", "host", FAIL, f"{facts.versions.compose}: sumbg needs Compose v2", install)]
    if version < MIN_COMPOSE:
        return [
            Finding(
                "compose",
                "host",
                WARN,
                f"{facts.versions.compose}: older than 2.20, it lacks options sumbg passes",
                install.replace("install", "upgrade", 1),
            )
        ]
    return [Finding("compose", "host", OK, facts.versions.compose)]


def check_edge(facts: HostFacts) -> list[Finding]:
    if facts.engine_error:
        return []
    name = f"edge {facts.edge_container}"
    if facts.edge_error:
        return [Finding("edge", name, FAIL, facts.edge_error, facts.edge_fix)]
    if not facts.edge_running:
        if any(site.live for site in facts.sites):
            return [Finding("edge", name, FAIL, "not running: no site is served", "`sumbg apply` starts it")]
        return [Finding("edge", name, WARN, "not running yet (no site is live)", "`sumbg init` starts it")]
    return [Finding("edge", name, OK, f"Caddy {facts.edge_version} (2.9 or newer)")]


def check_ports(facts: HostFacts) -> list[Finding]:
    found = []
    for port in facts.ports:
        subject = f"{port.role} {port.address}:{port.port}"
        if port.held_by_edge:
            found.append(Finding("port", subject, OK, "held by the edge"))
        elif port.in_use:
            found.append(
                Finding(
                    "port",
                    subject,
                    FAIL,
                    "held by another program: the edge cannot publish it",
                    f"`ss -ltnp 'sport = :{port.port}'` names it; stop it (a runbook host's Caddy: adopt its "
                    "sites, then `sumbg takeover`), or set another port in sumbg.toml [edge]",
                )
            )
        elif port.in_use is None:
            found.append(Finding("port", subject, WARN, "cannot tell whether it is free", "run `sumbg doctor` as root"))
        elif facts.edge_running:
            found.append(
                Finding(
                    "port",
                    subject,
                    WARN,
                    "free, but the running edge does not publish it (it was started with other ports)",
                    f"start the edge afresh: `docker rm -f {facts.edge_container} && sumbg apply` "
                    "(its sites are unreachable for a few seconds)",
                )
            )
        else:
            found.append(Finding("port", subject, OK, "free (the edge publishes it when it starts)"))
    return found


def check_disk(facts: HostFacts) -> list[Finding]:
    found = []
    for disk in facts.disks:
        free = disk.free_bytes / 1024**3
        subject = f"{disk.label} {disk.path}"
        fix = (
            "free some space: `docker image prune` (images no colour uses), old backups in <slug>/backups/, "
            "or lower preflight.min_free_gb"
        )
        if free < facts.min_free_gb:
            detail = f"{free:.1f} GB free: an upgrade refuses under {facts.min_free_gb:g} GB (preflight.min_free_gb)"
            found.append(Finding("disk", subject, FAIL, detail, fix))
        elif free < 2 * facts.min_free_gb:
            detail = f"{free:.1f} GB free: close to the {facts.min_free_gb:g} GB an upgrade needs"
            found.append(Finding("disk", subject, WARN, detail, fix))
        else:
            found.append(Finding("disk", subject, OK, f"{free:.1f} GB free"))
    return found


def check_clock(facts: HostFacts) -> list[Finding]:
    clock = facts.clock
    fix = (
        "run an NTP client: `apt-get install chrony` (it runs without systemd: `chronyd`); TLS certificates, "
        "ACME and the times in the history depend on the clock"
    )
    if clock.synchronised is None:
        return [Finding("clock", "host", WARN, f"cannot tell whether the clock is in sync ({clock.how})", fix)]
    if not clock.synchronised:
        return [
            Finding(
                "clock",
                "host",
                WARN,
                "the kernel says no NTP client keeps the clock in sync (adjtimex: unsynchronised)",
                fix,
            )
        ]
    error = f"; maximum error {clock.max_error_seconds * 1000:.0f} ms" if clock.max_error_seconds is not None else ""
    return [Finding("clock", "host", OK, f"kept in sync by an NTP client (adjtimex{error})")]


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def _some(addresses: tuple[str, ...], most: int = 3) -> str:
    shown = ", ".join(addresses[:most])
    return shown + (f" (and {len(addresses) - most} more)" if len(addresses) > most else "")


def check_dns(site: SiteFacts, addresses: tuple[str, ...], addresses_from: str) -> list[Finding]:
    found = []
    for domain, resolution in site.domains.items():
        subject = f"{site.slug}: {domain}"
        if not resolution.addresses:
            found.append(
                Finding(
                    "dns",
                    subject,
                    FAIL,
                    f"does not resolve ({resolution.error or 'no A or AAAA record'})",
                    f"add an A (and AAAA) record for {domain} pointing at "
                    f"{_some(addresses) if addresses else 'this host'}",
                )
            )
            continue
        resolved = ", ".join(resolution.addresses)
        if not addresses:
            found.append(
                Finding(
                    "dns",
                    subject,
                    WARN,
                    f"resolves to {resolved}; this host's addresses are unknown",
                    "list them in sumbg.toml [doctor] addresses",
                )
            )
            continue
        here = [a for a in resolution.addresses if any(_same_address(a, b) for b in addresses)]
        elsewhere = [a for a in resolution.addresses if a not in here]
        if not here:
            found.append(
                Finding(
                    "dns",
                    subject,
                    FAIL,
                    f"resolves to {resolved}, not to this host ({_some(addresses)}, from {addresses_from})",
                    f"point {domain}'s A/AAAA records at {_some(addresses)}; behind NAT, list the public "
                    "address in sumbg.toml [doctor] addresses",
                )
            )
        elif elsewhere:
            found.append(
                Finding(
                    "dns",
                    subject,
                    WARN,
                    f"resolves to this host ({', '.join(here)}) and also to {', '.join(elsewhere)}",
                    "remove the records that point elsewhere: some visitors reach another host",
                )
            )
        else:
            found.append(Finding("dns", subject, OK, f"resolves to this host ({resolved})"))
    return found


def check_certificates(site: SiteFacts, now: dt.datetime, tls: str, edge_container: str) -> list[Finding]:
    if site.tls_note:
        return [Finding("certificate", site.slug, OK, f"not checked: {site.tls_note}")]
    logs = f"`docker logs {edge_container}` (Caddy's tls.obtain lines)"
    found = []
    for domain, (certificate, error) in site.certificates.items():
        subject = f"{site.slug}: {domain}"
        if certificate is None:
            found.append(
                Finding(
                    "certificate",
                    subject,
                    FAIL,
                    f"the edge serves no certificate for it: {error}",
                    f"see {logs}; for ACME, the name must resolve here and ports 80/443 be reachable",
                )
            )
            continue
        days = (certificate.not_after - now).total_seconds() / 86400
        when = f"{certificate.not_after:%Y-%m-%d %H:%MZ}"
        if days < 0:
            found.append(
                Finding(
                    "certificate",
                    subject,
                    FAIL,
                    f"expired on {when} (issuer {certificate.issuer})",
                    f"Caddy renews certificates by itself: see {logs} for why it could not",
                )
            )
        elif days < CERTIFICATE_WARN_DAYS and tls != "internal":  # Caddy's own CA issues 12-hour ones
            found.append(
                Finding(
                    "certificate",
                    subject,
                    WARN,
                    f"expires in {days:.1f} days ({when}, issuer {certificate.issuer})",
                    f"Caddy renews a certificate when a third of its life is left; if it does not, see {logs}",
                )
            )
        else:
            found.append(
                Finding("certificate", subject, OK, f"issuer {certificate.issuer}, expires {when} ({days:.0f} days)")
            )
    return found


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def check_backups(site: SiteFacts, now: dt.datetime) -> list[Finding]:
    """What `status` holds a site's backups to ([backup] max_age, the last one's outcome), as warnings."""
    if not site.live:
        return []
    fix = (
        f"`sumbg backup {site.slug}` (`sumbg history {site.slug}` says why one failed); "
        "`sumbg schedule install` runs `sumbg backup --all` daily"
    )
    if site.backup_problems:
        return [Finding("backups", site.slug, WARN, problem, fix) for problem in site.backup_problems]
    if site.newest_backup is None:
        return [Finding("backups", site.slug, WARN, "no backup yet", fix)]
    age = now.timestamp() - site.newest_backup
    return [Finding("backups", site.slug, OK, f"the newest is {_age(max(age, 0))} old")]


def check_network(facts: HostFacts) -> list[Finding]:
    """The address plan ([network] pool): sites outside it keep working (an older sumbg made them), so a
    warning, with where to read what to do."""
    if facts.network_problems is None:
        return []
    fix = "docs/networks.md says what each one means (`sumbg apply` puts the edge back on every link)"
    if facts.network_problems:
        return [Finding("network", "host", WARN, problem, fix) for problem in facts.network_problems]
    return [Finding("network", "host", OK, "every site's networks follow the address plan")]


def check_worker(site: SiteFacts) -> list[Finding]:
    if not site.worker_problem:
        return []
    return [Finding("worker", site.slug, FAIL, site.worker_problem, f"`sumbg logs {site.slug} --worker` says why")]


def check_records(site: SiteFacts) -> list[Finding]:
    recover = f"`sumbg recover {site.slug}`"
    found = []
    if site.interrupted:
        found.append(Finding("operation", site.slug, FAIL, site.interrupted, recover))
    found.extend(Finding("agreement", site.slug, FAIL, problem, recover) for problem in site.problems)
    if found:
        return found
    if not site.records_checked:
        return [Finding("agreement", site.slug, WARN, "not checked: the Docker engine does not answer")]
    if not site.live:
        return [
            Finding(
                "agreement",
                site.slug,
                WARN,
                "not live: its init never finished",
                f"run `sumbg init {site.slug} ...` again (it keeps site.toml)",
            )
        ]
    return [Finding("agreement", site.slug, OK, "records, Caddy and containers agree")]


def decide(facts: HostFacts, now: dt.datetime) -> list[Finding]:
    """Every finding, host first, then each site (pure: unit-tested)."""
    host_checks: tuple[Callable[[HostFacts], list[Finding]], ...] = (
        check_engine,
        check_compose,
        check_edge,
        check_ports,
        check_disk,
        check_clock,
        check_network,
    )
    found = [finding for check in host_checks for finding in check(facts)]
    for slug, error in facts.invalid_sites:
        found.append(Finding("config", slug, FAIL, error, f"fix {slug}/site.toml"))
    if facts.tls == "off":
        found.append(
            Finding("certificate", "host", OK, "not checked: [edge] tls = off (TLS ends in front of the edge)")
        )
    for site in facts.sites:
        found.extend(check_dns(site, facts.addresses, facts.addresses_from))
        if facts.tls != "off":
            found.extend(check_certificates(site, now, facts.tls, facts.edge_container))
        found.extend(check_backups(site, now))
        found.extend(check_worker(site))
        found.extend(check_records(site))
    return found


def report(findings: list[Finding]) -> dict[str, Any]:
    counts = {level: sum(1 for f in findings if f.level == level) for level in (OK, WARN, FAIL)}
    return {"ok": counts[FAIL] == 0, "counts": counts, "checks": [f.to_json() for f in findings]}


# ---------------------------------------------------------------- the facts, gathered


def doctor(ctx: Context) -> dict[str, Any]:
    return report(decide(gather(ctx), dt.datetime.now(dt.UTC)))


def expected_addresses(ctx: Context) -> tuple[tuple[str, ...], str]:
    """What the sites' domains must resolve to, and where that came from."""
    if ctx.host.doctor_addresses:
        return ctx.host.doctor_addresses, "sumbg.toml [doctor] addresses"
    bind = ctx.host.edge.bind
    if bind not in ("0.0.0.0", "::", ""):
        return (bind,), "[edge] bind"
    found = []
    for address in hostinfo.interface_addresses():
        parsed = ipaddress.ip_address(address)
        if not (parsed.is_loopback or parsed.is_link_local):
            found.append(address)
    # Public addresses first: they are the ones a domain should name.
    found.sort(key=lambda a: (ipaddress.ip_address(a).is_private, a))
    return tuple(found), "this host's interfaces"


def gather(ctx: Context) -> HostFacts:
    host = ctx.host
    engine_error = ""
    try:
        ctx.engine.ping()
    except SumbgError as exc:
        engine_error = exc.message
    versions = ctx.engine.versions() if not engine_error else EngineVersions("", "")
    edge_running, edge_version, edge_error, edge_fix = False, "", "", ""
    published: list[int] = []
    if not engine_error:
        try:
            edge_running = ctx.edge.running()
        except SumbgError as exc:  # another root's edge
            edge_error, edge_fix = exc.message, "one host has one edge: use that root, or stop its edge"
        if edge_running:
            try:
                edge_version = ctx.edge.check_version()
            except SumbgError as exc:
                edge_error = exc.message
                edge_fix = (
                    f"set sumbg.toml [images] caddy to Caddy 2.9 or newer (caddy:2), then "
                    f"`docker rm -f {host.edge.container} && sumbg apply`"
                )
            published = ctx.engine.published_ports(host.edge.container)
    ports = tuple(
        PortFacts(
            role,
            address,
            port,
            port in published,
            None if port in published else hostinfo.port_in_use(address, port),
        )
        for role, address, port in (
            ("http", host.edge.bind, host.edge.http_port),
            ("https", host.edge.bind, host.edge.https_port),
            ("preview", "127.0.0.1", host.edge.preview_port),
        )
    )
    places = [("root", host.root)]
    if not engine_error:
        try:
            places.append(("Docker data root", ctx.engine.data_root()))
        except SumbgError:
            pass
    disks = tuple(
        DiskFacts(label, str(path), free) for label, path in places if (free := hostinfo.free_bytes(path)) is not None
    )
    addresses, addresses_from = expected_addresses(ctx)
    sites, invalid = [], []
    for path in sorted(host.root.glob("*/site.toml")):
        slug = path.parent.name
        try:
            site = ctx.site(slug)
        except SumbgError as exc:
            invalid.append((slug, exc.message))
            continue
        sites.append(_site_facts(ctx, site, engine_ok=not engine_error, edge_running=edge_running))
    return HostFacts(
        versions=versions,
        engine_error=engine_error,
        edge_container=host.edge.container,
        edge_running=edge_running,
        edge_version=edge_version,
        edge_error=edge_error,
        edge_fix=edge_fix,
        ports=ports,
        disks=disks,
        min_free_gb=host.min_free_gb,
        clock=hostinfo.clock_state(),
        addresses=addresses,
        addresses_from=addresses_from,
        tls=host.edge.tls,
        sites=tuple(sites),
        invalid_sites=tuple(invalid),
        network_problems=None if engine_error else tuple(network_problems(ctx)),
    )


def _site_facts(ctx: Context, site: Site, *, engine_ok: bool, edge_running: bool) -> SiteFacts:
    state = site.records.load_state()
    live = bool(state.live)
    domains = {domain: hostinfo.resolve(domain) for domain in site.config.domains}
    certificates: dict[str, tuple[ServedCertificate | None, str]] = {}
    tls_note = ""
    edge = ctx.host.edge
    if site.config.caddy.behind_proxy:
        tls_note = "TLS ends at the proxy in front of the edge (caddy.behind_proxy)"
    elif not live:
        tls_note = "the site is not live"
    elif not edge_running:
        tls_note = "the edge is not running"
    elif edge.tls != "off":
        for domain in site.config.domains:
            certificates[domain] = probe.certificate_served(edge.probe_host, edge.https_port, domain)
    backups = backup_status(ctx, site, state)  # what `status` says of them, here and offsite
    taken = retention.parse_time(backups["local"]["at"]) if backups["local"] else None
    interrupted, problems, worker_problem = "", (), ""
    if engine_ok:
        status = site_status(ctx, site)
        operation = status["operation"]
        if status["interrupted"]:
            interrupted = (
                f"an interrupted {operation['kind']} (stopped during step {operation['step']}, "
                f"started {operation['started_at']})"
            )
        problems = tuple(status["agreement"]["problems"])
        worker_problem = status["worker_problem"] or ""
    elif state.operation and not is_held(site.dir / ".lock"):
        interrupted = f"an interrupted {state.operation.kind} (stopped during step {state.operation.step})"
    return SiteFacts(
        slug=site.slug,
        live=live,
        domains=domains,
        certificates=certificates,
        tls_note=tls_note,
        newest_backup=taken.timestamp() if taken else None,
        backup_problems=tuple(backups["problems"]),
        interrupted=interrupted,
        problems=problems,
        records_checked=engine_ok,
        worker_problem=worker_problem,
    )
