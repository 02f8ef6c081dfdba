"""Refuse a body whose shape is far off the model's signature, before anything parses it.

A CSV header or a JSON row thousands of columns wide, sent to a 20-column model, would cost
seconds of parsing and DataFrame building only to fail schema enforcement. The JSON checks look
at the raw bytes: each pattern matches at one anchor and stops after `limit + 1` elements, so a
refusal costs microseconds however large the body is. A CSV header is split into its fields as
pandas will split it, which costs milliseconds for the widest. They only ever refuse what is
certainly too wide; anything they cannot read is left to the parser and its error messages.

This is the one guard: scoring.parse trusts it, so whatever parses a request calls check()
first (batching.parse does, through codec.MlflowCodec).
"""

from __future__ import annotations

import csv
import functools
import io
import re

from mlflow.types import Schema

from receiver.scoring import CSV, JSON, BadInput

# "Far off": more than twice the signature's columns, plus some slack for extra columns that
# schema enforcement would ignore.
SLACK_COLUMNS = 16
# pandas takes time quadratic in a CSV header's repeated names: a 660 KB one-line body kept
# the predict thread for minutes. So a CSV header has a cap even when the signature names no
# columns (a JSON body then has none: the parser's costs there are linear).
MAX_CSV_COLUMNS = 4096

_WS = rb"\s*"
# A JSON string (unrolled loop: no per-character alternation) and a JSON scalar.
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_SCALAR = rb"(?:" + _STRING + rb"|[-+0-9.eE]+|true|false|null|NaN|-?Infinity)"
# A value inside a column-oriented `inputs` object: a scalar or a flat list of scalars.
_VALUE = rb"(?:" + _SCALAR + rb"|\[[^\[\]{}]*\])"

_KEY_WINDOW = 4096
_FORMAT_KEYS = (b'"dataframe_split"', b'"dataframe_records"', b'"instances"', b'"inputs"')
# Anchored right after the format's key.
_OBJECT = re.compile(rb"\s*:\s*\{")
_FIRST_RECORD = re.compile(rb"\s*:\s*\[\s*\{")
_FIRST_ROW = re.compile(rb"\s*:\s*\[\s*\[")
# Searched inside `dataframe_split` (their literal prefix makes the search fast).
_SPLIT_COLUMNS = re.compile(rb'"columns"\s*:\s*\[')
_SPLIT_FIRST_ROW = re.compile(rb'"data"\s*:\s*\[\s*\[')


def width_limit(schema: Schema | None, mime: str = JSON) -> int | None:
    """The most columns a body of this media type may have for this signature; None when
    nothing bounds it (JSON, when the signature names no columns)."""
    columns = _named_columns(schema)
    if columns is None:
        return MAX_CSV_COLUMNS if mime == CSV else None
    limit = 2 * columns + SLACK_COLUMNS
    return min(limit, MAX_CSV_COLUMNS) if mime == CSV else limit


def check(body: bytes, mime: str, schema: Schema | None) -> None:
    """BadInput when the body is certainly far wider than the signature; else nothing."""
    limit = width_limit(schema, mime)
    if limit is None:
        return
    if mime == CSV:
        if _csv_header_width(body) > limit:
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


def _csv_header_width(body: bytes) -> int:
    """How many fields the CSV header has, split as pandas' tokenizer splits them: the csv
    module's default dialect agrees with it (a quote opens a field only at its start, text after
    a closing quote joins the field, a quoted field may hold newlines, blank lines before the
    header are skipped). 0 when the body is not UTF-8: the parser's to report."""
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8", newline="")
    try:
        return next((len(row) for row in csv.reader(text) if row), 0)
    except UnicodeDecodeError:
        return 0
    except csv.Error as exc:  # a field longer than csv.field_size_limit(): no column name
        raise BadInput(f"The CSV header could not be read: {exc}.") from None


def _too_wide(what: str, limit: int, schema: Schema | None) -> BadInput:
    columns = _named_columns(schema)
    if columns is None:
        return BadInput(f"{what} has more than {limit} columns; wider bodies are refused "
                        "unread.")
    return BadInput(f"{what} has more than {limit} columns; the model's signature has "
                    f"{columns}. Bodies far wider than the signature are refused unread.")


def _named_columns(schema: Schema | None) -> int | None:
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    return len(schema.inputs)


class _Patterns:
    """Patterns that match only when more than `limit` elements follow their anchor."""

    def __init__(self, limit: int) -> None:
        more = b"{%d}" % limit
        self.elements = re.compile(rb"(?:" + _WS + _SCALAR + _WS + rb",)" + more)
        self.pairs = re.compile(rb"(?:" + _WS + _STRING + _WS + rb":" + _WS + _SCALAR + _WS
                                + rb",)" + more)
        self.columns = re.compile(rb"(?:" + _WS + _STRING + _WS + rb":" + _WS + _VALUE + _WS
                                  + rb",)" + more)


@functools.lru_cache(maxsize=64)
def _patterns(limit: int) -> _Patterns:
    return _Patterns(limit)
