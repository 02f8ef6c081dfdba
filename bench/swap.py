"""Swap under load (`python -m bench --parts 2`), against `mlflow models serve`, whose only swap is
a restart.

32 clients POST 1-row bodies for the whole run. The receiver gets promotions through the
registry; `mlflow models serve` gets stopped and started again on the same port with the next
version. Every request is recorded, so failures, gaps and windows come from the same samples.
"""

from __future__ import annotations

import time

from bench.config import Config
from bench.load import ClientPool, Sample
from bench.promotion import next_version
from bench.result import PartResult, table
from bench.stack import Stack
from bench.stats import ms, percentile, sec

WINDOW = 2.0  # seconds after each swap that are compared with steady state


def latencies(samples: list[Sample], start: float, end: float) -> list[float]:
    return [s.latency for s in samples if s.ok and start <= s.end < end]


def first_with(samples: list[Sample], version: str, after: float) -> float | None:
    return next((s.end for s in samples if s.ok and s.end >= after and s.version == version),
                None)


def run_receiver(stack: Stack, cfg: Config, steady: float) -> tuple[list[str], dict[str, float]]:
    url = stack.receivers["stage"].url
    current = stack.wait_serving(url)
    budget = steady + cfg.swaps * (cfg.swap_spacing + 30) + 10
    pool = ClientPool(url + "/invocations", stack.sample_body(1), cfg.clients, budget).start()
    events: list[tuple[float, str]] = []
    try:
        time.sleep(steady)
        for _ in range(cfg.swaps):
            version = next_version(stack, current)
            stack.promote(version)
            returned = time.perf_counter()
            events.append((returned, version))
            stack.wait_serving(url, version, timeout=60)
            # Leave the measured window (and a little more) before the next promotion.
            time.sleep(max(cfg.swap_spacing - (time.perf_counter() - returned), WINDOW + 0.5))
            current = version
    finally:
        samples = pool.stop()
    first = samples[0].start
    steady_lat = latencies(samples, first + min(1.0, steady / 3), events[0][0])
    after_swap: list[float] = []
    during: list[float] = []
    swap_lags = []
    for returned, version in events:
        swapped = first_with(samples, version, returned)
        assert swapped is not None, f"version {version} never answered"
        swap_lags.append(swapped - returned)
        after_swap += latencies(samples, swapped, swapped + WINDOW)
        during += latencies(samples, returned, swapped + WINDOW)
    failed = sum(1 for s in samples if not s.ok)
    figures = {
        "requests": len(samples), "failed": failed,
        "steady_p50": percentile(steady_lat, 50), "steady_p99": percentile(steady_lat, 99),
        "after_p50": percentile(after_swap, 50), "after_p99": percentile(after_swap, 99),
        "during_p50": percentile(during, 50), "during_p99": percentile(during, 99),
        "lag_p50": percentile(swap_lags, 50), "lag_max": max(swap_lags),
        "client_cpu": pool.cpu_seconds / pool.wall_seconds,
        "rps": len(samples) / pool.wall_seconds,
    }
    row = ["receiver (promotion)", str(cfg.swaps), str(len(samples)), str(failed), "0 s",
           f"{ms(figures['steady_p50'])} / {ms(figures['steady_p99'])}",
           f"{ms(figures['after_p50'])} / {ms(figures['after_p99'])}",
           f"{ms(figures['during_p50'])} / {ms(figures['during_p99'])}"]
    return row, figures


