"""A site's records: state.json (typed in state.py; written here, atomically, and nowhere else)
and history.jsonl (append-only, one JSON line per operation and outcome)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sumbg.errors import UsageError
from sumbg.site.state import SiteState
from sumbg.util import atomic_write, utc_now

HistoryEntry = dict[str, Any]  # one JSON line of history.jsonl


@dataclass
class SiteRecords:
    site_dir: Path

    @property
    def state_path(self) -> Path:
        return self.site_dir / "state.json"

    @property
    def history_path(self) -> Path:
        return self.site_dir / "history.jsonl"

    # ------------------------------------------------------------ state
    def load_state(self) -> SiteState:
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return SiteState()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{self.state_path} is not valid JSON ({exc}); restore it from a copy") from None
        if not isinstance(data, dict):
            raise UsageError(f"{self.state_path} is not a JSON object; restore it from a copy")
        return SiteState.from_json(data)

    def save_state(self, state: SiteState) -> None:
        state.updated_at = utc_now()
        atomic_write(self.state_path, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------ history
    def append(self, entry: HistoryEntry) -> None:
        line = json.dumps({"at": utc_now(), **entry}, sort_keys=True)
        self.site_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.history_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            # A crash mid-write leaves a torn last line; never glue the next entry onto it.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self) -> list[HistoryEntry]:
        try:
            lines = self.history_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a crash mid-write is skipped, not fatal
        return entries

    def operations(self) -> list[HistoryEntry]:
        """Finished operations, plus started ones that never finished (interrupted)."""
        finished = {e["id"]: e for e in self.history() if e.get("event") == "finished"}
        result = []
        for entry in self.history():
            if entry.get("event") == "started":
                result.append(finished.get(entry["id"]) or {**entry, "outcome": "interrupted"})
            elif entry.get("event") not in ("started", "finished"):
                result.append(entry)
        return result
