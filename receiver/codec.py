"""The wire protocols the scoring lane speaks: a Codec checks and parses one request's body
and encodes that request's own predictions. MLflow's scoring protocol is one (MlflowCodec);
the Open Inference Protocol's is receiver/v2.py's V2Codec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from mlflow.types import Schema

from receiver import scoring, shape


class Codec(Protocol):
    protocol: ClassVar[str]  # the `protocol` label of the prediction counters

    def check(self, body: bytes, schema: Schema | None) -> None:
        """A cheap guard on the raw body before any parsing; BadInput refuses it."""

    def parse(self, body: bytes, schema: Schema | None, as_rows: bool,
              ) -> tuple[Any, dict[str, Any] | None]:
        """Model input and params; BadInput when malformed. Called after check()."""

    def encode(self, predictions: Any) -> bytes:
        """This request's own predictions as the answer's body; runs in the predict thread."""


@dataclass(frozen=True)
class MlflowCodec:
    """MLflow's scoring protocol, for one media type (JSON or CSV)."""

    mime: str
    protocol: ClassVar[str] = "mlflow"

    def check(self, body: bytes, schema: Schema | None) -> None:
        shape.check(body, self.mime, schema)

    def parse(self, body: bytes, schema: Schema | None, as_rows: bool,
              ) -> tuple[Any, dict[str, Any] | None]:
        return scoring.parse(body, self.mime, schema, as_rows=as_rows)

    def encode(self, predictions: Any) -> bytes:
        return scoring.predictions_json(predictions)
