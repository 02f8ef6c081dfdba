"""ScoringLane: runs predictions. A request body goes in, the predictions' JSON comes out.

Parsing, `pyfunc.predict` and the JSON encoding all run in a worker thread, at most
`predict_threads` at once; the rest wait for a token, not for the model.
"""

from __future__ import annotations

import time

import anyio
from mlflow.exceptions import MlflowException

from receiver import scoring, threads
from receiver.metrics import Metrics
from receiver.registry import LoadedModel


class ScoringLane:
    def __init__(self, limiter: anyio.CapacityLimiter, metrics: Metrics) -> None:
        self._limiter = limiter
        self._metrics = metrics

    def busy(self) -> bool:
        """Whether requests are queued for a prediction thread (not merely all threads busy:
        one request in flight is the normal state of a one-thread lane)."""
        return self._limiter.statistics().tasks_waiting > 0

    async def score(self, model: LoadedModel, body: bytes, mime: str) -> bytes:
        """The predictions of `model` for one request body, as JSON bytes.

        Raises scoring.BadInput when the body is malformed or the model cannot score it.
        """
        return await threads.run(self._predict, model, body, mime, limiter=self._limiter)

    def _predict(self, model: LoadedModel, body: bytes, mime: str) -> bytes:
        started = time.perf_counter()
        data, params = scoring.parse(body, mime, model.input_schema)
        try:
            raw = model.pyfunc.predict(data, params=params)
        except MlflowException as exc:  # schema enforcement speaks through MlflowException
            raise scoring.BadInput(exc.message) from None
        except Exception as exc:  # noqa: BLE001 - bad input can make any model raise
            raise scoring.BadInput(
                "The model could not score this input; check that it matches the model's "
                f"signature. {type(exc).__name__}: {exc}") from None
        content = scoring.predictions_json(raw)
        self._metrics.prediction_duration.observe(time.perf_counter() - started)
        return content
