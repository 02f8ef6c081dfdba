"""The receiver follows a real MLflow registry and hot-swaps with zero failed requests."""

from __future__ import annotations

import uuid

import pytest
import requests
from mlflow import MlflowClient

from examples.client import PredictionClient
from examples.processes import metric, promote, wait_until
from mlflow_hotswap_plugin import events, signing
from tests.support.models import register_sklearn_model, sample_rows
from tests.support.stack import served_version

SECRET = "integration-secret"


def signed_post(url: str, body: bytes, secret: str = SECRET, timestamp: int | None = None,
                delivery_id: str | None = None) -> requests.Response:
    headers = {"Content-Type": "application/json",
               **signing.headers(body, secret, delivery_id, timestamp)}
    return requests.post(url + "/webhooks/mlflow", data=body, headers=headers, timeout=5)


@pytest.fixture(scope="module")
def swap_model(plain_mlflow):
    """`swapper`: v1 and v2 registered, v1 in Production."""
    name = "swapper"
    v1 = register_sklearn_model(plain_mlflow.url, name, seed=0)
    v2 = register_sklearn_model(plain_mlflow.url, name, seed=1)
    return name, v1, v2


@pytest.mark.parametrize("how", ["reload", "webhook"])
def test_promotion_under_load_fails_no_request(plain_mlflow, receivers, swap_model, how) -> None:
    name, v1, v2 = swap_model
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=600,
                         HOTSWAP_WEBHOOK_SECRET=SECRET)
    assert served_version(receiver) == v1
    client = PredictionClient(receiver.url, sample_rows(3), threads=8)
    client.start()
    try:
        wait_until(lambda: client.counts()[0] > 50, timeout=30, message="load running")
        promote(name, v2, tracking_uri=plain_mlflow.url, archive_existing=True)
        if how == "reload":
            reply = requests.post(receiver.url + "/models/reload", timeout=60)
            assert reply.json() == {**reply.json(), "status": "reloaded", "model_version": v2}
        else:
            body = events.stage_transitioned(name, v2, "None", "Production").to_json()
            assert signed_post(receiver.url, body).status_code == 202
        wait_until(lambda: client.counts()[2][v2] > 50, timeout=30, message="v2 answering")
    finally:
        client.stop()
    _, failed, versions = client.counts()
    assert (failed, client.errors()) == (0, [])
    assert set(versions) == {v1, v2}
    assert served_version(receiver) == v2
    trigger = "manual" if how == "reload" else "webhook"
    assert metric(receiver.url, "hotswap_model_reloads_total", {"trigger": trigger}) == 1
    assert metric(receiver.url, "hotswap_model_version", {"model": name}) == float(v2)


def test_rollback_is_served_from_the_cache(plain_mlflow, receivers, swap_model) -> None:
    name, v1, v2 = swap_model
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=600)
    promote(name, v2, tracking_uri=plain_mlflow.url, archive_existing=True)
    assert requests.post(receiver.url + "/models/reload", timeout=60).json()["model_version"] == v2
    misses = metric(receiver.url, "hotswap_model_cache_misses_total")
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    assert requests.post(receiver.url + "/models/reload", timeout=60).json()["model_version"] == v1
    assert metric(receiver.url, "hotswap_model_cache_misses_total") == misses
    assert metric(receiver.url, "hotswap_model_cache_hits_total") >= 1
    # Reloading again with nothing changed is a no-op.
    reload = requests.post(receiver.url + "/models/reload", timeout=60)
    assert reload.json()["status"] == "unchanged"


def test_alias_following_swaps_when_the_alias_moves(plain_mlflow, receivers, swap_model) -> None:
    name, v1, v2 = swap_model
    client = MlflowClient(plain_mlflow.url)
    client.set_registered_model_alias(name, "champion", v1)
    receiver = receivers(plain_mlflow.url, name, MODEL_ALIAS="champion", MODEL_UPDATE_INTERVAL=600)
    current = requests.get(receiver.url + "/models/current", timeout=5).json()
    assert (current["version"], current["alias"]) == (v1, "champion")
    client.set_registered_model_alias(name, "champion", v2)
    body = events.alias_created(name, "champion", v2).to_json()
    assert requests.post(receiver.url + "/webhooks/mlflow", data=body, timeout=5).status_code == 202
    wait_until(lambda: served_version(receiver) == v2, timeout=30, message="alias swap")
    reply = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
    assert reply.headers["X-Model-Version"] == v2


