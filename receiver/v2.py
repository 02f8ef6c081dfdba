"""The Open Inference Protocol (KServe V2) on the wire, pure: a request's tensors become model
input, predictions become its outputs, a signature becomes the model's metadata.

An `infer` body names its tensors: for a tabular model one tensor per column (shape `[n]` or
`[n, 1]`), or one 2-D tensor `[n, k]` holding the signature's columns in order (as MLServer's
`pd` codec reads a request); a tensor-based signature takes its tensors as arrays. Tensor data
comes as JSON (flat or nested, row-major) or, with the binary tensor data extension that
tritonclient and the kserve SDK use by default, as raw bytes after the JSON header. Outputs are
always answered as JSON, which both clients read.

Everything a client declares is checked against what it sent before anything is allocated: a
shape cannot promise more elements than the body can hold, data nests no deeper than its
shape, and the element count must match the shape exactly.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from mlflow.types import DataType, Schema, TensorSpec

from receiver import scoring
from receiver.compat import NumpyEncoder
from receiver.scoring import BadInput

PROTOCOL = "v2"
HEADER_LENGTH = "inference-header-content-length"
# The name of the one output when the signature does not name it.
DEFAULT_OUTPUT = "predictions"
MAX_DIMS = 8
# A run of this many opening brackets is far deeper than any tensor: refused unread.
MAX_NESTING = 32
# An opener, then MAX_NESTING more, each after blanks or an object key: the search starts at
# openers only, and a miss costs a step or two.
_DEEP = re.compile(rb"[\[{](?:\s*(?:\"[^\"\\]{0,64}\"\s*:\s*)?[\[{]){%d}" % MAX_NESTING)

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64), "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16), "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64), "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_BY_KIND = {dtype: name for name, dtype in DTYPES.items()}
# The Python types a JSON element may have, per kind of datatype (bool is no number here).
_JSON_TYPES: dict[str, tuple[type, ...]] = {"b": (bool,), "i": (int,), "u": (int,),
                                            "f": (int, float), "O": (str,)}
_SIGNATURE_TYPES = {DataType.boolean: "BOOL", DataType.integer: "INT32",
                    DataType.long: "INT64", DataType.float: "FP32", DataType.double: "FP64",
                    DataType.string: "BYTES", DataType.binary: "BYTES",
                    DataType.datetime: "BYTES"}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    array: np.ndarray  # already shaped


def check(body: bytes) -> None:
    """The cheap guard on the raw bytes: a body nested far deeper than any tensor is refused
    before the JSON parser recurses into it."""
    if _DEEP.search(body, 0, len(body)) is not None:
        raise BadInput(f"The request nests more than {MAX_NESTING} levels deep.")


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data after it (empty without the extension)."""
    if header_length is None:
        return body, b""
    if not header_length.isascii() or not header_length.isdigit() or int(
            header_length) > len(body):
        raise BadInput(f"Inference-Header-Content-Length {header_length[:32]!r} is not a "
                       f"length within the body's {len(body)} bytes.")
    return body[:int(header_length)], body[int(header_length):]


