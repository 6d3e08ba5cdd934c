"""Events people hear about: built from the history lines operations write, appended to
`$SUMBG_ROOT/events.jsonl`, and delivered to the `[[notify]]` targets that want them.

An event is a small versioned JSON document (docs/events.md): what happened to which site on
which host (operation, outcome, from/to release and colour, the reason, an excerpt of the
evidence, the durations, the history id). `events_of` builds them from a history entry (pure).

Delivery never changes an operation's outcome or exit code. Each (event, target) is sent on a
thread of its own as soon as the event is written, so an upgrade never waits on a receiver: it
is tried up to `attempts` times with backoff, each attempt bounded by `attempt_timeout`, and
never after the event's `deadline`. At the end of the command, `flush` waits for what is still
being tried, at most until the last deadline, and records each target that did not accept an
event as undelivered in events.jsonl (which `sumbg status` shows).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sumbg.adapters.notify import DeliveryFailed, Message
from sumbg.config import HostConfig, NotifyTarget, SiteConfig
from sumbg.ops.executor import Reporter
from sumbg.ops.seams import Courier
from sumbg.site.records import HistoryEntry
from sumbg.util import utc_now

SCHEMA = 1  # the version of the event document; a receiver checks it
EVIDENCE_LINES = 20
EVIDENCE_CHARS = 2000
UNDELIVERED_SHOWN_FOR = 7 * 86400.0  # seconds `sumbg status` keeps showing an undelivered event
STATUS_READ_BYTES = 4 << 20  # status reads the end of events.jsonl, not years of it

# The outcome words of history's `finished` lines, as events say them.
_OUTCOMES = {"done": "succeeded", "aborted": "failed", "needs-operator": "needs-operator"}


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard a notification is tried, and so how long a command may wait for it at its end:
    at most `deadline` seconds after its last event (a receiver that refuses connections costs the
    backoffs, 0.5 + 1 + 2 = 3.5 s; one that never answers, the whole deadline)."""

    attempts: int = 4
    backoff: float = 0.5  # before the second attempt; doubled before each next one
    attempt_timeout: float = 5.0
    deadline: float = 15.0

    def waits(self) -> list[float]:
        return [self.backoff * 2**n for n in range(self.attempts - 1)]


# ---------------------------------------------------------------- events (pure)


def new_event(name: str, outcome: str, **facts: Any) -> dict[str, Any]:
    """An event document: its schema, id, name, time and outcome, then `facts` (host, site,
    operation, history_id, from, to, reason, ...)."""
    return {"schema": SCHEMA, "id": uuid.uuid4().hex[:16], "event": name, "at": utc_now(), "outcome": outcome, **facts}


def evidence_excerpt(text: str | None) -> str | None:
    if not text:
        return None
    lines = text.rstrip().splitlines()[-EVIDENCE_LINES:]
    excerpt = "\n".join(lines)
    return excerpt[-EVIDENCE_CHARS:]


def _release(entry: HistoryEntry, side: str) -> dict[str, Any]:
    if side == "from":
        return {"ref": entry.get("from"), "colour": entry.get("from_colour")}
    return {"ref": entry.get("to") or entry.get("ref"), "colour": entry.get("to_colour") or entry.get("colour")}


