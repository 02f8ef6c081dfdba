"""Every bad input gets its status code and a JSON error; serving carries on. And a client
written for `mlflow models serve` works unchanged: same bodies, same predictions."""

from __future__ import annotations

import json
import os
import sys

import pytest
import requests

from examples.processes import free_port, promote, spawn_server
from tests.support.models import FEATURES, register_sklearn_model, sample_rows

ROWS = [[0.5, -1.0, 0.25, 2.0], [-0.3, 0.8, -1.5, 0.1]]
# The request bodies MLflow's docs show for `mlflow models serve` (deployment docs, "Inference
# server specification"), here with this model's columns.
RECORDS = [dict(zip(FEATURES, r, strict=True)) for r in ROWS]
DOC_BODIES = [
    ("application/json", {"dataframe_split": {"columns": FEATURES, "data": ROWS}}),
    ("application/json", {"dataframe_records": RECORDS}),
    ("application/json", {"instances": RECORDS}),
    ("application/json", {"inputs": {c: [r[i] for r in ROWS] for i, c in enumerate(FEATURES)}}),
    ("text/csv", ",".join(FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS)),
]


@pytest.fixture(scope="module")
def served(plain_mlflow, tmp_path_factory):
    """One receiver serving `inputs` v1 with an admin token, shared by this module's tests."""
    from examples.processes import start_receiver, wait_until

    name = "inputs"
    version = register_sklearn_model(plain_mlflow.url, name, seed=3)
    promote(name, version, tracking_uri=plain_mlflow.url, archive_existing=False)
    receiver = start_receiver(tmp_path_factory.mktemp("receiver"), plain_mlflow.url, name,
                              env={"HOTSWAP_ADMIN_TOKEN": "admin-token",
                                   "MODEL_UPDATE_INTERVAL": "600"})
    wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok, timeout=60)
    yield receiver, name, version
    receiver.stop()


def post(receiver, path: str, body, content_type: str = "application/json", **kwargs):
    data = json.dumps(body) if isinstance(body, (dict, list)) else body
    return requests.post(receiver.url + path, data=data, timeout=30,
                         headers={"Content-Type": content_type, **kwargs.pop("headers", {})},
                         **kwargs)


def test_mlflow_docs_bodies_get_the_same_answers_as_mlflow_models_serve(served, plain_mlflow,
                                                                      tmp_path) -> None:
    receiver, name, version = served
    port = free_port()
    # It execs `uvicorn` by name, so this interpreter's scripts must be on PATH.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": plain_mlflow.url, "PATH": path}
    argv = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{name}/{version}",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    reference = spawn_server("mlflow models serve", argv, env, tmp_path / "serve.log",
                             "127.0.0.1", port, "/ping", timeout=120)
    try:
        for content_type, body in DOC_BODIES:
            theirs = post(reference, "/invocations", body, content_type)
            ours = post(receiver, "/invocations", body, content_type)
            assert theirs.status_code == 200, theirs.text
            assert ours.status_code == 200, ours.text
            assert ours.json() == theirs.json()
            assert ours.headers["X-Model-Name"] == name
            assert ours.headers["X-Model-Version"] == version
    finally:
        reference.stop()


def test_every_route_serves_the_same_model(served) -> None:
    receiver, name, version = served
    body = sample_rows()
    answers = [post(receiver, path, body) for path in
               ("/invocations", "/predict", f"/models/{name}/invocations",
                f"/models/{name}/versions/{version}/invocations")]
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert {a.headers["X-Model-Version"] for a in answers} == {version}


@pytest.mark.parametrize("path, body, content_type, status, code", [
    ("/invocations", '{"dataframe_split": ', "application/json", 400, "BAD_REQUEST"),
    ("/invocations", "[1, 2, 3]", "application/json", 400, "BAD_REQUEST"),
    ("/invocations", {"rows": ROWS}, "application/json", 400, "BAD_REQUEST"),
    ("/invocations", {"dataframe_split": {"columns": ["x"], "data": [[1]]}},
     "application/json", 400, "BAD_REQUEST"),
    ("/invocations", {"dataframe_records": [{"f0": "abc", "f1": 1, "f2": 1, "f3": 1}]},
     "application/json", 400, "BAD_REQUEST"),
    ("/invocations", "f0,f1\nnot,numbers\n", "text/csv", 400, "BAD_REQUEST"),
    ("/invocations", "f0=1", "application/x-www-form-urlencoded", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ("/invocations", sample_rows(), "application/json; charset=latin-1", 415,
     "UNSUPPORTED_MEDIA_TYPE"),
    ("/models/nope/invocations", sample_rows(), "application/json", 404,
     "RESOURCE_DOES_NOT_EXIST"),
    ("/models/inputs/versions/999/invocations", sample_rows(), "application/json", 404,
     "RESOURCE_DOES_NOT_EXIST"),
    ("/models/inputs/versions/latest/invocations", sample_rows(), "application/json", 404,
     "RESOURCE_DOES_NOT_EXIST"),
    ("/no/such/endpoint", sample_rows(), "application/json", 404, "ENDPOINT_NOT_FOUND"),
    ("/models/reload", {}, "application/json", 401, "UNAUTHENTICATED"),
])
def test_bad_requests_get_clear_json_errors(served, path, body, content_type, status,
                                            code) -> None:
    receiver, _, version = served
    answer = post(receiver, path, body, content_type)
    assert answer.status_code == status, answer.text
    assert answer.json()["error_code"] == code
    assert answer.json()["message"]
    still = post(receiver, "/invocations", sample_rows())
    assert (still.status_code, still.headers["X-Model-Version"]) == (200, version)


def test_schema_violation_carries_mlflows_message(served) -> None:
    receiver, _, _ = served
    answer = post(receiver, "/invocations", {"dataframe_split": {"columns": ["x"], "data": [[1]]}})
    assert "Model is missing inputs" in answer.json()["message"]


def test_body_over_the_limit_is_413_with_or_without_content_length(served) -> None:
    receiver, _, _ = served
    oversized = b'{"inputs": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    assert post(receiver, "/invocations", oversized).status_code == 413

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(11):
            yield b"x" * (1024 * 1024)
    streamed = post(receiver, "/invocations", chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error_code"] == "REQUEST_TOO_LARGE"
    assert post(receiver, "/invocations", sample_rows()).status_code == 200


def test_admin_token_guards_reload(served) -> None:
    receiver, _, version = served
    wrong = post(receiver, "/models/reload", {}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    right = post(receiver, "/models/reload", {}, headers={"Authorization": "Bearer admin-token"})
    assert right.status_code == 200
    assert right.json() == {**right.json(), "status": "unchanged", "model_version": version}


def test_current_health_and_metrics_describe_the_served_model(served) -> None:
    receiver, name, version = served
    current = requests.get(receiver.url + "/models/current", timeout=5).json()
    assert {k: current[k] for k in ("name", "version", "stage")} == {
        "name": name, "version": version, "stage": "Production"}
    assert current["loaded_at"].endswith("+00:00")
    health = requests.get(receiver.url + "/health", timeout=5)
    assert health.status_code == 200 and health.json()["model_loaded"] is True
    assert requests.get(receiver.url + "/health/live", timeout=5).status_code == 200
    assert requests.get(receiver.url + "/health/ready", timeout=5).status_code == 200
    metrics = requests.get(receiver.url + "/metrics", timeout=5)
    assert metrics.headers["Content-Type"].startswith("text/plain")
    for grep in ("model_version", "cache_hits", "model_update_errors"):
        assert grep in metrics.text
    assert f'hotswap_model_version{{model="{name}"}} {float(version)}' in metrics.text
