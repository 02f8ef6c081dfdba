"""Throughput and latency (`python -m bench --parts 3`) against `mlflow models serve`, the floor,
and a profile.

Same model version, same bodies (1 and 100 rows of `dataframe_split`), both servers with one
worker, measured alternately (which server goes first alternates per cell). The floor is the
model's own `predict` in this process; the profile times each step of the receiver's request
path on the same model, so what stands between a request and `predict` has a number.
"""

from __future__ import annotations

import json
import os
import pstats
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import Config
from bench.load import ClientPool, run_wrk, wrk_available
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, Stack
from bench.stats import ms, percentile
from examples.processes import Process, free_port, metric, spawn_server


def per_call(fn: Callable[[], Any], iterations: int) -> float:
    fn()  # warm
    started = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - started) / iterations


def profile(stack: Stack, version: str, cfg: Config) -> tuple[str, dict[str, float]]:
    """Each step of the receiver's request path, timed in process on the served version."""
    import mlflow.pyfunc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    n_jobs = getattr(pyfunc.get_raw_model(), "n_jobs", None)
    rows_out, floor = [], {}
    for rows in cfg.row_counts:
        timings = time_steps(stack.sample_body(rows), pyfunc, cfg.floor_iterations)
        floor[f"floor_{rows}"] = timings[f"model.predict(frame), as registered (n_jobs={n_jobs})"]
        floor[f"path_{rows}"] = timings["whole receiver path (parse + pyfunc.predict + JSON)"]
        floor[f"floor_nj1_{rows}"] = timings.get("model.predict(frame) with n_jobs=1", 0.0)
        for label, seconds in timings.items():
            rows_out.append([label, str(rows), f"{seconds * 1000:.3f} ms"])
    text = table(["step (in process, mean per call)", "rows", "time"], rows_out)
    return text, floor


def time_steps(body: bytes, pyfunc: Any, n: int) -> dict[str, float]:
    """Mean seconds per call of each step of the request path, on one request body."""
    import pandas as pd
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    from receiver import scoring

    raw = pyfunc.get_raw_model()
    schema = pyfunc.metadata.get_input_schema()
    n_jobs = getattr(raw, "n_jobs", None)
    split = json.loads(body)["dataframe_split"]
    frame, _ = scoring.parse(body, scoring.JSON, schema)
    out = pyfunc.predict(frame)

    def receiver_path() -> None:
        data, params = scoring.parse(body, scoring.JSON, schema)
        scoring.predictions_json(pyfunc.predict(data, params=params))

    steps = {
        "whole receiver path (parse + pyfunc.predict + JSON)": receiver_path,
        "json.loads(body)": lambda: json.loads(body),
        "scoring.parse (json + MLflow infer_and_parse_data)":
            lambda: scoring.parse(body, scoring.JSON, schema),
        "  of which infer_and_parse_data":
            lambda: infer_and_parse_data({"dataframe_split": split}, schema),
        "  alternative: pd.DataFrame(data, columns=columns)":
            lambda: pd.DataFrame(split["data"], columns=split["columns"]),
        "pyfunc.predict(frame) (schema enforcement + predict)": lambda: pyfunc.predict(frame),
        f"model.predict(frame), as registered (n_jobs={n_jobs})": lambda: raw.predict(frame),
        "scoring.predictions_json": lambda: scoring.predictions_json(out),
    }
    timings = {label: per_call(fn, n) for label, fn in steps.items()}
    if n_jobs not in (None, 1):
        raw.n_jobs = 1
        try:
            timings["model.predict(frame) with n_jobs=1"] = per_call(
                lambda: raw.predict(frame), n)
            timings["pyfunc.predict(frame) with n_jobs=1"] = per_call(
                lambda: pyfunc.predict(frame), n)
            timings["whole receiver path with n_jobs=1"] = per_call(receiver_path, n)
        finally:
            raw.n_jobs = n_jobs
    return timings


def load_run(url: str, body_file: Any, body: bytes, concurrency: int, seconds: float,
             use_wrk: bool) -> dict[str, float]:
    if use_wrk:
        r = run_wrk(url, body_file, concurrency, seconds)
        return {"rps": r.rps, "goodput": r.goodput, "p50": r.p50,
                "p99": r.p99, "failed": r.errors + r.non_2xx, "gen_cpu": r.wrk_cpu_share}
    pool = ClientPool(url, body, concurrency, seconds).start()
    time.sleep(seconds)
    samples = pool.stop()
    lat = [s.latency for s in samples if s.ok]
    return {"rps": len(lat) / pool.wall_seconds, "goodput": len(lat) / pool.wall_seconds,
            "p50": percentile(lat, 50), "p99": percentile(lat, 99),
            "failed": sum(1 for s in samples if not s.ok),
            "gen_cpu": pool.cpu_seconds / pool.wall_seconds}


