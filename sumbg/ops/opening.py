"""How an operation on a site begins: its lock, then the checks every change makes first.

A second operation on the site waits (`--lock-timeout`) or fails naming the holder; an
operation that died part way must be recovered first; and an operation that changes where
traffic goes refuses to start while the records and what serves the site disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sumbg.lock import SiteLock
from sumbg.ops import agreement
from sumbg.ops.context import Context, refuse_if_interrupted
from sumbg.site.site import Site
from sumbg.site.state import SiteState


@contextmanager
def opened(
    ctx: Context,
    site: Site,
    command: str,
    *,
    lock_timeout: float = 0.0,
    dry_run: bool = False,
    refuse_disagreement: str | None = None,
    lock: SiteLock | None = None,
) -> Iterator[SiteState]:
    """The site's state, read under its lock (a dry run takes no lock and tolerates an interrupted
    operation: it changes nothing). `refuse_disagreement`: what to call the operation when refusing.
    `lock`: the site's lock object to take (an operation that may hand it over keeps it)."""
    lock = lock or site.lock()
    if not dry_run:
        lock.acquire(timeout=lock_timeout, command=f"sumbg {command}")
        if lock.took_over:
            ctx.reporter.line(f"warning: took over a lock left by a dead process ({lock.took_over})")
    try:
        state = site.records.load_state()
        if not dry_run:
            refuse_if_interrupted(site, state)
        if refuse_disagreement:
            agreement.probe_and_check(ctx, site, state)[0].refuse(site.slug, refuse_disagreement)
        yield state
    finally:
        lock.release()
