"""Rollout at the HTTP edge, in process (Starlette's TestClient): who answers, the headers that
say so, the shadow run after the answer, and what /models/current shows. Models are fakes whose
predictions are their version number, so an answer tells who made it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from examples.processes import wait_until
from receiver.app import create_app
from receiver.references import Reference, Share
from receiver.service import Service
from receiver.settings import Settings
from receiver.shares import CANARY_TAG
from tests.support.fakes import FakeRegistry

CHALLENGER = Reference("alias", "challenger")
STAGING = Reference("stage", "Staging")
BODY = {"instances": [[1.0], [2.0]]}


class VersionModel:
    """Predicts its own version for every row."""

    def __init__(self, version: str) -> None:
        self.version = int(version)

    def predict(self, data: Any, params: Any = None) -> list[int]:
        return [self.version] * len(data)


@pytest.fixture
def client() -> Iterator[tuple[TestClient, Service]]:
    registry = FakeRegistry(pyfunc=VersionModel)
    registry.pointers = {CHALLENGER: "2", STAGING: "3"}
    settings = Settings(tracking_uri="http://unused", model_names=("m",), update_interval=600,
                        prewarm=(STAGING,), canary=Share(CHALLENGER, 30.0),
                        shadow=Share(STAGING, 100.0))
    service = Service(settings, registry=registry)
    with TestClient(create_app(service=service)) as test_client:
        models = service.models
        # The startup refresh runs in the background: wait for it, not for a first request.
        wait_until(lambda: models.served("m") is not None
                   and models.held("m", STAGING) is not None
                   and models.held("m", CHALLENGER) is not None,
                   timeout=30, message="the served version and both rollout versions loaded")
        yield test_client, service


def sample(service: Service, name: str, **labels: str) -> float:
    return service.metrics.registry.get_sample_value(name, {"model": "m", **labels}) or 0.0


def test_each_answer_says_who_made_it_and_a_key_sticks(
        client: tuple[TestClient, Service]) -> None:
    http, _ = client
    seen = {}
    for i in range(60):
        answers = [http.post("/invocations", json=BODY, headers={"X-Hotswap-Key": f"k{i}"})
                   for _ in range(3)]
        sides = {(a.headers["X-Model-Version"], a.headers["X-Model-Role"],
                  a.json()["predictions"][0]) for a in answers}
        assert len(sides) == 1
        seen[i] = sides.pop()
    assert set(seen.values()) == {("1", "primary", 1), ("2", "canary", 2)}
    pinned = http.post("/models/m/versions/2/invocations", json=BODY)
    assert (pinned.headers["X-Model-Version"], pinned.headers["X-Model-Role"]) == ("2", "primary")


def test_the_shadow_runs_after_primary_answers_and_is_compared(
        client: tuple[TestClient, Service]) -> None:
    http, service = client
    answers = [http.post("/invocations", json=BODY) for _ in range(40)]
    primary = [a for a in answers if a.headers["X-Model-Role"] == "primary"]
    assert primary and all(a.json() == {"predictions": [1, 1]} for a in primary)
    # Shadows gather and run after the answers: every primary answer is shadowed (nothing
    # queued here, so nothing shed), and version 3 always disagrees with version 1.
    wait_until(lambda: sample(service, "hotswap_shadow_comparisons_total", version="3")
               >= len(primary), timeout=30, message="every primary answer shadowed")
    assert sample(service, "hotswap_shadow_comparisons_total", version="3") == len(primary)
    assert sample(service, "hotswap_shadow_shed_total", version="3") == 0
    assert sample(service, "hotswap_shadow_disagreements_total", version="3") == len(primary)
    assert sample(service, "hotswap_predictions_total", version="3", role="shadow") == len(primary)
    assert sample(service, "hotswap_predictions_total", version="1", role="primary") == len(primary)
    assert sample(service, "hotswap_predictions_total", version="2", role="canary") == (
        len(answers) - len(primary))


def test_a_bad_body_is_a_400_counted_as_an_error_of_who_would_have_answered(
        client: tuple[TestClient, Service]) -> None:
    http, service = client
    answer = http.post("/invocations", content=b"{", headers={
        "Content-Type": "application/json", "X-Hotswap-Key": "k0"})
    assert answer.status_code == 400 and answer.json()["error_code"] == "BAD_REQUEST"
    errors = sum(sample(service, "hotswap_prediction_errors_total", version=v, role=r)
                 for v, r in (("1", "primary"), ("2", "canary")))
    assert errors == 1


def test_current_shows_prewarmed_canary_and_shadow(client: tuple[TestClient, Service]) -> None:
    http, _ = client
    body = http.get("/models/current").json()
    assert body["version"] == "1"
    assert [(p["reference"], p["version"]) for p in body["prewarmed"]] == [("Staging", "3")]
    assert {k: body["canary"][k] for k in ("reference", "version", "percent", "active",
                                           "source")} == {
        "reference": "@challenger", "version": "2", "percent": 30.0, "active": True,
        "source": "env"}
    assert (body["shadow"]["percent"], body["shadow"]["source"]) == (100.0, "env")
    assert (body["shadow"]["reference"], body["shadow"]["version"]) == ("Staging", "3")
    assert body["models"]["m"]["canary"]["version"] == "2"


def test_a_share_from_the_registry_tag_moves_on_a_tag_notification() -> None:
    registry = FakeRegistry(pyfunc=VersionModel)
    registry.pointers = {CHALLENGER: "2"}
    registry.tags = {CANARY_TAG: "100"}
    settings = Settings(tracking_uri="http://unused", model_names=("m",), update_interval=600,
                        canary=Share(CHALLENGER, None))
    service = Service(settings, registry=registry)
    with TestClient(create_app(service=service)) as http:
        wait_until(lambda: service.models.held("m", CHALLENGER) is not None, timeout=30,
                   message="the challenger loaded")
        assert {k: http.get("/models/current").json()["canary"][k]
                for k in ("version", "percent", "source", "active")} == {
            "version": "2", "percent": 100.0, "source": "registry", "active": True}
        roles = {http.post("/invocations", json=BODY).headers["X-Model-Role"] for _ in range(10)}
        assert roles == {"canary"}

        registry.tags = {CANARY_TAG: "0"}
        # Any notification naming a followed model triggers a refresh, a tag's included.
        tag_set = {"entity": "registered_model_tag", "action": "set",
                   "data": {"name": "m", "key": CANARY_TAG, "value": "0"}}
        answer = http.post("/webhooks/mlflow", json=tag_set)
        assert (answer.status_code, answer.json()) == (202, {"status": "accepted"})
        wait_until(lambda: http.get("/models/current").json()["canary"]["percent"] == 0,
                   timeout=30, message="the new share applied")
        roles = {http.post("/invocations", json=BODY).headers["X-Model-Role"] for _ in range(10)}
        assert roles == {"primary"}
        version_tag = {"entity": "model_version_tag", "action": "deleted",
                       "data": {"name": "m", "version": "2", "key": "k"}}
        assert http.post("/webhooks/mlflow", json=version_tag).json() == {"status": "accepted"}
