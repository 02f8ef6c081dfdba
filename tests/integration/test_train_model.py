"""examples/train_model.py against a real `mlflow server`: register, promote, alias, load back."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from examples.processes import Process, start_mlflow_server, start_receiver, wait_until
from examples.train_model import (
    FEATURES,
    make_transactions,
    promote,
    register,
    sample_request,
    train,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_model.py"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    workdir = tmp_path_factory.mktemp("mlflow")
    # Through the plugin with no targets: a pass-through.
    server = start_mlflow_server(workdir)
    yield server
    server.stop()


def run_script(*args: str, env: dict[str, str] | None = None, status: int = 0) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **(env or {})}, cwd=ROOT)
    assert result.returncode == status, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def test_cli_registers_promotes_sets_alias_and_the_model_predicts(
        mlflow_server: Process) -> None:
    name = "fraud_cli"
    out = run_script("--tracking-uri", mlflow_server.url, "--model-name", name,
                     "--promote", "--alias", "champion", "--n-estimators", "10")

    assert f"Registered {name} version 1" in out
    assert "Moved version 1 to Production" in out
    assert "Alias champion -> version 1" in out
    assert "ROC AUC" in out
    client = MlflowClient(mlflow_server.url)
    assert client.get_model_version(name, "1").current_stage == "Production"
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    mlflow.set_tracking_uri(mlflow_server.url)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.metadata.get_input_schema().input_names() == list(FEATURES)
    rows, _ = make_transactions(40, seed=7)
    predictions = np.asarray(model.predict(rows))
    assert predictions.shape == (40,)
    assert set(np.unique(predictions)) <= {0, 1}
    # The stage reference resolves to the same version the alias does.
    by_stage = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert by_stage.metadata.run_id == model.metadata.run_id


def test_cli_reads_tracking_uri_from_environment_and_promotes_to_another_stage(
        mlflow_server: Process) -> None:
    name = "fraud_env"
    out = run_script("--model-name", name, "--stage", "Staging", "--n-estimators", "5",
                     env={"MLFLOW_TRACKING_URI": mlflow_server.url})

    assert f"Registered {name} version 1" in out
    assert MlflowClient(mlflow_server.url).get_model_version(name, "1").current_stage == "Staging"


def test_a_second_seed_gives_a_different_model_and_promotion_archives_the_first(
        mlflow_server: Process) -> None:
    name = "fraud_lib"
    versions = []
    for seed in (1, 2):
        frame, labels = make_transactions(5_000, seed)
        registered = register(train(frame, labels, n_estimators=10, seed=seed), name,
                              mlflow_server.url)
        promote(name, registered.version, "Production", mlflow_server.url)
        versions.append(registered.version)

    assert versions == ["1", "2"]
    client = MlflowClient(mlflow_server.url)
    assert client.get_model_version(name, "1").current_stage == "Archived"
    assert client.get_model_version(name, "2").current_stage == "Production"

    mlflow.set_tracking_uri(mlflow_server.url)
    body = sample_request(50)["dataframe_split"]
    assert isinstance(body, dict)
    rows, _ = make_transactions(50, seed=12345)
    v1 = mlflow.sklearn.load_model(f"models:/{name}/1").predict_proba(rows)[:, 1]
    v2 = mlflow.sklearn.load_model(f"models:/{name}/Production").predict_proba(rows)[:, 1]
    assert not np.allclose(v1, v2)
    assert body["columns"] == list(FEATURES) and len(body["data"]) == 50


def test_the_receiver_serves_the_example_model_to_json_clients(
        mlflow_server: Process, tmp_path: Path) -> None:
    name = "fraud_served"
    frame, labels = make_transactions(5_000, seed=1)
    version = register(train(frame, labels, n_estimators=10), name, mlflow_server.url).version
    promote(name, version, "Production", mlflow_server.url)
    receiver = start_receiver(tmp_path, mlflow_server.url, name)
    try:
        wait_until(lambda: requests.get(f"{receiver.url}/health/ready", timeout=2).ok,
                   timeout=60, message="receiver ready")
        split = requests.post(f"{receiver.url}/invocations", json=sample_request(5), timeout=10)
        # Whole numbers, as a person types them with curl, fit the float64 signature.
        record = dict.fromkeys(FEATURES, 1)
        records = requests.post(f"{receiver.url}/invocations",
                                json={"dataframe_records": [record]}, timeout=10)
    finally:
        receiver.stop()

    assert split.status_code == 200, split.text
    assert split.headers["X-Model-Version"] == version
    assert len(split.json()["predictions"]) == 5
    assert records.status_code == 200, records.text
    assert records.json()["predictions"][0] in (0, 1)


def test_the_gate_refuses_a_worse_model_and_promotes_a_better_one(
        mlflow_server: Process) -> None:
    name = "fraud_gated"
    url = mlflow_server.url
    client = MlflowClient(url)
    run_script("--tracking-uri", url, "--model-name", name, "--n-estimators", "10",
               "--rows", "5000", "--seed", "1", "--promote", "--alias", "champion")

    # One shallow tree on little data: it clears a low bar, yet on its own holdout the
    # Production forest does better.
    out = run_script("--tracking-uri", url, "--model-name", name, "--n-estimators", "1",
                     "--rows", "3000", "--seed", "3", "--stage", "Staging",
                     "--promote-if", "roc_auc>=0.7", status=1)
    assert "ok   roc_auc>=0.7" in out
    assert "vs Production version 1's" in out and "worse" in out, out
    assert "Refused: version 2 stays in Staging; Production keeps version 1" in out
    assert client.get_model_version(name, "1").current_stage == "Production"
    assert client.get_model_version(name, "2").current_stage == "Staging"
    assert client.get_model_version_by_alias(name, "champion").version == "1"

    out = run_script("--tracking-uri", url, "--model-name", name, "--n-estimators", "40",
                     "--rows", "20000", "--seed", "4", "--stage", "Staging",
                     "--promote-if", "roc_auc>=0.95", "--promote-if", "recall>0.1")
    assert "Gate passed: moved version 3 to Production, version 1 archived" in out, out
    assert "not worse" in out
    assert client.get_model_version(name, "3").current_stage == "Production"
    assert client.get_model_version(name, "1").current_stage == "Archived"

    tags = client.get_model_version(name, "3").tags
    assert {tags["training.seed"], tags["training.rows"], tags["training.n_estimators"]} == {
        "4", "20000", "40"}
    assert float(tags["holdout.roc_auc"]) >= 0.95 and tags["holdout.rows"] == "5000"
    assert len(tags["training.data_fingerprint"]) == 16
    assert tags["training.data_fingerprint"] != client.get_model_version(
        name, "2").tags["training.data_fingerprint"]


def test_a_gate_that_fails_its_threshold_moves_nothing(mlflow_server: Process) -> None:
    name = "fraud_gate_threshold"
    out = run_script("--tracking-uri", mlflow_server.url, "--model-name", name,
                     "--n-estimators", "5", "--rows", "2000", "--promote-if", "roc_auc>=0.9999",
                     status=1)
    assert "FAIL roc_auc>=0.9999" in out and "Refused: version 1 stays in Staging" in out
    assert MlflowClient(mlflow_server.url).get_model_version(name, "1").current_stage == "Staging"
