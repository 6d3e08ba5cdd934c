"""`sumbg takeover`: the edge takes the host Caddy's ports, once every site it served was adopted.

The host Caddy's certificates, ACME accounts and local CA go into the edge's storage first,
so nothing is re-issued; then, in one measured window, the host Caddy stops and the edge is
started afresh on its ports, ending TLS itself. A failure puts everything back.

It changes several sites at once: the plan runs on the first and `ctx.execute(..., also=...)`
makes every other adopted site journal it in its own state.json and record it in its own
history; each site's `adoption.mode` becomes "takeover" in its own state. The steps are
module-level functions over `TakeoverRun`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg.adapters.probe import live_target
from sumbg.adoption.runbook_host import RunbookPaths, host_caddy_target, read_host_caddy
from sumbg.config import SiteConfig, set_edge_settings, set_site_settings
from sumbg.errors import SumbgError, UsageError
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.seams import CertificateProbe, HostServices
from sumbg.site.site import Site
from sumbg.site.state import ADOPTION_ADOPTED, AdoptionRecord, colour_version
from sumbg.util import atomic_write


def takeover(ctx: Context, paths: RunbookPaths, caddy_data: Path, *, dry_run: bool = False) -> dict[str, Any]:
    """The edge takes the host Caddy's ports once every site the host Caddy serves was adopted:
    the host Caddy's certificates, ACME accounts and local CA go into the edge's storage first,
    so nothing is re-issued; then, in one measured window, the host Caddy stops and the edge
    is started afresh on its ports, ending TLS itself. A failure puts everything back."""
    caddy_dir = paths.caddy_dir.absolute()
    main = caddy_dir / "Caddyfile"
    if not main.is_file():
        raise UsageError(f"{main} does not exist: give the host Caddy's folder with --caddy-dir")
    enabled = sorted(p for p in (caddy_dir / "sites-enabled").glob("*") if p.is_file())
    adopted: dict[Path, tuple[SiteConfig, AdoptionRecord]] = {}
    for config in ctx.site_configs():
        record = Site(ctx.host, config).records.load_state().adoption
        if record is not None and record.status == ADOPTION_ADOPTED and record.mode == "proxy":
            adopted[Path(record.caddy_site_file or "")] = (config, record)
    others = [p.name for p in enabled if p not in adopted]
    if others:
        raise UsageError(
            f"the host Caddy also serves {', '.join(others)}, which sumbg has not adopted: adopt "
            "those first, or keep the host Caddy in front"
        )
    if not adopted:
        raise UsageError(f"no site adopted through {paths.caddy_dir} is live on sumbg (sumbg adopt first)")
    if not caddy_data.is_dir():
        raise UsageError(
            f"--caddy-data {caddy_data} is not a folder (the host Caddy's data directory, with certificates/ and acme/)"
        )
    ctx.engine.ping()
    # The sites' TLS as the host Caddy had it: each adopted site's original file in place of sumbg's.
    kept = {path: Path(record.kept or "") for path, (_, record) in adopted.items()}
    missing = [str(k) for k in kept.values() if not k.is_file()]
    if missing:
        raise UsageError(f"{missing[0]} (the host Caddy site file sumbg replaced) is missing")
    host_caddy = read_host_caddy(
        caddy_dir, ctx.caddy_runner(), replaced={path: k.read_bytes() for path, k in kept.items()}
    )
    ports = host_caddy.ports
    if ctx.host.edge.preview_port in ports:
        raise UsageError(f"the edge's preview_port {ctx.host.edge.preview_port} is one of the host Caddy's ports")
    read_sites = [host_caddy.site(path) for path in adopted]
    internal = all(site.tls_mode == "internal" for site in read_sites)
    email = next((site.email for site in read_sites if site.email), "") or host_caddy.email
    settings: dict[str, str | int] = {
        "http_port": ports[0],
        "https_port": ports[1],
        "tls": "internal" if internal else "auto",
    }
    if email and not internal:
        settings["acme_email"] = email
    configs = [config for config, _ in adopted.values()]
    facts = {"ports": list(ports), "edge": settings, "sites": [c.slug for c in configs], "caddy_data": str(caddy_data)}
    if dry_run:
        ctx.reporter.line(
            f"sumbg takeover --dry-run: the edge would take ports {ports[0]}/{ports[1]} "
            f"(tls {settings['tls']}) for {', '.join(c.slug for c in configs)}; nothing changed"
        )
        return {"operation": "takeover", "dry_run": True, **facts}
    certificates = ctx.certificate_probe()
    https = ports[1]
    tr = TakeoverRun(
        ctx=ctx,
        services=ctx.runbook_services(),
        certificates=certificates,
        sites=[ctx.site(config.slug) for config in configs],
        settings=settings,
        ports=ports,
        caddy_data=caddy_data,
        before={name: certificates.served("127.0.0.1", https, name) for c in configs for name in c.domains},
    )
    plan = takeover_plan(tr, facts)
    first, *also = tr.sites
    with ctx.edge.lock().acquire(timeout=60):
        result = ctx.execute(plan, first, "takeover", also=also)
    ctx.reporter.line(
        f"the edge serves {', '.join(c.slug for c in configs)} on {ports[0]}/{ports[1]}; window "
        f"{result['takeover_window_seconds']:.2f}s; certificates kept: "
        f"{len(result['certificates_kept'])} of {len(tr.before)}"
    )
    return result


@dataclass
class TakeoverRun:
    """What the takeover's steps share: the sites it changes (the first runs the plan), the edge
    settings it gives them, and, once reached, the files it edited and the window's start."""

    ctx: Context
    services: HostServices
    certificates: CertificateProbe
    sites: list[Site]
    settings: dict[str, str | int]
    ports: tuple[int, int]
    caddy_data: Path
    before: dict[str, str | None]  # the certificate the host Caddy served for each name
    saved: dict[Path, str] = field(default_factory=dict)  # the settings files as they were
    taken: Context | None = None  # the host's settings with the edge on the host Caddy's ports
    window_started: float | None = None

    @property
    def https(self) -> int:
        return self.ports[1]

    @property
    def edge_context(self) -> Context:
        """The context the edge runs under from the prepare step on (the new settings)."""
        return self.taken or self.ctx


