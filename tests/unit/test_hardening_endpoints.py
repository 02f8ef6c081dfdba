"""The hardened HTTP answers, in process (Starlette's TestClient, a fake registry): bodies too
big, odd version spellings, failed and hung loads, credentials in MLflow's error texts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from starlette.testclient import TestClient

from examples.processes import wait_until
from receiver.app import create_app
from receiver.registry import LoadedModel, ModelNotFound, ModelSnapshot, Registry
from receiver.service import Service
from receiver.settings import Settings
from receiver.webhooks import MAX_NOTIFICATION_BYTES

SECRET_URI = "http://alice:hunter2-pw@127.0.0.1:9"


class FakeRegistry:
    def __init__(self) -> None:
        self.loads: list[str] = []
        self.closed = False
        self.hang = threading.Event()

    def snapshot(self, name: str) -> ModelSnapshot:
        return ModelSnapshot(stages={"production": "1"})

    def load(self, name: str, version: str) -> LoadedModel:
        self.loads.append(version)
        if version == "2":
            raise SystemExit(2)
        if version == "3":
            self.hang.wait(timeout=30)
        if version == "4":
            raise MlflowException(f"API request to {SECRET_URI}/api/2.0/mlflow failed")
        if version == "5":
            raise ModelNotFound(f"Model {name!r} has no version {version!r}.")
        return LoadedModel(name=name, version=version, pyfunc=None,  # type: ignore[arg-type]
                           input_schema=None, local_path=Path("/nonexistent"), run_id=None,
                           load_seconds=0.0)

    def release(self, model: LoadedModel) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def served() -> Iterator[tuple[TestClient, FakeRegistry]]:
    registry = FakeRegistry()
    settings = Settings(tracking_uri=SECRET_URI, model_names=("m",), load_timeout=0.5,
                        update_interval=600)
    app = create_app(service=Service(settings, registry=registry))  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        # The startup load runs in the background: wait for it, so no test races it.
        wait_until(lambda: client.get("/health/ready").status_code == 200, timeout=30,
                   message="version 1 served")
        yield client, registry
    registry.hang.set()
    assert registry.closed


def pinned(client: TestClient, version: str) -> tuple[int, dict[str, str]]:
    reply = client.post(f"/models/m/versions/{version}/invocations", content=b"{}",
                        headers={"content-type": "application/json"})
    return reply.status_code, reply.json()


def test_a_notification_over_64_kib_is_413_before_any_work(served) -> None:
    client, _ = served
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
def test_a_non_canonical_version_is_404_and_loads_nothing(served, spelling: str) -> None:
    client, registry = served
    status, body = pinned(client, spelling)
    assert (status, body["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert registry.loads == ["1"]  # only the startup load


def test_sys_exit_in_a_pinned_load_is_502_remembered_and_shown(served) -> None:
    client, registry = served
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


def test_a_hung_pinned_load_is_abandoned_and_shown(served) -> None:
    client, _ = served
    status, body = pinned(client, "3")
    assert (status, body["error_code"]) == (502, "MODEL_LOAD_FAILED")
    assert "HOTSWAP_LOAD_TIMEOUT" in body["message"]
    health = client.get("/health").json()
    assert health["abandoned_loads"] == ["m version 3"]
    assert health["load_failures"]["timeout"] == 1
    assert 'hotswap_model_load_failures_total{reason="timeout"} 1.0' in client.get(
        "/metrics").text


def test_mlflow_error_texts_lose_their_password(served) -> None:
    client, _ = served
    status, body = pinned(client, "4")
    assert (status, body["error_code"]) == (502, "MLFLOW_UNAVAILABLE")
    assert "hunter2" not in body["message"] and "alice:***@" in body["message"]
    assert pinned(client, "5")[0] == 404
    assert "hunter2" not in client.get("/health").text


def test_the_model_folder_made_at_start_is_removed_by_close(tmp_path: Path) -> None:
    made = Registry(Settings(tracking_uri="http://127.0.0.1:9", model_names=("m",)))
    root = made._model_root
    assert root.is_dir()
    made.close()
    assert not root.exists()
    given = Registry(Settings(tracking_uri="http://127.0.0.1:9", model_names=("m",),
                              model_dir=str(tmp_path / "models")))
    given.close()
    assert (tmp_path / "models").is_dir()  # the user's folder is theirs
