"""`sumbg notify test`, and the event of a finished fleet run (the fleet has no site history)."""

from __future__ import annotations

from typing import Any

from sumbg.config import NotifyTarget
from sumbg.errors import SumbgError, UsageError
from sumbg.ops.context import Context
from sumbg.ops.events import fleet_event, trial_event


def send_test(ctx: Context, slug: str | None) -> dict[str, Any]:
    """A test event to every target of the host, and of SLUG (or of every site); each target is
    tried as a real event would be. Fails (exit 1) naming the targets that did not accept it."""
    sites = [ctx.site(slug).config] if slug else ctx.site_configs(strict=True)
    targets: list[NotifyTarget] = list(ctx.host.notify)
    for config in sites:
        targets.extend(config.notify)
    if not targets:
        where = f"sumbg.toml or {slug}/site.toml" if slug else "sumbg.toml or any site.toml"
        raise UsageError(f"no [[notify]] target in {where}: nothing to test (see docs/events.md)")
    events = ctx.events
    deliveries = events.send_now([(trial_event(host=events.host_name, target=target), target) for target in targets])
    results = [delivery.describe() for delivery in deliveries]
    for item in results:
        said = "delivered" if item["outcome"] == "delivered" else f"FAILED: {item.get('error')}"
        ctx.reporter.line(f"{item['target']}: {said} ({item['attempts']} attempt(s))")
    failed = [item for item in results if item["outcome"] != "delivered"]
    document = {"operation": "notify-test", "targets": results}
    if failed:
        raise SumbgError(
            f"{len(failed)} of {len(results)} notification target(s) did not accept the test event: "
            + "; ".join(f"{item['target']}: {item.get('error')}" for item in failed),
            result=document,
        )
    return document


def announce_fleet_run(ctx: Context, document: dict[str, Any], exit_code: int) -> None:
    """`fleet.succeeded` or `fleet.failed` to the host's targets (recorded in its events.jsonl
    when this machine has a sumbg root)."""
    if not ctx.host.notify and not ctx.host.root.is_dir():
        return
    try:
        ctx.events.emit(fleet_event(document, exit_code, host=ctx.events.host_name), ctx.host.notify)
    except Exception as exc:  # noqa: BLE001 - a notification never changes the fleet run's exit code
        ctx.reporter.line(f"warning: the fleet run's event was not sent: {exc}")