def sites_answer_through_the_host_caddy(tr: TakeoverRun) -> None:
    """The last undo: after the host Caddy and the edge are back, every site must answer again."""
    with tr.ctx.prober() as prober:
        for site in tr.sites:
            prober.wait_healthy(
                host_caddy_target(tr.https, site.config.domain),
                30,
                expect_version=colour_version(site.records.load_state().live_record),
            )


def put_back(tr: TakeoverRun, *, restart: bool) -> None:
    """sumbg.toml and the sites' site.toml as they were, the edge config rendered from them again;
    `restart`: the edge started afresh on its old ports."""
    for path, text in tr.saved.items():
        atomic_write(path, text)
    old = tr.ctx.reloaded()
    old.edge.apply(old.all_sites(), reload=False)
    if restart:
        old.edge.recreate()


def certificates(tr: TakeoverRun, run: Run) -> StepResult:
    run.on_failure(
        "confirm every site answers through the host Caddy again",
        functools.partial(sites_answer_through_the_host_caddy, tr),
    )
    return {"imported": tr.ctx.edge.import_storage(tr.caddy_data)}


def prepare(tr: TakeoverRun, run: Run) -> StepResult:
    run.on_failure(
        "put sumbg.toml, the sites' site.toml and the edge config back", functools.partial(put_back, tr, restart=False)
    )
    root = tr.ctx.host.root
    tr.saved[root / "sumbg.toml"] = set_edge_settings(root, tr.settings)
    for site in tr.sites:
        path = tr.ctx.host.site_dir(site.slug) / "site.toml"
        # One key edited in place: the operator's other edits and comments stay.
        tr.saved[path] = set_site_settings(path, {"caddy.behind_proxy": False})
    tr.taken = tr.ctx.reloaded()
    # Validated and written now, read when the edge starts afresh inside the window: the
    # running edge keeps serving the sites plainly behind the host Caddy until then.
    changed = tr.taken.edge.apply(tr.taken.all_sites(), reload=False)
    return {"changed": changed}


