"""Fixtures for the Apache Beam tests (marker `beam`; the `beam` extra): one real `mlflow
server` with the plugin per module, notifying the address a pipeline's listener takes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.beam import handler
from examples.processes import free_port
from tests.integration.conftest import PluginStack

SECRET = "beam-test-secret"


@pytest.fixture(scope="module")
def listen() -> str:
    """Where pipelines listen for notifications: the plugin's HOTSWAP_TARGETS."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, listen: str) -> Iterator[PluginStack]:
    with PluginStack(tmp_path_factory.mktemp("beam"), secret=SECRET) as stack:
        stack.start_server([f"http://{listen}/hotswap"])
        yield stack


@pytest.fixture(autouse=True)
def fresh_workers() -> Iterator[None]:
    """In-process pipelines share this process's kept models and followers: none outlives a
    test."""
    yield
    handler.reset()
