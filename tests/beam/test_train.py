"""examples/beam/train.py on the local runner: the pipeline trains and registers a version,
and train_model.py's gate refuses a worse one."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from examples.beam import train
from tests.support.stack import PluginStack

pytestmark = pytest.mark.beam


def test_the_pipeline_registers_a_version_and_the_gate_refuses_a_worse_one(
        stack: PluginStack, capsys: pytest.CaptureFixture[str]) -> None:
    name = "beam_trained"
    url = stack.server.url
    client = MlflowClient(url)
    common = ["--tracking-uri", url, "--model-name", name, "--stage", "Staging",
              "--promote-if", "roc_auc>=0.7"]

    assert train.main([*common, "--rows", "4000", "--n-estimators", "10", "--seed", "1",
                       "--shards", "3"]) == 0
    out = capsys.readouterr().out
    assert "Training on 4,000 transactions in 3 shards" in out
    assert "Gate passed: moved version 1 to Production" in out, out
    tags = client.get_model_version(name, "1").tags
    assert tags["training.shards"] == "3" and tags["training.rows"] == "4000"
    assert tags["holdout.rows"] == "1002"  # a quarter of each shard (1334, 1333, 1333), up
    assert float(tags["holdout.roc_auc"]) >= 0.7

    # One tree on less data: it clears the bar, yet Production does better on its holdout.
    assert train.main([*common, "--rows", "3000", "--n-estimators", "1", "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert "ok   roc_auc>=0.7" in out and "vs Production version 1's" in out, out
    assert "Refused: version 2 stays in Staging; Production keeps version 1" in out
    assert client.get_model_version(name, "1").current_stage == "Production"
    assert client.get_model_version(name, "2").current_stage == "Staging"
