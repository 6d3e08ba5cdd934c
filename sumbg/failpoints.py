"""Named points where a crash test can freeze sumbg to SIGKILL it at an exact moment.

Inert unless SUMBG_FAILPOINT names the point: then sumbg says so on stderr and
waits to be killed. Crash safety is only believable if every such point is tested.
"""
from __future__ import annotations

import os
import sys
import time


def reached(name: str) -> None:
    if os.environ.get("SUMBG_FAILPOINT") != name:
        return
    print(f"sumbg: failpoint {name} reached (pid {os.getpid()})", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)
