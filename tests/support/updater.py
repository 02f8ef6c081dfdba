"""Builders for the unit tests of ModelUpdater and Models: both over a fake registry, the
updater started and stopped around a block, run on a fresh event loop with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from receiver.metrics import Metrics
from receiver.models import Models
from receiver.settings import Settings
from receiver.threads import Limiters
from receiver.updater import ModelUpdater
from tests.support.fakes import FakeRegistry, ManualClock


def make(registry: FakeRegistry, clock: ManualClock | None = None,
         **overrides: Any) -> tuple[ModelUpdater, Models, Metrics]:
    """An updater and its Models following model "m" in `registry`: no polling, a cache of 2
    unless `overrides` (Settings fields) say otherwise."""
    settings = Settings(tracking_uri="http://unused", model_names=("m",),
                        **{"update_interval": 600.0, "cache_size": 2, **overrides})
    metrics = Metrics()
    models = Models(settings, registry, metrics)
    updater = ModelUpdater(settings, models, Limiters.create(1).model_work,
                           clock=clock or time.monotonic)
    return updater, models, metrics


@contextlib.asynccontextmanager
async def running(updater: ModelUpdater) -> AsyncIterator[None]:
    """The updater started, its startup refresh done; stopped however the block ends."""
    await updater.start()
    await updater.trigger("manual")  # joins the startup refresh or follows it
    try:
        yield
    finally:
        await updater.stop()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=20))
