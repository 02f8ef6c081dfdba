"""Fixtures for the Apache Beam tests (marker `beam`; the `beam` extra): one real `mlflow
server` with the plugin for all of them, notifying the address a pipeline's listener takes,
and one model that no test moves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.beam import handler
from examples.processes import free_port, promote
from tests.support.models import register_sklearn_model
from tests.support.stack import PluginStack

SECRET = "beam-test-secret"


@pytest.fixture(scope="session")
def listen() -> str:
    """Where pipelines listen for notifications: the plugin's HOTSWAP_TARGETS."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, listen: str) -> Iterator[PluginStack]:
    with PluginStack(tmp_path_factory.mktemp("beam"), secret=SECRET) as stack:
        stack.start_server([f"http://{listen}/hotswap"])
        yield stack


@pytest.fixture(scope="session")
def shared_model(stack: PluginStack) -> str:
    """Version 1 in Production, version 2 (trained on flipped labels) registered beside it.
    Tests that promote register models of their own."""
    name = "beam_shared"
    register_sklearn_model(stack.server.url, name, seed=0)
    register_sklearn_model(stack.server.url, name, seed=1, inverted=True)
    promote(name, "1", tracking_uri=stack.server.url)
    return name


@pytest.fixture(autouse=True)
def fresh_workers() -> Iterator[None]:
    """In-process pipelines share this process's kept models and followers: none outlives a
    test."""
    yield
    handler.reset()
