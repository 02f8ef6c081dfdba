"""A client written for `mlflow models serve` drives the receiver unchanged: MLflow's own
`ScoringServerClient` waits on `GET /ping`, reads `GET /version` and invokes `/invocations`."""

from __future__ import annotations

import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.version import VERSION

from examples.processes import Process, promote
from tests.support.models import FEATURES, register_sklearn_model, training_frame
from tests.support.stack import ReceiverFactory

pytestmark = pytest.mark.compat

MODEL = "scoring-client-model"


def test_scoring_server_client_drives_the_receiver(plain_mlflow: Process,
                                                   receivers: ReceiverFactory) -> None:
    version = register_sklearn_model(plain_mlflow.url, MODEL, seed=3)
    # Nothing in Production yet: not ready, as `mlflow models serve` is not before its model.
    receiver = receivers(plain_mlflow.url, MODEL, wait_ready=False, MODEL_UPDATE_INTERVAL=1)
    client = ScoringServerClient(receiver.host, receiver.port)

    not_ready = requests.get(receiver.url + "/ping", timeout=5)
    assert not_ready.status_code == 503
    assert int(not_ready.headers["Retry-After"]) >= 1
    assert not_ready.json()["error_code"] == "MODEL_NOT_LOADED"
    with pytest.raises(Exception, match="ping failed"):
        client.ping()

    promote(MODEL, version, tracking_uri=plain_mlflow.url, archive_existing=False)
    client.wait_server_ready(timeout=60, scoring_server_proc=receiver.popen)

    assert client.get_version() == VERSION
    frame, _ = training_frame(seed=7, rows=5)
    result = client.invoke(frame)
    expected = _predict_locally(plain_mlflow.url, version, frame)
    assert list(result.get_predictions(predictions_format="ndarray")) == list(expected)


def _predict_locally(tracking_uri: str, version: str, frame: pd.DataFrame) -> list[int]:
    import mlflow.pyfunc

    source = MlflowClient(tracking_uri).get_model_version_download_uri(MODEL, version)
    mlflow.set_tracking_uri(tracking_uri)
    return [int(v) for v in mlflow.pyfunc.load_model(source).predict(frame[FEATURES])]
