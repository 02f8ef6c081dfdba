"""The HTTP edge in process: every client error becomes the right status and a JSON
`{"error_code", "message"}`, with the real app, updater and lane around a fake registry.

The same cases against real processes (MLflow, uvicorn) live in tests/integration/.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from starlette.testclient import TestClient

from examples.processes import wait_until
from mlflow_hotswap_plugin.signing import DELIVERY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from receiver.app import create_app
from receiver.registry import ModelNotFound
from receiver.service import Service
from receiver.settings import Settings
from receiver.webhooks import MAX_NOTIFICATION_BYTES
from tests.support.fakes import FakeRegistry

BODY = {"dataframe_split": {"columns": ["a"], "data": [[1.0], [2.0]]}}
ADMIN_TOKEN = "admin-token"
SECRET = "webhook-secret"
MAX_BODY = 2_000


class OnesModel:
    """Stands in for a PyFuncModel: one prediction per row; a string column makes it raise."""

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> list[int]:
        if not all(pd.api.types.is_numeric_dtype(dtype) for dtype in data.dtypes):
            raise ValueError("could not convert string to float")
        return [1] * len(data)


def registry(pointer: str | None) -> FakeRegistry:
    """Version `pointer` of "m" is served; versions 404 and 500 of it are missing and broken;
    version 502 cannot be fetched."""
    fake = FakeRegistry(pointer, pyfunc=lambda version: OnesModel())
    fake.behaviour = {"404": ModelNotFound("Model 'm' has no version '404'."),
                      "500": RuntimeError("the model's code raised on load"),
                      "502": MlflowException("connection refused")}
    return fake


def make_client(pointer: str | None, **settings: Any) -> Iterator[tuple[TestClient, Service]]:
    service = Service(Settings(tracking_uri="http://unused", model_names=("m",),
                               max_body_bytes=MAX_BODY, **settings),
                      registry=registry(pointer))
    with TestClient(create_app(service=service), raise_server_exceptions=False) as client:
        if pointer is not None:
            wait_until(lambda: service.models.served("m") is not None, timeout=10,
                       message="the startup refresh served a model")
        yield client, service


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[TestClient, Service]]:
    """Serving version 1 of "m", with a webhook secret and an admin token."""
    yield from make_client("1", webhook_secret=SECRET, admin_token=ADMIN_TOKEN)


@pytest.fixture(scope="module")
def client(served: tuple[TestClient, Service]) -> TestClient:
    return served[0]


def webhooks(service: Service, outcome: str) -> float:
    value = service.metrics.registry.get_sample_value("hotswap_webhook_requests_total",
                                                      {"outcome": outcome})
    return value or 0.0


@pytest.fixture(scope="module")
def empty() -> Iterator[tuple[TestClient, Service]]:
    """Nothing at the followed stage: no model is served."""
    yield from make_client(None)


def error(response: Any, status: int, error_code: str) -> str:
    """The message of a JSON error response, after checking its status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == error_code
    assert body["message"]
    return str(body["message"])


def test_a_prediction_answers_with_the_served_version(client: TestClient) -> None:
    answer = client.post("/invocations", json=BODY)
    assert answer.status_code == 200
    assert answer.json() == {"predictions": [1, 1]}
    assert (answer.headers["X-Model-Name"], answer.headers["X-Model-Version"]) == ("m", "1")


@pytest.mark.parametrize("content, fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be an object"),
    (json.dumps({"instances": [1], "inputs": [1]}).encode(), "exactly one of"),
    (json.dumps({"dataframe_split": {"columns": ["a"], "data": [["x"]]}}).encode(),
     "could not score this input"),
])
def test_malformed_or_unscorable_input_is_400(client: TestClient, content: bytes,
                                              fragment: str) -> None:
    answer = client.post("/invocations", content=content,
                         headers={"content-type": "application/json"})
    assert fragment in error(answer, 400, "BAD_REQUEST")


def test_a_malformed_notification_is_400_and_counted_as_malformed(
        empty: tuple[TestClient, Service]) -> None:
    test_client, service = empty  # no secret there: the body itself is checked
    before = webhooks(service, "malformed")
    answer = test_client.post("/webhooks/mlflow", content=b"not json")
    error(answer, 400, "BAD_REQUEST")
    assert webhooks(service, "malformed") == before + 1
    assert webhooks(service, "rejected") == 0


