"""WatchMlflowRegistry on the local runner, and the handler: rows as dicts or DataFrames, keys
passed through, and its fallback when a new version fails to load."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.ml.inference.base import ModelMetadata, PredictionResult, RunInference
from apache_beam.utils.timestamp import Timestamp

from examples.beam.handler import KeyedMlflowModelHandler, MlflowModelHandler
from examples.beam.runners import local_options
from examples.beam.watch import Follow, WatchMlflowRegistry
from tests.support.models import FEATURES, register_broken_model, training_frame
from tests.support.stack import PluginStack

pytestmark = pytest.mark.beam

# What the pipelines below emit; they run in this process (the local runner is in-process).
emitted: list[Any] = []


def collect(element: Any) -> None:
    emitted.append(element)


def test_watch_mlflow_registry_emits_the_version_once_however_often_it_asks(
        stack: PluginStack, shared_model: str) -> None:
    name = shared_model
    emitted.clear()
    with beam.Pipeline(options=local_options()) as pipeline:
        _ = (pipeline
             | WatchMlflowRegistry(name, stage="Production", interval=0.1,
                                   tracking_uri=stack.server.url,
                                   stop_timestamp=Timestamp.now() + 3)
             | beam.Map(collect))
    assert emitted == [ModelMetadata(f"models:/{name}/1", f"{name}-v1")]


def test_the_handler_keeps_the_version_it_has_when_a_new_one_fails_to_load(
        stack: PluginStack, shared_model: str) -> None:
    name = shared_model
    broken = register_broken_model(stack.server.url, name)
    handler = MlflowModelHandler(f"models:/{name}/Production", tracking_uri=stack.server.url)
    served = handler.load_model()
    assert served.current().uri == f"models:/{name}/1"

    # What RunInference does when WatchMlflowRegistry emits the broken version.
    handler.update_model_path(f"models:/{name}/{broken}")
    assert handler.load_model() is served
    rows = training_frame(seed=5, rows=3)[0]
    assert [r.model_id for r in handler.run_inference(rows.to_dict("records"), served)] == [
        f"models:/{name}/1"] * 3


def test_rows_as_dataframes_and_keyed_rows_through_run_inference(
        stack: PluginStack, shared_model: str) -> None:
    name = shared_model
    frame = training_frame(seed=7, rows=5)[0]
    uri = f"models:/{name}/Production"
    emitted.clear()
    with beam.Pipeline(options=local_options()) as pipeline:
        frames = pipeline | "Frames" >> beam.Create([frame.head(3), frame.tail(2)])
        _ = (frames | "ScoreFrames" >> RunInference(
                MlflowModelHandler(uri, tracking_uri=stack.server.url, max_batch_size=2))
             | "CollectFrames" >> beam.Map(collect))
        keyed = pipeline | "Keyed" >> beam.Create(
            [(f"tx-{i}", row) for i, row in enumerate(frame.to_dict("records"))])
        _ = (keyed | "ScoreKeyed" >> RunInference(
                KeyedMlflowModelHandler(uri, tracking_uri=stack.server.url))
             | "CollectKeyed" >> beam.Map(collect))

    per_frame: list[Any] = [r for r in emitted if isinstance(r, PredictionResult)]
    assert sorted(len(r.inference) for r in per_frame) == [2, 3]
    assert all(isinstance(r.example, pd.DataFrame) and list(r.example.columns) == FEATURES
               for r in per_frame)
    per_key = dict(r for r in emitted if not isinstance(r, PredictionResult))
    assert sorted(per_key) == [f"tx-{i}" for i in range(5)]
    by_row = {f"tx-{i}": p for i, p in enumerate(
        next(r for r in per_frame if len(r.inference) == 3).inference
        + next(r for r in per_frame if len(r.inference) == 2).inference)}
    assert {key: result.inference for key, result in per_key.items()} == by_row
    assert {result.model_id for result in per_key.values()} == {f"models:/{name}/1"}


def test_a_fixed_version_cannot_be_followed() -> None:
    with pytest.raises(ValueError, match="fixed version"):
        MlflowModelHandler("models:/fraud/3", follow=Follow())
    with pytest.raises(ValueError, match="stage or by an alias"):
        WatchMlflowRegistry("fraud", stage="Production", alias="champion")