def events_of(entry: HistoryEntry, *, site: str | None, host: str) -> list[dict[str, Any]]:
    """The events a history line stands for: an upgrade's start, and every operation's end (an
    upgrade the watch reverted is `upgrade.reverted`, nothing else), plus a certificate the edge
    could not get and each post_* hook that failed."""
    operation = str(entry.get("operation") or "")
    common = {"host": host, "site": site, "operation": operation, "history_id": entry.get("id")}
    if entry.get("event") == "started":
        if operation != "upgrade":
            return []
        return [
            new_event(
                "upgrade.started",
                outcome="started",
                **common,
                **{"from": _release(entry, "from"), "to": _release(entry, "to")},
                steps=list(entry.get("plan") or []),
                summary=_summary(operation, site, entry, "started"),
            )
        ]
    if entry.get("event") != "finished":
        return []
    error = entry.get("error") or {}
    reverted = entry.get("reverted") or {}
    outcome = _OUTCOMES.get(str(entry.get("outcome")), str(entry.get("outcome")))
    if operation == "upgrade" and reverted and reverted.get("flipped", True):
        name, outcome, reason = "upgrade.reverted", "reverted", reverted.get("reason")
    elif outcome == "succeeded":
        name, reason = f"{operation}.succeeded", entry.get("reason")
    else:
        name, reason = f"{operation}.failed", error.get("message")
    facts: dict[str, Any] = {
        "from": _release(entry, "from"),
        "to": _release(entry, "to"),
        "step": entry.get("failed_step"),
        "reason": reason,
        "message": error.get("message"),
        "evidence": evidence_excerpt(error.get("output_tail")),
        "seconds": entry.get("seconds"),
        "steps": {step["name"]: step.get("seconds") for step in entry.get("steps") or [] if "name" in step},
    }
    for extra in ("watch", "backup", "file"):
        if entry.get(extra) is not None:
            facts[extra] = entry[extra]
    if reverted:
        facts["flip_seconds"] = reverted.get("flip_seconds")
    found = [new_event(name, outcome=outcome, **common, **facts, summary=_summary(operation, site, entry, outcome))]
    if error.get("error") == "CertificateFailed":
        found.append(
            new_event(
                "certificate.failed",
                outcome="failed",
                **common,
                reason=error.get("message"),
                summary=f"{site}: {error.get('message')}",
            )
        )
    for hook in entry.get("hooks") or []:
        # A failing pre_* hook is the operation's own failure (above); a post_* one left it standing.
        if hook.get("outcome") == "failed" and str(hook.get("hook")).startswith("post_"):
            found.append(
                new_event(
                    "hook.failed",
                    outcome="failed",
                    **common,
                    hook=hook.get("hook"),
                    reason=hook.get("reason"),
                    evidence=evidence_excerpt(hook.get("output_tail")),
                    summary=f"{site}: the {hook.get('hook')} hook after the {operation} failed: {hook.get('reason')} "
                    f"(the {operation} stands)",
                )
            )
    return found


def _summary(operation: str, site: str | None, entry: HistoryEntry, outcome: str) -> str:
    """One line a person reads first."""
    moved = f" {entry.get('from') or '-'} -> {entry.get('to')}" if entry.get("to") else ""
    if outcome == "started":
        return f"{site}: upgrade{moved} started"
    if outcome == "reverted":
        reverted = entry.get("reverted") or {}
        back = (entry.get("error") or {}).get("message", "")
        where = back.rpartition("rolled back to ")[2].partition(" by itself")[0]
        return (
            f"{site}: the upgrade{moved} was reverted by the watch after the switch: {reverted.get('reason')}; "
            f"traffic is back on {where or entry.get('from_colour')}"
        )
    if outcome == "succeeded":
        return f"{site}: {operation}{moved} succeeded"
    error = entry.get("error") or {}
    step = f" at step {entry.get('failed_step')}" if entry.get("failed_step") else ""
    needs = " and sumbg could not put things back (needs an operator)" if outcome == "needs-operator" else ""
    return f"{site}: {operation}{moved} failed{step}{needs}: {error.get('message')}"


