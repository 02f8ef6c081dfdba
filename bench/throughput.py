"""Part 3: throughput and latency against `mlflow models serve`, the floor, and a profile.

Same model version, same bodies (1 and 100 rows of `dataframe_split`), both servers with one
worker, measured alternately (which server goes first alternates per cell). The floor is the
model's own `predict` in this process; the profile times each step of the receiver's request
path on the same model, so what stands between a request and `predict` has a number.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from typing import Any

from bench.config import Config
from bench.load import ClientPool, run_wrk, wrk_available
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, Stack
from bench.stats import ms, percentile


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
        return {"rps": r.rps, "p50": r.p50, "p99": r.p99, "failed": r.errors + r.non_2xx,
                "gen_cpu": r.wrk_cpu_share}
    pool = ClientPool(url, body, concurrency, seconds).start()
    time.sleep(seconds)
    samples = pool.stop()
    lat = [s.latency for s in samples if s.ok]
    return {"rps": len(lat) / pool.wall_seconds, "p50": percentile(lat, 50),
            "p99": percentile(lat, 99), "failed": sum(1 for s in samples if not s.ok),
            "gen_cpu": pool.cpu_seconds / pool.wall_seconds}


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(3, "Throughput and latency against `mlflow models serve`")
    use_wrk = wrk_available()
    version = stack.baseline_version or stack.versions[0]
    if stack.baseline is None:
        stack.start_baseline(version)
    assert stack.baseline is not None
    # The same version on both sides.
    receiver = stack.receivers["stage"]
    stack.promote(version)
    stack.wait_serving(receiver.url, version, timeout=60)
    servers = {"receiver": receiver.url + "/invocations",
               "mlflow models serve": stack.baseline.url + "/invocations"}
    results: dict[tuple[str, int, int], dict[str, float]] = {}
    # Warm both (first requests import lazily).
    for url in servers.values():
        load_run(url, stack.body_file(1), stack.sample_body(1), 2, 1.0, use_wrk)
    cell = 0
    for rows in cfg.row_counts:
        for concurrency in cfg.concurrencies:
            order = list(servers) if cell % 2 == 0 else list(reversed(servers))
            cell += 1
            for name in order:
                results[(name, rows, concurrency)] = load_run(
                    servers[name], stack.body_file(rows), stack.sample_body(rows), concurrency,
                    cfg.load_seconds, use_wrk)
    table_rows = []
    for rows in cfg.row_counts:
        for concurrency in cfg.concurrencies:
            r = results[("receiver", rows, concurrency)]
            b = results[("mlflow models serve", rows, concurrency)]
            ratio = r["rps"] / b["rps"] if b["rps"] else float("nan")
            table_rows.append([
                str(rows), str(concurrency), f"{r['rps']:.1f}", f"{b['rps']:.1f}",
                f"{ratio:.2f}x", f"{ms(r['p50'])} / {ms(r['p99'])}",
                f"{ms(b['p50'])} / {ms(b['p99'])}", f"{r['failed']:.0f} / {b['failed']:.0f}",
                f"{max(r['gen_cpu'], b['gen_cpu']):.0%}"])
    top = max(cfg.concurrencies)
    for rows in cfg.row_counts:
        r = results[("receiver", rows, top)]
        b = results[("mlflow models serve", rows, top)]
        ratio = r["rps"] / b["rps"] if b["rps"] else float("nan")
        result.add(f"requests/s at concurrency {top}, {rows}-row bodies: receiver vs "
                   "`mlflow models serve`",
                   f"{r['rps']:.1f} vs {b['rps']:.1f} ({ratio:.2f}x)", ">= 2.5x",
                   ratio >= 2.5)
    text, floor = profile(stack, version, cfg)
    for rows in cfg.row_counts:
        result.add(f"floor: the model's own predict, {rows} row(s), in process",
                   f"{ms(floor[f'floor_{rows}'])} as registered; "
                   f"{ms(floor[f'floor_nj1_{rows}'])} with n_jobs=1", "(context)")
    generator = "wrk" if use_wrk else "bench/load.py threaded client (wrk not installed)"
    result.tables.append(table(
        ["rows", "concurrency", "receiver req/s", "models serve req/s", "ratio",
         "receiver p50 / p99", "models serve p50 / p99", "failed (r / b)", "load gen CPU"],
        table_rows))
    result.tables.append(text)
    result.notes += [
        f"Load generator: {generator}, {cfg.load_seconds:g} s per cell; 'load gen CPU' is the "
        "generator's own CPU time per wall second (1.0 = one core), the larger of the two runs.",
        f"Both servers serve version {version}; the receiver via Production, `mlflow models "
        f"serve` via models:/{MODEL_NAME}/{version}.",
    ]
    if use_wrk:
        result.commands.append(f"wrk -t2 -c<C> -d{cfg.load_seconds:g}s --timeout 10s "
                               "-s bench/post.lua http://127.0.0.1:<port>/invocations -- "
                               "<body.json>")
    return result
