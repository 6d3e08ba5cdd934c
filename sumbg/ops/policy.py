"""What an upgrade does about its migrations, and what a rollback may do after them: pure decisions.

The facts come from the rehearsal (rehearsal.py): whether the live release still
serves its checks on a copy of the database migrated by the new release. The
decisions here turn those facts, and the operator's flags, into what happens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sumbg.site.state import ColourRecord

COMPATIBLE = "compatible"
BREAKING = "breaking"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Evidence:
    """One check the live release failed on the migrated copy."""

    check: str  # "GET /"
    status: int  # what it answered (0: no answer)
    problem: str  # what the check saw
    log_line: str  # the error line the live release logged, if any

    def describe(self) -> str:
        said = f"; the live release logged: {self.log_line}" if self.log_line else ""
        return f"{self.check} answered {self.status or 'nothing'} ({self.problem}){said}"

    def record(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "problem": self.problem, "log_line": self.log_line}


@dataclass(frozen=True)
class Compatibility:
    verdict: str  # COMPATIBLE, BREAKING or NOT_MEASURED
    evidence: tuple[Evidence, ...] = ()
    reason: str = ""  # why it was not measured

    def record(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"verdict": self.verdict}
        if self.evidence:
            facts["evidence"] = [e.record() for e in self.evidence]
        if self.reason:
            facts["reason"] = self.reason
        return facts


@dataclass(frozen=True)
class Decision:
    maintenance: bool  # the maintenance page covers migrate .. confirmed switch
    refusal: str = ""  # non-empty: the upgrade stops here, nothing changed
    warnings: tuple[str, ...] = ()
    breaks_previous: str = ""  # recorded on the new release: why a rollback needs --restore-db
    record: dict[str, Any] = field(default_factory=dict)


def decide(
    compat: Compatibility, *, maintenance: bool, accept_breaking: bool, slug: str, new_ref: str, live_ref: str
) -> Decision:
    """The policy for a release's migrations, given what the rehearsal measured."""
    facts = {"compatibility": compat.record(), "maintenance": maintenance, "accept_breaking": accept_breaking}
    if compat.verdict == BREAKING:
        evidence = "; ".join(e.describe() for e in compat.evidence[:3])
        breaks = f"{new_ref}'s migrations break {live_ref} (measured on a copy of the database: {evidence})"
        if not maintenance and not accept_breaking:
            return Decision(
                False,
                refusal=(
                    f"{breaks}. Nothing was changed: the live database was never touched. Either "
                    f"`sumbg upgrade {slug} {new_ref} --maintenance` (visitors get the maintenance page, 503 with "
                    f"Retry-After, from migrate until the new release is confirmed live; the window is measured) "
                    f"or `--accept-breaking` (visitors may get errors from {live_ref} until the switch)"
                ),
                record={**facts, "policy": "refused"},
            )
        policy = "maintenance" if maintenance else "accept-breaking"
        return Decision(maintenance, breaks_previous=breaks, record={**facts, "policy": policy})
    warnings = []
    if compat.verdict == NOT_MEASURED:
        warnings.append(f"compatibility of {new_ref}'s migrations with {live_ref} was not measured ({compat.reason})")
    if accept_breaking and compat.verdict == COMPATIBLE:
        warnings.append(f"--accept-breaking: {live_ref} passed its checks on the migrated copy; nothing to accept")
    return Decision(
        maintenance, warnings=tuple(warnings), record={**facts, "policy": "maintenance" if maintenance else "plain"}
    )


def rollback_needs_restore(live_record: ColourRecord | None) -> str:
    """Why leaving the live release needs its pre-upgrade database back ('' if it does not)."""
    if live_record is None:
        return ""
    reasons = []
    if live_record.breaks_previous:
        reasons.append(live_record.breaks_previous)
    names = live_record.after_switch_migrations or []
    done = _AFTER_SWITCH_STATES.get(live_record.after_switch or "")
    if names and done:
        reasons.append(f"its after-switch migrations {done} ({', '.join(names)})")
    return "; ".join(reasons)


# A release's after-switch migrations, by the state its record keeps ("pending": not started).
_AFTER_SWITCH_STATES = {"ran": "ran", "running": "were started and not finished", "failed": "failed part way"}


_ERROR_LINE = re.compile(r"\b[\w.]*(?:Error|Exception)\b:? .+")


def error_line(log: str) -> str:
    """The last error line a release logged (e.g. `ProgrammingError: column ... does not exist`)."""
    found = ""
    for line in log.splitlines():
        match = _ERROR_LINE.search(line)
        if match and "Traceback" not in line:
            found = match.group(0).strip()
    return found[:300]
