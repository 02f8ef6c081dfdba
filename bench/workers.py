"""Worker processes: requests/s with `--workers 2` against one process and against MLServer 1.7
at its best adaptive-batching configuration, memory per process and per host, and the time from
a promotion until every worker serves it.

The 2-worker receiver takes the notified `alias` receiver's port (following @champion) for the
part, so promotions reach it by notification; the usual one is back afterwards. The receivers
are measured on both protocols (MLflow's scoring protocol at `/invocations`, and V2 `infer`);
MLServer on V2, with `parallel_workers` 0, 1 and 2 (the full run: it installs a virtualenv).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench import v2
from bench.config import Config
from bench.load import wrk_available
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, Stack
from bench.stats import percentile
from bench.throughput import lane_counters, load_run
from examples.processes import Process

ROLE = "alias"
SINGLE, MULTI = "receiver, 1 process", "receiver, --workers 2"
# 0: inference in MLServer's own process, no pool of inference processes.
MLSERVER_WORKERS = (0, 1, 2)


@dataclass(frozen=True)
class Cell:
    """One server on one protocol: where to send, what, and whose lane counters to read."""

    server: str
    protocol: str  # "mlflow" or "V2"
    url: str
    body_file: Path
    body: bytes
    receiver: str | None  # the receiver's base URL, for its lane counters


def smaps_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and private memory (Uss: pages no other process maps) of a process, in KiB."""
    found = {"Uss": 0}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key] = int(rest.split()[0])
        elif key in ("Private_Clean", "Private_Dirty"):
            found["Uss"] += int(rest.split()[0])
    return found


def memory_rows(label: str, pids: list[tuple[str, int]]) -> tuple[list[list[str]], int]:
    """A row per process and one for the host; and the host's PSS in KiB."""
    rows, sums = [], {"Rss": 0, "Pss": 0, "Uss": 0}
    for name, pid in pids:
        kib = smaps_kib(pid)
        sums = {key: sums[key] + kib[key] for key in sums}
        rows.append([label, name, *(mib(kib[key]) for key in sums)])
    rows.append([label, "**host**", *(f"**{mib(sums[key])}**" for key in sums)])
    return rows, sums["Pss"]


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def host_pids(url: str, supervisor: int) -> list[tuple[str, int]]:
    workers = requests.get(url + "/models/current", timeout=5).json()["workers"]
    return [("supervisor", supervisor)] + [(f"worker {w['index']}", w["pid"]) for w in workers]


def group_names(process: Process) -> list[tuple[str, int]]:
    """Every process of a server started in its own group: the leader, then the rest."""
    pids = process.group_pids()
    return [("main" if pid == process.pid else f"child (pid {pid})", pid) for pid in pids]


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


def cells(stack: Stack, receivers: dict[str, Process],
          mlservers: dict[str, Process]) -> list[Cell]:
    mlflow_file, mlflow_body = stack.body_file(1), stack.sample_body(1)
    v2_file, v2_body = v2.body_file(stack, 1)
    found = []
    for server, process in receivers.items():
        found += [Cell(server, "mlflow", process.url + "/invocations", mlflow_file, mlflow_body,
                       process.url),
                  Cell(server, "V2", f"{process.url}/v2/models/{MODEL_NAME}/infer", v2_file,
                       v2_body, process.url)]
    for server, process in mlservers.items():
        found.append(Cell(server, "V2", f"{process.url}/v2/models/{MODEL_NAME}/infer", v2_file,
                          v2_body, None))
    return found


def measure(cell: Cell, clients: int, seconds: float, use_wrk: bool) -> dict[str, float]:
    load_run(cell.url, cell.body_file, cell.body, clients, 1.0, use_wrk)  # warm-up
    before = lane_counters(cell.receiver) if cell.receiver else None
    run_ = load_run(cell.url, cell.body_file, cell.body, clients, seconds, use_wrk)
    if before is not None and cell.receiver is not None:
        calls, _, requests_after = lane_counters(cell.receiver)
        run_["merged"] = (requests_after - before[2]) / max(1.0, calls - before[0])
    return run_


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(8, "Worker processes")
    use_wrk = wrk_available() and not cfg.smoke
    version = stack.versions[0]
    stack.set_alias("champion", version)
    stack.promote(version)
    stack.stop_receiver(ROLE)
    mlservers: dict[str, Process] = {}
    loads: list[str] = []
    try:
        stack.start_receivers({ROLE: {"MODEL_ALIAS": "champion", "HOTSWAP_WORKERS": "2"}})
        receivers = {SINGLE: stack.receivers["stage"], MULTI: stack.receivers[ROLE]}
        stack.wait_serving(receivers[SINGLE].url, version, timeout=60)
        if not cfg.smoke:
            for count in MLSERVER_WORKERS:
                mlservers[f"MLServer 1.7, parallel_workers {count}"] = v2.start_mlserver(
                    stack, version, parallel_workers=count)
        measured = cells(stack, receivers, mlservers)
        figures: dict[tuple[str, str, int], dict[str, float]] = {}
        for clients in (32, 128) if not cfg.smoke else (8,):
            loads.append(Path("/proc/loadavg").read_text().split()[0])
            turn = len(figures) // len(measured)
            for cell in measured[turn:] + measured[:turn]:  # rotating order
                figures[cell.server, cell.protocol, clients] = measure(
                    cell, clients, cfg.load_seconds, use_wrk)
        loads.append(Path("/proc/loadavg").read_text().split()[0])
        throughput_figures(result, figures, list(mlservers))
        result.tables.append(throughput_table(measured, figures))
        result.tables.append(memory(result, receivers, mlservers))
        to_all, spread = promotions(stack, receivers[MULTI].url, cfg.promotions)
        result.add("promotion -> every worker serving, p95",
                   f"{ms(percentile(to_all, 95))} (median {ms(percentile(to_all, 50))}, "
                   f"{len(to_all)}/{cfg.promotions} promotions)")
        result.add("first worker -> last worker serving, p95",
                   ms(percentile(spread, 95)), "<= 100 ms", percentile(spread, 95) <= 0.1)
    finally:
        for process in mlservers.values():
            process.stop()
            stack.extra.remove(process)
        stack.stop_receiver(ROLE)
        stack.set_alias("champion", stack.versions[0])
        stack.start_receivers({ROLE: {"MODEL_ALIAS": "champion"}})
    result.notes += notes(cfg, use_wrk, loads, bool(mlservers))
    return result


