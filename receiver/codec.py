"""A request's wire protocol: how its body becomes model input and its predictions its answer.

The scoring lane (lane.py, batching.py) knows nothing of any protocol: each request brings a
Codec, and requests merge by what their bodies parsed to (columns, dtypes, params), whichever
protocol they came through. `MlflowCodec` is MLflow's scoring protocol (scoring.py, guarded by
shape.py); another protocol implements the same three methods.
"""

from __future__ import annotations

from typing import Any, Protocol

from mlflow.types import Schema

from receiver import scoring, shape


class Codec(Protocol):
    """One request's protocol. An instance may carry the request's own context (an id, the
    outputs it asked for): `encode` answers for that request alone.

    Every method may raise scoring.BadInput, which the client gets as a 400."""

    def check(self, body: bytes, schema: Schema | None) -> None:
        """Refuse, cheaply and before any parsing, a body certainly far off the signature."""

    def parse(self, body: bytes, schema: Schema | None,
              as_rows: bool) -> tuple[Any, dict[str, Any] | None]:
        """Model input and params. With `as_rows`, input that is exactly the signature's
        columns, all doubles, may come back as a bare 2-D float64 array (scoring.rows_frame
        builds its frame): the lane then stacks many requests' rows into one frame."""

    def encode(self, predictions: Any) -> bytes:
        """The answer's body for this request's own predictions (its rows of a merged call);
        runs in the predict thread."""


class MlflowCodec:
    """MLflow's scoring protocol: the bodies `mlflow models serve` accepts, in JSON or CSV."""

    def __init__(self, mime: str) -> None:
        self.mime = mime

    def check(self, body: bytes, schema: Schema | None) -> None:
        shape.check(body, self.mime, schema)

    def parse(self, body: bytes, schema: Schema | None,
              as_rows: bool) -> tuple[Any, dict[str, Any] | None]:
        return scoring.parse(body, self.mime, schema, as_rows=as_rows)

    def encode(self, predictions: Any) -> bytes:
        return scoring.predictions_json(predictions)
