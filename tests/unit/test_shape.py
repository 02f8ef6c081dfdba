"""shape.check: bodies far wider than the signature are refused before parsing (JSON on its raw
bytes, a CSV header split as pandas splits it); anything else, malformed or not, is left to the
parser."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.types import ColSpec, DataType, Schema, TensorSpec

from receiver import shape
from receiver.scoring import CSV, JSON, BadInput

COLUMNS = [f"f{i}" for i in range(20)]
SCHEMA = Schema([ColSpec(DataType.double, name) for name in COLUMNS])
LIMIT = shape.width_limit(SCHEMA)
assert LIMIT is not None


def names(count: int) -> list[str]:
    return [f"c{i}" for i in range(count)]


def split(columns: list[str], rows: int = 1) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns,
                                           "data": [[0.5] * len(columns)] * rows}}).encode()


def records(columns: list[str], rows: int = 1) -> bytes:
    return json.dumps({"dataframe_records": [dict.fromkeys(columns, 1.0)] * rows}).encode()


def csv(columns: list[str], rows: int = 1) -> bytes:
    return (",".join(columns) + "\n" + "\n".join([",".join(["1.0"] * len(columns))] * rows)
            ).encode()


ACCEPTED = [
    ("split, the signature's columns", split(COLUMNS, rows=500), JSON),
    ("split, a few extra columns", split([*COLUMNS, "x", "y"]), JSON),
    ("split, at the limit", split(names(LIMIT)), JSON),
    ("records", records(COLUMNS, rows=500), JSON),
    ("records, nested values are the parser's business",
     json.dumps({"dataframe_records": [{c: [1, 2] for c in names(100)}]}).encode(), JSON),
    ("instances", json.dumps({"instances": [dict.fromkeys(COLUMNS, 1)]}).encode(), JSON),
    ("columnar inputs",
     json.dumps({"inputs": {c: [1.0] * 300 for c in COLUMNS}}).encode(), JSON),
    ("csv", csv(COLUMNS, rows=500), CSV),
    ("csv with quoted names", (",".join(f'"{c},x"' for c in COLUMNS) + "\n").encode(), CSV),
    ("csv, blank lines before the header", b"\n\n" + csv(COLUMNS), CSV),
    ("csv, names holding newlines", (",".join(f'"{c}\n"' for c in COLUMNS) + "\n").encode(),
     CSV),
    ("csv, not UTF-8 (the parser says so)", b"\xff" + csv(names(5000)), CSV),
    ("not JSON at all", b"{" + b"[" * 10_000, JSON),
    ("a column called columns", json.dumps(
        {"dataframe_records": [{"columns": 1.0, **dict.fromkeys(COLUMNS, 1.0)}]}).encode(), JSON),
]

REFUSED = [
    ("split columns", split(names(LIMIT + 1)), JSON),
    ("split, key order reversed", json.dumps({"dataframe_split": {
        "data": [[1.0] * 3], "columns": names(5000)}}).encode(), JSON),
    ("split, a wide first row under narrow columns", json.dumps({"dataframe_split": {
        "columns": COLUMNS, "data": [[1.0] * 5000]}}).encode(), JSON),
    ("records", records(names(5000)), JSON),
    ("instances", json.dumps({"instances": [dict.fromkeys(names(5000), 1)]}).encode(), JSON),
    ("instances as rows", json.dumps({"instances": [[1.0] * 5000]}).encode(), JSON),
    ("columnar inputs", json.dumps({"inputs": {c: [1.0] for c in names(5000)}}).encode(), JSON),
    ("csv header", csv(names(250_000)), CSV),
    ("csv header, quoted", (",".join(f'"{c}"' for c in names(5000)) + "\n").encode(), CSV),
    # pandas splits these into thousands of repeated names too (quadratic to read).
    ("csv header, text after closing quotes", ('"a"x,' * 5000 + "z\n").encode(), CSV),
    ("csv header, a quoted newline first", ('"a\n"x,' + "a," * 5000 + "z\n").encode(), CSV),
    ("a JSON body sent as CSV", json.dumps({"dataframe_split": {
        "columns": ["a", "b"], "data": [[0.5, 0.5]] * 30_000}}).encode(), CSV),
]


@pytest.mark.parametrize(("label", "body", "mime"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_bodies_near_the_signature_pass(label: str, body: bytes, mime: str) -> None:
    shape.check(body, mime, SCHEMA)


@pytest.mark.parametrize(("label", "body", "mime"), REFUSED, ids=[r[0] for r in REFUSED])
def test_bodies_far_wider_than_the_signature_are_refused(label: str, body: bytes,
                                                         mime: str) -> None:
    with pytest.raises(BadInput, match=f"more than {LIMIT} columns.*signature has 20"):
        shape.check(body, mime, SCHEMA)


def test_without_named_columns_only_a_csv_header_is_checked() -> None:
    tensor = Schema([TensorSpec(np.dtype("float64"), (-1, 4))])
    wide = split(names(5000))
    shape.check(wide, JSON, None)
    shape.check(wide, JSON, tensor)
    cap = shape.MAX_CSV_COLUMNS
    for schema in (None, tensor):
        shape.check(csv(names(cap)), CSV, schema)
        with pytest.raises(BadInput, match=f"more than {cap} columns; wider bodies are refused"):
            shape.check(csv(names(cap + 1)), CSV, schema)


def test_the_csv_cap_holds_for_a_signature_of_thousands_of_columns() -> None:
    huge = Schema([ColSpec(DataType.double, name) for name in names(3000)])
    assert shape.width_limit(huge, JSON) == 6016
    assert shape.width_limit(huge, CSV) == shape.MAX_CSV_COLUMNS


def test_a_csv_header_field_longer_than_the_csv_module_reads_is_refused() -> None:
    # Else it would hide the thousands of names after it.
    body = ('"' + "x" * 200_000 + '",' + "a," * 5000 + "z\n").encode()
    with pytest.raises(BadInput, match="The CSV header could not be read"):
        shape.check(body, CSV, SCHEMA)

