"""Plans as data, run in one place.

An operation builds a Plan: named steps with a one-line summary and the facts
`--dry-run` prints. The executor runs them in order, journals the current step
in state.json before doing it (so a crash leaves a trace `recover` can act
on), times each one, records everything in history.jsonl, and on failure undoes
what the steps registered, newest first.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sumbg import failpoints
from sumbg.errors import NeedsOperator, SumbgError
from sumbg.site.records import HistoryEntry, SiteRecords
from sumbg.site.state import Operation, SiteState
from sumbg.util import utc_now

# What a step reports for the history (JSON): "outcome" ("ok" unless it says "skipped") and "reason"
# are read by the executor; everything else is kept as it is.
StepResult = dict[str, Any]


@dataclass(frozen=True)
class Step:
    name: str
    summary: str
    action: Callable[[Run], StepResult | None] = field(compare=False, repr=False)
    details: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Plan:
    operation: str
    slug: str
    steps: tuple[Step, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "site": self.slug,
            **self.facts,
            "steps": [{"name": s.name, "summary": s.summary, **s.details} for s in self.steps],
        }


class Reporter:
    """Progress on stderr, readable without a terminal."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def line(self, text: str) -> None:
        if self.quiet:
            return
        try:
            print(text, file=self.stream, flush=True)
        except (BrokenPipeError, ValueError, OSError):
            # Whoever read the progress is gone (a dropped SSH link of `sumbg fleet`): the operation
            # goes on to its end, and its history says how it went.
            self.quiet = True

    def step_started(self, step: Step) -> None:
        self.line(f"  -> {step.name}: {step.summary}")

    def step_finished(self, name: str, seconds: float, outcome: str, note: str = "") -> None:
        self.line(f"     {outcome} {name} ({seconds:.1f}s){' ' + note if note else ''}")

    def dry_run(self, title: str, plan: Plan, *extra: str) -> None:
        """The one way a dry run is shown: the title, the numbered steps, then what else it found."""
        self.line(title)
        for index, step in enumerate(plan.steps, 1):
            self.line(f"  {index}. {step.name}: {step.summary}")
        for line in extra:
            self.line(f"  {line}")


@dataclass
class Cleanup:
    what: str
    undo: Callable[[], object]
    durable: bool = False  # still wanted past the point of no return


class Run:
    """What a running step can use: the site's records and state, undo registration, notes."""

    def __init__(self, records: SiteRecords, reporter: Reporter, op_id: str) -> None:
        self.records = records
        self.reporter = reporter
        self.op_id = op_id
        self.state: SiteState = records.load_state()
        self.cleanups: list[Cleanup] = []
        # Facts for the history's `finished` line (flip times, the backup taken, the watch's counts).
        self.notes: dict[str, Any] = {}

    def save_state(self) -> None:
        self.records.save_state(self.state)

    def on_failure(self, what: str, undo: Callable[[], object], *, durable: bool = False) -> None:
        self.cleanups.append(Cleanup(what, undo, durable))

    def forget_cleanups(self, *, durable_too: bool = False) -> None:
        """Past the point of no return (e.g. traffic switched): nothing left to undo but the
        durable cleanups (e.g. putting a rollback target back), unless `durable_too`."""
        self.cleanups[:] = [c for c in self.cleanups if c.durable and not durable_too]

    def say(self, text: str) -> None:
        self.reporter.line(f"     {text}")


