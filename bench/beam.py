"""Apache Beam figures: RunInference with MlflowModelHandler on the local runner against plain
in-process `predict` on the same batches, and promotion -> first element scored by the new
version in a running stream, pushed and polled.

    PYTHONPATH=. .venv/bin/python -m bench.beam [--rows 20000] [--promotions 3]

Starts its own `mlflow server` with the plugin (notifying the stream's listener), registers two
fraud-model versions (examples/train_model.py), prints a Markdown section and writes it to
bench/out/REPORT-beam.md. Figures only: nothing here fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
import pandas as pd
from apache_beam.ml.inference.base import RunInference

from bench.config import Config
from bench.report import render_part
from bench.result import PartResult, table
from bench.stack import Stack
from examples import train_model
from examples.beam.handler import MlflowModelHandler, reset
from examples.beam.models import load_version
from examples.beam.runners import local_options
from examples.beam.score_stream import build, parse_args
from examples.processes import free_port, promote, start_mlflow_server, wait_until

ROOT = Path(__file__).resolve().parents[1]
NAME = "fraud_beam_bench"
SECRET = "bench-secret"
BATCH = 500


def register_versions(url: str) -> None:
    for seed in (1, 2):
        frame, labels = train_model.make_transactions(5_000, seed)
        trained = train_model.train(frame, labels, n_estimators=50, seed=seed)
        train_model.register(trained, NAME, url, "beam-bench")
    promote(NAME, "1", tracking_uri=url)


def throughput(url: str, rows: int) -> list[list[str]]:
    frame, _ = train_model.make_transactions(rows, seed=77)
    records = frame.to_dict("records")
    batches = [records[i:i + BATCH] for i in range(0, rows, BATCH)]
    loaded = load_version(NAME, "1", url)
    started = time.perf_counter()
    for batch in batches:
        loaded.predict(pd.DataFrame.from_records(batch))
    plain = time.perf_counter() - started

    def pipeline_seconds(count: int) -> float:
        # The rows come out of the pipeline's first step, as from a source: beam.Create of
        # thousands of dicts spends longer inferring their type than RunInference takes.
        handler = MlflowModelHandler(f"models:/{NAME}/Production", tracking_uri=url,
                                     min_batch_size=BATCH, max_batch_size=BATCH)
        started = time.perf_counter()
        with beam.Pipeline(options=local_options()) as pipeline:
            _ = (pipeline | beam.Create([count])
                 | beam.FlatMap(_transactions)
                 | RunInference(handler)
                 | beam.combiners.Count.Globally())
        reset()
        return time.perf_counter() - started

    fixed = pipeline_seconds(1)
    whole = pipeline_seconds(rows)
    steady = whole - fixed
    # Too few rows to stand out from the pipeline's fixed cost (the smoke run): no rate.
    past = f"{rows / steady:,.0f}" if steady > 0.2 * whole else "n/a (too few rows)"
    return [
        ["plain `predict`, in process, batches of 500 dict rows", f"{rows / plain:,.0f}",
         f"{plain:.2f} s"],
        ["RunInference + MlflowModelHandler, FnApiRunner, whole run", f"{rows / whole:,.0f}",
         f"{whole:.2f} s (of which a one-row run: {fixed:.2f} s)"],
        ["the same, past the fixed cost (whole - one-row run)", past, f"{steady:.2f} s"],
    ]


def _transactions(count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = train_model.make_transactions(count, seed=77)[0].to_dict(
        "records")
    return rows


class Stream:
    """score_stream's pipeline in a thread, fed one small file every 50 ms."""

    def __init__(self, url: str, folder: Path, *extra: str) -> None:
        self.inputs, self.outputs = folder / "in", folder / "out"
        self.inputs.mkdir(parents=True)
        self.outputs.mkdir(parents=True)
        args, _ = parse_args(["--tracking-uri", url, "--model-name", NAME, "--stage",
                              "Production", "--input", str(self.inputs / "*.jsonl"), "--end",
                              str(self.inputs / "END"), "--output", str(self.outputs), *extra])
        self._rows = train_model.make_transactions(50, seed=5)[0].to_dict("records")
        self._sent = 0
        self._thread = threading.Thread(target=self._run, args=(args,), daemon=True)
        self._thread.start()

    def _run(self, args: argparse.Namespace) -> None:
        with beam.Pipeline(options=local_options()) as pipeline:
            build(pipeline, args)

    def send(self) -> None:
        path = self.inputs / f"{self._sent:08d}.jsonl"
        rows = [json.dumps({"id": self._sent + i, **row})
                for i, row in enumerate(self._rows[:5])]
        (self.inputs / "next.tmp").write_text("\n".join(rows) + "\n")
        os.replace(self.inputs / "next.tmp", path)
        self._sent += 5

    def first_scored_by(self, model: str, after: float) -> float | None:
        """When the first output file holding a row scored by `model` was written."""
        times = [p.stat().st_mtime for p in self.outputs.glob("*.jsonl")
                 if p.stat().st_mtime >= after and model in p.read_text()]
        return min(times) if times else None

    def feed_until(self, model: str, after: float, timeout: float = 120) -> float:
        def scored() -> float | None:
            self.send()
            return self.first_scored_by(model, after)

        return wait_until(scored, timeout=timeout, interval=0.05, message=model)

    def stop(self) -> None:
        (self.inputs / "END").touch()
        self._thread.join(timeout=120)
        reset()