def load(header: bytes) -> dict[str, Any]:
    try:
        document = json.loads(header)
    except RecursionError:
        raise BadInput("The request nests too deeply.") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise BadInput(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise BadInput(f"The request must be a JSON object, not {type(document).__name__}.")
    return document


def tensors(document: dict[str, Any], binary: bytes, budget: int) -> list[Tensor]:
    """The request's input tensors, checked and decoded. `budget` bounds the elements any
    tensor may declare: the body's size, as no element takes less than a byte."""
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadInput("'inputs' must be a non-empty list of tensors.")
    found: list[Tensor] = []
    names: set[str] = set()
    offset = 0
    for index, entry in enumerate(inputs):
        tensor, offset = _tensor(entry, index, binary, offset, budget)
        if tensor.name in names:
            raise BadInput(f"Input {tensor.name!r} is given twice.")
        names.add(tensor.name)
        found.append(tensor)
    if offset != len(binary):
        raise BadInput(f"{len(binary) - offset} bytes of binary data belong to no input.")
    return found


def _tensor(entry: Any, index: int, binary: bytes, offset: int, budget: int,
            ) -> tuple[Tensor, int]:
    if not isinstance(entry, dict):
        raise BadInput(f"inputs[{index}] must be an object, not {type(entry).__name__}.")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise BadInput(f"inputs[{index}] needs a 'name' string.")
    datatype = entry.get("datatype")
    if datatype not in DTYPES:
        raise BadInput(f"Input {name!r}: datatype {str(datatype)[:32]!r} is not one of "
                       f"{', '.join(DTYPES)}.")
    shape = _shape(name, entry.get("shape"), budget)
    count = math.prod(shape)
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadInput(f"Input {name!r}: 'parameters' must be an object.")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in entry:
            raise BadInput(f"Input {name!r} has both 'data' and binary data.")
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise BadInput(f"Input {name!r}: binary_data_size {str(size)[:32]} is beyond the "
                           f"{len(binary) - offset} bytes of binary data left.")
        flat = _from_binary(name, datatype, binary[offset:offset + size], count)
        return Tensor(name, shape, flat.reshape(shape)), offset + size
    if "data" not in entry:
        raise BadInput(f"Input {name!r} has no 'data'.")
    return Tensor(name, shape, _from_json(name, datatype, entry["data"], shape)), offset


def _shape(name: str, shape: Any, budget: int) -> tuple[int, ...]:
    if (not isinstance(shape, list) or not 0 < len(shape) <= MAX_DIMS
            or any(type(dim) is not int or dim < 0 for dim in shape)):
        raise BadInput(f"Input {name!r}: 'shape' must be a list of 1 to {MAX_DIMS} "
                       "non-negative integers.")
    count = math.prod(shape)
    if count > budget:
        raise BadInput(f"Input {name!r} declares {count} elements (shape {shape}), more than "
                       f"a body of {budget} bytes can hold.")
    if max(shape) > budget:  # no elements, but a dimension no array could have
        raise BadInput(f"Input {name!r}: shape {shape} has a dimension over {budget}.")
    return tuple(shape)


def _from_json(name: str, datatype: str, data: Any, shape: tuple[int, ...]) -> np.ndarray:
    flat = _flatten(name, data, len(shape))
    count = math.prod(shape)
    if len(flat) != count:
        raise BadInput(f"Input {name!r} declares {count} elements (shape {list(shape)}) but "
                       f"holds {len(flat)}.")
    dtype = DTYPES[datatype]
    allowed = _JSON_TYPES[dtype.kind]
    if not all(type(value) in allowed for value in flat):
        wrong = next(value for value in flat if type(value) not in allowed)
        raise BadInput(f"Input {name!r} is {datatype}, but holds a {type(wrong).__name__}.")
    try:
        return np.array(flat, dtype=dtype).reshape(shape)
    except OverflowError:
        raise BadInput(f"Input {name!r} holds a number out of {datatype}'s range.") from None


def _flatten(name: str, data: Any, depth: int) -> list[Any]:
    """Row-major elements of flat or nested data, refusing nesting deeper than the shape.
    Iterative: a client's nesting never reaches Python's recursion limit."""
    flat: list[Any] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= depth:
                    raise BadInput(f"Input {name!r} nests deeper than its {depth}-D shape.")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_binary(name: str, datatype: str, raw: bytes, count: int) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count)
    dtype = DTYPES[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise BadInput(f"Input {name!r}: {len(raw)} bytes of binary data for {count} "
                       f"{datatype} elements of {dtype.itemsize} bytes each.")
    return np.frombuffer(raw, dtype=dtype).astype(DTYPES[datatype].newbyteorder("="))


def _bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray:
    """BYTES in the binary extension: each element a 4-byte little-endian length, then its
    bytes; read as UTF-8 text, as a DataFrame column of strings needs."""
    items: list[str] = []
    at = 0
    while at < len(raw) and len(items) < count:
        if at + 4 > len(raw):
            break
        length = int.from_bytes(raw[at:at + 4], "little")
        try:
            items.append(raw[at + 4:at + 4 + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput(f"Input {name!r}: element {len(items)} is not UTF-8 text.") from None
        at += 4 + length
    if len(items) != count or at != len(raw):
        raise BadInput(f"Input {name!r}: its binary data does not hold exactly {count} "
                       "length-prefixed elements.")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array


def requested_outputs(document: dict[str, Any]) -> list[str] | None:
    outputs = document.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("name"), str) for entry in outputs):
        raise BadInput("'outputs' must be a list of objects with a 'name'.")
    return [entry["name"] for entry in outputs]


def request_id(document: dict[str, Any]) -> str | None:
    value = document.get("id")
    if value is not None and not isinstance(value, str):
        raise BadInput(f"'id' must be a string, not {type(value).__name__}.")
    return value


# -- tensors -> model input ---------------------------------------------------------------------

def double_rows(document: dict[str, Any], schema: Schema | None) -> np.ndarray | None:
    """The common case read directly, as scoring reads `dataframe_split`: JSON only, one FP64
    tensor per column of an all-double signature, each `[n]` or `[n, 1]` with n plain numbers.
    The rows come back as one float64 array in the signature's order; anything else is None,
    and the general path (with its error messages) takes it."""
    columns = scoring.double_columns(schema)
    inputs = document.get("inputs")
    if columns is None or type(inputs) is not list or len(inputs) != len(columns):
        return None
    by_name: dict[Any, list[Any]] = {}
    for entry in inputs:
        if type(entry) is not dict or entry.get("datatype") != "FP64" or not set(entry) <= _PLAIN:
            return None
        data, shape = entry.get("data"), entry.get("shape")
        if type(data) is not list or (shape != [len(data)] and shape != [len(data), 1]):
            return None
        for value in data:
            if type(value) is not float and type(value) is not int:  # bool is no number
                return None
        by_name[entry.get("name")] = data
    if by_name.keys() != set(columns) or len({len(data) for data in by_name.values()}) != 1:
        return None
    try:
        columns_first = np.array([by_name[name] for name in columns], dtype=np.float64)
    except OverflowError:  # an integer of hundreds of digits is no double
        return None
    return np.ascontiguousarray(columns_first.T)


_PLAIN = frozenset({"name", "shape", "datatype", "data"})


def model_input(found: list[Tensor], schema: Schema | None, as_rows: bool) -> Any:
    """What `pyfunc.predict` takes: an array or a dict of arrays for a tensor signature, else
    a DataFrame (with `as_rows`, the all-double signature's rows as a bare float64 array, as
    scoring.parse gives them, so V2 requests merge with MLflow protocol ones)."""
    if schema is not None and schema.is_tensor_spec():
        if len(found) == 1 and len(schema.inputs) == 1:
            return found[0].array
        return {tensor.name: tensor.array for tensor in found}
    columns = _columns(schema)
    if len(found) == 1 and len(found[0].shape) == 2 and found[0].name not in (columns or ()):
        return _from_matrix(found[0], columns, schema, as_rows)
    return _from_columns(found, columns, schema, as_rows)


def _columns(schema: Schema | None) -> list[str] | None:
    if schema is None or not schema.has_input_names():
        return None
    return [str(name) for name in schema.input_names()]


def _from_matrix(tensor: Tensor, columns: list[str] | None, schema: Schema | None,
                 as_rows: bool) -> Any:
    width = tensor.shape[1]
    if columns is not None and width != len(columns):
        raise BadInput(f"Input {tensor.name!r} has {width} columns; the model's signature has "
                       f"{len(columns)} ({', '.join(columns)}).")
    if as_rows and tensor.array.dtype.kind == "f" and _all_double(schema):
        return tensor.array.astype(np.float64, copy=False)
    return pd.DataFrame(tensor.array, columns=columns)


def _from_columns(found: list[Tensor], columns: list[str] | None, schema: Schema | None,
                  as_rows: bool) -> Any:
    rows = {tensor.shape[0] for tensor in found}
    for tensor in found:
        if len(tensor.shape) > 2 or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise BadInput(f"Input {tensor.name!r} has shape {list(tensor.shape)}; a column "
                           "takes [n] or [n, 1].")
        if columns is not None and tensor.name not in columns:
            raise BadInput(f"Input {tensor.name!r} is not in the model's signature; its "
                           f"inputs are {', '.join(columns)}.")
    if len(rows) != 1:
        raise BadInput(f"The inputs have different numbers of rows: {sorted(rows)}.")
    by_name = {tensor.name: tensor.array.reshape(-1) for tensor in found}
    order = [name for name in columns if name in by_name] if columns else list(by_name)
    if (as_rows and columns is not None and order == columns and _all_double(schema)
            and all(by_name[name].dtype.kind == "f" for name in order)):
        return np.column_stack([by_name[name] for name in order]).astype(np.float64,
                                                                          copy=False)
    return pd.DataFrame({name: by_name[name] for name in order})


def _all_double(schema: Schema | None) -> bool:
    return scoring.double_columns(schema) is not None


# -- predictions -> outputs ---------------------------------------------------------------------

def outputs(predictions: Any, output_schema: Schema | None,
            wanted: list[str] | None) -> list[dict[str, Any]]:
    """The V2 output tensors of a `predict` answer, only those `wanted` when it names some."""
    named = _named_arrays(predictions, output_schema)
    if wanted is not None:
        unknown = [name for name in wanted if name not in named]
        if unknown:
            raise BadInput(f"Unknown output {unknown[0]!r}; the model's outputs are "
                           f"{', '.join(named)}.")
        named = {name: named[name] for name in wanted}
    return [_output(name, array) for name, array in named.items()]


def _named_arrays(predictions: Any, output_schema: Schema | None) -> dict[str, np.ndarray]:
    if isinstance(predictions, pd.DataFrame):
        return {str(column): predictions[column].to_numpy() for column in predictions.columns}
    if isinstance(predictions, dict):
        return {str(key): np.asarray(value) for key, value in predictions.items()}
    array = predictions.to_numpy() if isinstance(predictions, pd.Series) else np.asarray(
        predictions)
    names = _columns(output_schema) if output_schema is not None else None
    name = names[0] if names and len(names) == 1 else DEFAULT_OUTPUT
    return {name: array}


def _output(name: str, array: np.ndarray) -> dict[str, Any]:
    datatype = _BY_KIND.get(array.dtype)
    if datatype is None:
        datatype = "BYTES" if array.dtype.kind in "OUSM" else "FP64"
        array = array.astype(str if datatype == "BYTES" else np.float64)
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": array.reshape(-1).tolist()}


def response(model_name: str, model_version: str, request_id: str | None,
             tensors_out: list[dict[str, Any]]) -> bytes:
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version,
                            "outputs": tensors_out}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body, cls=NumpyEncoder).encode()


