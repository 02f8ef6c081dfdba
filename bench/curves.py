"""Throughput and p99 against clients (1 ... 1,000), one line per server, drawn beside the
report as throughput.png and p99.png.

The servers: the receiver with its defaults and `mlflow models serve`, both answering MLflow's
`/invocations` (`dataframe_split` JSON), and MLServer 1.7 with adaptive batching, answering
the Open Inference Protocol (V2 `infer`, one FP64 tensor per column: the protocol it speaks;
part 11 compares the receiver's own V2 with it). Same model version, one-row bodies, a few
seconds per cell, servers in rotating order per client count. Before each cell the servers are
given time to finish what the previous one left: `mlflow models serve` scores every request it
took, its client gone or not, and that work would land on the next cell's server.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from bench import v2
from bench.config import Config
from bench.load import wrk_available
from bench.result import Chart, PartResult, table
from bench.stack import MODEL_NAME, Stack
from bench.stats import ms
from bench.throughput import load_run
from examples.processes import Process, wait_until

RECEIVER = "receiver, defaults (MLflow /invocations)"
BASELINE = "mlflow models serve (MLflow /invocations)"
MLSERVER = "MLServer 1.7, adaptive batching (V2 infer)"
# A server using less than this share of a core has finished what the last cell left queued.
QUIET_CORES = 0.1
WINDOW = 0.3  # seconds; CPU time is counted in 10 ms ticks
SETTLE_SECONDS = 20.0
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(processes: list[Process]) -> float:
    """CPU time used so far by every live process of these servers' groups (workers too)."""
    total = 0
    for process in processes:
        for pid in process.group_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited since it was listed
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def settle(processes: list[Process], timeout: float = SETTLE_SECONDS) -> float:
    """Wait until the servers together use less than QUIET_CORES over a WINDOW, at most
    `timeout`; the seconds waited."""
    started = time.perf_counter()
    last = [cpu_seconds(processes), started]

    def quiet() -> bool:
        now = time.perf_counter()
        if now - last[1] < WINDOW:
            return False
        used = cpu_seconds(processes)
        share = (used - last[0]) / (now - last[1])
        last[:] = [used, now]
        return share < QUIET_CORES

    with contextlib.suppress(TimeoutError):  # measured anyway; the wait is in the table
        wait_until(quiet, timeout=timeout, interval=WINDOW / 2, message="servers quiet")
    return time.perf_counter() - started


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(12, "Throughput and p99 against clients, one line per server")
    use_wrk = wrk_available()
    version = stack.baseline_version or stack.versions[0]
    if stack.baseline is None:
        stack.start_baseline(version)
    assert stack.baseline is not None
    receiver = stack.receivers["stage"]
    stack.promote(version)
    stack.wait_serving(receiver.url, version, timeout=60)
    servers = {RECEIVER: receiver, BASELINE: stack.baseline}
    urls = {RECEIVER: receiver.url + "/invocations", BASELINE: stack.baseline.url + "/invocations"}
    if not cfg.smoke:  # MLServer needs a virtualenv of its own (v2.py)
        mlserver = v2.start_mlserver(stack, version)
        servers[MLSERVER] = mlserver
        urls[MLSERVER] = f"{mlserver.url}/v2/models/{MODEL_NAME}/infer"
    rows = 1
    v2_file, v2_body = v2.body_file(stack, rows)
    bodies = {name: (v2_file, v2_body) if name == MLSERVER
              else (stack.body_file(rows), stack.sample_body(rows)) for name in urls}
    for name, url in urls.items():  # warm: lazy imports, first predict
        load_run(url, *bodies[name], 2, 1.0, use_wrk)
    figures: dict[tuple[str, int], dict[str, float]] = {}
    names = list(urls)
    for cell, clients in enumerate(cfg.curve_clients):
        for name in names[cell % len(names):] + names[:cell % len(names)]:
            waited = settle(list(servers.values()))
            figures[(name, clients)] = {
                **load_run(urls[name], *bodies[name], clients, cfg.curve_seconds, use_wrk),
                "settle": waited}
    report(result, cfg, names, figures, use_wrk)
    return result


def report(result: PartResult, cfg: Config, names: list[str],
           figures: dict[tuple[str, int], dict[str, float]], use_wrk: bool) -> None:
    clients = list(cfg.curve_clients)
    top = max(clients)
    for name in names:
        crowd = figures[(name, top)]
        result.add(f"{name}: answers/s and p99 at {top} clients",
                   f"{crowd['goodput']:.0f}/s, {ms(crowd['p99'])}", "(context)")
    answered = {key: cell for key, cell in figures.items() if cell["goodput"] > 0}
    point = f"one-row bodies, {cfg.curve_seconds:g} s per point"
    result.charts += [
        Chart("throughput.png", f"Answers (200) per second against closed-loop clients\n{point}",
              "clients (log scale)", "answers per second",
              {name: [(c, figures[(name, c)]["goodput"]) for c in clients] for name in names}),
        Chart("p99.png", f"p99 latency against closed-loop clients\n{point}; a longer wait "
                         "is not seen",
              "clients (log scale)", "p99 (ms, log scale)",
              {name: [(c, answered[(name, c)]["p99"] * 1000) for c in clients
                      if (name, c) in answered] for name in names}, log_y=True,
              reference=(1000.0, "1 s")),
    ]
    result.tables.append(table(
        ["server (protocol)", "clients", "answers/s (200)", "p50 / p99", "failed",
         "load gen CPU", "waited for the servers to settle"],
        [[name, str(c), f"{figures[(name, c)]['goodput']:.0f}",
          f"{ms(figures[(name, c)]['p50'])} / {ms(figures[(name, c)]['p99'])}",
          f"{figures[(name, c)]['failed']:.0f}", f"{figures[(name, c)]['gen_cpu']:.0%}",
          f"{figures[(name, c)]['settle']:.1f} s"]
         for c in clients for name in names]))
    generator = "wrk" if use_wrk else "bench/load.py threaded client (wrk not installed)"
    result.notes += [
        f"Load generator: {generator}, {cfg.curve_seconds:g} s per cell, closed loop (each "
        "client sends its next request when the last is answered), a new set of connections "
        "per cell, servers in rotating order; one-row bodies. Before each cell, a wait until "
        f"the servers' processes together use under {QUIET_CORES:g} of a core (at most "
        f"{SETTLE_SECONDS:g} s).",
        "Answers/s counts 200s only. " + (
            "p50 and p99 are wrk's, over every answer (refusals and errors included) received "
            "within the cell: a request still waiting when the cell ends is not counted, so a "
            "server whose queue is longer than the cell shows a p99 near the cell's length and "
            "fewer answers, not its true wait; `failed` counts wrk's errors, its 10 s "
            "timeouts and non-2xx answers." if use_wrk else
            "p50 and p99 are over answered requests (200) within the cell."),
        "Protocols: the receiver and `mlflow models serve` are sent MLflow's `dataframe_split`; "
        "MLServer, which has no `/invocations`, the same row as a V2 `infer` request "
        "(part 11: the receiver's own V2 endpoint against MLServer's)."
        if MLSERVER in names else "MLServer: not in the smoke run (it installs a virtualenv).",
        "The charts: [throughput.png](throughput.png), [p99.png](p99.png) (a cell with no "
        "answer has no p99 point).",
    ]
