"""MLflow's scoring protocol: a request body becomes model input, predictions become JSON.

The same bodies `mlflow models serve` accepts: JSON with exactly one of `dataframe_split`,
`dataframe_records`, `instances` or `inputs` (plus optional `params`), or `text/csv`.
DataFrame construction is MLflow's own, so a client written for MLflow works unchanged.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.types import DataType, Schema

from receiver.compat import NumpyEncoder, get_jsonable_obj, infer_and_parse_data, parse_csv_input

INPUT_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON = "application/json"
CSV = "text/csv"


# A message quotes what went wrong, never the whole (maybe megabytes of) input.
MAX_MESSAGE = 500


class BadInput(ValueError):
    """The request body is malformed or does not fit the model's signature."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "... (truncated)"
        super().__init__(message)


class UnsupportedMediaType(ValueError):
    """The request's Content-Type is not one the scoring protocol reads."""


def media_type(content_type: str | None) -> str:
    """The bare media type; UnsupportedMediaType for anything but JSON or CSV in UTF-8."""
    if not content_type:
        raise UnsupportedMediaType(f"Content-Type is missing; send {JSON} or {CSV}.")
    mime, *parameters = (part.strip() for part in content_type.split(";"))
    mime = mime.lower()
    if mime not in (JSON, CSV):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported; send {JSON} or {CSV}.")
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaType(
                f"Content-Type parameter {parameter!r} is not supported; only charset=utf-8.")
    return mime


def parse(body: bytes, mime: str, schema: Schema | None,
          as_rows: bool = False) -> tuple[Any, dict[str, Any] | None]:
    """Model input and params from a request body; BadInput when it is malformed.

    Call shape.check first: a body far wider than the signature (a CSV header above all,
    which pandas reads in quadratic time) is refused there, not here.

    With `as_rows`, the common case (see _all_double_rows) comes back as its bare float64
    array, for rows_frame() to turn into the frame later: the scoring lane builds one frame
    for many requests."""
    if mime == CSV:
        return _parse_csv(body, schema), None
    try:
        document = json.loads(body)
    except RecursionError:
        raise BadInput("The JSON body is nested too deeply.") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadInput(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise BadInput(f"The JSON body must be an object with exactly one of "
                          f"{', '.join(INPUT_FORMATS)}; got {type(document).__name__}.")
    present = [key for key in INPUT_FORMATS if key in document]
    if len(present) != 1:
        raise BadInput(f"The JSON body must have exactly one of {', '.join(INPUT_FORMATS)}; "
                          f"got keys {sorted(document)}.")
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadInput(f"'params' must be an object, got {type(params).__name__}.")
    if present[0] == "dataframe_split":
        rows = _all_double_rows(document["dataframe_split"], schema)
        if rows is not None:
            return (rows if as_rows else rows_frame(rows, schema)), params
    try:
        data = infer_and_parse_data({present[0]: document[present[0]]}, schema)
    except MlflowException as exc:
        raise BadInput(exc.message) from None
    except RecursionError:
        raise BadInput(f"'{present[0]}' is nested too deeply.") from None
    except Exception as exc:  # noqa: BLE001 - pandas/numpy reject malformed shapes variously
        raise BadInput(f"Could not read '{present[0]}': {exc}.") from None
    return data, params


def double_columns(schema: Schema | None) -> list[str] | None:
    """The column names when the signature is named columns, all required doubles."""
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return None
    if any(spec.type != DataType.double or getattr(spec, "optional", False)
           or not getattr(spec, "required", True) for spec in schema.inputs):
        return None
    return [str(name) for name in schema.input_names()]  # has_input_names: all str


def rows_frame(rows: np.ndarray, schema: Schema | None) -> pd.DataFrame:
    """The frame of rows from _all_double_rows (several requests' rows stacked, too)."""
    return pd.DataFrame(rows, columns=double_columns(schema))


def _all_double_rows(split: Any, schema: Schema | None) -> np.ndarray | None:
    """The rows for the common case, read directly: `dataframe_split` with exactly the
    signature's columns, in order, every value a JSON number, every column a double. MLflow's
    infer_and_parse_data takes several times longer for the same frame (bench/'s profile);
    the result is the same frame, and pyfunc.predict still enforces the schema. Anything else:
    None, and the general path (with its error messages) takes it."""
    columns = double_columns(schema)
    if columns is None or not isinstance(split, dict) or set(split) - {"columns", "data", "index"}:
        return None
    data = split.get("data")
    if split.get("columns") != columns or "index" in split or not isinstance(data, list):
        return None
    width = len(columns)
    for row in data:
        if not isinstance(row, list) or len(row) != width:
            return None
        for value in row:
            if type(value) is not float and type(value) is not int:  # bool is not a number here
                return None
    try:
        return np.array(data, dtype=np.float64).reshape(len(data), width)
    except OverflowError:  # an integer of hundreds of digits is no double
        raise BadInput("A number in 'dataframe_split' is too large for a double.") from None


def _parse_csv(body: bytes, schema: Schema | None) -> pd.DataFrame:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"The CSV body is not valid UTF-8: {exc}.") from None
    try:
        return parse_csv_input(io.StringIO(text), schema)
    except MlflowException as exc:
        raise BadInput(exc.message) from None
    except Exception as exc:  # noqa: BLE001 - as above
        raise BadInput(f"Could not read the CSV body: {exc}.") from None


def predictions_json(raw: Any) -> bytes:
    if isinstance(raw, np.ndarray):
        predictions: Any = raw.tolist()
    else:
        predictions = get_jsonable_obj(raw, pandas_orient="records")
    return json.dumps({"predictions": predictions}, cls=NumpyEncoder).encode()