def best_mlserver(figures: dict[tuple[str, str, int], dict[str, float]], mlservers: list[str],
                  clients: int) -> str:
    return max(mlservers, key=lambda server: figures[server, "V2", clients]["rps"])


def throughput_figures(result: PartResult, figures: dict[tuple[str, str, int], dict[str, float]],
                       mlservers: list[str]) -> None:
    for clients in sorted({c for _, _, c in figures}):
        multi, single = figures[MULTI, "mlflow", clients], figures[SINGLE, "mlflow", clients]
        result.add(f"requests/s, --workers 2 against 1 process, {clients} one-row clients "
                   "(/invocations)", f"{ratio(multi, single):.2f}x ({multi['rps']:.0f} vs "
                   f"{single['rps']:.0f})")
        if not mlservers:
            continue
        best = best_mlserver(figures, mlservers, clients)
        other, ours = figures[best, "V2", clients], figures[MULTI, "V2", clients]
        gain = ratio(ours, other)
        result.add(f"requests/s, --workers 2 against MLServer 1.7 at its best, {clients} "
                   "one-row clients (V2 infer both)",
                   f"{gain:.1f}x ({ours['rps']:.0f} vs {other['rps']:.0f}; best: "
                   f"{best.removeprefix('MLServer 1.7, ')})", ">= 5x", gain >= 5)


def ratio(ours: dict[str, float], other: dict[str, float]) -> float:
    return ours["rps"] / other["rps"] if other["rps"] else float("nan")


def throughput_table(measured: list[Cell],
                     figures: dict[tuple[str, str, int], dict[str, float]]) -> str:
    rows = []
    for clients in sorted({c for _, _, c in figures}):
        for cell in measured:
            run_ = figures[cell.server, cell.protocol, clients]
            merged = f"{run_['merged']:.1f}" if "merged" in run_ else "-"
            rows.append([cell.server, cell.protocol, str(clients), f"{run_['rps']:.0f}",
                         ms(run_["p50"]), ms(run_["p99"]), str(int(run_["failed"])), merged,
                         f"{run_['gen_cpu']:.0%}"])
    return table(["server", "protocol", "clients", "requests/s", "p50", "p99", "failed",
                  "requests per predict", "load generator CPU (of one core)"], rows)


def memory(result: PartResult, receivers: dict[str, Process],
           mlservers: dict[str, Process]) -> str:
    """The memory table; the host's PSS, --workers 2 against 1 process, as a figure."""
    single_rows, single = memory_rows(SINGLE, [("process", receivers[SINGLE].pid)])
    multi_rows, multi = memory_rows(MULTI, host_pids(receivers[MULTI].url, receivers[MULTI].pid))
    rows = single_rows + multi_rows
    for server, process in mlservers.items():
        rows += memory_rows(server, group_names(process))[0]
    result.add("PSS per host, --workers 2 against 1 process",
               f"{mib(multi)} vs {mib(single)} (+{mib(multi - single)})")
    return table(["server", "process", "RSS", "PSS", "private (USS)"], rows)


def notes(cfg: Config, use_wrk: bool, loads: list[str], with_mlserver: bool) -> list[str]:
    generator = "wrk" if use_wrk else "the threaded client (bench/load.py)"
    found = [
        f"Throughput: {generator}, one-row bodies, kept-alive connections, a 1 s warm-up then "
        f"{cfg.load_seconds:g} s measured per cell, the cells of each client count in rotating "
        "order; every server serves the same version. The load generator runs on the same 2 "
        "cores: its CPU share is in the table. 1-minute load average before each client count "
        f"and at the end: {', '.join(loads)}.",
        "Protocols: `mlflow` is MLflow's scoring protocol (`/invocations`, `dataframe_split`); "
        "`V2` is V2 `infer` with one FP64 tensor per column and `content_type: \"pd\"`, the "
        "same body for the receivers and MLServer (MLServer's adaptive batching applies to "
        "`infer` only, so the comparison with MLServer is V2 against V2).",
        "Memory after the load runs, from /proc/PID/smaps_rollup. RSS counts pages shared "
        "by fork once per process; PSS divides each shared page among its sharers, so the "
        "host's PSS is what the host uses; private (USS) is what only that process maps, what "
        "stopping it would free.",
        "Promotions move @champion (the plugin notifies the receiver; the notified worker "
        "relays to the other); polled every 5 ms through /models/current, which reports every "
        "worker's served version.",
    ]
    if with_mlserver:
        found.insert(2, "MLServer: `mlserver start` with `mlserver_mlflow.MLflowRuntime` on the "
                     f"same version's files, adaptive batching {v2.MLSERVER_BATCH}, "
                     f"`parallel_workers` {', '.join(map(str, MLSERVER_WORKERS))} (separate "
                     "servers, up side by side; 0 runs inference in the server's own process), "
                     f"from {', '.join(v2.MLSERVER_PACKAGES)}.")
    else:
        found.insert(2, "MLServer: not in the smoke run (it installs a virtualenv).")
    return found


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
