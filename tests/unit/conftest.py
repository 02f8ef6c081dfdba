"""Fixtures shared by the unit tests of examples/ (compose, Dockerfile, Kubernetes, Grafana)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deployment import exported_metrics, load_compose, receiver_routes


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The receiver app's routes: path -> methods."""
    return receiver_routes(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Sample names the receiver exports -> their label names."""
    return exported_metrics()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """examples/docker-compose.yml, parsed."""
    return load_compose()
