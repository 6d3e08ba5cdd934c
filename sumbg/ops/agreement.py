"""Do a site's records, Caddy's files, its containers and what answers agree?

`state.json` says which colour is live and what it runs; Caddy's live file says
where traffic goes; the containers say what runs; /health/ through Caddy says
which version answers. `status` prints every disagreement, and `upgrade` and
`rollback` refuse to start on a site whose routing disagrees (`sumbg recover`
puts it right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sumbg import naming
from sumbg.adapters.docker import ContainerState
from sumbg.adapters.probe import Health, live_target
from sumbg.errors import Disagreement
from sumbg.ops.context import Context
from sumbg.site.site import Site
from sumbg.site.state import IDLE, SiteState


@dataclass(frozen=True)
class Agreement:
    problems: list[str] = field(default_factory=list)  # records and reality disagree: recover first
    notes: list[str] = field(default_factory=list)  # worth saying, harmless to an operation

    def refuse(self, slug: str, command: str) -> None:
        if self.problems:
            raise Disagreement(
                f"{command} refused: site {slug}'s records and what serves it disagree: "
                f"{'; '.join(self.problems)}; run `sumbg recover {slug}` first"
            )

    def describe(self) -> dict[str, Any]:
        return {"agree": not self.problems, "problems": self.problems, "notes": self.notes}


def _short(sha: str | None) -> str:
    return (sha or "?")[:12]


def compare(
    state: SiteState,
    *,
    live_file: str | None,
    preview_file: str | None,
    site_file_exists: bool,
    containers: dict[str, ContainerState | None],
    answering: dict[str, Any] | None,
    maintenance: bool,
) -> Agreement:
    """The pure comparison. `containers`: {colour: its web container or None};
    `answering`: the version /health/ reported through Caddy ({} or None when it reported none)."""
    live = state.live
    if not live:
        return Agreement()
    problems, notes = [], []
    if live_file != live:
        problems.append(f"state.json says {live} is live but Caddy's live file names {live_file or 'nothing'}")
    if not site_file_exists:
        problems.append("the edge Caddy has no site file for it")
    record = state.record(live)
    web = containers.get(live)
    if web is None or not web.running:
        problems.append(f"the live colour's web container is {web.status if web else 'missing'}")
    elif record is not None and record.image and web.image != record.image:
        problems.append(f"the live colour's web runs {web.image} but state.json records {record.image}")
    if answering and answering.get("build") is not None:
        expected = (record.ref, record.commit) if record else (None, None)
        if (answering.get("build"), answering.get("git_sha")) != expected:
            problems.append(
                f"Caddy answers with {answering.get('build')} ({_short(answering.get('git_sha'))}) "
                f"but state.json records {expected[0]} ({_short(expected[1])}) as live"
            )
    idle = naming.other_colour(live)
    idle_record = state.record(idle)
    idle_web = containers.get(idle)
    if idle_record is not None and idle_record.status == IDLE and (idle_web is None or not idle_web.running):
        notes.append(
            f"state.json keeps {idle} ({idle_record.ref}) as the rollback target but its web "
            f"container is {idle_web.status if idle_web else 'missing'}: a rollback would start it first"
        )
    if idle_record is not None and idle_record.failed:
        notes.append(f"{idle} holds {idle_record.ref}, recorded as failed: {idle_record.reason}")
    if preview_file == live and state.operation is None:
        notes.append("Caddy's preview file names the live colour")
    if maintenance and state.operation is None:
        notes.append("the maintenance page is on with no operation running")
    return Agreement(problems, notes)


def check(ctx: Context, site: Site, state: SiteState, answering: dict[str, Any] | None) -> Agreement:
    """Gather the facts for `compare` from the edge files and the engine."""
    files = ctx.edge.files
    containers = {colour: ctx.engine.container(site.web_container(colour)) for colour in naming.COLOURS}
    return compare(
        state,
        live_file=files.read_colour(site.slug, "live"),
        preview_file=files.read_colour(site.slug, "preview"),
        site_file_exists=files.site(site.slug).exists(),
        containers=containers,
        answering=answering,
        maintenance=files.maintenance_on(site.slug),
    )


def probe_and_check(ctx: Context, site: Site, state: SiteState) -> tuple[Agreement, Health]:
    """Ask /health/ through Caddy once, then compare; returns (agreement, the Health answer)."""
    with ctx.prober() as prober:
        health = prober.health(live_target(ctx.host.edge, site.config))
    return check(ctx, site, state, health.version), health