def test_poll_catches_a_promotion_without_any_notification(plain_mlflow, receivers,
                                                           swap_model) -> None:
    name, v1, v2 = swap_model
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=2)
    assert served_version(receiver) == v1
    promote(name, v2, tracking_uri=plain_mlflow.url, archive_existing=True)
    wait_until(lambda: served_version(receiver) == v2, timeout=30, message="poll swap")
    assert metric(receiver.url, "hotswap_model_reloads_total", {"trigger": "poll"}) == 1
    assert metric(receiver.url, "hotswap_webhook_requests_total") == 0


def test_forged_stale_and_replayed_notifications_change_nothing(plain_mlflow, receivers,
                                                                swap_model) -> None:
    name, v1, v2 = swap_model
    promote(name, v2, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=600,
                         HOTSWAP_WEBHOOK_SECRET=SECRET)
    body = events.stage_transitioned(name, v1, "Archived", "Production").to_json()
    unsigned = requests.post(receiver.url + "/webhooks/mlflow", data=body, timeout=5)
    forged = signed_post(receiver.url, body, secret="not-the-secret")
    stale = signed_post(receiver.url, body, timestamp=1_600_000_000)
    assert [r.status_code for r in (unsigned, forged, stale)] == [401, 401, 401]
    assert unsigned.json()["error_code"] == "UNAUTHENTICATED"
    assert metric(receiver.url, "hotswap_webhook_requests_total", {"outcome": "rejected"}) == 3

    # Validly signed, but naming an old version: the registry still says v2, so v2 it stays.
    delivery = str(uuid.uuid4())
    resolves = metric(receiver.url, "hotswap_registry_resolves_total")
    assert signed_post(receiver.url, body, delivery_id=delivery).json()["status"] == "accepted"
    replay = signed_post(receiver.url, body, delivery_id=delivery)
    assert (replay.status_code, replay.json()["status"]) == (202, "duplicate")
    wait_until(lambda: metric(receiver.url, "hotswap_registry_resolves_total") == resolves + 1,
               timeout=30, message="the accepted notification's re-resolve")
    assert served_version(receiver) == v2
    assert metric(receiver.url, "hotswap_model_reloads_total", {"trigger": "webhook"}) == 0

    other = events.stage_transitioned("some_other_model", "1", "None", "Production").to_json()
    assert signed_post(receiver.url, other).json()["status"] == "ignored"



def test_several_models_are_served_side_by_side(plain_mlflow, receivers, swap_model) -> None:
    name, v1, _ = swap_model
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    other = "sidekick"
    other_version = register_sklearn_model(plain_mlflow.url, other, seed=5)
    promote(other, other_version, tracking_uri=plain_mlflow.url, archive_existing=False)
    receiver = receivers(plain_mlflow.url, f"{name},{other}", MODEL_UPDATE_INTERVAL=600)
    wait_until(lambda: served_version(receiver, other) == other_version, timeout=30)
    default = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
    second = requests.post(f"{receiver.url}/models/{other}/invocations", json=sample_rows(),
                           timeout=10)
    assert (default.headers["X-Model-Name"], default.headers["X-Model-Version"]) == (name, v1)
    assert (second.headers["X-Model-Name"], second.headers["X-Model-Version"]) == (
        other, other_version)
    assert metric(receiver.url, "hotswap_model_version", {"model": other}) == float(other_version)


def test_log_lines_tell_the_swap_story_and_evicted_versions_are_cleaned_up(
        plain_mlflow, receivers, swap_model, tmp_path) -> None:
    name, v1, v2 = swap_model
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    model_dir = tmp_path / "models"
    receiver = receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=600, MODEL_CACHE_SIZE=1,
                         HOTSWAP_MODEL_DIR=model_dir)
    promote(name, v2, tracking_uri=plain_mlflow.url, archive_existing=True)
    assert requests.post(receiver.url + "/models/reload", timeout=60).json()["status"] == "reloaded"
    log = receiver.log()
    for line in (f"Loading model {name} version {v2} from MLflow", "Model loaded successfully in",
                 f"Swapped to model version {v2} of {name}",
                 f"Cleaned up model version {v1} of {name}"):
        assert line in log
    assert [p.name.split("-")[1] for p in model_dir.iterdir()] == [f"v{v2}"]