SERVERS = ("receiver", "receiver, batching off", "mlflow models serve")


def lane_counters(url: str) -> tuple[float, float, float]:
    """(predict calls, rows, requests) a receiver has scored so far."""
    return (metric(url, "hotswap_predict_batch_rows_count"),
            metric(url, "hotswap_predict_batch_rows_sum"),
            metric(url, "hotswap_predict_batch_requests_sum"))


# cProfile in the receiver: on from SIGUSR2 (after the warm-up), dumped on SIGUSR1. Not
# `python -m cProfile`: uvicorn re-raises SIGTERM after its shutdown, so that never writes.
PROFILED_RECEIVER = """
import cProfile, os, signal, sys
out = sys.argv.pop(1)
profile = cProfile.Profile()
def dump(*_):
    profile.disable()
    profile.dump_stats(out)
    os._exit(0)
signal.signal(signal.SIGUSR1, dump)
signal.signal(signal.SIGUSR2, lambda *_: profile.enable())
from receiver.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def start_profiled_receiver(stack: Stack, out: Path) -> Process:
    """A receiver run under cProfile (its event-loop thread: HTTP, routing, the lane's
    coroutines; the parse and predict threads are timed in process by `profile`)."""
    port = free_port()
    env = {**os.environ, **stack.receiver_env({"MODEL_STAGE": "Production"}),
           "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": stack.tracking_uri,
           "MODEL_NAME": MODEL_NAME}
    argv = [sys.executable, "-c", PROFILED_RECEIVER, str(out),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = spawn_server("receiver (cProfile)", argv, env, stack.workdir / "profiled.log",
                           "127.0.0.1", port, "/health/ready", 120)
    stack.extra.append(process)
    return process


def event_loop_profile(stats_file: Path, top: int = 14) -> str:
    """The receiver's main thread under load: where its time goes, by own time."""
    stats = pstats.Stats(str(stats_file))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(own for (_, _, own, _, _) in entries.values()) or 1.0
    by_module: dict[str, float] = {}
    for (path, _, function), (_, _, own, _, _) in entries.items():
        key = _area(path, function)
        by_module[key] = by_module.get(key, 0.0) + own
    rows = [[area, f"{own / total:.0%}"]
            for area, own in sorted(by_module.items(), key=lambda kv: -kv[1])[:top]]
    return table(["event-loop thread under load (cProfile, own time by package, module or "
                  "built-in)", "share"], rows)


