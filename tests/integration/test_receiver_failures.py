"""A broken model version and MLflow going down: the receiver keeps serving what it has."""

from __future__ import annotations

import requests

from examples.processes import metric, promote, start_mlflow_server, wait_until
from tests.support.models import register_broken_model, register_sklearn_model, sample_rows
from tests.support.stack import served_version


def test_a_broken_version_keeps_the_good_one_serving_and_is_retried(plain_mlflow,
                                                                    receivers) -> None:
    name = "breakable"
    good = register_sklearn_model(plain_mlflow.url, name, seed=2)
    broken = register_broken_model(plain_mlflow.url, name)
    promote(name, good, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=600)
    promote(name, broken, tracking_uri=plain_mlflow.url, archive_existing=True)

    reply = requests.post(receiver.url + "/models/reload", timeout=60)
    assert reply.status_code == 502
    assert reply.json()["error_code"] == "RELOAD_FAILED"
    assert "deliberately broken" in reply.json()["message"]
    assert reply.json()["model_version"] == good
    assert metric(receiver.url, "hotswap_model_update_errors_total") == 1

    answer = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
    assert (answer.status_code, answer.headers["X-Model-Version"]) == (200, good)
    assert requests.get(receiver.url + "/health/ready", timeout=5).status_code == 200
    # The first retry comes 5 s after the failure, without any trigger.
    wait_until(lambda: metric(receiver.url, "hotswap_model_update_errors_total") >= 2, timeout=30,
               message="automatic retry")
    assert served_version(receiver) == good
    assert "Retrying the model update in 5s" in receiver.log()
    # A pinned request for the broken version is a clear error, and changes nothing.
    pinned = requests.post(f"{receiver.url}/models/{name}/versions/{broken}/invocations",
                           json=sample_rows(), timeout=30)
    assert (pinned.status_code, pinned.json()["error_code"]) == (502, "MODEL_LOAD_FAILED")
    assert served_version(receiver) == good


def test_mlflow_down_at_startup_then_back_then_killed(tmp_path, receivers) -> None:
    workdir = tmp_path / "mlflow"
    mlflow = start_mlflow_server(workdir, backend_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                                 registry_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    name = "resilient"
    version = register_sklearn_model(mlflow.url, name)
    promote(name, version, tracking_uri=mlflow.url, archive_existing=False)
    mlflow.stop()

    # MLflow is down: the receiver starts anyway, alive but not ready, and says when to retry.
    receiver = receivers(mlflow.url, name, wait_ready=False, MODEL_UPDATE_INTERVAL=600)
    assert requests.get(receiver.url + "/health/live", timeout=5).status_code == 200
    wait_until(lambda: metric(receiver.url, "hotswap_model_update_errors_total") >= 1, timeout=30)
    for path in ("/health/ready", "/health"):
        assert requests.get(receiver.url + path, timeout=5).status_code == 503
    answer = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "MODEL_NOT_LOADED"
    assert int(answer.headers["Retry-After"]) >= 1

    # MLflow comes back on the same address: the retry loads the model.
    mlflow = start_mlflow_server(workdir, backend_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                                 registry_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                                 port=mlflow.port)
    try:
        wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok,
                   timeout=60, message="ready after MLflow returned")
    finally:
        mlflow.kill()  # and now it crashes

    answer = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
    assert (answer.status_code, answer.headers["X-Model-Version"]) == (200, version)
    reload = requests.post(receiver.url + "/models/reload", timeout=60)
    assert reload.status_code == 502
    assert reload.json()["model_version"] == version
    health = requests.get(receiver.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["last_update_error"]
    answer = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
    assert answer.status_code == 200
