"""`make bench` in quick mode, only to prove the harness works on the real engine.

The figures themselves are never asserted as timings here: benchmarks measure,
tests check behaviour.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.e2e


# The load the harness sends during its measured deploys. Left to itself it aims at 80% of the
# site's capacity, and on a 2-core machine the example site's capacity takes both cores: a run
# beside other end-to-end tests (make test runs modules in parallel) would starve them. The
# harness, its load generator and every figure's code path are the same at any rate.
RATE = "20"


def test_quick_bench_writes_its_report(engine, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--rate", RATE, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failures"] == []
    upgrade = results["upgrade"]["runs"][0]
    assert upgrade["sent"] > 0 and upgrade["failed"] == 0
    rollback = results["rollback"]["runs"][0]
    assert rollback["sent"] > 0 and rollback["failed"] == 0
    assert results["baseline"]["runs"][0]["sent"] > 0
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "sumbg" in report and "restart" in report.lower()
    assert not subprocess.run(
        ["docker", "ps", "-aq", "--filter", "name=sum-bench-acme-"], capture_output=True, text=True
    ).stdout.strip()
