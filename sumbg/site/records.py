"""A site's records: state.json (written atomically), history.jsonl (append-only),
and the operator documents regenerated from history (sites matrix, what-broke log)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sumbg.util import atomic_write, utc_now


def recorded(state: dict, colour: str | None) -> dict:
    """What state.json records for a colour (image, ref, commit, backup...), or {} if nothing."""
    return (state.get("colours") or {}).get(colour or "") or {}


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
    def load_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"live": None, "colours": {}, "previous": None, "operation": None}

    def save_state(self, state: dict) -> None:
        state["updated_at"] = utc_now()
        atomic_write(self.state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------ history
    def append(self, entry: dict) -> None:
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

    def history(self) -> list[dict]:
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

    def operations(self) -> list[dict]:
        """Finished operations, plus started ones that never finished (interrupted)."""
        finished = {e["id"]: e for e in self.history() if e.get("event") == "finished"}
        result = []
        for entry in self.history():
            if entry.get("event") == "started":
                result.append(finished.get(entry["id"]) or {**entry, "outcome": "interrupted"})
            elif entry.get("event") not in ("started", "finished"):
                result.append(entry)
        return result
