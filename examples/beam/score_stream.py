"""Score transactions with the model version the MLflow registry points to, on Apache Beam.

    python -m examples.beam.score_stream --tracking-uri http://127.0.0.1:5000 \
        --model-name fraud_detection_model --stage Production \
        --input 'in/*.jsonl' --end in/END --output out/ [--listen 127.0.0.1:8765]

Each input line is a transaction: {"id": ..., "amount": ..., ...}; each output line is
{"id": ..., "prediction": ..., "model": "models:/<name>/<version>"}. Without --end the input
is the files there now (a bounded run); with it, the pipeline follows the folder until the
--end file appears. Other arguments go to Beam (--runner=DataflowRunner, ...); the default
runner is the DirectRunner's in-process engine.

When the stage or alias moves, scoring moves with it, without a restart:
- `--refresh worker` (default, any runner): each worker asks the registry every --interval
  seconds and, with --listen, hears the plugin's notifications; the new version is loaded
  beside the old one and swapped in between two batches;
- `--refresh side-input`: WatchMlflowRegistry feeds RunInference's model_metadata_pcoll, for
  runners whose streaming side inputs refresh (Dataflow, Flink, Spark, Prism).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from examples.beam.handler import KeyedMlflowModelHandler
from examples.beam.runners import LOCAL_RUNNER, local_options
from examples.beam.transactions import FollowJsonLines, WriteJsonLines
from examples.beam.watch import Follow, WatchMlflowRegistry


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--model-name", required=True)
    followed = parser.add_mutually_exclusive_group(required=True)
    followed.add_argument("--stage", help="follow this stage (Production, Staging, ...)")
    followed.add_argument("--alias", help="follow this alias (champion, ...)")
    parser.add_argument("--input", required=True, help="file pattern of JSON-lines files")
    parser.add_argument("--end", help="follow --input until this file exists (a stream)")
    parser.add_argument("--output", required=True, help="folder for the scored JSON lines")
    parser.add_argument("--refresh", choices=("worker", "side-input"), default="worker")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="ask the registry every this many seconds (default 60)")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="take the plugin's notifications here (its HOTSWAP_TARGETS)")
    parser.add_argument("--max-batch-size", type=int, default=500)
    return parser.parse_known_args(argv)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    model_uri = (f"models:/{args.model_name}@{args.alias}" if args.alias
                 else f"models:/{args.model_name}/{args.stage}")
    follow = Follow(args.interval, args.listen) if args.end else None
    handler = KeyedMlflowModelHandler(
        model_uri, tracking_uri=args.tracking_uri, max_batch_size=args.max_batch_size,
        follow=follow if args.refresh == "worker" else None)
    metadata = None
    if args.refresh == "side-input" and follow is not None:
        metadata = pipeline | "WatchRegistry" >> WatchMlflowRegistry(
            args.model_name, args.stage, args.alias, args.interval, listen=args.listen,
            tracking_uri=args.tracking_uri)
    if args.end:
        transactions = pipeline | "Transactions" >> FollowJsonLines(args.input, args.end)
    else:
        transactions = (pipeline | "Transactions" >> beam.io.ReadFromText(args.input)
                        | "Parse" >> beam.Map(_parse))
    _ = (transactions
         | "KeyById" >> beam.Map(lambda row: (row["id"], _features(row)))
         | "Score" >> RunInference(handler, model_metadata_pcoll=metadata)  # type: ignore[arg-type]
         | "ToRecord" >> beam.MapTuple(_record)
         | "Write" >> beam.ParDo(WriteJsonLines(args.output)))


def _parse(line: str) -> dict[str, Any]:
    import json

    return dict(json.loads(line))


def _features(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "id"}


def _record(key: Any, result: PredictionResult) -> dict[str, Any]:
    return {"id": key, "prediction": result.inference, "model": result.model_id}


def main(argv: Sequence[str] | None = None) -> int:
    # force: importing Beam already gave the root logger a WARNING handler.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    args, beam_args = parse_args(argv)
    options = PipelineOptions(beam_args) if any(a.startswith("--runner") for a in beam_args) \
        else local_options(beam_args)
    local = options.view_as(StandardOptions).runner == LOCAL_RUNNER
    if args.refresh == "side-input" and local:
        print("--refresh side-input needs a runner whose streaming side inputs refresh "
              "(Dataflow, Flink, Spark, Prism); the local runner computes a side input "
              "whole before using it. Use --refresh worker here.", file=sys.stderr)
        return 2
    if "://" not in args.output:  # a local folder; a bucket needs none made
        os.makedirs(args.output, exist_ok=True)
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
