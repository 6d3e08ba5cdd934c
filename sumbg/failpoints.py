"""Named points where a crash test can freeze sumbg at an exact moment.

Inert unless SUMBG_FAILPOINT names the point: then sumbg says so on stderr and
waits to be killed, or, when SUMBG_FAILPOINT_RESUME names a file, until that
file exists (so a test can change the world behind sumbg's back mid-operation,
then let it go on). Crash safety is only believable if every such point is tested.
"""

from __future__ import annotations

import os
import sys
import time


def reached(name: str) -> None:
    if os.environ.get("SUMBG_FAILPOINT") != name:
        return
    print(f"sumbg: failpoint {name} reached (pid {os.getpid()})", file=sys.stderr, flush=True)
    resume = os.environ.get("SUMBG_FAILPOINT_RESUME")
    while not (resume and os.path.exists(resume)):
        time.sleep(0.05 if resume else 3600)
