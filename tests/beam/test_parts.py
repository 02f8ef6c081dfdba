"""The Beam integration's small parts, no MLflow server: model URIs, the rows a handler takes,
and the notification listener, checked with the plugin's own signing."""

from __future__ import annotations

import time
import uuid

import pandas as pd
import pytest
import requests

from examples.beam import notifications
from examples.beam.handler import _rows
from examples.beam.models import Reference
from examples.processes import free_port
from mlflow_hotswap_plugin import events, signing

pytestmark = pytest.mark.beam


@pytest.mark.parametrize(("uri", "reference"), [
    ("models:/fraud/3", Reference("fraud", version="3")),
    ("models:/fraud/Production", Reference("fraud", stage="Production")),
    ("models:/fraud@champion", Reference("fraud", alias="champion")),
])
def test_model_uris(uri: str, reference: Reference) -> None:
    assert Reference.parse(uri) == reference
    assert str(reference) == uri


@pytest.mark.parametrize("uri", ["fraud", "models:/fraud", "models:/a/b/c", "runs:/x/model"])
def test_a_bad_model_uri_says_what_it_wants(uri: str) -> None:
    with pytest.raises(ValueError, match="is not a model URI like"):
        Reference.parse(uri)


def test_rows_are_dicts_or_frames_one_kind_per_batch() -> None:
    frame, sizes = _rows([{"f0": 1.0}, {"f0": 2.0}])
    assert frame["f0"].tolist() == [1.0, 2.0] and sizes is None
    frame, sizes = _rows([pd.DataFrame({"f0": [1.0, 2.0]}), pd.DataFrame({"f0": [3.0]})])
    assert frame["f0"].tolist() == [1.0, 2.0, 3.0] and sizes == [2, 1]
    with pytest.raises(TypeError, match="dicts or DataFrames, one kind per batch"):
        _rows([{"f0": 1.0}, pd.DataFrame({"f0": [1.0]})])


def signed(body: bytes, secret: str, delivery_id: str | None = None) -> dict[str, str]:
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(int(time.time()))
    return {signing.DELIVERY_ID_HEADER: delivery_id, signing.TIMESTAMP_HEADER: stamp,
            signing.SIGNATURE_HEADER: signing.sign(secret, delivery_id, stamp, body),
            "Content-Type": "application/json"}


def test_the_listener_takes_only_signed_fresh_notifications_once() -> None:
    address = f"127.0.0.1:{free_port()}"
    listener = notifications.acquire(address, secret="s3cret")
    url = f"http://{address}/hotswap"
    body = events.stage_transitioned("fraud", "2", "Staging", "Production").to_json()
    try:
        assert notifications.acquire(address) is listener  # one per address and process
        notifications.release(address)

        assert requests.post(url, data=body, timeout=5).status_code == 401
        assert requests.post(url, data=body, headers=signed(body, "wrong"),
                             timeout=5).status_code == 401
        assert listener.inbox.count("fraud") == 0

        headers = signed(body, "s3cret")
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 202
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
        assert listener.inbox.count("fraud") == 1
        assert listener.inbox.wait_past("fraud", 0, timeout=0) == 1

        junk = b"[1, 2]"
        assert requests.post(url, data=junk, headers=signed(junk, "s3cret"),
                             timeout=5).status_code == 400
        big = b"x" * (70 * 1024)
        assert requests.post(url, data=big, timeout=5).status_code == 413
    finally:
        notifications.release(address)
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=body, timeout=5)


def test_an_address_must_name_host_and_port() -> None:
    with pytest.raises(ValueError, match="is not an address like"):
        notifications.parse_address("8765")
