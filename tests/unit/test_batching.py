"""batching: grouping parsed requests into `predict` calls, parsing through a codec, and
answering each request through its own codec, on a fake model in the test's own thread."""

from __future__ import annotations

import json
from collections.abc import Hashable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.types import ColSpec, DataType, Schema

from receiver import batching, scoring
from receiver.batching import Parsed
from receiver.codec import Codec, MlflowCodec
from receiver.registry import LoadedModel
from tests.support.fakes import loaded_model

JSON = MlflowCodec(scoring.JSON)


class TimesTen:
    """Stands in for a PyFuncModel: 10 * column `a`; counts the rows of each call."""

    def __init__(self) -> None:
        self.metadata = SimpleNamespace(
            flavors={"python_function": {"loader_module": "mlflow.sklearn"}})
        self.calls: list[int] = []

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        self.calls.append(len(data))
        return data["a"].to_numpy() * 10.0


def loaded(pyfunc: TimesTen, schema: Schema | None = None) -> LoadedModel:
    return loaded_model(pyfunc=pyfunc, input_schema=schema)


class ColumnsCodec:
    """A second protocol: `{"a": [...]}` in, `{"outputs": [...]}` out; it counts its checks."""

    def __init__(self) -> None:
        self.checked = 0

    def check(self, body: bytes, schema: Schema | None) -> None:
        self.checked += 1
        if body.count(b",") > 100:
            raise scoring.BadInput("too wide")

    def parse(self, body: bytes, schema: Schema | None,
              as_rows: bool) -> tuple[Any, dict[str, Any] | None]:
        document = json.loads(body)
        return pd.DataFrame({"a": document["a"]}), None

    def encode(self, predictions: Any) -> bytes:
        return json.dumps({"outputs": np.asarray(predictions).tolist()}).encode()


def mlflow_body(*values: float) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["a"],
                                           "data": [[v] for v in values]}}).encode()


def parsed(rows: int, key: Hashable | None) -> Parsed:
    return Parsed(data=None, params=None, rows=rows, key=key, codec=JSON)


# -- group --------------------------------------------------------------------------------------

def test_group_merges_equal_keys_oldest_first_and_keeps_keyless_requests_alone() -> None:
    requests = [parsed(1, "a"), parsed(1, None), parsed(2, "b"), parsed(1, "a"),
                parsed(1, None), parsed(3, "b")]
    # Keys in order of their oldest request; each keyless request a call of its own.
    assert batching.group(requests, max_rows=10) == [[0, 3], [1], [2, 5], [4]]


def test_group_fills_each_call_up_to_max_rows_and_a_larger_request_goes_alone() -> None:
    requests = [parsed(2, "a"), parsed(2, "a"), parsed(5, "a"), parsed(1, "a"),
                parsed(1, "a")]
    # [0, 1] is full at 4 rows; the 5-row request is a call of its own; 3 and 4 open a third.
    assert batching.group(requests, max_rows=4) == [[0, 1], [2], [3, 4]]


def test_group_lets_a_later_small_request_join_the_oldest_call_with_room() -> None:
    requests = [parsed(3, "a"), parsed(2, "a"), parsed(1, "a")]
    # The 2-row request does not fit beside the first; the 1-row one does.
    assert batching.group(requests, max_rows=4) == [[0, 2], [1]]


def test_group_of_nothing_is_no_call() -> None:
    assert batching.group([], max_rows=4) == []


# -- parse: the codec's check, then its parse -----------------------------------------------------

def test_parse_checks_the_width_first_and_keys_by_columns_dtypes_and_params() -> None:
    model = loaded(TimesTen())
    codec = ColumnsCodec()
    first = batching.parse(model, b'{"a": [1.0, 2.0]}', codec, batchable=True)
    assert codec.checked == 1 and first.rows == 2 and first.codec is codec
    assert first.key == batching.parse(model, mlflow_body(3.0), JSON, batchable=True).key
    assert batching.parse(model, b'{"a": [1.0]}', codec, batchable=False).key is None
    with pytest.raises(scoring.BadInput, match="too wide"):
        batching.parse(model, b'{"a": [' + b"1," * 200 + b"1]}", codec, batchable=True)


def test_mlflow_codec_refuses_a_body_far_wider_than_the_signature_before_parsing() -> None:
    schema = Schema([ColSpec(DataType.double, "a")])
    model = loaded(TimesTen(), schema)
    wide = json.dumps({"dataframe_split": {"columns": [f"c{i}" for i in range(100)],
                                           "data": [[1.0] * 100]}}).encode()
    with pytest.raises(scoring.BadInput, match="more than 18 columns"):
        batching.parse(model, wide, JSON, batchable=True)
    rows = batching.parse(model, mlflow_body(1.0, 2.0), JSON, batchable=True)
    assert isinstance(rows.data, np.ndarray) and rows.key == ("rows", "null")


# -- predict and score_all: each request answered through its own codec ---------------------------

def test_a_merged_call_answers_each_request_through_its_own_codec() -> None:
    pyfunc = TimesTen()
    model = loaded(pyfunc)
    other = ColumnsCodec()
    call = [batching.parse(model, mlflow_body(1, 2), JSON, batchable=True),
            batching.parse(model, b'{"a": [3]}', other, batchable=True)]
    assert call[0].key == call[1].key
    first, second = batching.predict(model, call)
    assert pyfunc.calls == [3]
    assert first == b'{"predictions": [10.0, 20.0]}' and second == b'{"outputs": [30.0]}'


def test_score_all_merges_bodies_of_both_protocols_and_fails_only_the_bad_one() -> None:
    pyfunc = TimesTen()
    model = loaded(pyfunc)
    columns = ColumnsCodec()
    bodies: list[tuple[bytes, Codec]] = [(mlflow_body(1), JSON), (b"{not json", JSON),
                                         (b'{"a": [2, 3]}', columns), (mlflow_body(4), JSON)]
    answers = batching.score_all(model, bodies, batchable=True, max_rows=16)
    assert answers[0] == b'{"predictions": [10.0]}'
    assert isinstance(answers[1], scoring.BadInput)
    assert answers[2] == b'{"outputs": [20.0, 30.0]}'
    assert answers[3] == b'{"predictions": [40.0]}'
    assert pyfunc.calls == [4]  # one call, whichever protocol each body came through
