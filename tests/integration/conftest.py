"""Fixtures and builders for integration tests: real servers on 127.0.0.1, stopped however a
test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from examples.processes import (
    Process,
    free_port,
    promote,
    start_mlflow_server,
    start_receiver,
    wait_until,
)
from tests.support.models import register_sklearn_model
from tests.support.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="module")
def plain_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A real `mlflow server` with MLflow's own SQLite registry store (no plugin), so the
    receiver's tests depend on nothing but MLflow."""
    server = start_plain_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


def start_plain_mlflow(workdir: Path, port: int | None = None) -> Process:
    """`mlflow server` on MLflow's own SQLite store in `workdir`, the plugin left out; on `port`
    again, it comes back with what it held."""
    backend = f"sqlite:///{workdir / 'mlflow.db'}"
    return start_mlflow_server(workdir, backend_uri=backend, registry_uri=backend, port=port)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL at TEST_POSTGRES_URL, or an embedded one when nothing answers there."""
    with postgres_server() as server:
        yield server


ReceiverFactory = Callable[..., Process]


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


def served_version(receiver: Process, name: str | None = None) -> str | None:
    """The version the receiver serves for `name` (its default model when None)."""
    current = requests.get(receiver.url + "/models/current", timeout=5)
    if current.status_code != 200:
        return None
    body = current.json()
    return body["version"] if name is None else body["models"][name]["version"]


def serves(receiver: Process, version: str) -> bool:
    return served_version(receiver) == version


PUSH_ONLY = {"MODEL_UPDATE_INTERVAL": "600"}  # a swap within a test's deadline came by push


@dataclass
class ReceiverSpec:
    """A receiver for PluginStack.start_receivers; its port is chosen up front, so that the
    MLflow server can be told its webhook URL before it starts."""

    model: str
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free one
    log_name: str = "receiver.log"

    def __post_init__(self) -> None:
        self.port = self.port or free_port(self.host)

    @property
    def webhook(self) -> str:
        return f"http://{self.host}:{self.port}/webhooks/mlflow"


class PluginStack:
    """A real `mlflow server` with the plugin and the receivers it pushes to, all in `workdir`.
    The receivers poll only every 600 s and share the plugin's `secret` (when given). Every
    process started here stops, last first, when the `with` block ends."""

    def __init__(self, workdir: Path, secret: str | None = None) -> None:
        self.workdir = workdir
        self.secret = secret
        self.processes: list[Process] = []

    def __enter__(self) -> PluginStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in reversed(self.processes):
            process.stop()

    @property
    def server(self) -> Process:
        return self.processes[0]

    def start_server(self, targets: list[str], extra_env: dict[str, str] | None = None,
                     **options: Any) -> Process:
        """The MLflow server, notifying `targets`; `options` go to start_mlflow_server."""
        env = {"HOTSWAP_TARGETS": ",".join(targets), **self._secret_env(), **(extra_env or {})}
        server = start_mlflow_server(self.workdir, extra_env=env, **options)
        self.processes.append(server)
        return server

    def register(self, model: str, versions: int = 2) -> None:
        """Versions 1 to `versions` of `model` (seeds 0, 1, ...); version 1 in Production."""
        for seed in range(versions):
            register_sklearn_model(self.server.url, model, seed=seed)
        promote(model, "1", tracking_uri=self.server.url, archive_existing=False)

    def start_receivers(self, specs: list[ReceiverSpec]) -> list[Process]:
        """Start them side by side; each one that started stops at the end, even when
        another failed to."""
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            starting = [pool.submit(start_receiver, self.workdir, self.server.url, spec.model,
                                    env={**PUSH_ONLY, **self._secret_env(), **spec.env},
                                    host=spec.host, port=spec.port, log_name=spec.log_name)
                        for spec in specs]
        failures = []
        for future in starting:
            try:
                self.processes.append(future.result())
            except Exception as exc:  # noqa: BLE001 - raised below, once all are recorded
                failures.append(exc)
        if failures:
            raise failures[0]
        return self.processes[-len(specs):]

    def wait_serving(self, version: str, receivers: list[Process]) -> None:
        for receiver in receivers:
            wait_until(partial(serves, receiver, version), timeout=120,
                       message=f"{receiver.url} serving version {version}")

    def _secret_env(self) -> dict[str, str]:
        return {} if self.secret is None else {"HOTSWAP_WEBHOOK_SECRET": self.secret}
