"""FastModelLoader: LRU caching, single-flight loads, failure handling, eviction."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from examples.processes import wait_until
from receiver.loader import FastModelLoader
from receiver.metrics import Metrics


class CountingLoader:
    """Counts calls per key; blocks every load until released, so misses pile up."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> object:
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
        self.release.wait(timeout=10)
        return {"model": key}


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


def test_fifty_concurrent_misses_load_once_and_all_get_the_same_model() -> None:
    load = CountingLoader()
    metrics = Metrics()
    loader = FastModelLoader(load, maxsize=5, metrics=metrics)
    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(loader.get, "m/1") for _ in range(50)]
        # All fifty have missed (one loads, 49 wait on it) before the load may finish.
        wait_until(lambda: sample(metrics, "hotswap_model_cache_misses_total") == 50, timeout=10)
        load.release.set()
        results = [f.result(timeout=10) for f in futures]
    assert load.calls == {"m/1": 1}
    assert all(r is results[0] for r in results)
    assert loader.get("m/1") is results[0]
    assert sample(metrics, "hotswap_model_cache_hits_total") == 1


def test_hits_and_misses_are_counted() -> None:
    metrics = Metrics()
    loader: FastModelLoader[str, object] = FastModelLoader(lambda key: object(), maxsize=5,
                                                           metrics=metrics)
    loader.get("a")
    loader.get("a")
    loader.get("b")
    assert sample(metrics, "hotswap_model_cache_misses_total") == 2
    assert sample(metrics, "hotswap_model_cache_hits_total") == 1


def test_failed_load_is_not_cached_and_reaches_every_waiter() -> None:
    attempts = []

    def flaky(key: str) -> object:
        attempts.append(key)
        if len(attempts) == 1:
            raise RuntimeError("download failed")
        return "loaded"

    loader = FastModelLoader(flaky, maxsize=2, metrics=Metrics())
    with pytest.raises(RuntimeError, match="download failed"):
        loader.get("k")
    assert "k" not in loader
    assert loader.get("k") == "loaded"
    assert attempts == ["k", "k"]


def test_least_recently_used_is_evicted_and_reported_while_holders_keep_it() -> None:
    evicted: list[str] = []
    loader: FastModelLoader[str, dict[str, str]] = FastModelLoader(
        lambda key: {"key": key}, maxsize=2, metrics=Metrics(),
                             on_evict=lambda key, value: evicted.append(key))
    held = loader.get("v1")
    loader.get("v2")
    loader.get("v1")  # v1 is now more recent than v2
    loader.get("v3")
    assert evicted == ["v2"]
    assert sorted(loader.keys()) == ["v1", "v3"]
    loader.get("v4")
    assert evicted == ["v2", "v1"]
    assert held == {"key": "v1"}  # a request holding an evicted model still has it
    assert len(loader) == 2


def test_cached_answers_only_from_the_cache_and_counts_a_hit() -> None:
    load = CountingLoader()
    load.release.set()
    metrics = Metrics()
    loader = FastModelLoader(load, maxsize=2, metrics=metrics)
    assert loader.cached("m/1") is None and load.calls == {}
    assert sample(metrics, "hotswap_model_cache_misses_total") == 0
    model = loader.get("m/1")
    loader.get("m/2")
    assert loader.cached("m/1") is model
    assert sample(metrics, "hotswap_model_cache_hits_total") == 1
    loader.get("m/3")  # m/1 was made the most recent by cached(): m/2 is evicted
    assert "m/1" in loader and "m/2" not in loader


def test_evictions_are_handed_out_after_the_lock_and_a_failing_one_fails_no_load() -> None:
    seen_unlocked: list[bool] = []

    def on_evict(key: str, value: str) -> None:
        seen_unlocked.append(not loader._lock.locked())
        raise OSError("the folder is busy")

    loader: FastModelLoader[str, str] = FastModelLoader(lambda key: key, maxsize=1,
                                                        metrics=Metrics(), on_evict=on_evict)
    loader.get("v1")
    assert loader.get("v2") == "v2"  # v1 evicted; its release failed, the load did not
    assert seen_unlocked == [True]
    assert loader.keys() == ["v2"]
