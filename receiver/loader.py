"""FastModelLoader: an LRU cache of loaded models with single-flight loads.

cachetools caches are not thread-safe, so every cache access takes the lock; the load itself
runs outside it, and concurrent misses for one key wait on the first caller's Future.

cachetools evicts from inside `cache[key] = value`, that is under the lock, which the event loop
takes too (`cached`). So an eviction only sets the evicted entry aside; the owner's hook (which
deletes the model's files) runs after the lock is let go, in the thread that loaded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

from cachetools import LRUCache

from receiver.metrics import Metrics

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _EvictingLRU(LRUCache[K, V]):
    """An LRUCache that keeps what it evicts until `take_evicted`, so files and memory are
    released outside the lock."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._evicted: list[tuple[K, V]] = []

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self._evicted.append((key, value))
        return key, value

    def take_evicted(self) -> list[tuple[K, V]]:
        evicted, self._evicted = self._evicted, []
        return evicted


class FastModelLoader(Generic[K, V]):
    def __init__(self, load: Callable[[K], V], maxsize: int, metrics: Metrics,
                 on_evict: Callable[[K, V], None] | None = None) -> None:
        self._load = load
        self._metrics = metrics
        self._on_evict = on_evict or (lambda k, v: None)
        self._cache: _EvictingLRU[K, V] = _EvictingLRU(maxsize)
        self._pending: dict[K, Future[V]] = {}
        self._lock = threading.Lock()

    def cached(self, key: K) -> V | None:
        """The cached value for `key`, counted as a hit and made the most recent; None when it
        is not cached (nothing loaded, nothing counted). Never waits for a load."""
        with self._lock:
            return self._hit(key)

    def get(self, key: K) -> V:
        """Blocking: the cached value for `key`, loading it once however many callers miss.

        Call it from a worker thread, never on the event loop. A failed load is
        not cached; every waiter of that load gets its exception.
        """
        with self._lock:
            value = self._hit(key)
            if value is not None:
                return value
            self._metrics.cache_misses.inc()
            future = self._pending.get(key)
            owner = future is None
            if future is None:
                future = self._pending[key] = Future()
        if not owner:
            return future.result()
        try:
            value = self._load(key)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            future.set_exception(exc)
            raise
        with self._lock:
            self._cache[key] = value
            del self._pending[key]
            evicted = self._cache.take_evicted()
        future.set_result(value)
        for old_key, old_value in evicted:  # slow (files deleted): never under the lock
            try:
                self._on_evict(old_key, old_value)
            except Exception:  # the load succeeded; a failed clean-up must not undo that
                logger.exception("Releasing %s after its eviction failed", old_key)
        return value

    def _hit(self, key: K) -> V | None:
        """Under the lock: the cached value, counted as a hit, or None."""
        try:
            value = self._cache[key]
        except KeyError:
            return None
        self._metrics.cache_hits.inc()
        return value

    def __contains__(self, key: K) -> bool:
        """Whether `key` is cached, without loading, counting, or touching its recency."""
        with self._lock:
            return key in self._cache

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._cache.keys())

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
