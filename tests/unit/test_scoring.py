"""The scoring protocol parser: the request bodies MLflow's docs show, and malformed ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema

from receiver import scoring
from receiver.errors import DOMAIN_ERRORS

SCHEMA = Schema([ColSpec("double", "a"), ColSpec("double", "b")])


def body(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize("document", [
    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
    {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
    {"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
    {"inputs": {"a": [1, 3], "b": [2, 4]}},
])
def test_each_json_format_becomes_the_same_frame(document: dict[str, object]) -> None:
    data, params = scoring.parse(body(document), scoring.JSON, SCHEMA)
    frame = pd.DataFrame(data)
    assert frame[["a", "b"]].to_numpy().tolist() == [[1, 2], [3, 4]]
    assert params is None


def test_params_are_passed_through() -> None:
    document = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]},
                "params": {"threshold": 0.3}}
    _, params = scoring.parse(body(document), scoring.JSON, SCHEMA)
    assert params == {"threshold": 0.3}


def test_csv_is_read_with_the_schema_types() -> None:
    data, _params = scoring.parse(b"a,b\n1,2\n3,4\n", scoring.CSV, SCHEMA)
    assert data.dtypes.tolist() == [np.float64, np.float64]
    assert data.to_numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("raw, fragment", [
    (b'{"dataframe_split": ', "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "must be an object"),
    (body({"rows": [[1, 2]]}), "exactly one of"),
    (body({"inputs": [1], "instances": [1]}), "exactly one of"),
    (body({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}, "params": [1]}),
     "'params' must be an object"),
    (body({"dataframe_split": "not a frame"}), "split format must be a dictionary"),
])
def test_malformed_json_is_a_400_that_says_why(raw: bytes, fragment: str) -> None:
    with pytest.raises(scoring.BadInput) as caught:
        scoring.parse(raw, scoring.JSON, SCHEMA)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 400
    assert fragment in str(caught.value)


def test_malformed_csv_is_a_400() -> None:
    with pytest.raises(scoring.BadInput) as caught:
        scoring.parse(b"a,b\nx,y\n", scoring.CSV, SCHEMA)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 400


@pytest.mark.parametrize("header, expected", [
    ("application/json", scoring.JSON),
    ("application/json; charset=utf-8", scoring.JSON),
    ("Application/JSON", scoring.JSON),
    ("text/csv", scoring.CSV),
])
def test_supported_media_types(header: str, expected: str) -> None:
    assert scoring.media_type(header) == expected


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/x-www-form-urlencoded",
                                    "application/json; charset=latin-1",
                                    "application/json; format=pandas-split"])
def test_unsupported_media_types_are_415(header: str | None) -> None:
    with pytest.raises(scoring.UnsupportedMediaType) as caught:
        scoring.media_type(header)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 415


def test_predictions_json_handles_arrays_and_frames() -> None:
    assert json.loads(scoring.predictions_json(np.array([1, 0]))) == {"predictions": [1, 0]}
    frame = pd.DataFrame({"p": [0.25]})
    assert json.loads(scoring.predictions_json(frame)) == {"predictions": [{"p": 0.25}]}


@pytest.mark.parametrize("split", [
    {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]},  # the fast path: all numbers
    {"columns": ["b", "a"], "data": [[1, 2.5], [3, 4]]},  # other order: MLflow's path
    {"columns": ["a", "b"], "data": [[True, 2.5], [3, 4]]},  # a bool is not a double
    {"columns": ["a", "b"], "index": [7, 8], "data": [[1, 2.5], [3, 4]]},
])
def test_dataframe_split_gives_the_frame_mlflow_builds(split: dict[str, object]) -> None:
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    ours, _ = scoring.parse(body({"dataframe_split": split}), scoring.JSON, SCHEMA)
    theirs = infer_and_parse_data({"dataframe_split": split}, SCHEMA)
    pd.testing.assert_frame_equal(ours.reset_index(drop=True).astype("float64"),
                                  theirs.reset_index(drop=True).astype("float64"))
    assert list(ours.columns) == list(theirs.columns)


def test_fast_path_frame_is_float64_in_signature_order() -> None:
    frame, _ = scoring.parse(body({"dataframe_split": {"columns": ["a", "b"],
                                                       "data": [[1, 2]]}}), scoring.JSON, SCHEMA)
    assert list(frame.columns) == ["a", "b"]
    assert frame.dtypes.tolist() == [np.float64, np.float64]


@pytest.mark.parametrize("raw", [
    b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"dataframe_records": ' + b'[{"a": ' * 50_000 + b"1" + b"}]" * 50_000 + b"}",
])
def test_a_body_nested_100000_deep_is_bad_input(raw: bytes) -> None:
    with pytest.raises(scoring.BadInput, match=r"nested too deeply|not valid JSON"):
        scoring.parse(raw, scoring.JSON, SCHEMA)


def test_a_400_digit_number_is_bad_input_not_overflow() -> None:
    huge = int("9" * 400)
    fast = {"columns": ["a", "b"], "data": [[huge, 1]]}
    general = {**fast, "index": [0]}  # not the fast path's shape
    for split in (fast, general):
        with pytest.raises(scoring.BadInput):
            scoring.parse(body({"dataframe_split": split}), scoring.JSON, SCHEMA)


def test_an_error_message_never_echoes_a_huge_input() -> None:
    raw = body({"dataframe_split": {"columns": ["a", "b"], "data": [["x" * 100_000, 1]]}})
    with pytest.raises(scoring.BadInput) as caught:
        scoring.parse(raw, scoring.JSON, SCHEMA)
    assert len(str(caught.value)) <= scoring.MAX_MESSAGE + 20
