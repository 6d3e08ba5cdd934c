"""`sumbg retire`: stop a site's idle colour; `retire --due`: every idle colour whose soak period is over."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sumbg import naming
from sumbg.config import SiteConfig
from sumbg.errors import LockHeld, UsageError
from sumbg.ops import agreement
from sumbg.ops.context import Context
from sumbg.ops.executor import Plan, Run, Step, StepResult
from sumbg.ops.logs import keep_colour_logs
from sumbg.ops.opening import opened
from sumbg.site.site import Site
from sumbg.site.state import SiteState
from sumbg.util import format_duration


def _age_seconds(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    then = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - then).total_seconds()


def retire(
    ctx: Context, slug: str, *, min_age: float, force: bool, lock_timeout: float = 0.0, reason: str | None = None
) -> dict[str, Any]:
    site = ctx.site(slug)
    stacks = ctx.stacks(site)
    with opened(ctx, site, f"retire {slug}", lock_timeout=lock_timeout) as state:
        live = state.live
        if not live:
            raise UsageError(f"site {slug} has no live colour yet")
        idle = naming.other_colour(live)
        if not stacks.colour_exists(idle):
            site.records.append({"event": "noop", "operation": "retire", "reason": f"{idle} is not running"})
            ctx.reporter.line(f"{idle} is not running; nothing to retire")
            return {"operation": "retire", "outcome": "noop", "reason": f"{idle} is not running"}
        live_record = state.record(live)
        age = _age_seconds(live_record.deployed_at if live_record else None)
        if state.previous == idle and age < min_age and not force:
            raise UsageError(
                f"{idle} is {slug}'s only rollback target and {live} went live {age:.0f}s ago "
                f"(less than --min-age {min_age:.0f}s); pass --force to retire it anyway"
            )

        def stop(run: Run) -> StepResult:
            keep_colour_logs(stacks, run, idle)
            stacks.remove_colour(idle)
            run.state.retire(idle)
            run.save_state()
            return {"retired": naming.app_project(slug, idle)}

        plan = Plan(
            "retire",
            slug,
            (Step("retire", f"stop and remove {naming.app_project(slug, idle)}", stop),),
            facts={"colour": idle, **({"reason": reason} if reason else {})},
        )
        return ctx.execute(plan, site, f"retire {slug}")


def soak_period(ctx: Context, config: SiteConfig) -> float:
    """How long a site's idle colour is kept after an upgrade went live (0: kept)."""
    return config.retire_idle_after if config.retire_idle_after is not None else ctx.host.retire_idle_after


def soak_decision(state: SiteState, soak: float, *, idle_running: bool, age: float) -> str | None:
    """Why an idle colour is kept, or None when its soak period is over (pure: unit-tested)."""
    live = state.live
    if not soak:
        return "kept: no soak period is set (upgrade.retire_idle_after)"
    if not live:
        return "never deployed"
    if state.operation:
        return f"an operation ({state.operation.kind}) is running or was interrupted"
    if not idle_running:
        return f"{naming.other_colour(live)} is not running"
    if age < soak:
        return f"soaking: {live} went live {format_duration(age)} ago, kept for {format_duration(soak)}"
    return None


def retire_due(ctx: Context) -> dict[str, Any]:
    """Retire every idle colour whose soak period is over and whose live colour answers healthy
    through Caddy; a site that is busy, unhealthy or disagreeing keeps its rollback target."""
    results: list[dict[str, Any]] = []
    for config in ctx.site_configs():
        site = Site(ctx.host, config)
        state = site.records.load_state()
        live = state.live
        live_record = state.record(live)
        age = _age_seconds(live_record.deployed_at if live_record else None) if live else 0.0
        soak = soak_period(ctx, config)
        idle_running = bool(live) and ctx.stacks(site).colour_exists(naming.other_colour(live or ""))
        kept = soak_decision(state, soak, age=age, idle_running=idle_running)
        if kept is None:
            agreed, health = agreement.probe_and_check(ctx, site, state)
            if agreed.problems:
                kept = "kept: records and what serves disagree: " + "; ".join(agreed.problems)
            elif not health.passing:
                kept = f"kept: the live colour is not healthy through Caddy ({health.status or health.answer.status})"
        if kept is not None:
            results.append({"site": config.slug, "outcome": "kept", "reason": kept})
            continue
        reason = f"soaked {format_duration(age)} (retire_idle_after {format_duration(soak)})"
        try:
            outcome = retire(ctx, config.slug, min_age=0, force=False, reason=reason)
        except LockHeld as exc:
            results.append({"site": config.slug, "outcome": "kept", "reason": f"busy: {exc.message}"})
            continue
        results.append({"site": config.slug, "outcome": "retired", "reason": reason, "result": outcome})
    for item in results:
        ctx.reporter.line(f"{item['site']}: {item['outcome']}: {item['reason']}")
    return {"operation": "retire-due", "sites": results}