def fleet_event(document: dict[str, Any], exit_code: int, *, host: str) -> dict[str, Any]:
    """`fleet.succeeded` (exit 0) or `fleet.failed` from a finished fleet run's document, with
    how each site's move ended."""
    moves = document.get("moves") or []
    unreachable = document.get("unreachable") or {}
    counts: dict[str, int] = {}
    for move in moves:
        counts[str(move.get("state"))] = counts.get(str(move.get("state")), 0) + 1
    summary = f"fleet upgrade to sum-core {document.get('core')}: " + (
        ", ".join(f"{count} {state}" for state, count in sorted(counts.items())) or "no site to move"
    )
    if unreachable:
        summary += f"; unreachable: {', '.join(sorted(unreachable))}"
    return new_event(
        "fleet.succeeded" if exit_code == 0 else "fleet.failed",
        host=host,
        site=None,
        operation="fleet-upgrade",
        outcome="succeeded" if exit_code == 0 else "failed",
        history_id=document.get("id"),
        fleet={
            "core": document.get("core"),
            "outcome": document.get("outcome"),
            "exit_code": exit_code,
            "sites": [
                {key: move.get(key) for key in ("site", "state", "from_ref", "to_ref", "reason", "seconds")}
                for move in moves
            ],
            "unreachable": unreachable,
        },
        summary=summary,
    )


def trial_event(*, host: str, target: NotifyTarget) -> dict[str, Any]:
    return new_event(
        "test",
        host=host,
        site=None,
        operation="notify-test",
        outcome="test",
        summary=f"a test notification from sumbg on {host} to {target.label}: this target works",
    )


def message_of(event: dict[str, Any]) -> Message:
    """The words of an event: a subject, and one paragraph with the evidence (Slack, email)."""
    name = event["event"]
    subject = f"[sumbg] {event.get('site') or event.get('host')}: {name}"
    text = f"sumbg on {event.get('host')}: {event.get('summary') or name}."
    if event.get("step") and name != "upgrade.reverted":
        text += f" Failed step: {event['step']}."
    if event.get("seconds") is not None:
        text += f" It took {event['seconds']:.1f}s."
    watch = event.get("watch")
    if name == "upgrade.reverted" and isinstance(watch, dict):
        text += f" The watch made {watch.get('probes')} probes, {watch.get('failed_probes')} failed"
        if watch.get("visitor_requests") is not None:
            text += f"; visitors: {watch.get('visitor_5xx')} 5xx of {watch.get('visitor_requests')} requests"
        text += "."
    if event.get("history_id"):
        text += f" History id {event['history_id']} (`sumbg history {event.get('site')}`)."
    if event.get("evidence"):
        text += f"\n```\n{event['evidence']}\n```"
    return Message(event=event, subject=subject, text=text)


# ---------------------------------------------------------------- events.jsonl


def _age(stamp: str | None, now: dt.datetime) -> float:
    try:
        then = dt.datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return float("inf")
    return (now - then).total_seconds()


