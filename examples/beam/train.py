"""Train the fraud model with its data preparation and holdout evaluation on Apache Beam, then
register it through the same gate as examples/train_model.py.

    python -m examples.beam.train --tracking-uri http://127.0.0.1:5000 --shards 8 \
        --stage Staging --promote-if 'roc_auc>=0.95' [--runner=DataflowRunner ...]

The pipeline makes the transactions in shards, splits each shard into training and holdout
rows (stratified, 75/25), fits the forest on the gathered training rows, scores the holdout
shards in parallel with the fitted model as a side input, and gathers the metrics. It writes
the trained model to --work-dir; this script then registers it, and with --promote-if moves it
to Production only if the conditions hold and it is not worse than the current Production
version on the same holdout (exit status 1 otherwise). The arguments are train_model.py's,
plus --shards and --work-dir; the rest go to Beam (the default runner runs in this process).
"""

from __future__ import annotations

import pickle
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split

from examples.beam.runners import local_options
from examples.train_model import (
    MAX_DEPTH,
    TrainedModel,
    check_args,
    fingerprint,
    make_forest,
    make_parser,
    make_transactions,
    publish,
)

Shard = tuple[int, pd.DataFrame, np.ndarray]  # (index, rows, labels)
HOLDOUT_SHARE = 0.25


def build(pipeline: beam.Pipeline, rows: int, seed: int, shards: int, n_estimators: int,
          model_path: str) -> None:
    """The training pipeline; its one output is the pickled TrainedModel at `model_path`."""
    split = (pipeline
             | "Shards" >> beam.Create(range(shards))
             | "MakeTransactions" >> beam.Map(_make_shard, rows, seed, shards)
             | "SplitHoldout" >> beam.FlatMap(_split, seed).with_outputs("train", "holdout"))
    training = split.train | "GatherTraining" >> beam.CombineGlobally(GatherShards())
    holdout = split.holdout | "GatherHoldout" >> beam.CombineGlobally(GatherShards())
    fitted = training | "Fit" >> beam.Map(_fit, n_estimators, seed)
    metrics = (split.holdout
               | "ScoreHoldout" >> beam.Map(_score, beam.pvalue.AsSingleton(fitted))
               | "GatherScores" >> beam.CombineGlobally(GatherShards())
               | "Metrics" >> beam.Map(_metrics))
    _ = (fitted
         | "Assemble" >> beam.Map(_assemble, beam.pvalue.AsSingleton(metrics),
                                  beam.pvalue.AsSingleton(training),
                                  beam.pvalue.AsSingleton(holdout),
                                  {"n_estimators": n_estimators, "seed": seed, "rows": rows,
                                   "max_depth": MAX_DEPTH, "shards": shards})
         | "Save" >> beam.Map(_save, model_path))


class GatherShards(beam.CombineFn):
    """Shards (index, frame, values) into one, in index order: the same rows every run."""

    def create_accumulator(self) -> list[Shard]:
        return []

    def add_input(self, shards: list[Shard], shard: Shard) -> list[Shard]:
        return [*shards, shard]

    def merge_accumulators(self, accumulators: Iterable[list[Shard]]) -> list[Shard]:
        return [shard for shards in accumulators for shard in shards]

    def extract_output(self, shards: list[Shard]) -> tuple[pd.DataFrame, np.ndarray]:
        ordered = sorted(shards, key=lambda shard: shard[0])
        return (pd.concat([s[1] for s in ordered], ignore_index=True),
                np.concatenate([s[2] for s in ordered]))


def _make_shard(index: int, rows: int, seed: int, shards: int) -> Shard:
    size = rows // shards + (1 if index < rows % shards else 0)
    frame, labels = make_transactions(size, seed=seed * 10_000 + index)
    return index, frame, labels


def _split(shard: Shard, seed: int) -> Iterator[Any]:
    index, frame, labels = shard
    x_train, x_test, y_train, y_test = train_test_split(
        frame, labels, test_size=HOLDOUT_SHARE, stratify=labels, random_state=seed)
    yield beam.pvalue.TaggedOutput("train", (index, x_train, y_train))
    yield beam.pvalue.TaggedOutput("holdout", (index, x_test, y_test))


def _fit(training: tuple[pd.DataFrame, np.ndarray], n_estimators: int,
         seed: int) -> tuple[Any, float]:
    started = time.perf_counter()
    model = make_forest(n_estimators, seed).fit(*training)
    return model, time.perf_counter() - started


def _score(shard: Shard, fitted: tuple[Any, float]) -> Shard:
    """Each holdout row's (label, predicted class, fraud probability)."""
    index, frame, labels = shard
    model = fitted[0]
    scores = np.column_stack([labels, model.predict(frame), model.predict_proba(frame)[:, 1]])
    return index, pd.DataFrame(scores, columns=["label", "predicted", "score"]), labels


def _metrics(scored: tuple[pd.DataFrame, np.ndarray]) -> dict[str, float]:
    frame, labels = scored
    predicted = frame["predicted"].to_numpy()
    return {"precision": float(precision_score(labels, predicted, zero_division=0)),
            "recall": float(recall_score(labels, predicted, zero_division=0)),
            "roc_auc": float(roc_auc_score(labels, frame["score"].to_numpy()))}


def _assemble(fitted: tuple[Any, float], metrics: dict[str, float],
              training: tuple[pd.DataFrame, np.ndarray],
              holdout: tuple[pd.DataFrame, np.ndarray],
              params: dict[str, int | float]) -> TrainedModel:
    model, seconds = fitted
    frame = pd.concat([training[0], holdout[0]], ignore_index=True)
    labels = np.concatenate([training[1], holdout[1]])
    return TrainedModel(model, {**metrics, "fraud_rate": float(labels.mean()),
                                "train_seconds": seconds},
                        seconds, holdout[0].head(5), params, holdout,
                        fingerprint(frame, labels))


def _save(trained: TrainedModel, path: str) -> str:
    with FileSystems.create(path) as out:
        pickle.dump(trained, out)
    return path


def load(path: str) -> TrainedModel:
    with FileSystems.open(path) as saved:
        trained: TrainedModel = pickle.load(saved)
    return trained


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=4, help="parallel pieces of the data")
    parser.add_argument("--work-dir", help="where the pipeline leaves the trained model "
                        "(a bucket for a distributed runner; default: a temporary folder)")
    args, beam_args = parser.parse_known_args(argv)
    check_args(parser, args)
    if args.shards < 1:
        parser.error("--shards must be >= 1")
    options = PipelineOptions(beam_args) if any(a.startswith("--runner") for a in beam_args) \
        else local_options(beam_args)
    with tempfile.TemporaryDirectory(prefix="hotswap-train-") as scratch:
        model_path = f"{(args.work_dir or scratch).rstrip('/')}/trained-model.pkl"
        print(f"Training on {args.rows:,} transactions in {args.shards} shards, "
              f"{args.n_estimators} trees, seed {args.seed}", flush=True)
        with beam.Pipeline(options=options) as pipeline:
            build(pipeline, args.rows, args.seed, args.shards, args.n_estimators, model_path)
        trained = load(model_path)
    m = trained.metrics
    print(f"Trained in {trained.seconds:.1f}s: precision {m['precision']:.2f}, "
          f"recall {m['recall']:.2f}, ROC AUC {m['roc_auc']:.3f} on "
          f"{len(trained.holdout[1]) if trained.holdout else 0:,} holdout rows", flush=True)
    return publish(trained, args)


if __name__ == "__main__":
    sys.exit(main())
