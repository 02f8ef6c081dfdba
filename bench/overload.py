"""Overload: goodput (answers with 200 per second) and p99 at 1,000 closed-loop clients
against 32, in one run, for the receiver's admission by expected wait (HOTSWAP_MAX_WAIT, the
defaults) and for admission by a count of 256 (the earlier rule: HOTSWAP_MAX_QUEUE=256 and a
wait budget too large to matter).

Each 1,000-client run starts right after another one, so it also measures a client population
replaced at once: the previous run's connections close with requests still queued.
"""

from __future__ import annotations

import math
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.config import Config
from bench.load import ClientPool, run_wrk, wrk_available
from bench.result import PartResult, table
from bench.stack import Stack
from bench.stats import percentile

CROWD = 1000
FEW = 32
# File descriptors for 1,000 connections on each side, with room: the receivers and wrk inherit.
OPEN_FILES = 4096
ADMISSIONS = {
    "by expected wait (defaults)": {},
    "by count (HOTSWAP_MAX_QUEUE=256)": {"HOTSWAP_MAX_QUEUE": "256",
                                         "HOTSWAP_MAX_WAIT": "3600"},
}


def raise_open_files() -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def lane_within(base: str) -> tuple[float, float]:
    """(answers scored, of which within 1 s in the lane) so far, from the receiver's own
    duration histogram: the body read to the answer, so no time in the kernel or the client."""
    text = requests.get(base + "/metrics", timeout=10).text  # one scrape: both agree
    found = {"count": 0.0, "bucket": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name != "hotswap_prediction_duration_seconds" or (
                    sample.labels.get("role") != "primary"):
                continue
            if sample.name.endswith("_count"):
                found["count"] = sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "1.0":
                found["bucket"] = sample.value
    return found["count"], found["bucket"]


def listen_overflows() -> float:
    """The kernel's count of connections dropped at a full accept queue (TcpExt
    ListenOverflows, /proc/net/netstat); NaN where there is no such file."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return math.nan
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return float(dict(zip(names.split(), values.split(), strict=True))
                         .get("ListenOverflows", math.nan))
    return math.nan


class AcceptQueue:
    """The most connections seen waiting in a listening port's accept queue (ss's Recv-Q of
    the LISTEN socket: handshake done, not yet taken by the server), sampled in a thread
    every SAMPLE_SECONDS while a run lasts. NaN where `ss` is missing."""

    SAMPLE_SECONDS = 0.2

    def __init__(self, port: int) -> None:
        self._argv = ["ss", "-ltnH", f"sport = :{port}"]
        self.peak = math.nan if shutil.which("ss") is None else 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> AcceptQueue:
        if not math.isnan(self.peak):
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            listed = subprocess.run(self._argv, capture_output=True, text=True, timeout=5)
            for line in listed.stdout.splitlines():
                fields = line.split()
                if len(fields) > 1 and fields[1].isdigit():
                    self.peak = max(self.peak, float(fields[1]))
            self._stop.wait(self.SAMPLE_SECONDS)


def measure(stack: Stack, base: str, clients: int, seconds: float, use_wrk: bool
            ) -> dict[str, float]:
    """goodput (200s per second), refused per second, p99, the share of answers the lane
    gave within 1 s, the load generator's CPU share (1.0 = one core), and what waited in the
    kernel: the accept queue's peak and the connections it dropped."""
    before, overflows = lane_within(base), listen_overflows()
    with AcceptQueue(urlsplit(base).port or 80) as queue:
        figures = _load(stack, base + "/invocations", clients, seconds, use_wrk)
    after = lane_within(base)
    scored = after[0] - before[0]
    figures["lane_within_1s"] = (after[1] - before[1]) / scored if scored else float("nan")
    figures["accept_queue_peak"] = queue.peak
    figures["listen_overflows"] = listen_overflows() - overflows
    return figures


