"""Service.score: predictions run in worker threads, at most HOTSWAP_PREDICT_THREADS at once."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from receiver.registry import LoadedModel
from receiver.service import Service
from receiver.settings import Settings


class ConcurrencyRecordingModel:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def predict(self, data, params=None):  # noqa: ANN001 - stands in for a PyFuncModel
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)  # the model's work, not synchronisation
        with self._lock:
            self.running -= 1
        return [1] * len(data)


@pytest.mark.parametrize("threads", [1, 3])
def test_predictions_in_flight_never_exceed_the_limit(threads: int) -> None:
    settings = Settings(tracking_uri="http://unused", model_names=("m",),
                        predict_threads=threads)
    service = Service(settings, registry=object())  # type: ignore[arg-type]
    pyfunc = ConcurrencyRecordingModel()
    model = LoadedModel(name="m", version="1", pyfunc=pyfunc,  # type: ignore[arg-type]
                        input_schema=None, local_path=Path("/nonexistent"), run_id=None,
                        load_seconds=0.0)
    body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}).encode()

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(service.score(model, body, "application/json")
                                      for _ in range(12)))

    answers = asyncio.run(burst())
    assert [json.loads(a) for a in answers] == [{"predictions": [1, 1]}] * 12
    assert pyfunc.most == threads
