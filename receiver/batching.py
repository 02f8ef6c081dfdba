"""The thread side of the scoring lane: parse request bodies, group them into `predict` calls,
make each call, and give each request its own rows back. Blocking throughout, no event loop:
the lane (lane.py) runs these in its parse and predict threads; the shadow runs `score_all` in
its own thread.

Requests merge when their bodies parsed to the same columns, dtypes and params (their merge
key), whichever protocol (codec.py) they came through. A merged call that fails, or answers
with another number of rows than it was given, is retried request by request, so only a bad
request gets its BadInput.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from receiver import scoring
from receiver.codec import Codec
from receiver.registry import LoadedModel

logger = logging.getLogger(__name__)

# pyfunc loader modules whose `predict` scores each row on its own, so merging requests cannot
# change an answer. A custom python_function model may look across rows: never merged under auto.
ROW_INDEPENDENT_LOADERS = frozenset(
    {"mlflow.sklearn", "mlflow.xgboost", "mlflow.lightgbm", "mlflow.catboost"})


@dataclass(frozen=True, eq=False)
class Parsed:
    """What a `predict` call needs of one request body, and how to answer it."""

    data: Any
    params: dict[str, Any] | None
    rows: int
    key: Hashable | None  # requests merge only with an equal key; None: never merged
    codec: Codec


def batchable(model: LoadedModel, mode: str) -> bool:
    """Whether requests for `model` may merge, under HOTSWAP_BATCHING `mode`."""
    if mode != "auto":
        return mode == "on"
    try:
        loader = model.pyfunc.metadata.flavors["python_function"].get("loader_module")
    except (AttributeError, KeyError, TypeError):
        return False
    return loader in ROW_INDEPENDENT_LOADERS


def parse(model: LoadedModel, body: bytes, codec: Codec, batchable: bool) -> Parsed:
    """Blocking: the body checked against the signature's width, then parsed. Raises
    scoring.BadInput when it is malformed or far off the signature."""
    codec.check(body, model.input_schema)
    # Batched, the common case stays a bare array: one frame is built per merged call.
    data, params = codec.parse(body, model.input_schema, batchable)
    rows = len(data) if isinstance(data, (pd.DataFrame, np.ndarray)) else 0
    key = _merge_key(data, params) if batchable and rows else None
    return Parsed(data, params, rows, key, codec)


@dataclass
class _Call:
    positions: list[int]
    rows: int


def group(parsed: Sequence[Parsed], max_rows: int) -> list[list[int]]:
    """The `predict` calls that score `parsed`, as positions into it.

    A request joins the oldest call of its merge key that has room for its rows (at most
    `max_rows` in a call; a larger request is a call of its own), so the first call holds the
    oldest request and every later one that merges with it. A request without a key is a call
    of its own. Calls come grouped by key, keys in order of their oldest request.
    """
    by_key: dict[Hashable, list[_Call]] = {}
    for position, request in enumerate(parsed):
        key = request.key if request.key is not None else object()  # equal to nothing else
        calls = by_key.setdefault(key, [])
        call = next((c for c in calls if c.rows + request.rows <= max_rows), None)
        if call is None:
            calls.append(_Call([position], request.rows))
        else:
            call.positions.append(position)
            call.rows += request.rows
    return [call.positions for calls in by_key.values() for call in calls]


def score_all(model: LoadedModel, bodies: Sequence[tuple[bytes, Codec]], batchable: bool,
              max_rows: int) -> list[bytes | scoring.BadInput]:
    """Blocking: each `(body, codec)`'s answer from `model`, or its BadInput, merged into as
    few `predict` calls as the lane would make."""
    answers: list[bytes | scoring.BadInput] = [b""] * len(bodies)
    parsed: list[Parsed] = []
    indices: list[int] = []  # parsed[i] is bodies[indices[i]]
    for index, (body, codec) in enumerate(bodies):
        try:
            parsed.append(parse(model, body, codec, batchable))
        except scoring.BadInput as exc:
            answers[index] = exc
            continue
        indices.append(index)
    for positions in group(parsed, max_rows):
        scored = predict(model, [parsed[position] for position in positions])
        for position, answer in zip(positions, scored, strict=True):
            answers[indices[position]] = answer
    return answers


def predict(model: LoadedModel, call: Sequence[Parsed]) -> list[bytes | scoring.BadInput]:
    """Blocking: one `predict` for the requests of `call`; each one's answer, or its
    BadInput. A failed merged call is retried request by request."""
    if len(call) <= 1:
        return [_alone(model, request) for request in call]
    total = sum(request.rows for request in call)
    try:
        raw = _call(model, _merge([request.data for request in call], model), call[0].params)
        if _length(raw) != total:
            raise ValueError(f"{_length(raw)} predictions for {total} rows")
        answers: list[bytes | scoring.BadInput] = []
        offset = 0
        for request in call:
            answers.append(request.codec.encode(_slice(raw, offset, offset + request.rows)))
            offset += request.rows
        return answers
    except Exception as exc:  # noqa: BLE001 - any failure: each request on its own
        logger.debug("Merged call of %d requests failed (%s); scoring each alone",
                     len(call), exc)
        return [_alone(model, request) for request in call]


def _alone(model: LoadedModel, request: Parsed) -> bytes | scoring.BadInput:
    try:
        data = request.data
        if isinstance(data, np.ndarray):
            data = scoring.rows_frame(data, model.input_schema)
        raw = _call(model, data, request.params)
    except scoring.BadInput as exc:
        return exc
    return request.codec.encode(raw)


def _call(model: LoadedModel, data: Any, params: dict[str, Any] | None) -> Any:
    try:
        return model.pyfunc.predict(data, params=params)
    except MlflowException as exc:  # schema enforcement speaks through MlflowException
        raise scoring.BadInput(exc.message) from None
    except Exception as exc:  # noqa: BLE001 - bad input can make any model raise
        raise scoring.BadInput(
            "The model could not score this input; check that it matches the model's "
            f"signature. {type(exc).__name__}: {exc}") from None


def _merge_key(data: Any, params: dict[str, Any] | None) -> Hashable | None:
    try:
        canonical_params = json.dumps(params, sort_keys=True)
    except (TypeError, ValueError):
        return None
    if isinstance(data, np.ndarray):
        # The common case (codec.Codec.parse): exactly the signature's columns, all doubles.
        return ("rows", canonical_params)
    if isinstance(data, pd.DataFrame):
        return ("frame", tuple(data.columns), tuple(str(t) for t in data.dtypes),
                canonical_params)
    return None  # tensors and dicts are scored alone


def _merge(parts: list[Any], model: LoadedModel) -> pd.DataFrame:
    """One frame of every request's rows, in order; dtypes as each request had them."""
    if isinstance(parts[0], np.ndarray):
        return scoring.rows_frame(np.concatenate(parts), model.input_schema)
    frames: list[pd.DataFrame] = parts
    first = frames[0]
    dtypes = set(first.dtypes)
    if len(dtypes) == 1 and isinstance(next(iter(dtypes)), np.dtype) and next(
            iter(dtypes)).kind in "biuf":
        # One numeric block: concatenate the arrays and build one frame (pd.concat of many
        # small frames costs more than the predict it feeds).
        values = np.concatenate([frame.to_numpy() for frame in frames])
        return pd.DataFrame(values, columns=first.columns)
    return pd.concat(frames, ignore_index=True)


def _length(raw: Any) -> int:
    if isinstance(raw, (np.ndarray, pd.DataFrame, pd.Series, list)) and np.ndim(raw) > 0:
        return len(raw)
    return -1


def _slice(raw: Any, start: int, stop: int) -> Any:
    if isinstance(raw, (pd.DataFrame, pd.Series)):
        return raw.iloc[start:stop]
    return raw[start:stop]