def _load(stack: Stack, url: str, clients: int, seconds: float, use_wrk: bool
          ) -> dict[str, float]:
    if use_wrk:
        r = run_wrk(url, stack.body_file(1), clients, seconds)
        return {"goodput": (r.requests - r.non_2xx) / r.seconds, "refused": r.non_2xx / r.seconds,
                "errors": r.errors, "p99": r.p99, "gen_cpu": r.wrk_cpu_share}
    pool = ClientPool(url, stack.sample_body(1), clients, seconds).start()
    time.sleep(seconds)
    samples = pool.stop()
    answered = [s.latency for s in samples if s.ok]
    return {"goodput": len(answered) / pool.wall_seconds,
            "refused": sum(s.status == 503 for s in samples) / pool.wall_seconds,
            "errors": sum(s.status not in (200, 503) for s in samples),
            "p99": percentile(answered, 99), "gen_cpu": pool.cpu_seconds / pool.wall_seconds}


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(9, "Overload: goodput at 1,000 clients, admission by expected wait")
    use_wrk = wrk_available()
    open_files = raise_open_files()
    roles = {name: f"overload-{index}" for index, name in enumerate(ADMISSIONS)}
    stack.start_receivers({roles[name]: {"MODEL_STAGE": "Production", **env}
                           for name, env in ADMISSIONS.items()})
    crowd = CROWD if not cfg.smoke else 100
    figures: dict[tuple[str, str], dict[str, Any]] = {}
    for name, role in roles.items():
        url = stack.receivers[role].url
        measure(stack, url, 2, 1.0, use_wrk)  # warm: imports, and one measured predict
        figures[(name, "few")] = measure(stack, url, FEW, cfg.load_seconds, use_wrk)
        figures[(name, "crowd")] = measure(stack, url, crowd, cfg.load_seconds, use_wrk)
        # Right after: the previous crowd's connections are gone, a new crowd connects.
        figures[(name, "replaced")] = measure(stack, url, crowd, cfg.load_seconds, use_wrk)
        stack.stop_receiver(role)
    labels = {"few": f"{FEW}", "crowd": f"{crowd}", "replaced": f"{crowd}, population replaced"}
    rows = [[name, labels[run_name], f"{f['goodput']:.0f}", f"{f['refused']:.0f}",
             f"{f['errors']:.0f}", f"{f['p99'] * 1000:.0f} ms",
             f"{f['lane_within_1s'] * 100:.1f} %", _count(f["accept_queue_peak"]),
             _count(f["listen_overflows"]), f"{f['gen_cpu']:.2f}"]
            for (name, run_name), f in figures.items()]
    result.tables.append(table(["admission", "clients", "goodput (200/s)", "refused (503/s)",
                                "connection errors", "p99 (client)",
                                "answered within 1 s in the lane",
                                "accept queue, most waiting", "listen-queue overflows",
                                "load generator CPU (cores)"], rows))
    wait = "by expected wait (defaults)"
    for name in ADMISSIONS:
        ratio = figures[(name, "crowd")]["goodput"] / max(figures[(name, "few")]["goodput"], 1)
        target = name == wait and not cfg.smoke
        result.add(f"goodput at {crowd} vs {FEW} clients, admission {name}", f"{ratio:.2f}x",
                   ">= 1.0x" if target else "", ratio >= 1.0 if target else None)
    for run_name in ("crowd", "replaced"):
        p99 = figures[(wait, run_name)]["p99"]
        target = not cfg.smoke
        result.add(f"p99 at {labels[run_name]} clients, admission by expected wait",
                   f"{p99 * 1000:.0f} ms", "< 1 s" if target else "",
                   p99 < 1.0 if target else None)
    result.notes.append(
        "Accept queue: connections whose handshake the kernel completed and the receiver has "
        "not taken yet (`ss -ltn`'s Recv-Q on the listening socket, sampled every "
        f"{AcceptQueue.SAMPLE_SECONDS:g} s); their clients have sent a request nobody reads, "
        "and neither admission nor the lane's histogram sees that wait. Overflows: the "
        "kernel's ListenOverflows (/proc/net/netstat) during the run, on the whole machine.")
    result.notes.append(
        f"Load generator: {'wrk' if use_wrk else 'the threaded Python client'}, one-row bodies, "
        f"{cfg.load_seconds:g} s per run, closed loop (a refused client asks again at once); "
        f"open-file limit raised to {open_files} for the receivers and the load generator. "
        + ("wrk's p99 is over every answer, refusals included (they are answered at once, so "
           "they lower it only where refusals are many)." if use_wrk else
           "p99 is over answered requests (200) only."))
    return result


def _count(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0f}"