def test_unsigned_or_forged_notifications_are_401_and_counted_as_rejected(
        served: tuple[TestClient, Service]) -> None:
    client, service = served
    before = webhooks(service, "rejected")
    answer = client.post("/webhooks/mlflow", json={"entity": "x", "action": "y", "data": {}})
    assert "not signed" in error(answer, 401, "UNAUTHENTICATED")
    forged = {DELIVERY_ID_HEADER: "id", TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: "v1,AAAA"}
    error(client.post("/webhooks/mlflow", content=b"{}", headers=forged), 401, "UNAUTHENTICATED")
    assert webhooks(service, "rejected") == before + 2
    assert webhooks(service, "malformed") == 0


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", ADMIN_TOKEN])
def test_reload_without_the_admin_token_is_401(client: TestClient,
                                               authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization else {}
    error(client.post("/models/reload", headers=headers), 401, "UNAUTHENTICATED")


def test_reload_with_the_admin_token_answers(client: TestClient) -> None:
    answer = client.post("/models/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200
    assert answer.json()["status"] == "unchanged" and answer.json()["model_version"] == "1"


@pytest.mark.parametrize("method, path, error_code", [
    ("POST", "/models/other/invocations", "RESOURCE_DOES_NOT_EXIST"),
    ("POST", "/models/other/versions/1/invocations", "RESOURCE_DOES_NOT_EXIST"),
    ("POST", "/models/m/versions/one/invocations", "RESOURCE_DOES_NOT_EXIST"),
    ("POST", "/models/m/versions/404/invocations", "RESOURCE_DOES_NOT_EXIST"),
    ("GET", "/no/such/endpoint", "ENDPOINT_NOT_FOUND"),
])
def test_unknown_models_versions_and_endpoints_are_404(client: TestClient, method: str,
                                                       path: str, error_code: str) -> None:
    error(client.request(method, path, json=BODY), 404, error_code)


def test_a_pinned_version_is_served_from_the_cache(client: TestClient) -> None:
    answer = client.post("/models/m/versions/7/invocations", json=BODY)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "7"


@pytest.mark.parametrize("version, status, error_code", [
    ("500", 502, "MODEL_LOAD_FAILED"),
    ("502", 502, "MLFLOW_UNAVAILABLE"),
])
def test_a_pinned_version_that_fails_to_load_says_why(client: TestClient, version: str,
                                                      status: int, error_code: str) -> None:
    answer = client.post(f"/models/m/versions/{version}/invocations", json=BODY)
    assert version in error(answer, status, error_code)


@pytest.mark.parametrize("method, path", [
    ("GET", "/invocations"), ("PUT", "/models/reload"), ("POST", "/health"),
    ("GET", "/webhooks/mlflow"),
])
def test_a_wrong_method_is_405(client: TestClient, method: str, path: str) -> None:
    error(client.request(method, path), 405, "METHOD_NOT_ALLOWED")


@pytest.mark.parametrize(("path", "limit"), [("/invocations", MAX_BODY),
                                             ("/webhooks/mlflow", MAX_NOTIFICATION_BYTES)])
def test_a_body_over_the_limit_is_413(client: TestClient, path: str, limit: int) -> None:
    big = b"[" + b"1," * limit + b"1]"
    answer = client.post(path, content=big, headers={"content-type": "application/json"})
    error(answer, 413, "REQUEST_TOO_LARGE")


def test_a_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    chunks = (b"1" * 500 for _ in range(10))  # no Content-Length: counted as it arrives
    answer = client.post("/invocations", content=chunks,
                         headers={"content-type": "application/json"})
    error(answer, 413, "REQUEST_TOO_LARGE")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin-1"])
def test_an_unsupported_content_type_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post("/invocations", content=json.dumps(BODY).encode(), headers=headers)
    error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("method, path", [
    ("POST", "/invocations"), ("POST", "/predict"), ("POST", "/models/m/invocations"),
    ("GET", "/models/current"),
])
def test_nothing_served_is_503_with_retry_after(empty: tuple[TestClient, Service],
                                                method: str, path: str) -> None:
    test_client, _ = empty
    answer = test_client.request(method, path, json=BODY)
    error(answer, 503, "MODEL_NOT_LOADED")
    assert int(answer.headers["Retry-After"]) >= 1


def test_nothing_served_is_not_ready_and_unhealthy(empty: tuple[TestClient, Service]) -> None:
    test_client, _ = empty
    ready = test_client.get("/health/ready")
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) >= 1
    assert test_client.get("/health").json()["model_loaded"] is False
    assert test_client.get("/health/live").status_code == 200


# Loads that fail every way a model's code or MLflow can make them fail, behind an MLflow URI
# that carries a password: a fresh app per test, since the tests count loads.
SECRET_URI = "http://alice:hunter2-pw@127.0.0.1:9"
FailingLoads = tuple[TestClient, FakeRegistry]


@pytest.fixture
def failing_loads() -> Iterator[FailingLoads]:
    """Version 1 served; pinned version 2 calls sys.exit, 3 hangs past the load timeout, 4
    fails with the URI in MLflow's error text, 5 does not exist."""
    registry = FakeRegistry()
    hang = threading.Event()
    mlflow_error = MlflowException(f"API request to {SECRET_URI}/api/2.0/mlflow failed")
    registry.behaviour = {"2": SystemExit(2), "3": hang, "4": mlflow_error,
                          "5": ModelNotFound("Model 'm' has no version '5'.")}
    settings = Settings(tracking_uri=SECRET_URI, model_names=("m",), load_timeout=0.5,
                        update_interval=600)
    app = create_app(service=Service(settings, registry=registry))
    with TestClient(app, raise_server_exceptions=False) as client:
        # The startup load runs in the background: wait for it, so no test races it.
        wait_until(lambda: client.get("/health/ready").status_code == 200, timeout=30,
                   message="version 1 served")
        yield client, registry
    hang.set()
    assert registry.closed


def pinned(client: TestClient, version: str) -> tuple[int, dict[str, str]]:
    reply = client.post(f"/models/m/versions/{version}/invocations", content=b"{}",
                        headers={"content-type": "application/json"})
    return reply.status_code, reply.json()


def test_a_notification_over_64_kib_is_413_before_any_work(failing_loads: FailingLoads) -> None:
    client, _ = failing_loads
    big = b"x" * (MAX_NOTIFICATION_BYTES + 1)
    assert client.post("/webhooks/mlflow", content=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the stream is counted
        for _ in range(80):
            yield b"x" * 1024

    reply = client.post("/webhooks/mlflow", content=chunks())
    assert (reply.status_code, reply.json()["error_code"]) == (413, "REQUEST_TOO_LARGE")
    metrics = client.get("/metrics").text
    assert 'hotswap_webhook_requests_total{outcome="too_large"} 2.0' in metrics


@pytest.mark.parametrize("spelling", ["01", "001", "0001", "%D9%A1", "1.0", "+1"])
def test_a_non_canonical_version_is_404_and_loads_nothing(failing_loads: FailingLoads,
                                                          spelling: str) -> None:
    client, registry = failing_loads
    status, body = pinned(client, spelling)
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert registry.loads == ["1"]  # only the startup load


def test_sys_exit_in_a_pinned_load_is_502_remembered_and_shown(failing_loads: FailingLoads) -> None:
    client, registry = failing_loads
    status, body = pinned(client, "2")
    assert (status, body["error_code"]) == (502, "MODEL_LOAD_FAILED")
    assert "SystemExit" in body["message"]
    assert pinned(client, "2")[0] == 502
    assert registry.loads.count("2") == 1  # the second answer came from the negative cache
    health = client.get("/health").json()
    assert health["load_failures"]["exit"] == 1
    assert "SystemExit" in health["last_load_failure"]
    assert client.post("/invocations", content=b"{}",
                       headers={"content-type": "application/json"}).status_code != 500


def test_a_hung_pinned_load_is_abandoned_and_shown(failing_loads: FailingLoads) -> None:
    client, _ = failing_loads
    status, body = pinned(client, "3")
    assert (status, body["error_code"]) == (502, "MODEL_LOAD_FAILED")
    assert "HOTSWAP_LOAD_TIMEOUT" in body["message"]
    health = client.get("/health").json()
    assert health["abandoned_loads"] == ["m version 3"]
    assert health["load_failures"]["timeout"] == 1
    assert 'hotswap_model_load_failures_total{reason="timeout"} 1.0' in client.get(
        "/metrics").text


def test_mlflow_error_texts_lose_their_password(failing_loads: FailingLoads) -> None:
    client, _ = failing_loads
    status, body = pinned(client, "4")
    assert (status, body["error_code"]) == (502, "MLFLOW_UNAVAILABLE")
    assert "hunter2" not in body["message"] and "alice:***@" in body["message"]
    assert pinned(client, "5")[0] == 404
    assert "hunter2" not in client.get("/health").text
