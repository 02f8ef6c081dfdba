"""Refuse a body whose shape is far off the model's signature, before anything parses it.

A CSV header or a JSON row thousands of columns wide, sent to a 20-column model, would cost
seconds of parsing and DataFrame building only to fail schema enforcement. These checks look at
the raw bytes instead: each pattern matches at one anchor and stops after `limit + 1` elements,
so a refusal costs microseconds however large the body is. They only ever refuse what is
certainly too wide; anything they cannot read is left to the parser and its error messages.
"""

from __future__ import annotations

import functools
import re

from mlflow.types import Schema

from receiver.scoring import CSV, BadInput

# "Far off": more than twice the signature's columns, plus some slack for extra columns that
# schema enforcement would ignore.
SLACK_COLUMNS = 16

_WS = rb"\s*"
# A JSON string (unrolled loop: no per-character alternation) and a JSON scalar.
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCALAR = rb"(?:" + _STRING + rb"|[-+0-9.eE]+|true|false|null|NaN|-?Infinity)"
# A value inside a column-oriented `inputs` object: a scalar or a flat list of scalars.
_VALUE = rb"(?:" + _SCALAR + rb"|\[[^\[\]{}]*\])"
# A CSV field followed by its separator, quoted ("" escapes a quote) or not.
_CSV_FIELD = rb'(?:[ \t]*"[^"]*(?:""[^"]*)*"[ \t]*|[^,"\r\n]*),'

_SPLIT = re.compile(rb'"dataframe_split"\s*:\s*\{')
_SPLIT_COLUMNS = re.compile(rb'"columns"\s*:\s*\[')
_SPLIT_FIRST_ROW = re.compile(rb'"data"\s*:\s*\[\s*\[')
# Formats whose first element is a record (an object) or a row (a list).
_FIRST_RECORD = re.compile(rb'"(dataframe_records|instances|inputs)"\s*:\s*\[\s*\{')
_FIRST_ROW = re.compile(rb'"(instances|inputs)"\s*:\s*\[\s*\[')
_COLUMNAR_INPUTS = re.compile(rb'"inputs"\s*:\s*\{')


def width_limit(schema: Schema | None) -> int | None:
    """The most columns a body for this signature may have; None when it names no columns."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    return 2 * len(schema.inputs) + SLACK_COLUMNS


def check(body: bytes, mime: str, schema: Schema | None) -> None:
    """BadInput when the body is certainly far wider than the signature; else nothing."""
    limit = width_limit(schema)
    if limit is None:
        return
    if mime == CSV:
        if _patterns(limit).csv_header.match(body):
            raise _too_wide("The CSV header", limit, schema)
        return
    patterns = _patterns(limit)
    split = _SPLIT.search(body)
    if split is not None:
        _refuse_at(_SPLIT_COLUMNS, patterns.elements, body, split.end(),
                   "'dataframe_split.columns'", limit, schema)
        _refuse_at(_SPLIT_FIRST_ROW, patterns.elements, body, split.end(),
                   "The first row of 'dataframe_split.data'", limit, schema)
        return
    _refuse_at(_FIRST_RECORD, patterns.pairs, body, 0, "The first record", limit, schema)
    _refuse_at(_FIRST_ROW, patterns.elements, body, 0, "The first row", limit, schema)
    _refuse_at(_COLUMNAR_INPUTS, patterns.columns, body, 0, "'inputs'", limit, schema)


def _refuse_at(anchor: re.Pattern[bytes], too_many: re.Pattern[bytes], body: bytes, start: int,
               what: str, limit: int, schema: Schema | None) -> None:
    found = anchor.search(body, start)
    if found is not None and too_many.match(body, found.end()):
        raise _too_wide(what, limit, schema)


def _too_wide(what: str, limit: int, schema: Schema | None) -> BadInput:
    columns = len(schema.inputs) if schema is not None else 0
    return BadInput(f"{what} has more than {limit} columns; the model's signature has "
                    f"{columns}. Bodies far wider than the signature are refused unread.")


class _Patterns:
    """Patterns that match only when more than `limit` elements follow their anchor."""

    def __init__(self, limit: int) -> None:
        more = b"{%d}" % limit
        self.elements = re.compile(rb"(?:" + _WS + _SCALAR + _WS + rb",)" + more)
        self.pairs = re.compile(rb"(?:" + _WS + _STRING + _WS + rb":" + _WS + _SCALAR + _WS
                                + rb",)" + more)
        self.columns = re.compile(rb"(?:" + _WS + _STRING + _WS + rb":" + _WS + _VALUE + _WS
                                  + rb",)" + more)
        self.csv_header = re.compile(_CSV_FIELD + more)


@functools.lru_cache(maxsize=64)
def _patterns(limit: int) -> _Patterns:
    return _Patterns(limit)
