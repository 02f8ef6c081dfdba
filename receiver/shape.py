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

_KEY_WINDOW = 4096
_FORMAT_KEYS = (b'"dataframe_split"', b'"dataframe_records"', b'"instances"', b'"inputs"')
# Anchored right after the format's key.
_OBJECT = re.compile(rb"\s*:\s*\{")
_FIRST_RECORD = re.compile(rb"\s*:\s*\[\s*\{")
_FIRST_ROW = re.compile(rb"\s*:\s*\[\s*\[")
# Searched inside `dataframe_split` (their literal prefix makes the search fast).
_SPLIT_COLUMNS = re.compile(rb'"columns"\s*:\s*\[')
_SPLIT_FIRST_ROW = re.compile(rb'"data"\s*:\s*\[\s*\[')


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
    # The format is the key that comes first (a column could be named "inputs" too). It
    # comes before the data in any body a client builds; one that hides it further down is
    # left to the parser rather than searched for.
    found = [(at, key) for key in _FORMAT_KEYS if (at := body.find(key, 0, _KEY_WINDOW)) >= 0]
    if not found:
        return
    at, key = min(found)
    after = at + len(key)
    if key == b'"dataframe_split"':
        opened = _OBJECT.match(body, after)
        if opened is None:
            return
        for anchor, what in ((_SPLIT_COLUMNS, "'dataframe_split.columns'"),
                             (_SPLIT_FIRST_ROW, "The first row of 'dataframe_split.data'")):
            inner = anchor.search(body, opened.end())
            if inner is not None and patterns.elements.match(body, inner.end()):
                raise _too_wide(what, limit, schema)
        return
    for anchor, too_many, what in ((_FIRST_RECORD, patterns.pairs, "The first record"),
                                   (_FIRST_ROW, patterns.elements, "The first row"),
                                   (_OBJECT, patterns.columns, f"{key.decode()}")):
        opened = anchor.match(body, after)
        if opened is not None and too_many.match(body, opened.end()):
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
        self.csv_header = re.compile(rb"(?:" + _CSV_FIELD + rb")" + more)


@functools.lru_cache(maxsize=64)
def _patterns(limit: int) -> _Patterns:
    return _Patterns(limit)