def promotions(url: str, folder: Path, count: int, *extra: str) -> list[float]:
    promote(NAME, "1", tracking_uri=url)  # each run starts from version 1
    stream = Stream(url, folder, *extra)
    seconds = []
    try:
        current = "1"
        stream.feed_until(f"models:/{NAME}/1", after=0)  # warm: the first version serves
        for _ in range(count):
            target = "2" if current == "1" else "1"
            promoted = time.time()
            promote(NAME, target, tracking_uri=url)
            scored = stream.feed_until(f"models:/{NAME}/{target}", after=promoted)
            seconds.append(scored - promoted)
            print(f"promotion to version {target}: {seconds[-1]:.2f} s ({' '.join(extra)})",
                  flush=True)
            current = target
    finally:
        stream.stop()
    return seconds


def summary(seconds: list[float]) -> str:
    return (f"median {statistics.median(seconds) * 1000:,.0f} ms, max "
            f"{max(seconds) * 1000:,.0f} ms ({len(seconds)} promotions)")


def measure(folder: Path, rows: int, count: int, poll_interval: float) -> PartResult:
    """Its own `mlflow server` with the plugin, notifying the stream's listener."""
    result = PartResult(13, "Apache Beam: RunInference with the registry's model")
    listen = f"127.0.0.1:{free_port()}"
    server = start_mlflow_server(folder / "mlflow", extra_env={
        "HOTSWAP_TARGETS": f"http://{listen}/", "HOTSWAP_WEBHOOK_SECRET": SECRET})
    os.environ["HOTSWAP_WEBHOOK_SECRET"] = SECRET  # the stream's listener reads it
    try:
        register_versions(server.url)
        rates = throughput(server.url, rows)
        pushed = promotions(server.url, folder / "push", count,
                            "--interval", "600", "--listen", listen)
        polled = promotions(server.url, folder / "poll", count,
                            "--interval", str(poll_interval))
    finally:
        server.stop()
    plain, _, past = (row[1] for row in rates)
    result.add("elements/s through RunInference past its fixed cost, against plain predict",
               f"{past} vs {plain}")
    result.add("promotion -> first element scored by the new version, pushed", summary(pushed))
    result.add(f"the same, polled every {poll_interval:g} s, no notification", summary(polled))
    result.tables += [
        table(["Elements per second", "rows/s", "time"], rates),
        table(["Promotion -> first element scored by the new version", "seconds"], [
            ["pushed (plugin notification, poll every 600 s)", summary(pushed)],
            [f"polled every {poll_interval:g} s, no notification", summary(polled)]]),
    ]
    result.notes.append(
        f"The fraud model (50 trees) on {rows:,} rows, Beam's FnApiRunner in the bench's "
        f"process, batches of {BATCH}; `examples/beam/score_stream.py` fed a small file every "
        "50 ms, each promotion timed until an output file holds a row scored by the new "
        f"version. Alone: `PYTHONPATH=. python -m bench.beam --rows {rows} --promotions "
        f"{count}`.")
    return result


def run(stack: Stack, cfg: Config) -> PartResult:
    rows, count = (2_000, 1) if cfg.smoke else (20_000, 3)
    return measure(stack.workdir / "beam", rows, count, poll_interval=2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--promotions", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-beam-") as scratch:
        result = measure(Path(scratch), args.rows, args.promotions, args.poll_interval)
    result.seconds = time.perf_counter() - began
    text = "\n".join(render_part(result))
    print(text)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "REPORT-beam.md").write_text(text)


if __name__ == "__main__":
    main()
