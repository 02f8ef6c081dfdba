"""Fixtures for integration tests: real servers on 127.0.0.1, stopped however a test ends. The
builders they use, and tests may too, are in tests/support/stack.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from examples.processes import Process, start_receiver, wait_until
from tests.support.postgres import PostgresServer, postgres_server
from tests.support.stack import ReceiverFactory, start_plain_mlflow


@pytest.fixture(scope="module")
def plain_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real `mlflow server` with MLflow's own SQLite registry store (no plugin), so the
    receiver's tests depend on nothing but MLflow."""
    server = start_plain_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL at TEST_POSTGRES_URL, or an embedded one when nothing answers there."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[ReceiverFactory]:
    """Start receivers with `receivers(tracking_uri, model_name, **env)`; all stop at the end."""
    started: list[Process] = []

    def start(tracking_uri: str, model_name: str, wait_ready: bool = True,
              **env: Any) -> Process:
        receiver = start_receiver(tmp_path, tracking_uri, model_name,
                                  env={k: str(v) for k, v in env.items()},
                                  log_name=f"receiver-{len(started)}.log")
        started.append(receiver)
        if wait_ready:
            wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok,
                       timeout=60, message="receiver ready")
        return receiver

    yield start
    for receiver in started:
        receiver.stop()