# -- metadata -----------------------------------------------------------------------------------

def metadata(name: str, version: str | None, input_schema: Schema | None,
             output_schema: Schema | None) -> dict[str, Any]:
    """`GET /v2/models/{name}`: the signature's tensors. Without a signature the lists are
    empty and `parameters.signature` says so: `infer` still takes named inputs."""
    body: dict[str, Any] = {"name": name, "versions": [version] if version else [],
                            "platform": "mlflow",
                            "inputs": _describe(input_schema), "outputs": _describe(
                                output_schema, default=DEFAULT_OUTPUT)}
    if input_schema is None:
        body["parameters"] = {"signature": "none: infer takes inputs named as the model's "
                                           "columns"}
    return body


def _describe(schema: Schema | None, default: str = "input") -> list[dict[str, Any]]:
    if schema is None:
        return []
    described = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name or (default if len(schema.inputs) == 1 else f"{default}-{index}")
        if isinstance(spec, TensorSpec):
            datatype = _BY_KIND.get(spec.type, "BYTES")
            shape = list(spec.shape)
        else:
            kind = spec.type
            datatype = _SIGNATURE_TYPES.get(kind, "BYTES") if isinstance(kind, DataType) \
                else "BYTES"
            shape = [-1]
        described.append({"name": name, "datatype": datatype, "shape": shape})
    return described