def execute(
    plan: Plan,
    records: SiteRecords,
    reporter: Reporter,
    *,
    command: str = "",
    companions: Sequence[SiteRecords] = (),
    listener: Callable[[HistoryEntry], None] | None = None,
) -> HistoryEntry:
    """Run `plan` on the site whose records are `records`. `companions`: the records of the other
    sites a host-wide operation changes (a takeover): each journals the operation in its own
    state.json while it runs and records it in its own history, like the site it runs on.
    `listener` hears each `started` and `finished` line once it is in the history (the events
    people are notified of are built from them)."""
    op_id = uuid.uuid4().hex[:12]
    run = Run(records, reporter, op_id)
    started = time.monotonic()
    journals = _Companions(companions)

    def record(entry: HistoryEntry) -> None:
        records.append(entry)
        journals.record(entry)
        if listener is not None:
            listener(entry)

    entry: HistoryEntry = {
        "event": "started",
        "id": op_id,
        "operation": plan.operation,
        "command": command,
        "pid": os.getpid(),
        "plan": [s.name for s in plan.steps],
        **plan.facts,
    }
    record(entry)
    journal = Operation(id=op_id, kind=plan.operation, pid=os.getpid(), started_at=utc_now(), facts=dict(plan.facts))
    run.state.operation = journal
    run.save_state()
    journals.begin(journal)
    reporter.line(f"sumbg {plan.operation} {plan.slug}")
    results: list[StepResult] = []
    for step in plan.steps:
        journal.step = step.name
        run.state.operation = journal
        run.save_state()
        reporter.step_started(step)
        t0 = time.monotonic()
        try:
            failpoints.reached(f"{plan.operation}:{step.name}")
            info = step.action(run) or {}
        except BaseException as exc:  # noqa: BLE001 - every failure must be recorded and undone
            seconds = time.monotonic() - t0
            error = _as_sumbg_error(exc, plan.slug, step.name)
            results.append(
                {"name": step.name, "seconds": round(seconds, 3), "outcome": "failed", "error": error.evidence()}
            )
            reporter.step_finished(step.name, seconds, "FAILED")
            undo_records, undo_error = _undo(run)
            outcome = "needs-operator" if undo_error else "aborted"
            final = error
            if undo_error:
                original = f"original failure: {error.format_message()}"
                final = undo_error.refined(
                    output_tail=f"{undo_error.output_tail}\n{original}" if undo_error.output_tail else original,
                    site=undo_error.site or plan.slug,
                )
            run.state.operation = None
            run.save_state()
            journals.end()
            summary = {
                "event": "finished",
                "id": op_id,
                "operation": plan.operation,
                "outcome": outcome,
                "failed_step": step.name,
                "error": error.evidence(),
                "steps": results,
                "undo": undo_records,
                "seconds": round(time.monotonic() - started, 3),
                **plan.facts,
                **run.notes,
            }
            record(summary)
            raise final.refined(result=summary) from exc
        seconds = time.monotonic() - t0
        outcome = info.pop("outcome", "ok")
        results.append({"name": step.name, "seconds": round(seconds, 3), "outcome": outcome, **info})
        reporter.step_finished(step.name, seconds, outcome, info.get("reason", ""))
    run.state.operation = None
    run.save_state()
    journals.end()
    summary = {
        "event": "finished",
        "id": op_id,
        "operation": plan.operation,
        "outcome": "done",
        "steps": results,
        "seconds": round(time.monotonic() - started, 3),
        **plan.facts,
        **run.notes,
    }
    record(summary)
    reporter.line(f"done in {summary['seconds']:.1f}s")
    return summary


class _Companions:
    """The journal and history of the other sites a host-wide operation changes. Their state.json
    is read and written afresh each time: a step may change a companion's records meanwhile."""

    def __init__(self, companions: Sequence[SiteRecords]) -> None:
        self.companions = list(companions)

    def begin(self, journal: Operation) -> None:
        for records in self.companions:
            state = records.load_state()
            state.operation = journal
            records.save_state(state)

    def end(self) -> None:
        for records in self.companions:
            state = records.load_state()
            state.operation = None
            records.save_state(state)

    def record(self, summary: HistoryEntry) -> None:
        for records in self.companions:
            records.append(summary)


def _undo(run: Run) -> tuple[list[dict[str, Any]], SumbgError | None]:
    done: list[dict[str, Any]] = []
    first_error: SumbgError | None = None
    for cleanup in reversed(run.cleanups):
        run.say(f"undo: {cleanup.what}")
        try:
            cleanup.undo()
            done.append({"what": cleanup.what, "outcome": "ok"})
        except Exception as exc:  # noqa: BLE001
            err = _as_sumbg_error(exc, None, "undo")
            done.append({"what": cleanup.what, "outcome": "failed", "error": err.evidence()})
            if first_error is None:
                first_error = NeedsOperator(
                    f"could not undo '{cleanup.what}': {err.format_message()}; "
                    "check `sumbg status` and run `sumbg recover` once the cause is fixed",
                    output_tail=err.output_tail,
                )
    run.cleanups.clear()
    return done, first_error


def _as_sumbg_error(exc: BaseException, slug: str | None, step: str) -> SumbgError:
    if isinstance(exc, SumbgError):
        return exc.refined(site=exc.site or slug, step=exc.step or step)
    if isinstance(exc, KeyboardInterrupt):
        return SumbgError("interrupted", site=slug, step=step)
    return SumbgError(
        f"unexpected {type(exc).__name__}: {exc}",
        site=slug,
        step=step,
        output_tail="".join(traceback.format_exception(exc)[-3:]) if os.environ.get("SUMBG_VERBOSE") else None,
    )
