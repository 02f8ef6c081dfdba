"""A canary whose predict fails never fails the client: the primary answers, and the failure is
counted against the canary. A body the primary refuses too stays a 400, counted as the primary's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from examples.processes import wait_until
from receiver.app import create_app
from receiver.references import Share
from receiver.service import Service
from receiver.settings import Settings
from tests.support.fakes import FakeRegistry
from tests.unit.test_endpoints_rollout import CHALLENGER, VersionModel, sample

POISON = 13.0  # the canary fails on any body holding this value


class PickyModel(VersionModel):
    """Version 2 raises on a poisoned row; every version raises on a string."""

    def predict(self, data: Any, params: Any = None) -> list[int]:
        values = [value for row in data.to_numpy().tolist() for value in row]
        if any(isinstance(value, str) for value in values):
            raise TypeError("strings are not numbers")
        if self.version == 2 and POISON in values:
            raise RuntimeError("the canary is broken on this input")
        return super().predict(data, params)


@pytest.fixture
def client() -> Iterator[tuple[TestClient, Service]]:
    registry = FakeRegistry(pyfunc=PickyModel)
    registry.pointers = {CHALLENGER: "2"}
    settings = Settings(tracking_uri="http://unused", model_names=("m",), update_interval=600,
                        canary=Share(CHALLENGER, 100.0))
    service = Service(settings, registry=registry)
    with TestClient(create_app(service=service)) as test_client:
        wait_until(lambda: service.models.held("m", CHALLENGER) is not None, timeout=30,
                   message="the canary loaded")
        yield test_client, service


def test_a_failing_canary_is_answered_by_the_primary_and_counted_against_the_canary(
        client: tuple[TestClient, Service]) -> None:
    http, service = client
    good = http.post("/invocations", json={"instances": [[1.0]]})
    assert (good.status_code, good.headers["X-Model-Role"], good.json()) == (
        200, "canary", {"predictions": [2]})
    poisoned = http.post("/invocations", json={"instances": [[POISON]]})
    assert poisoned.status_code == 200
    assert (poisoned.headers["X-Model-Role"], poisoned.headers["X-Model-Version"]) == (
        "primary", "1")
    assert poisoned.json() == {"predictions": [1]}
    assert sample(service, "hotswap_prediction_errors_total", version="2", role="canary") == 1
    assert sample(service, "hotswap_canary_fallbacks_total", version="2") == 1
    assert sample(service, "hotswap_predictions_total", version="2", role="canary") == 1
    assert sample(service, "hotswap_predictions_total", version="1", role="primary") == 1
    assert sample(service, "hotswap_prediction_errors_total", version="1", role="primary") == 0


def test_a_body_both_refuse_is_a_400_counted_against_the_primary(
        client: tuple[TestClient, Service]) -> None:
    http, service = client
    answer = http.post("/invocations", json={"instances": [["x"]]})
    assert answer.status_code == 400 and answer.json()["error_code"] == "BAD_REQUEST"
    assert sample(service, "hotswap_prediction_errors_total", version="1", role="primary") == 1
    assert sample(service, "hotswap_prediction_errors_total", version="2", role="canary") == 0
    assert sample(service, "hotswap_canary_fallbacks_total", version="2") == 0


def test_a_v2_answer_the_primary_gave_names_the_primarys_version(
        client: tuple[TestClient, Service]) -> None:
    http, service = client
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [POISON]}]}
    answer = http.post("/v2/models/m/infer", json=body)
    assert answer.status_code == 200
    assert (answer.headers["X-Model-Role"], answer.json()["model_version"]) == ("primary", "1")
    assert answer.json()["outputs"][0]["data"] == [1]
    assert sample(service, "hotswap_prediction_errors_total", version="2", role="canary",
                  protocol="v2") == 1
    assert sample(service, "hotswap_canary_fallbacks_total", version="2") == 1
