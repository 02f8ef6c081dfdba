"""ScoringLane.score: predictions run in worker threads, at most HOTSWAP_PREDICT_THREADS at once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sized

import pytest

from receiver.service import Service
from receiver.settings import Settings
from tests.support.fakes import FakeRegistry, loaded_model

REQUESTS = 12


class BlockingModel:
    """Stands in for a PyFuncModel: counts predictions in flight, holds each until released."""

    def __init__(self) -> None:
        self.running = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def predict(self, data: Sized, params: object = None) -> list[int]:
        with self._lock:
            self.running += 1
        self.release.wait(timeout=10)
        return [1] * len(data)


@pytest.mark.parametrize("threads", [1, 3])
def test_predictions_in_flight_never_exceed_the_limit(threads: int) -> None:
    settings = Settings(tracking_uri="http://unused", model_names=("m",),
                        predict_threads=threads)
    service = Service(settings, registry=FakeRegistry())
    lane, limiters = service.lane, service.limiters
    pyfunc = BlockingModel()
    model = loaded_model(pyfunc=pyfunc)
    body = json.dumps({"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}).encode()

    async def burst() -> list[bytes]:
        calls = asyncio.gather(*(lane.score(model, body, "application/json")
                                 for _ in range(REQUESTS)))
        # Wait (with a deadline) until every request is either predicting or queued.
        async def settled() -> None:
            while True:
                stats = limiters.predictions.statistics()
                if stats.tasks_waiting == REQUESTS - threads and pyfunc.running == threads:
                    return
                await asyncio.sleep(0.01)
        await asyncio.wait_for(settled(), timeout=10)
        assert pyfunc.running == threads  # the rest wait for a token, not for the model
        pyfunc.release.set()
        return await calls

    answers = asyncio.run(burst())
    assert [json.loads(a) for a in answers] == [{"predictions": [1, 1]}] * REQUESTS
    assert pyfunc.running == REQUESTS