@dataclass
class EventLog:
    """`$SUMBG_ROOT/events.jsonl`: one line per event (with the targets it went to) and one per
    delivery's end (`{"delivery": <event id>, "target": ..., "outcome": "delivered" | "undelivered"}`)."""

    path: Path
    _read: tuple[tuple[int, int, int], list[dict[str, Any]]] | None = field(default=None, repr=False, compare=False)

    def append(self, line: dict[str, Any]) -> None:
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)  # one write of one line: concurrent writers never interleave within it
        finally:
            os.close(fd)

    def lines(self, max_bytes: int = STATUS_READ_BYTES) -> list[dict[str, Any]]:
        """The lines at the end of the file (`sumbg status` asks once per site: read once)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return []
        key = (info.st_mtime_ns, info.st_size, max_bytes)
        if self._read is not None and self._read[0] == key:
            return self._read[1]
        found = self._read_lines(max_bytes)
        self._read = (key, found)
        return found

    def _read_lines(self, max_bytes: int) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - max_bytes))
                raw = handle.read()
        except FileNotFoundError:
            return []
        if len(raw) < size:
            raw = raw.partition(b"\n")[2]  # the first line read is a piece of one
        found = []
        for line in raw.splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if isinstance(item, dict):
                found.append(item)
        return found

    def events(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if "schema" in line and "event" in line]

    def undelivered(
        self,
        *,
        site: str | None = None,
        host_only: bool = False,
        policy: DeliveryPolicy | None = None,
        now: dt.datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Each (event, target) not delivered, newest first, of the last UNDELIVERED_SHOWN_FOR: a
        delivery recorded as undelivered, or one still unrecorded long after its deadline (the
        command was killed)."""
        now = now or dt.datetime.now(dt.UTC)
        grace = 2 * (policy or DeliveryPolicy()).deadline
        lines = self.lines()
        ends: dict[tuple[str, str], dict[str, Any]] = {}
        for line in lines:
            if "delivery" in line:
                key = (str(line["delivery"]), str(line.get("target")))
                if ends.get(key, {}).get("outcome") != "delivered":
                    ends[key] = line
        found = []
        for event in lines:
            if "schema" not in event or "event" not in event:
                continue
            if (site is not None and event.get("site") != site) or (host_only and event.get("site") is not None):
                continue
            age = _age(event.get("at"), now)
            if age > UNDELIVERED_SHOWN_FOR:
                continue
            for target in event.get("targets") or []:
                end = ends.get((str(event.get("id")), target))
                if end is not None and end.get("outcome") == "delivered":
                    continue
                if end is None and age <= grace:
                    continue  # still being tried
                found.append(
                    {
                        "id": event.get("id"),
                        "event": event.get("event"),
                        "at": event.get("at"),
                        "site": event.get("site"),
                        "target": target,
                        "error": end.get("error") if end else "never recorded (the command was stopped)",
                        "attempts": end.get("attempts") if end else None,
                    }
                )
        found.sort(key=lambda item: str(item["at"]), reverse=True)
        return found


# ---------------------------------------------------------------- delivery


@dataclass
class Delivery:
    """One (event, target): how its delivery ended, or that it is still being tried."""

    event: dict[str, Any]
    target: NotifyTarget
    deadline: float  # time.monotonic()
    attempts: int = 0
    error: str | None = None
    delivered: bool = False
    recorded: bool = False  # its end was handled (in events.jsonl, or not wanted there)
    finished: threading.Event = field(default_factory=threading.Event)

    def describe(self) -> dict[str, Any]:
        return {
            "event": self.event["event"],
            "id": self.event["id"],
            "target": self.target.label,
            "kind": self.target.kind,
            "outcome": "delivered" if self.delivered else "undelivered",
            "attempts": self.attempts,
            **({"error": self.error} if self.error else {}),
        }


