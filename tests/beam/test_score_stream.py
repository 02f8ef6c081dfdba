"""examples/beam/score_stream.py on the local runner against a real `mlflow server` with the
plugin: a bounded run, and streams that follow promotions (pushed, polled, broken)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests

from examples.beam import score_stream
from examples.processes import promote, wait_until
from tests.beam.conftest import SECRET
from tests.beam.streams import StreamFiles, start_stream
from tests.support.models import register_broken_model, register_sklearn_model
from tests.support.stack import PluginStack

pytestmark = pytest.mark.beam


def predictions_of(tracking_uri: str, name: str, version: str,
                   rows: dict[int, dict[str, float]]) -> dict[int, int]:
    """What `version` itself predicts for each row."""
    mlflow.set_tracking_uri(tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    ids = list(rows)
    predicted = model.predict(pd.DataFrame([rows[i] for i in ids]))
    return dict(zip(ids, [int(p) for p in predicted], strict=True))


def assert_predicted_by_their_version(files: StreamFiles, tracking_uri: str, name: str) -> None:
    records = files.scored()
    for uri in {r["model"] for r in records}:
        version = uri.rsplit("/", 1)[1]
        mine = {r["id"]: r["prediction"] for r in records if r["model"] == uri}
        expected = predictions_of(tracking_uri, name, version, {i: files.rows[i] for i in mine})
        assert mine == expected, f"{uri} did not predict these rows"


def test_a_bounded_run_scores_every_row_with_the_production_version(
        stack: PluginStack, shared_model: str, tmp_path: Path) -> None:
    name = shared_model
    files = StreamFiles(tmp_path)
    files.send(30)
    files.send(20)

    assert score_stream.main([
        "--tracking-uri", stack.server.url, "--model-name", name, "--stage", "Production",
        "--input", str(files.inputs / "*.jsonl"), "--output", str(files.outputs),
        "--max-batch-size", "16"]) == 0

    assert files.each_scored_once() == dict.fromkeys(files.sent, 1)
    assert {r["model"] for r in files.scored()} == {f"models:/{name}/1"}
    assert_predicted_by_their_version(files, stack.server.url, name)


def test_a_stream_swaps_on_a_pushed_promotion_and_keeps_scoring_past_a_broken_one(
        stack: PluginStack, listen: str, tmp_path: Path) -> None:
    name = "beam_pushed"
    register_sklearn_model(stack.server.url, name, seed=0)
    register_sklearn_model(stack.server.url, name, seed=1, inverted=True)
    promote(name, "1", tracking_uri=stack.server.url)
    files = StreamFiles(tmp_path)
    # Polls every 600 s: a swap within the test's deadlines came by the plugin's push.
    stream = start_stream(files, stack.server.url, name, "--interval", "600",
                          "--listen", listen, env={"HOTSWAP_WEBHOOK_SECRET": SECRET})
    try:
        first = files.send(10)
        assert set(files.models_of(first, timeout=120).values()) == {f"models:/{name}/1"}
        forged = requests.post(f"http://{listen}/", timeout=5, json={
            "entity": "model_version", "action": "stage_transitioned",
            "data": {"name": name, "version": "2", "to_stage": "Production"}})
        assert forged.status_code == 401

        promote(name, "2", tracking_uri=stack.server.url)
        order = files.send_until_scored_by(f"models:/{name}/2")
        # Once a row is scored by the new version, every later one is.
        swapped_at = order.index(f"models:/{name}/2")
        assert set(order[:swapped_at]) <= {f"models:/{name}/1"}
        assert set(order[swapped_at:]) == {f"models:/{name}/2"}

        broken = register_broken_model(stack.server.url, name)
        promote(name, broken, tracking_uri=stack.server.url)
        wait_until(lambda: f"Version {broken} of {name} did not load" in stream.log(),
                   timeout=60, message="the broken version tried")
        later = files.send(10)
        assert set(files.models_of(later).values()) == {f"models:/{name}/2"}

        files.end.touch()
        wait_until(lambda: not stream.alive(), timeout=60, message="the stream ended")
        assert stream.popen.returncode == 0, stream.log()[-4000:]
    finally:
        stream.stop()
    assert files.each_scored_once() == dict.fromkeys(files.sent, 1)
    assert_predicted_by_their_version(files, stack.server.url, name)


def test_a_stream_whose_notification_is_lost_swaps_at_its_next_poll(
        stack: PluginStack, tmp_path: Path) -> None:
    name = "beam_polled"
    register_sklearn_model(stack.server.url, name, seed=0)
    register_sklearn_model(stack.server.url, name, seed=1, inverted=True)
    promote(name, "1", tracking_uri=stack.server.url)
    files = StreamFiles(tmp_path)
    # No listener: the plugin's notification for the promotion below reaches no one.
    stream = start_stream(files, stack.server.url, name, "--interval", "1")
    try:
        assert set(files.models_of(files.send(5), timeout=120).values()) == {
            f"models:/{name}/1"}
        promote(name, "2", tracking_uri=stack.server.url)
        order = files.send_until_scored_by(f"models:/{name}/2")
        swapped_at = order.index(f"models:/{name}/2")
        assert set(order[swapped_at:]) == {f"models:/{name}/2"}
        files.end.touch()
        wait_until(lambda: not stream.alive(), timeout=60, message="the stream ended")
        assert stream.popen.returncode == 0, stream.log()[-4000:]
    finally:
        stream.stop()
    assert files.each_scored_once() == dict.fromkeys(files.sent, 1)
    lines = [json.loads(line) for path in files.outputs.glob("*.jsonl")
             for line in path.read_text().splitlines()]
    assert {r["model"] for r in lines} == {f"models:/{name}/1", f"models:/{name}/2"}
