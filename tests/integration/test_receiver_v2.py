"""The Open Inference Protocol (KServe V2) against a real receiver: tritonclient and the kserve
SDK talk to it unchanged, answers equal /invocations', bad tensors get a 400, and a hot swap
under V2 load fails no request."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
import requests
import tritonclient.http as triton

from examples.processes import Process, metric, promote, start_receiver, wait_until
from tests.support.models import FEATURES, register_sklearn_model, training_frame
from tests.support.stack import served_version

MODEL = "oip"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def versions(plain_mlflow: Process) -> tuple[str, str]:
    """Two versions that disagree on nearly every row, the first in Production."""
    first = register_sklearn_model(plain_mlflow.url, MODEL, seed=0)
    second = register_sklearn_model(plain_mlflow.url, MODEL, seed=1, inverted=True)
    promote(MODEL, first, tracking_uri=plain_mlflow.url, archive_existing=True)
    return first, second


@pytest.fixture(scope="module")
def receiver(plain_mlflow: Process, versions: tuple[str, str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    started = start_receiver(tmp_path_factory.mktemp("v2"), plain_mlflow.url, MODEL,
                             env={"MODEL_UPDATE_INTERVAL": "600",
                                  "HOTSWAP_MAX_BODY_BYTES": str(MAX_BODY)})
    try:
        wait_until(lambda: requests.get(started.url + "/v2/health/ready", timeout=2).ok,
                   timeout=60, message="receiver ready")
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    frame, _ = training_frame(seed=7, rows=6)
    return frame


def invocations(receiver: Process, frame: pd.DataFrame) -> list[int]:
    body = {"dataframe_split": {"columns": list(frame.columns),
                                "data": frame.to_numpy().tolist()}}
    answer = requests.post(receiver.url + "/invocations", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    predictions: list[int] = answer.json()["predictions"]
    return predictions


def triton_inputs(frame: pd.DataFrame, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for column in frame.columns:
        tensor = triton.InferInput(column, [len(frame)], "FP64")
        tensor.set_data_from_numpy(frame[column].to_numpy(), binary_data=binary)
        inputs.append(tensor)
    return inputs


def host(receiver: Process) -> str:
    return receiver.url.removeprefix("http://")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-inputs"])
def test_tritonclient_talks_to_the_receiver(receiver: Process, versions: tuple[str, str],
                                            rows: pd.DataFrame, binary: bool) -> None:
    client = triton.InferenceServerClient(host(receiver))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert not client.is_model_ready(MODEL, model_version="999")
        meta = client.get_model_metadata(MODEL)
        assert meta["name"] == MODEL and meta["versions"] == [versions[0]]
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
            (name, "FP64") for name in FEATURES]
        output = meta["outputs"][0]["name"]
        result = client.infer(MODEL, triton_inputs(rows, binary), request_id="req-1",
                              outputs=[triton.InferRequestedOutput(output, binary_data=False)])
        assert result.get_response()["id"] == "req-1"
        assert result.get_response()["model_version"] == versions[0]
        assert result.as_numpy(output).tolist() == invocations(receiver, rows)
        # No outputs named: the client asks for binary outputs; JSON ones read the same.
        plain = client.infer(MODEL, triton_inputs(rows, binary))
        assert plain.as_numpy(output).tolist() == invocations(receiver, rows)
    finally:
        client.close()


def test_kserve_client_talks_to_the_receiver(receiver: Process, versions: tuple[str, str],
                                             rows: pd.DataFrame) -> None:
    # Imported here: `import kserve` needs fastapi, which MLflow 3 brings and MLflow 2.x (the
    # compat environments, which collect this module) does not.
    from kserve import InferInput, InferRequest
    from kserve.inference_client import InferenceRESTClient, RESTConfig

    headers: dict[str, str] = {}

    async def scenario() -> tuple[bool, bool, bool, list[int], str | None]:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            inputs = []
            for column in rows.columns:
                tensor = InferInput(column, [len(rows)], "FP64")
                tensor.set_data_from_numpy(rows[column].to_numpy())  # binary by default
                inputs.append(tensor)
            answer = await client.infer(receiver.url, InferRequest(MODEL, inputs, "k-1"),
                                        MODEL, response_headers=headers)
            return (await client.is_server_live(receiver.url),
                    await client.is_server_ready(receiver.url),
                    await client.is_model_ready(receiver.url, MODEL),
                    answer.outputs[0].as_numpy().tolist(), answer.id)
        finally:
            await client.close()

    live, ready, model_ready, predictions, request_id = asyncio.run(scenario())
    assert (live, ready, model_ready) == (True, True, True)
    assert predictions == invocations(receiver, rows)
    assert request_id == "k-1"
    # The SDK's response object keeps no model_version: the headers say it as for /invocations.
    assert headers["x-model-version"] == versions[0]


def test_one_matrix_tensor_reads_as_the_signature_columns(receiver: Process,
                                                          rows: pd.DataFrame) -> None:
    body: dict[str, Any] = {"parameters": {"content_type": "pd"},
            "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                        "parameters": {"content_type": "pd"},
                        "data": rows.to_numpy().tolist()}]}
    answer = requests.post(f"{receiver.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Model-Name"] == MODEL
    assert answer.json()["outputs"][0]["data"] == invocations(receiver, rows)
    assert "id" not in answer.json()
    assert metric(receiver.url, "hotswap_predictions_total",
                  {"model": MODEL, "protocol": "v2"}) >= 1
    assert metric(receiver.url, "hotswap_predictions_total",
                  {"model": MODEL, "protocol": "mlflow"}) >= 1


def column(name: str, data: object, shape: list[int] | None = None,
           datatype: str = "FP64") -> dict[str, object]:
    return {"name": name, "datatype": datatype, "data": data,
            "shape": shape if shape is not None else [1]}


def full(**changed: dict[str, object]) -> bytes:
    columns = {name: column(name, [0.5]) for name in FEATURES}
    columns.update(changed)
    return json.dumps({"inputs": list(columns.values())}).encode()


BAD_TENSORS = {
    "wrong datatype": full(f0=column("f0", ["a"])),
    "no such datatype": full(f0=column("f0", [0.5], datatype="FP8")),
    "shape not matching the data": full(f0=column("f0", [0.5, 0.5], shape=[3])),
    "unknown input name": full(nope=column("nope", [0.5])),
    "a million declared, three given": full(f0=column("f0", [1.0, 2.0, 3.0], [10**6])),
    "nested 1,000 deep": (b'{"inputs": [{"name": "f0", "datatype": "FP64", "shape": [1], '
                          b'"data": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}]}"),
    "a thousand brackets, raw": b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "rows disagree": full(f1=column("f1", [0.5, 0.5], [2])),
    "unknown output": json.dumps({"inputs": [column(n, [0.5]) for n in FEATURES],
                                  "outputs": [{"name": "nope"}]}).encode(),
    "not JSON": b"{",
}


@pytest.mark.parametrize("body", BAD_TENSORS.values(), ids=BAD_TENSORS.keys())
def test_a_bad_tensor_is_a_400_with_the_protocols_error_body(receiver: Process,
                                                             body: bytes) -> None:
    answer = requests.post(f"{receiver.url}/v2/models/{MODEL}/infer", data=body,
                           headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"error"} and answer.json()["error"]


def test_http_decisions_keep_their_codes_in_the_protocols_body(receiver: Process) -> None:
    infer = f"{receiver.url}/v2/models/{MODEL}/infer"
    cases = [
        (requests.get(f"{receiver.url}/v2/models/other", timeout=5), 404),
        (requests.post(f"{receiver.url}/v2/models/other/infer", data=full(), timeout=5), 404),
        (requests.get(f"{receiver.url}/v2/models/{MODEL}/versions/01", timeout=5), 404),
        (requests.post(infer, data=b"x" * (MAX_BODY + 1), timeout=5), 413),
        (requests.post(infer, data=full(), headers={"Content-Type": "text/csv"}, timeout=5), 415),
    ]
    for answer, status in cases:
        assert (answer.status_code, set(answer.json())) == (status, {"error"}), answer.text


def test_a_pinned_version_is_the_pinned_route(receiver: Process,
                                              versions: tuple[str, str]) -> None:
    pinned = f"{receiver.url}/v2/models/{MODEL}/versions/{versions[1]}"
    answer = requests.post(pinned + "/infer", data=full(), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == versions[1]
    assert answer.headers["X-Model-Version"] == versions[1]
    assert requests.get(pinned + "/ready", timeout=5).status_code == 200
    assert requests.get(pinned, timeout=5).json()["versions"] == [versions[1]]


def test_hot_swap_under_v2_load_fails_no_request(plain_mlflow: Process, receiver: Process,
                                                 versions: tuple[str, str],
                                                 rows: pd.DataFrame) -> None:
    first, second = versions
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        client = triton.InferenceServerClient(host(receiver))
        try:
            while not stop.is_set():
                try:
                    result = client.infer(MODEL, triton_inputs(rows.head(2), binary=False))
                    seen[result.get_response()["model_version"]] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                    failures.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: seen[first] > 20 or failures, timeout=30, message="load running")
        promote(MODEL, second, tracking_uri=plain_mlflow.url, archive_existing=True)
        reload = requests.post(receiver.url + "/models/reload", timeout=60)
        assert reload.json()["model_version"] == second
        wait_until(lambda: seen[second] > 20 or failures, timeout=30,
                   message="the new version answering")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert set(seen) == {first, second}
    assert served_version(receiver) == second
    assert metric(receiver.url, "hotswap_predictions_total",
                  {"version": second, "protocol": "v2"}) >= seen[second]
