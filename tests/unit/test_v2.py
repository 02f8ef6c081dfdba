"""receiver/v2.py alone: V2 tensors in, model input out; predictions in, V2 outputs out;
a signature in, model metadata out. Bodies in the binary extension are built by tritonclient
itself, as a client would send them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from mlflow.types import ColSpec, Schema, TensorSpec

from receiver import v2
from receiver.scoring import BadInput

SIGNATURE = Schema([ColSpec("double", "a"), ColSpec("double", "b")])
MIXED = Schema([ColSpec("long", "n"), ColSpec("string", "s")])
TENSOR = Schema([TensorSpec(np.dtype(np.float32), (-1, 3))])


def tensor(name: str, data: Any, shape: list[int], datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def parse(body: bytes, schema: Schema | None = SIGNATURE, as_rows: bool = False,
          header_length: str | None = None) -> Any:
    codec = v2.V2Codec("m", "1", header_length, None)
    codec.check(body, schema)
    data, params = codec.parse(body, schema, as_rows)
    assert params is None
    return data


def test_one_tensor_per_column_is_a_frame_in_the_signatures_order() -> None:
    body = request(tensor("b", [3.0, 4.0], [2, 1]), tensor("a", [1, 2.5], [2]))
    frame = parse(body)
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"a": [1.0, 2.5], "b": [3.0, 4.0]}))


def test_all_double_columns_come_as_bare_rows_for_the_lane() -> None:
    body = request(tensor("b", [3.0, 4.0], [2]), tensor("a", [1.0, 2.0], [2]))
    rows = parse(body, as_rows=True)
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float64
    assert rows.tolist() == [[1.0, 3.0], [2.0, 4.0]]


def test_one_matrix_takes_the_signatures_columns_as_mlservers_pd_codec_does() -> None:
    body = request({**tensor("input-0", [[1, 2], [3, 4]], [2, 2]),
                    "parameters": {"content_type": "pd"}}, parameters={"content_type": "pd"})
    assert parse(body).to_dict("list") == {"a": [1.0, 3.0], "b": [2.0, 4.0]}
    assert parse(body, as_rows=True).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(BadInput, match="has 3 columns; the model's signature has 2"):
        parse(request(tensor("input-0", [1.0] * 6, [2, 3])))


def test_without_a_signature_named_inputs_are_the_columns() -> None:
    body = request(tensor("x", [1, 2], [2], "INT64"), tensor("y", ["p", "q"], [2], "BYTES"))
    frame = parse(body, schema=None)
    assert list(frame.columns) == ["x", "y"] and frame["x"].dtype == np.int64
    assert frame["y"].tolist() == ["p", "q"]
    matrix = parse(request(tensor("m", [1.0, 2.0, 3.0, 4.0], [2, 2])), schema=None)
    assert matrix.shape == (2, 2)


def test_a_tensor_signature_takes_the_array() -> None:
    array = parse(request(tensor("x", [0.5] * 6, [2, 3], "FP32")), schema=TENSOR)
    assert array.dtype == np.float32 and array.shape == (2, 3)


def test_the_binary_extension_as_tritonclient_sends_it() -> None:
    inputs = [triton.InferInput("n", [3], "INT64"), triton.InferInput("s", [3], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([1, -2, 3], dtype=np.int64))
    inputs[1].set_data_from_numpy(np.array([b"x", "é".encode(), b""], dtype=np.object_))
    body, header_length = triton.InferenceServerClient.generate_request_body(inputs)
    frame = parse(body, schema=MIXED, header_length=str(header_length))
    assert frame.to_dict("list") == {"n": [1, -2, 3], "s": ["x", "é", ""]}
    for cut in (body[:-1], body + b"\0"):
        with pytest.raises(BadInput):
            parse(cut, schema=MIXED, header_length=str(header_length))
    with pytest.raises(BadInput, match="Inference-Header-Content-Length"):
        parse(body, schema=MIXED, header_length=str(len(body) + 1))


BAD = {
    "not an object": (b"[]", "must be a JSON object"),
    "no inputs": (request(), "non-empty list"),
    "wrong datatype": (request(tensor("a", ["1.5"], [1])), "FP64, but holds a str"),
    "a bool is no number": (request(tensor("a", [True], [1])), "holds a bool"),
    "no such datatype": (request(tensor("a", [1.0], [1], "FP8")), "not one of BOOL"),
    "shape not matching the data": (request(tensor("a", [1.0, 2.0], [3])), "holds 2"),
    "unknown input": (request(tensor("z", [1.0], [1])), "not in the model's signature"),
    "a million declared, three given": (request(tensor("a", [1.0, 2.0, 3.0], [10**6])),
                                        "declares 1000000 elements"),
    "a huge zero-sized shape": (request(tensor("a", [], [0, 10**30])), "a dimension over"),
    "a negative dimension": (request(tensor("a", [1.0], [-1])), "non-negative integers"),
    "nested deeper than the shape": (request(tensor("a", [[1.0]], [1])), "nests deeper"),
    "nested 1,000 deep": (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", '
                          b'"data": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}]}", "nests"),
    "out of range": (request(tensor("n", [300], [1], "INT8")), "out of INT8's range"),
    "rows disagree": (request(tensor("a", [1.0], [1]), tensor("b", [1.0, 2.0], [2])),
                      "different numbers of rows"),
    "a column too wide": (request(tensor("a", [1.0, 2.0], [1, 2])), "takes [n] or [n, 1]"),
    "an input twice": (request(tensor("a", [1.0], [1]), tensor("a", [1.0], [1])), "twice"),
    "an id not a string": (request(tensor("a", [1.0], [1]), id=5), "'id' must be a string"),
    "outputs not named": (request(tensor("a", [1.0], [1]), outputs=[1]), "'outputs'"),
}


@pytest.mark.parametrize(("body", "message"), BAD.values(), ids=BAD.keys())
def test_a_bad_tensor_is_bad_input_saying_why(body: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("[", r"\[")):
        parse(body, schema=Schema([*SIGNATURE.inputs, ColSpec("long", "n")]))


def encode(predictions: Any, wanted: list[str] | None = None, request_id: str | None = "r1",
           output_schema: Schema | None = None) -> dict[str, Any]:
    codec = v2.V2Codec("m", "7", None, output_schema)
    outputs = [{"name": name} for name in wanted] if wanted is not None else None
    codec.parse(request(tensor("a", [1.0], [1]), tensor("b", [1.0], [1]),
                        **({"id": request_id} if request_id else {}),
                        **({"outputs": outputs} if outputs is not None else {})),
                SIGNATURE, False)
    answer: dict[str, Any] = json.loads(codec.encode(predictions))
    return answer


def test_predictions_are_one_output_with_the_answering_version_and_the_id() -> None:
    assert encode(np.array([0, 1])) == {
        "model_name": "m", "model_version": "7", "id": "r1",
        "outputs": [{"name": "predictions", "datatype": "INT64", "shape": [2],
                     "data": [0, 1]}]}
    assert "id" not in encode(np.array([0]), request_id=None)
    named = encode(np.array([0.5]), output_schema=Schema([ColSpec("double", "score")]))
    assert named["outputs"][0]["name"] == "score"


def test_a_frame_is_one_output_per_column_and_outputs_choose() -> None:
    frame = pd.DataFrame({"label": ["x", "y"], "p": np.array([0.1, 0.9], dtype=np.float32)})
    answer = encode(frame)
    assert [(o["name"], o["datatype"]) for o in answer["outputs"]] == [
        ("label", "BYTES"), ("p", "FP32")]
    assert [o["name"] for o in encode(frame, wanted=["p"])["outputs"]] == ["p"]
    with pytest.raises(BadInput, match="Unknown output 'q'"):
        encode(frame, wanted=["q"])


def test_metadata_from_the_signature_and_without_one() -> None:
    described = v2.metadata("m", "3", MIXED, Schema([ColSpec("long")]))
    assert described == {"name": "m", "versions": ["3"], "platform": "mlflow",
                         "inputs": [{"name": "n", "datatype": "INT64", "shape": [-1]},
                                    {"name": "s", "datatype": "BYTES", "shape": [-1]}],
                         "outputs": [{"name": "predictions", "datatype": "INT64",
                                      "shape": [-1]}]}
    tensors = v2.metadata("m", "3", TENSOR, None)["inputs"]
    assert tensors == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    bare = v2.metadata("m", "3", None, None)
    assert (bare["inputs"], bare["outputs"]) == ([], []) and "signature" in bare["parameters"]
