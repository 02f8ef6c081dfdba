"""Worker processes: requests/s with `--workers 2` against one process, memory per worker and
per host, and the time from a promotion until every worker serves it.

The 2-worker receiver takes the notified `alias` receiver's port (following @champion) for the
part, so promotions reach it by notification; the usual one is back afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests

from bench.config import Config
from bench.load import wrk_available
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, Stack
from bench.stats import percentile
from bench.throughput import lane_counters, load_run

ROLE = "alias"


def smaps_kib(pid: int) -> dict[str, int]:
    """Rss and Pss of a process, in KiB (Pss splits each shared page among its sharers)."""
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key] = int(rest.split()[0])
    return found


def memory_rows(label: str, pids: list[tuple[str, int]]) -> list[list[str]]:
    rows, rss_sum, pss_sum = [], 0, 0
    for name, pid in pids:
        kib = smaps_kib(pid)
        rss_sum, pss_sum = rss_sum + kib["Rss"], pss_sum + kib["Pss"]
        rows.append([label, name, mib(kib["Rss"]), mib(kib["Pss"])])
    rows.append([label, "**host**", f"**{mib(rss_sum)}**", f"**{mib(pss_sum)}**"])
    return rows


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def host_pids(url: str, supervisor: int) -> list[tuple[str, int]]:
    workers = requests.get(url + "/models/current", timeout=5).json()["workers"]
    return [("supervisor", supervisor)] + [(f"worker {w['index']}", w["pid"]) for w in workers]


def versions(url: str) -> list[str | None]:
    workers: list[dict[str, Any]] = requests.get(url + "/models/current",
                                                 timeout=5).json()["workers"]
    return [w["versions"].get(MODEL_NAME) for w in workers]


def promotions(stack: Stack, url: str, count: int) -> tuple[list[float], list[float]]:
    """Seconds from the alias move to every worker serving, and from the first to the last."""
    to_all, spread = [], []
    for i in range(count):
        version = stack.versions[(i + 1) % len(stack.versions)]
        stack.set_alias("champion", version)
        moved = time.perf_counter()
        first = None
        deadline = moved + 60
        while time.perf_counter() < deadline:
            seen = versions(url)
            now = time.perf_counter()
            if first is None and version in seen:
                first = now
            if all(v == version for v in seen):
                to_all.append(now - moved)
                spread.append(now - (first or now))
                break
            time.sleep(0.005)
    return to_all, spread


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(8, "Worker processes")
    use_wrk = wrk_available() and not cfg.smoke
    stack.set_alias("champion", stack.versions[0])
    stack.stop_receiver(ROLE)
    try:
        stack.start_receivers({ROLE: {"MODEL_ALIAS": "champion", "HOTSWAP_WORKERS": "2"}})
        single, multi = stack.receivers["stage"], stack.receivers[ROLE]
        body_file, body = stack.body_file(1), stack.sample_body(1)
        rows, rps = [], {}
        for clients in (32, 128) if not cfg.smoke else (8,):
            for label, process in (("1 process", single), ("--workers 2", multi)):
                load_run(process.url + "/invocations", body_file, body, clients, 1.0, use_wrk)
                calls, _, requests_before = lane_counters(process.url)
                run_ = load_run(process.url + "/invocations", body_file, body, clients,
                                cfg.load_seconds, use_wrk)
                calls_after, _, requests_after = lane_counters(process.url)
                merged = (requests_after - requests_before) / max(1.0, calls_after - calls)
                rps[label, clients] = run_["rps"]
                rows.append([label, str(clients), f"{run_['rps']:.0f}", ms(run_["p50"]),
                             ms(run_["p99"]), str(int(run_["failed"])), f"{merged:.1f}",
                             f"{run_['gen_cpu']:.0%}"])
        result.tables.append(table(["server", "clients", "requests/s", "p50", "p99", "failed",
                                    "requests per predict", "load generator CPU (of one core)"],
                                   rows))
        for clients in sorted({c for _, c in rps}):
            gain = rps["--workers 2", clients] / rps["1 process", clients]
            result.add(f"requests/s, --workers 2 against 1 process, {clients} one-row clients",
                       f"{gain:.2f}x ({rps['--workers 2', clients]:.0f} vs "
                       f"{rps['1 process', clients]:.0f})")
        memory = (memory_rows("1 process", [("process", single.pid)])
                  + memory_rows("--workers 2", host_pids(multi.url, multi.pid)))
        result.tables.append(table(["server", "process", "RSS", "PSS"], memory))
        to_all, spread = promotions(stack, multi.url, cfg.promotions)
        result.add("promotion -> every worker serving, p95",
                   f"{ms(percentile(to_all, 95))} (median {ms(percentile(to_all, 50))}, "
                   f"{len(to_all)}/{cfg.promotions} promotions)")
        result.add("first worker -> last worker serving, p95",
                   ms(percentile(spread, 95)), "<= 100 ms", percentile(spread, 95) <= 0.1)
    finally:
        stack.stop_receiver(ROLE)
        stack.set_alias("champion", stack.versions[0])
        stack.start_receivers({ROLE: {"MODEL_ALIAS": "champion"}})
    result.notes += [
        "Throughput: wrk (or the threaded client in smoke mode), one-row JSON bodies, kept-"
        "alive connections, a 1 s warm-up then the measured run; both receivers serve the same "
        "version. The load generator runs on the same 2 cores: its CPU share is in the table.",
        "Memory after the load runs. RSS counts pages shared by fork once per process; PSS "
        "divides each shared page among its sharers, so the host's PSS is what the host uses.",
        "Promotions move @champion (the plugin notifies the receiver; the notified worker "
        "relays to the other); polled every 5 ms through /models/current, which reports every "
        "worker's served version.",
    ]
    return result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