def stop_host_caddy(tr: TakeoverRun, run: Run) -> StepResult:
    run.on_failure("start the host Caddy again", functools.partial(tr.services.start, "caddy"))
    tr.window_started = time.monotonic()
    tr.services.stop("caddy")
    return {}


def start_edge(tr: TakeoverRun, run: Run) -> StepResult:
    # Undone before the host Caddy starts again: the ports must be free for it.
    run.on_failure("start the edge on its old ports again", functools.partial(put_back, tr, restart=True))
    tr.edge_context.edge.recreate()
    return {"ports": list(tr.ports)}


def confirm(tr: TakeoverRun, run: Run) -> StepResult:
    new = tr.edge_context
    with new.prober() as prober:
        for site in tr.sites:
            fresh = new.site(site.slug)  # its site.toml as the prepare step left it
            prober.wait_healthy(
                live_target(new.host.edge, fresh.config),
                30,
                expect_version=colour_version(fresh.records.load_state().live_record),
            )
    assert tr.window_started is not None  # the stop-host-caddy step opened the window
    seconds = round(time.monotonic() - tr.window_started, 3)
    run.notes["takeover_window_seconds"] = seconds
    after = {name: tr.certificates.served("127.0.0.1", tr.https, name) for name in tr.before}
    kept = sorted(name for name in tr.before if tr.before[name] and tr.before[name] == after[name])
    run.notes["certificates_kept"] = kept
    return {
        "window_seconds": seconds,
        "certificates_kept": kept,
        "certificates_new": sorted(set(tr.before) - set(kept)),
    }


def settle(tr: TakeoverRun, run: Run) -> StepResult:
    run.forget_cleanups(durable_too=True)
    try:
        tr.services.disable("caddy")
    except SumbgError as exc:
        run.say(f"could not disable the host Caddy: {exc.message}; it would fail to start at boot (ports taken)")
    # Each site records its own mode: the first in the executor's state, the others in theirs.
    if run.state.adoption is not None:
        run.state.adoption.mode = "takeover"
    run.save_state()
    for site in tr.sites[1:]:
        state = site.records.load_state()
        if state.adoption is not None:
            state.adoption.mode = "takeover"
        site.records.save_state(state)
    return {}


def takeover_plan(tr: TakeoverRun, facts: dict[str, Any]) -> Plan:
    def step(name: str, summary: str, action: Callable[[TakeoverRun, Run], StepResult]) -> Step:
        return Step(name, summary, functools.partial(action, tr))

    return Plan(
        "takeover",
        tr.sites[0].slug,
        (
            step(
                "certificates",
                f"copy certificates/, acme/ and pki/ from {tr.caddy_data} into the edge's storage",
                certificates,
            ),
            step(
                "prepare",
                f"edge settings {tr.settings} in sumbg.toml, the sites' [caddy] behind_proxy = false; the "
                "edge config rendered and validated, not yet loaded",
                prepare,
            ),
            step("stop-host-caddy", "the window opens: stop the host Caddy (its ports free)", stop_host_caddy),
            step("start-edge", "start the edge afresh on those ports, ending TLS itself", start_edge),
            step(
                "confirm",
                "each site's /health/ through the edge over TLS: the window closes; certificates compared",
                confirm,
            ),
            step("settle", "disable the host Caddy (kept, not removed)", settle),
        ),
        facts=facts,
    )
