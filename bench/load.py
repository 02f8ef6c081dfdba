"""Load generators: `wrk` (throughput) and a small threaded client (per-request records).

Both only ever target 127.0.0.1 and stop by themselves: every run has a deadline.
"""

from __future__ import annotations

import http.client
import json
import resource
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

LUA_SCRIPT = Path(__file__).with_name("post.lua")


def check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"Benchmarks only target 127.0.0.1, not {url!r}")
    return "127.0.0.1", int(parts.port or 80)


@dataclass(frozen=True)
class Sample:
    start: float  # perf_counter seconds
    end: float
    status: int  # 0: connection error
    version: str | None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return self.status == 200


def post_once(conn: http.client.HTTPConnection, path: str, body: bytes,
              headers: dict[str, str]) -> tuple[int, str | None, bytes]:
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    return response.status, response.getheader("X-Model-Version"), data


class ClientPool:
    """`concurrency` threads, each on its own kept-alive connection, POSTing `body` back to back.

    Records every request (start, end, status, served version). A connection error is
    recorded as status 0 and retried after `retry_pause` seconds on a new connection, as a
    client with a retry would do. Stops at `stop()` or after `max_seconds`, whichever first.
    """

    def __init__(self, url: str, body: bytes, concurrency: int, max_seconds: float,
                 retry_pause: float = 0.05, timeout: float = 30.0) -> None:
        self.host, self.port = check_loopback(url)
        self.path = urlsplit(url).path or "/"
        self.body = body
        self.concurrency = concurrency
        self.max_seconds = max_seconds
        self.retry_pause = retry_pause
        self.timeout = timeout
        self._stop = threading.Event()
        self._samples: list[list[Sample]] = [[] for _ in range(concurrency)]
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(concurrency)]
        self._cpu_before = 0.0
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self._started = 0.0

    def start(self) -> ClientPool:
        self._started = time.perf_counter()
        self._cpu_before = time.process_time()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self.wall_seconds = time.perf_counter() - self._started
        # process_time covers the whole bench process; during a run it is this pool's work.
        self.cpu_seconds = time.process_time() - self._cpu_before
        return self.samples()

    def samples(self) -> list[Sample]:
        merged = [s for per_thread in self._samples for s in list(per_thread)]
        return sorted(merged, key=lambda s: s.start)

    def _run(self, index: int) -> None:
        deadline = time.perf_counter() + self.max_seconds
        headers = {"Content-Type": "application/json"}
        out = self._samples[index]
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.perf_counter() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            started = time.perf_counter()
            try:
                status, version, _ = post_once(conn, self.path, self.body, headers)
            except (OSError, http.client.HTTPException):
                out.append(Sample(started, time.perf_counter(), 0, None))
                conn.close()
                conn = None
                self._stop.wait(self.retry_pause)
                continue
            out.append(Sample(started, time.perf_counter(), status, version))
        if conn is not None:
            conn.close()


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50: float
    p90: float
    p99: float
    max: float
    wrk_cpu_seconds: float
    command: str
    raw: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def goodput(self) -> float:
        """Answers with a 2xx status per second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    @property
    def wrk_cpu_share(self) -> float:
        """wrk's own CPU time per wall second (1.0 = one core busy)."""
        return self.wrk_cpu_seconds / self.seconds if self.seconds else 0.0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(url: str, body_file: Path, concurrency: int, seconds: float,
            threads: int = 2) -> WrkResult:
    check_loopback(url)
    threads = max(1, min(threads, concurrency))
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(LUA_SCRIPT), url, "--", str(body_file)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((out for out in done.stdout.splitlines() if out.startswith("WRK_JSON ")),
                None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    raw = json.loads(line[len("WRK_JSON "):])
    errors = raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"]
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return WrkResult(requests=raw["requests"], seconds=raw["duration_us"] / 1e6, errors=errors,
                     non_2xx=raw["status_errors"], p50=raw["p50_us"] / 1e6,
                     p90=raw["p90_us"] / 1e6, p99=raw["p99_us"] / 1e6, max=raw["max_us"] / 1e6,
                     wrk_cpu_seconds=cpu, command=" ".join(argv), raw=raw)