def _area(path: str, function: str) -> str:
    if path.endswith("asyncio/runners.py"):
        return "the event loop itself (uvloop, C; its wait for I/O included)"
    if path == "~":  # a built-in: name it (the epoll wait is the loop's idle time)
        return f"`{function[:70]}`"
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            parts = tail.split("/")
            return parts[0] if marker == "/site-packages/" else f"stdlib {parts[-1]}"
    if "/" not in path:
        return path
    return "/".join(path.rsplit("/", 2)[-2:])


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(3, "Throughput and latency: the scoring lane against `mlflow models "
                           "serve` and the unbatched path")
    use_wrk = wrk_available()
    version = stack.baseline_version or stack.versions[0]
    if stack.baseline is None:
        stack.start_baseline(version)
    assert stack.baseline is not None
    # The same version on every server.
    receiver = stack.receivers["stage"]
    stack.promote(version)
    stack.wait_serving(receiver.url, version, timeout=60)
    if "unbatched" not in stack.receivers:
        stack.start_receivers({"unbatched": {"MODEL_STAGE": "Production",
                                             "HOTSWAP_BATCHING": "off"}})
    unbatched = stack.receivers["unbatched"]
    stack.wait_serving(unbatched.url, version, timeout=60)
    bases = {"receiver": receiver.url, "receiver, batching off": unbatched.url,
             "mlflow models serve": stack.baseline.url}
    servers = {name: url + "/invocations" for name, url in bases.items()}
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    # Warm every server (first requests import lazily).
    for url in servers.values():
        load_run(url, stack.body_file(1), stack.sample_body(1), 2, 1.0, use_wrk)
    cell = 0
    for rows in cfg.row_counts:
        for concurrency in cfg.concurrencies:
            order = list(SERVERS[cell % 3:] + SERVERS[:cell % 3])  # who goes first rotates
            cell += 1
            for name in order:
                counters = (lane_counters(bases[name]) if name != "mlflow models serve"
                            else None)
                figures = load_run(servers[name], stack.body_file(rows), stack.sample_body(rows),
                                   concurrency, cfg.load_seconds, use_wrk)
                if counters is not None:
                    after = lane_counters(bases[name])
                    calls = max(after[0] - counters[0], 1.0)
                    figures["rows_per_call"] = (after[1] - counters[1]) / calls
                    figures["requests_per_call"] = (after[2] - counters[2]) / calls
                results[(name, rows, concurrency)] = figures
    table_rows = []
    for rows in cfg.row_counts:
        for concurrency in cfg.concurrencies:
            r, u, b = (results[(name, rows, concurrency)] for name in SERVERS)
            ratio = r["rps"] / b["rps"] if b["rps"] else float("nan")
            table_rows.append([
                str(rows), str(concurrency),
                f"{r['rps']:.0f}", f"{u['rps']:.0f}", f"{b['rps']:.0f}", f"{ratio:.1f}x",
                f"{ms2(r['p50'])} / {ms(r['p99'])}", f"{ms2(u['p50'])} / {ms(u['p99'])}",
                f"{ms(b['p50'])} / {ms(b['p99'])}",
                f"{r['rows_per_call']:.1f} ({r['requests_per_call']:.1f} req)",
                f"{r['failed']:.0f} / {u['failed']:.0f} / {b['failed']:.0f}",
                f"{max(r['gen_cpu'], u['gen_cpu'], b['gen_cpu']):.0%}"])
    one = min(cfg.row_counts)
    mid = 32 if 32 in cfg.concurrencies else max(cfg.concurrencies)
    r, b = results[("receiver", one, mid)], results[("mlflow models serve", one, mid)]
    ratio = r["rps"] / b["rps"] if b["rps"] else float("nan")
    targeted = mid == 32  # the targets are for 32 clients; the smoke run has fewer
    result.add(f"requests/s at {mid} concurrent {one}-row clients: receiver vs "
               "`mlflow models serve`", f"{r['rps']:.0f} vs {b['rps']:.0f} ({ratio:.1f}x)",
               ">= 10x" if targeted else "(context)", ratio >= 10 if targeted else None)
    result.add(f"p99 at {mid} concurrent {one}-row clients, receiver", ms(r["p99"]),
               "< 100 ms" if targeted else "(context)", r["p99"] < 0.1 if targeted else None)
    if 1 in cfg.concurrencies:
        for rows in cfg.row_counts:
            lone, off = results[("receiver", rows, 1)], results[("receiver, batching off", rows, 1)]
            result.add(f"p50 of one client, {rows}-row bodies: batching vs batching off",
                       f"{ms2(lone['p50'])} vs {ms2(off['p50'])}", "within 1 ms",
                       lone["p50"] - off["p50"] <= 0.001)
    for name in SERVERS:
        failed = sum(results[(name, rows, c)]["failed"]
                     for rows in cfg.row_counts for c in cfg.concurrencies)
        if name == "receiver":
            result.add("failed requests, receiver, every cell", f"{failed:.0f}", "0",
                       failed == 0)
        else:
            result.add(f"failed requests, {name}, every cell (wrk: errors, timeouts at 10 s "
                       "and non-2xx)", f"{failed:.0f}", "(context)")
    top = max(cfg.concurrencies)
    for rows in cfg.row_counts:
        r = results[("receiver", rows, top)]
        result.add(f"rows per predict call at {top} clients, {rows}-row bodies",
                   f"{r['rows_per_call']:.1f} ({r['requests_per_call']:.1f} requests)",
                   "(context)")
    text, floor = profile(stack, version, cfg)
    for rows in cfg.row_counts:
        result.add(f"floor: the model's own predict, {rows} row(s), in process",
                   f"{ms(floor[f'floor_{rows}'])} as registered; "
                   f"{ms(floor[f'floor_nj1_{rows}'])} with n_jobs=1", "(context)")
    batch_text, per_request = batched_profile(stack, version, cfg, mid)
    r = results[("receiver", one, mid)]
    served = 1 / r["rps"] if r["rps"] else float("nan")
    result.add(f"receiver time per request at {mid} clients ({one}-row) vs the lane's own "
               "work per request in process (the floor for this design)",
               f"{ms2(served)} vs {ms2(per_request)} ({served / per_request:.1f}x)", "(context)")
    loop_text = ""
    if not cfg.smoke:
        loop_text = profile_event_loop(stack, use_wrk, mid, cfg.load_seconds)
    generator = "wrk" if use_wrk else "bench/load.py threaded client (wrk not installed)"
    result.tables.append(table(
        ["rows", "clients", "receiver req/s", "batching off req/s", "models serve req/s",
         "receiver / models serve", "receiver p50 / p99", "batching off p50 / p99",
         "models serve p50 / p99", "receiver rows per predict", "failed (r / off / serve)",
         "load gen CPU"],
        table_rows))
    result.tables.append(text)
    result.tables.append(batch_text)
    if loop_text:
        result.tables.append(loop_text)
    result.notes += [
        f"Load generator: {generator}, {cfg.load_seconds:g} s per cell, servers in rotating "
        "order per cell; 'load gen CPU' is the generator's own CPU time per wall second "
        "(1.0 = one core), the largest of the three runs.",
        f"All three serve version {version}: the receivers via Production (one with "
        f"HOTSWAP_BATCHING=off), `mlflow models serve` via models:/{MODEL_NAME}/{version}. "
        "Receiver settings otherwise default.",
        "'rows per predict' is the mean over the cell, from the receiver's "
        "hotswap_predict_batch_rows histogram (requests per call in brackets).",
    ]
    if use_wrk:
        result.commands.append(f"wrk -t2 -c<C> -d{cfg.load_seconds:g}s --timeout 10s "
                               "-s bench/post.lua http://127.0.0.1:<port>/invocations -- "
                               "<body.json>")
    return result