def deliver(
    courier: Courier,
    delivery: Delivery,
    policy: DeliveryPolicy,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """Try one (event, target) until it is accepted, the attempts are spent or the deadline passed."""
    message = message_of(delivery.event)
    waits = policy.waits()
    while True:
        left = delivery.deadline - clock()
        if left <= 0:
            delivery.error = (delivery.error or "not tried") + " (deadline passed)"
            break
        delivery.attempts += 1
        try:
            courier.send(delivery.target, message, min(policy.attempt_timeout, left))
        except DeliveryFailed as exc:
            delivery.error = exc.message.removeprefix(f"{delivery.target.label}: ")
        except Exception as exc:  # noqa: BLE001 - a delivery never ends the command
            delivery.error = f"unexpected {type(exc).__name__}"
        else:
            delivery.delivered, delivery.error = True, None
            break
        if delivery.attempts >= policy.attempts:
            break
        pause = waits[delivery.attempts - 1]
        if clock() + pause >= delivery.deadline:
            delivery.error += " (deadline passed)"
            break
        sleep(pause)
    delivery.finished.set()
    return delivery


class Notifier:
    """Writes a command's events to events.jsonl and delivers them, never failing the command."""

    def __init__(
        self,
        host: HostConfig,
        courier: Courier,
        reporter: Reporter,
        policy: DeliveryPolicy | None = None,
        host_name: str | None = None,
    ) -> None:
        self.host = host
        self.courier = courier
        self.reporter = reporter
        self.policy = policy or DeliveryPolicy()
        self.host_name = host_name or socket.gethostname()
        self.log = EventLog(host.root / "events.jsonl")
        self.deliveries: list[Delivery] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def targets(self, site: SiteConfig | None) -> tuple[NotifyTarget, ...]:
        return self.host.notify + (site.notify if site is not None else ())

    def on_history(self, entry: HistoryEntry, site: SiteConfig) -> None:
        """A history line was written: emit the events it stands for (never raises)."""
        try:
            for event in events_of(entry, site=site.slug, host=self.host_name):
                self.emit(event, self.targets(site))
        except Exception as exc:  # noqa: BLE001 - an event never changes an operation's outcome
            self.reporter.line(f"     warning: events for the history line were not written: {exc}")

    def emit(self, event: dict[str, Any], targets: Iterable[NotifyTarget]) -> list[Delivery]:
        """Append the event to events.jsonl and start delivering it to every target that wants it."""
        wanted = [target for target in targets if target.wants(event["event"])]
        try:
            self.log.append({**event, "targets": [target.label for target in wanted]})
        except OSError as exc:
            self.reporter.line(f"     warning: could not write {self.log.path}: {exc.strerror}")
        return [self._start(event, target) for target in wanted]

    def send_now(self, messages: Iterable[tuple[dict[str, Any], NotifyTarget]]) -> list[Delivery]:
        """Deliver each event to its target (whatever the target's `events`), all at once, and wait
        for them; nothing is recorded (`sumbg notify test`)."""
        started = [self._start(event, target) for event, target in messages]
        self._join(started, record=False)
        return started

    def _start(self, event: dict[str, Any], target: NotifyTarget) -> Delivery:
        delivery = Delivery(event, target, deadline=time.monotonic() + self.policy.deadline)
        thread = threading.Thread(
            target=deliver, args=(self.courier, delivery, self.policy), name="sumbg-notify", daemon=True
        )
        with self._lock:
            self.deliveries.append(delivery)
            self._threads.append(thread)
        thread.start()
        return delivery

    def flush(self) -> list[Delivery]:
        """At the end of the command: wait for what is still being delivered (until its deadline at
        most), record how each delivery ended, and say which failed."""
        with self._lock:
            pending = [d for d in self.deliveries if not d.recorded]
        self._join(pending, record=True)
        return pending

    def _join(self, deliveries: list[Delivery], *, record: bool) -> None:
        for delivery in deliveries:
            delivery.finished.wait(timeout=max(0.0, delivery.deadline - time.monotonic()) + 1.0)
            if not delivery.finished.is_set():
                delivery.error = (delivery.error or "no answer") + " (deadline passed)"
            delivery.recorded = True  # handled: flush leaves it alone
            if record:
                self._record(delivery)
        if record:
            self._report(deliveries)

    def _record(self, delivery: Delivery) -> None:
        line = {
            "delivery": delivery.event["id"],
            "event": delivery.event["event"],
            "target": delivery.target.label,
            "outcome": "delivered" if delivery.delivered else "undelivered",
            "attempts": delivery.attempts,
            "at": utc_now(),
            **({"error": delivery.error} if delivery.error and not delivery.delivered else {}),
        }
        try:
            self.log.append(line)
        except OSError:
            pass  # said below, with the delivery's own failure

    def _report(self, deliveries: list[Delivery]) -> None:
        delivered: dict[str, list[str]] = {}
        for delivery in deliveries:
            if delivery.delivered:
                delivered.setdefault(delivery.event["event"], []).append(delivery.target.label)
                continue
            self.reporter.line(
                f"warning: {delivery.event['event']} was not delivered to {delivery.target.label} after "
                f"{delivery.attempts} attempt(s): {delivery.error}; recorded in {self.log.path} (`sumbg status`)"
            )
        for name, labels in delivered.items():
            self.reporter.line(f"notified: {name} -> {', '.join(labels)}")
