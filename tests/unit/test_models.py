"""Models: an evicted version's files are deleted after the cache's lock is let go, in the loading
thread, so a request on the event loop never waits for a disk delete."""

from __future__ import annotations

import asyncio
import threading
import time

from receiver.pinning import PinnedModels
from receiver.registry import LoadedModel
from receiver.threads import Limiters
from tests.support.fakes import FakeRegistry
from tests.support.updater import make, run, running

RELEASE_SECONDS = 2.0


class SlowReleaseRegistry(FakeRegistry):
    """Deleting a model's folder takes RELEASE_SECONDS, as a large one on a slow disk does."""

    def __init__(self) -> None:
        super().__init__()
        self.releasing = threading.Event()
        self.release_threads: list[str] = []

    def release(self, model: LoadedModel) -> None:
        self.releasing.set()
        self.release_threads.append(threading.current_thread().name)
        time.sleep(RELEASE_SECONDS)  # the slow delete itself
        super().release(model)


def test_a_slow_release_never_holds_up_a_cached_pinned_version() -> None:
    registry = SlowReleaseRegistry()
    updater, models, metrics = make(registry, cache_size=2)
    pinned = PinnedModels(models, Limiters.create(1).model_work, metrics)
    latencies: list[float] = []
    during_release = 0

    async def scenario() -> None:
        nonlocal during_release
        async with running(updater):  # version 1 served
            await pinned.get("m", "2")
            await pinned.get("m", "1")  # 2 is now the least recent: loading 3 evicts it
            loading = asyncio.create_task(pinned.get("m", "3"))
            while not loading.done():
                started = time.perf_counter()
                cached = await pinned.get("m", "1")
                latencies.append(time.perf_counter() - started)
                assert cached.version == "1"
                if registry.releasing.is_set():
                    during_release += 1
                await asyncio.sleep(0.001)  # a client's pace, not a wait for anything
            assert (await loading).version == "3"

    run(scenario())
    assert registry.released == ["2"]
    assert registry.release_threads != [threading.main_thread().name]
    assert max(latencies) < 0.05, max(latencies)
    assert during_release > 10  # the client kept calling while the folder was deleted