def run_baseline(stack: Stack, cfg: Config, steady: float) -> tuple[list[str], dict[str, float]]:
    if stack.baseline is None:
        stack.start_baseline(stack.versions[0])
    assert stack.baseline is not None and stack.baseline_version is not None
    version = stack.baseline_version
    port, url = stack.baseline.port, stack.baseline.url
    budget = steady + cfg.baseline_restarts * 90 + 10
    pool = ClientPool(url + "/invocations", stack.sample_body(1), cfg.clients, budget).start()
    events: list[tuple[float, float]] = []  # (restart began, ready again)
    try:
        time.sleep(steady)
        for _ in range(cfg.baseline_restarts):
            version = next_version(stack, version)
            began = time.perf_counter()
            stack.stop_baseline()
            stack.start_baseline(version, port)
            events.append((began, time.perf_counter()))
            time.sleep(WINDOW + 0.5)
    finally:
        samples = pool.stop()
    first = samples[0].start
    steady_lat = latencies(samples, first + min(1.0, steady / 3), events[0][0])
    gaps, after = [], []
    for began, _ready in events:
        last_ok = max((s.end for s in samples if s.ok and s.end <= began), default=began)
        back = next((s.end for s in samples if s.ok and s.start > began), None)
        assert back is not None, "mlflow models serve never answered after a restart"
        gaps.append(back - last_ok)
        after += latencies(samples, back, back + WINDOW)
    failed = sum(1 for s in samples if not s.ok)
    figures = {"requests": len(samples), "failed": failed, "gap_p50": percentile(gaps, 50),
               "gap_max": max(gaps), "steady_p50": percentile(steady_lat, 50),
               "steady_p99": percentile(steady_lat, 99), "after_p50": percentile(after, 50),
               "after_p99": percentile(after, 99)}
    row = ["`mlflow models serve` (restart)", str(len(events)), str(len(samples)), str(failed),
           f"{sec(figures['gap_p50'])} (max {sec(figures['gap_max'])})",
           f"{ms(figures['steady_p50'])} / {ms(figures['steady_p99'])}",
           f"{ms(figures['after_p50'])} / {ms(figures['after_p99'])}", "n/a"]
    return row, figures


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(2, "Swap under load")
    steady = 1.5 if cfg.smoke else 6.0
    row_r, r = run_receiver(stack, cfg, steady)
    result.add("receiver: failed requests", f"{r['failed']} of {r['requests']}", "0",
               r["failed"] == 0)
    ratio = r["after_p99"] / r["steady_p99"]
    result.add("receiver: p99 in the 2 s after each swap vs steady",
               f"{ms(r['after_p99'])} vs {ms(r['steady_p99'])} ({ratio:.2f}x)", "<= 2x",
               ratio <= 2.0)
    ratio_d = r["during_p99"] / r["steady_p99"]
    result.add("receiver: p99 from the registry call to 2 s after the swap (load included)",
               f"{ms(r['during_p99'])} ({ratio_d:.2f}x steady)", "(context)")
    rows = [row_r]
    if cfg.baseline_restarts:
        row_b, b = run_baseline(stack, cfg, steady)
        rows.append(row_b)
        result.add("`mlflow models serve`: failed requests during restarts",
                   f"{b['failed']} of {b['requests']}", "(context: 0 for the receiver)")
        result.add("`mlflow models serve`: gap per version change",
                   f"p50 {sec(b['gap_p50'])}, max {sec(b['gap_max'])}",
                   "(context: 0 for the receiver)")
    else:
        result.notes.append("`mlflow models serve` restarts are skipped in the smoke run "
                            "(each takes 10-15 s).")
    result.tables.append(table(
        ["server", "version changes", "requests", "failed", "gap (no answer)",
         "steady p50 / p99", "2 s after swap p50 / p99", "call-to-swap+2 s p50 / p99"],
        rows))
    result.notes += [
        f"{cfg.clients} client threads (bench/load.py), each on a kept-alive connection, 1-row "
        "`dataframe_split` bodies back to back; a refused or dropped connection counts as one "
        "failed request and is retried after 50 ms on a new connection.",
        f"Receiver: promotion (stage transition) to the first answer from the new version: "
        f"p50 {sec(r['lag_p50'])}, max {sec(r['lag_max'])} under this load.",
        f"The client threads used {r['client_cpu']:.0%} of one core while the receiver answered "
        f"{r['rps']:.0f} requests/s.",
        "`mlflow models serve`: the gap runs from the last answer before SIGTERM to the first "
        "answer after the new process is up on the same port.",
    ]
    return result
