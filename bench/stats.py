"""Numbers from per-request samples (see load.py): counts, percentiles, windows, convergence."""

from __future__ import annotations

import math
import statistics
from collections import Counter


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summarise(samples: list[dict]) -> dict:
    """sent, failed, errors, latency p50/p99/max (ms, over every request, ok or not), builds."""
    latencies = [s["latency"] for s in samples]
    failures = [s for s in samples if not s["ok"]]
    errors = Counter(s["error"] or f"HTTP {s['status']}" for s in failures)
    span = (max(s["start"] + s["latency"] for s in samples) - min(s["start"] for s in samples)) if samples else 0
    return {
        "sent": len(samples),
        "failed": len(failures),
        "errors": dict(errors),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies) if latencies else None),
        "rate_per_s": round(len(samples) / span, 1) if span > 0 else None,
        "keepalive_sent": sum(1 for s in samples if s["kind"] == "ka"),
        "new_connection_sent": sum(1 for s in samples if s["kind"] == "new"),
        "builds": dict(Counter(s["build"] for s in samples if s["ok"])),
    }


def in_window(samples: list[dict], start: float, end: float) -> list[dict]:
    """Requests whose [start, start + latency] overlaps the window [start, end]."""
    return [s for s in samples if s["start"] <= end and s["start"] + s["latency"] >= start]


def outside_window(samples: list[dict], start: float, end: float) -> list[dict]:
    """Requests that do not overlap the window [start, end] (the complement of in_window)."""
    return [s for s in samples if s["start"] > end or s["start"] + s["latency"] < start]


LATENCY_KEYS = ("sent", "failed", "errors", "p50_ms", "p99_ms", "max_ms", "rate_per_s")


def latency_split(samples: list[dict]) -> dict:
    """Requests, failures, latency and rate over all `samples` and for each path (the `by_path` dict)."""
    paths = sorted({s.get("path", "") for s in samples})
    whole = summarise(samples)
    return {
        **{k: whole[k] for k in LATENCY_KEYS},
        "by_path": {
            path: {k: part[k] for k in LATENCY_KEYS}
            for path in paths
            for part in [summarise([s for s in samples if s.get("path", "") == path])]
        },
    }


def converged(samples: list[dict], build: str, since: float) -> dict:
    """When every request started from then on was answered OK by `build`.

    Returns the start of the first such request (`at`) and the start of the
    last request that was not (`last_other`), both as Unix times, or None.
    """
    later = sorted((s for s in samples if s["start"] >= since), key=lambda s: s["start"])
    last_bad = None
    for index, sample in enumerate(later):
        if not (sample["ok"] and sample["build"] == build):
            last_bad = index
    if last_bad is None:
        return {"at": later[0]["start"] if later else None, "last_other": None}
    if last_bad + 1 >= len(later):
        return {"at": None, "last_other": later[last_bad]["start"]}
    return {"at": later[last_bad + 1]["start"], "last_other": later[last_bad]["start"]}


def first_ok(samples: list[dict], build: str, since: float) -> float | None:
    times = [s["start"] for s in samples if s["start"] >= since and s["ok"] and s["build"] == build]
    return min(times) if times else None


def per_second(samples: list[dict], origin: float) -> list[dict]:
    """One row per whole second since `origin` (by request start): ok, failed, p50/p99 latency (ms)."""
    buckets: dict[int, list[dict]] = {}
    for sample in samples:
        buckets.setdefault(math.floor(sample["start"] - origin), []).append(sample)
    rows = []
    for second in range(min(buckets), max(buckets) + 1) if buckets else ():
        group = buckets.get(second, [])
        lat = [s["latency"] for s in group]
        rows.append(
            {
                "t": second,
                "ok": sum(1 for s in group if s["ok"]),
                "failed": sum(1 for s in group if not s["ok"]),
                "p50_ms": ms(percentile(lat, 50)),
                "p99_ms": ms(percentile(lat, 99)),
            }
        )
    return rows


def median_of(runs: list[dict], key: str):
    """Median of runs[i][key] over runs where it is a number (None when there is none)."""
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    if not values:
        return None
    value = statistics.median(values)
    return round(value, 4) if isinstance(value, float) else value


def medians(runs: list[dict], keys: list[str]) -> dict:
    return {key: median_of(runs, key) for key in keys}
