"""The integration tests' builders of real processes: an `mlflow server` with or without the
plugin, the receivers it pushes to, and what a receiver serves. The fixtures around them are in
tests/integration/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

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

# `receivers(tracking_uri, model_name, **env)`: the integration fixture that starts receivers.
ReceiverFactory = Callable[..., Process]


def start_plain_mlflow(workdir: Path, port: int | None = None) -> Process:
    """`mlflow server` on MLflow's own SQLite store in `workdir`, the plugin left out; on `port`
    again, it comes back with what it held."""
    backend = f"sqlite:///{workdir / 'mlflow.db'}"
    return start_mlflow_server(workdir, backend_uri=backend, registry_uri=backend, port=port)


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
    tracking_uri: str | None = None  # None: the stack's MLflow server

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
            starting = [pool.submit(start_receiver, self.workdir,
                                    spec.tracking_uri or self.server.url, spec.model,
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
