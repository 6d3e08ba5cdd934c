"""A background visitor load through the edge Caddy, for zero-downtime tests and benchmarks.

Clients never retry: a request that fails is counted as failed, exactly as a
browser on a kept-alive connection would see it. Half the clients keep one
connection alive for their whole life, half open a new connection per request.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Sample:
    at: float
    ok: bool
    status: int
    build: str | None
    latency: float
    error: str = ""
    client: int = 0
    retry_after: str = ""  # the Retry-After header of an answer (a maintenance page's 503)


@dataclass
class TrafficReport:
    samples: list[Sample] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def builds_in_order(self) -> list[str]:
        """The sequence of distinct versions seen, in time order (e.g. ['v1.0.0', 'v1.1.0'])."""
        seen: list[str] = []
        for sample in sorted(self.samples, key=lambda s: s.at):
            if sample.ok and sample.build and (not seen or seen[-1] != sample.build):
                seen.append(sample.build)
        return seen

    def per_client_builds(self) -> dict[int, list[str]]:
        """For each client, the distinct versions it saw in the order it saw them."""
        result: dict[int, list[str]] = {}
        for sample in self.samples:  # appended in completion order, per client sequential
            seen = result.setdefault(sample.client, [])
            if sample.ok and sample.build and (not seen or seen[-1] != sample.build):
                seen.append(sample.build)
        return result

    def builds(self) -> Counter:
        return Counter(s.build for s in self.samples if s.ok)

    def summary(self) -> str:
        errors = Counter(s.error or f"HTTP {s.status}" for s in self.failures)
        return f"{self.sent} requests, {len(self.failures)} failed {dict(errors)}, builds {dict(self.builds())}"


# The pause the tests' clients take between requests. Unpaced, three clients on the example site
# keep both cores of a 2-core machine busy (measured: 114 requests/s at 93% CPU on `/`, 97 at 96% on
# `/health/`), which starves the very upgrade under test and every test running beside it. Paced,
# each client still sends about 9 requests a second, continuously across every switch, and its
# kept-alive connection stays open (and mostly idle, as a browser's is) through it.
TEST_PAUSE = 0.1


class Traffic:
    """Continuous requests to `path` on host:port with a Host header, in background threads."""

    def __init__(
        self,
        port: int,
        domain: str,
        *,
        path: str = "/health/",
        keepalive_clients: int = 2,
        fresh_clients: int = 2,
        host: str = "127.0.0.1",
        pause: float = 0.0,
    ) -> None:
        self.port, self.domain, self.path, self.host, self.pause = port, domain, path, host, pause
        self.report = TrafficReport()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        kinds = [True] * keepalive_clients + [False] * fresh_clients
        self._threads = [
            threading.Thread(target=self._client, args=(keepalive, number), daemon=True)
            for number, keepalive in enumerate(kinds)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def settle(self, requests: int = 3, timeout: float = 30) -> None:
        """Wait until every client has finished `requests` more requests from now (a condition,
        not a fixed sleep): before a command, the clients are running; after it, each has seen
        what the site serves once the command is done."""
        with self._lock:
            done = Counter(sample.client for sample in self.report.samples)
        wanted = {number: done[number] + requests for number in range(len(self._threads))}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = Counter(sample.client for sample in self.report.samples)
            if all(done[number] >= count for number, count in wanted.items()):
                return
            time.sleep(0.02)
        raise AssertionError(f"the background clients did not get {requests} more answers in {timeout:g}s")

    def stop(self) -> TrafficReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        return self.report

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self.report.samples.append(sample)

    def _client(self, keepalive: bool, number: int) -> None:
        headers = {"Host": self.domain, "X-Forwarded-Proto": "https"}
        conn = None
        while not self._stop.is_set():
            if conn is None or not keepalive:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            started = time.monotonic()
            try:
                conn.request("GET", self.path, headers=headers if keepalive else {**headers, "Connection": "close"})
                response = conn.getresponse()
                body = response.read()
                status = response.status
                build = None
                if self.path.startswith("/health"):
                    try:
                        build = json.loads(body).get("version", {}).get("build")
                    except ValueError:
                        build = None
                ok = 200 <= status < 400
                self._record(
                    Sample(
                        time.time(),
                        ok,
                        status,
                        build,
                        time.monotonic() - started,
                        client=number,
                        retry_after=response.getheader("retry-after", ""),
                    )
                )
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(
                    Sample(
                        time.time(), False, 0, None, time.monotonic() - started, error=type(exc).__name__, client=number
                    )
                )
                conn.close()
                conn = None
            if not keepalive and conn is not None:
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()