def ms2(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.2f} ms"


def batched_profile(stack: Stack, version: str, cfg: Config, batch: int) -> tuple[str, float]:
    """The lane's own work for `batch` 1-row requests merged into one call, per request, in
    process: what stays when HTTP and the event loop cost nothing."""
    import mlflow.pyfunc
    import numpy as np

    from receiver import scoring

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyfunc = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    raw = pyfunc.get_raw_model()
    if getattr(raw, "n_jobs", None) not in (None, 1):
        raw.n_jobs = 1  # as the receiver predicts (registry.single_threaded)
    schema = pyfunc.metadata.get_input_schema()
    body = stack.sample_body(1)
    parts = [scoring.parse(body, scoring.JSON, schema, as_rows=True)[0] for _ in range(batch)]

    def merge() -> Any:
        return scoring.rows_frame(np.concatenate(parts), schema)

    merged = merge()
    out = pyfunc.predict(merged)
    n = max(cfg.floor_iterations // 10, 5)
    steps = {
        "shape check (raw bytes)": lambda: shape_check(body, schema),
        "parse one body (json + rows)":
            lambda: scoring.parse(body, scoring.JSON, schema, as_rows=True),
        f"merge {batch} requests' rows into one frame": merge,
        f"pyfunc.predict({batch} rows)": lambda: pyfunc.predict(merged),
        f"{batch} x predictions_json(own slice)": lambda: [
            scoring.predictions_json(out[i:i + 1]) for i in range(batch)],
    }
    timings = {label: per_call(fn, n) for label, fn in steps.items()}
    per_request = (timings["shape check (raw bytes)"]
                   + timings["parse one body (json + rows)"]
                   + (timings[f"merge {batch} requests' rows into one frame"]
                      + timings[f"pyfunc.predict({batch} rows)"]
                      + timings[f"{batch} x predictions_json(own slice)"]) / batch)
    shared = {f"merge {batch} requests' rows into one frame", f"pyfunc.predict({batch} rows)",
              f"{batch} x predictions_json(own slice)"}
    rows = [[label, f"{seconds * 1000:.3f} ms",
             f"{seconds * 1000 / (batch if label in shared else 1):.3f} ms"]
            for label, seconds in timings.items()]
    rows.append(["lane work per request", "", f"{per_request * 1000:.3f} ms"])
    return table([f"merged call of {batch} 1-row requests, in process", "per step",
                  "per request"], rows), per_request


def shape_check(body: bytes, schema: Any) -> None:
    from receiver import scoring, shape

    shape.check(body, scoring.JSON, schema)


def profile_event_loop(stack: Stack, use_wrk: bool, concurrency: int, seconds: float) -> str:
    out = stack.workdir / "receiver-event-loop.prof"
    process = start_profiled_receiver(stack, out)
    try:
        url = process.url + "/invocations"
        load_run(url, stack.body_file(1), stack.sample_body(1), 2, 1.0, use_wrk)
        os.kill(process.popen.pid, signal.SIGUSR2)
        load_run(url, stack.body_file(1), stack.sample_body(1), concurrency, seconds, use_wrk)
        os.kill(process.popen.pid, signal.SIGUSR1)
        process.popen.wait(timeout=60)
    finally:
        process.stop()
        stack.extra.remove(process)
    if not out.exists():
        return ""
    return event_loop_profile(out)