# -- the codec the scoring lane calls -----------------------------------------------------------

class V2Codec:
    """One V2 `infer` request's wire protocol for the scoring lane: `check` and `parse` its
    body, then `encode` its own predictions with its id, requested outputs and the answering
    model's name and version. One instance per request and answering model (a shadow gets its
    own): `parse` keeps what `encode` needs."""

    protocol: ClassVar[str] = PROTOCOL

    def __init__(self, model_name: str, model_version: str, header_length: str | None,
                 output_schema: Schema | None) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self._header_length = header_length
        self._output_schema = output_schema
        self.request_id: str | None = None
        self.wanted: list[str] | None = None

    def check(self, body: bytes, schema: Schema | None) -> None:
        header, _ = split_binary(body, self._header_length)
        check(header)

    def parse(self, body: bytes, schema: Schema | None, as_rows: bool,
              ) -> tuple[Any, dict[str, Any] | None]:
        header, binary = split_binary(body, self._header_length)
        document = load(header)
        self.request_id = request_id(document)
        self.wanted = requested_outputs(document)
        if as_rows and not binary:
            rows = double_rows(document, schema)
            if rows is not None:
                return rows, None
        found = tensors(document, binary, budget=max(len(body), 1))
        return model_input(found, schema, as_rows), None

    def encode(self, predictions: Any) -> bytes:
        return response(self.model_name, self.model_version, self.request_id,
                        outputs(predictions, self._output_schema, self.wanted))
