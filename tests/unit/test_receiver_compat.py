"""receiver/compat.py: the model download on MLflow 3 (registry_uri argument) and 2.x (without)."""

from __future__ import annotations

from typing import Any

import pytest

from receiver import compat


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    recorded: list[tuple[str, Any]] = []

    def download(**kwargs: Any) -> str:
        recorded.append(("download", kwargs))
        return "/local/model"

    monkeypatch.setattr(compat, "download_artifacts", download)
    monkeypatch.setattr("mlflow.set_tracking_uri", lambda uri: recorded.append(("tracking", uri)))
    monkeypatch.setattr("mlflow.set_registry_uri", lambda uri: recorded.append(("registry", uri)))
    return recorded


def test_mlflow_3_passes_both_uris(calls: list[tuple[str, Any]],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_DOWNLOAD_TAKES_REGISTRY_URI", True)
    assert compat.download_model("m", "2", "/dst", "http://t", "http://r") == "/local/model"
    assert calls == [("download", {"artifact_uri": "models:/m/2", "dst_path": "/dst",
                                   "tracking_uri": "http://t", "registry_uri": "http://r"})]


def test_mlflow_2_points_the_process_at_the_registry_first(
        calls: list[tuple[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compat, "_DOWNLOAD_TAKES_REGISTRY_URI", False)
    assert compat.download_model("m", "2", "/dst", "http://t", "http://r") == "/local/model"
    assert calls == [("tracking", "http://t"), ("registry", "http://r"),
                     ("download", {"artifact_uri": "models:/m/2", "dst_path": "/dst"})]


def test_the_installed_mlflow_is_detected() -> None:
    import mlflow

    # registry_uri came with MLflow 3.0.
    assert compat._DOWNLOAD_TAKES_REGISTRY_URI is (int(mlflow.__version__.split(".")[0]) >= 3)
    assert mlflow.__version__ == compat.MLFLOW_VERSION
