"""Steady HTTP load through the edge Caddy, one record per request (run as a subprocess).

    python bench/load.py --port P --domain D --rate 300 --keepalive 8 --fresh 8 \
        --max-seconds 120 --max-requests 100000 --out samples.csv
    python bench/load.py ... --keepalive 8 --fresh 0 --path / --path /health/   # a mix of pages

``--keepalive`` clients keep one connection alive, ``--fresh`` ones open a new
connection per request (``Connection: close``). With several ``--path``, each
client takes them in turn, client i starting at the i-th (so two paths get
half the requests each). Nobody retries: a request that fails is
counted as failed. Each client is paced to ``rate / clients`` requests per
second (no catch-up bursts after a stall), so the load is steady while the
site keeps up and closed-loop (bounded by the client count) when it does not.
The run stops on SIGTERM/SIGINT, after ``--max-seconds`` or after
``--max-requests``, whichever comes first, and then writes one CSV row per
request: start (Unix time), latency (s), ok (0/1), HTTP status (0 = no
answer), the release that answered (``version.build`` of /health/), the client
kind (``ka`` or ``new``), the error class and the path. Loopback only.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import signal
import threading
import time

FIELDS = ("start", "latency", "ok", "status", "build", "kind", "error", "path")


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.rows: list[tuple] = []
        self.deadline = time.monotonic() + args.max_seconds
        clients = args.keepalive + args.fresh
        self.interval = clients / args.rate if args.rate > 0 else 0.0

    def record(self, row: tuple) -> None:
        with self.lock:
            self.rows.append(row)
            if len(self.rows) >= self.args.max_requests:
                self.stop.set()

    def client(self, keepalive: bool, offset: float, first: int) -> None:
        a = self.args
        paths = a.path or ["/health/"]
        turn = first
        headers = {"Host": a.domain, "X-Forwarded-Proto": "https", "User-Agent": "sumbg-bench"}
        if not keepalive:
            headers["Connection"] = "close"
        kind = "ka" if keepalive else "new"
        conn = None
        next_at = time.monotonic() + offset
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= self.deadline:
                self.stop.set()
                break
            if next_at > now:
                time.sleep(next_at - now)
                if self.stop.is_set():
                    break
            next_at = max(next_at + self.interval, time.monotonic())
            if conn is None:
                conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
            path = paths[turn % len(paths)]
            turn += 1
            wall = time.time()
            t0 = time.perf_counter()
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                latency = time.perf_counter() - t0
                build = ""
                if body[:1] == b"{":  # /health/'s JSON; a page's HTML has no release to read
                    try:
                        build = (json.loads(body).get("version") or {}).get("build") or ""
                    except (ValueError, AttributeError):
                        pass
                status = response.status
                self.record((wall, latency, int(200 <= status < 400), status, build, kind, "", path))
                if not keepalive or (response.getheader("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.record((wall, time.perf_counter() - t0, 0, 0, "", kind, type(exc).__name__, path))
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def run(self) -> None:
        a = self.args
        kinds = [True] * a.keepalive + [False] * a.fresh
        threads = [
            threading.Thread(target=self.client, args=(ka, i * self.interval / max(len(kinds), 1), i), daemon=True)
            for i, ka in enumerate(kinds)
        ]
        for thread in threads:
            thread.start()
        # Not stop.wait(): the SIGTERM handler calls stop.set() in this (the main) thread, and if
        # the signal lands while wait() holds the event's lock, set() waits for that lock forever
        # (seen under load: the generator never stopped). is_set() takes no lock.
        while not self.stop.is_set():
            time.sleep(0.2)
        for thread in threads:
            thread.join(timeout=a.timeout + 5)
        with self.lock:
            rows = sorted(self.rows)
        with open(a.out, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(FIELDS)
            for row in rows:
                writer.writerow((f"{row[0]:.6f}", f"{row[1]:.6f}", *row[2:]))


def read_samples(path) -> list[dict]:
    """The CSV written by this module, as dicts with typed values."""
    out = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            out.append(
                {
                    "start": float(row["start"]),
                    "latency": float(row["latency"]),
                    "ok": row["ok"] == "1",
                    "status": int(row["status"]),
                    "build": row["build"],
                    "kind": row["kind"],
                    "error": row["error"],
                    "path": row.get("path") or "/health/",
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument(
        "--path", action="append", help="path to request (repeat for a mix, taken in turn; default /health/)"
    )
    parser.add_argument("--rate", type=float, default=300.0, help="target requests/s over all clients")
    parser.add_argument("--keepalive", type=int, default=8)
    parser.add_argument("--fresh", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("loopback only")
    load = Load(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: load.stop.set())
    print("ready", flush=True)
    load.run()


if __name__ == "__main__":
    main()
