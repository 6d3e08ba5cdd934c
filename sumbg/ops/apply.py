"""`sumbg apply`: edited site settings rendered into the edge Caddy, validated, reloaded only on a change."""

from __future__ import annotations

from typing import Any

from sumbg.ops.context import Context


def apply_edge(ctx: Context) -> dict[str, Any]:
    """Render the edge config from every live site's site.toml, validate it with `caddy
    validate`, and reload Caddy only if something changed (a reload can close idle
    kept-alive connections, so it is never done for nothing)."""
    ctx.engine.ping()
    sites = ctx.all_sites(strict=True)
    with ctx.edge.lock().acquire(timeout=60):
        changed = ctx.edge.apply(sites)
        ctx.edge.ensure_up()
    for slug in sites:
        ctx.site(slug).write_app_env()
    ctx.reporter.line(
        f"edge: {', '.join(changed)} changed, validated and reloaded" if changed else "edge: nothing changed; no reload"
    )
    return {"operation": "apply", "sites": sorted(sites), "changed": changed}
