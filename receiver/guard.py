"""The load boundary: a version's download, load and warm-up run in a thread of their own, and
whoever asked waits at most HOTSWAP_LOAD_TIMEOUT.

A model is arbitrary code. Whatever it raises while loading, `SystemExit` from an argparse call
included, stops here as ModelLoadFailed, so it never unwinds into the event loop and uvicorn.
A load that hangs is abandoned: a thread cannot be killed, so we stop waiting for it, count it,
start no second load of that version while it runs, and free its result if it ever finishes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Literal

from receiver.metrics import Metrics
from receiver.redact import scrub
from receiver.registry import LoadedModel, ModelLoadFailed, ModelNotFound, RegistryLike

logger = logging.getLogger(__name__)

Key = tuple[str, str]
FailureReason = Literal["error", "exit", "timeout"]


class LoadTimedOut(ModelLoadFailed):
    """A load ran past HOTSWAP_LOAD_TIMEOUT and was abandoned."""


class LoadGuard:
    def __init__(self, registry: RegistryLike, timeout: float, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._timeout = timeout
        self._metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        # Abandoned loads still running, and when each was abandoned.
        self._abandoned: dict[Key, float] = {}
        self.last_failure: str | None = None

    def abandoned(self) -> list[str]:
        """`name version N` of each abandoned load whose thread still runs."""
        with self._lock:
            return [f"{name} version {version}" for name, version in self._abandoned]

    def load(self, name: str, version: str) -> LoadedModel:
        """Blocking: the loaded version, or ModelLoadFailed (LoadTimedOut) for whatever
        stopped it.

        ModelNotFound and MLflow's own errors pass through as they are: they say nothing bad
        about the model, and the caller maps them.
        """
        key = (name, version)
        with self._lock:
            running = key in self._abandoned
        if running:
            raise self._failed("timeout", key, LoadTimedOut(
                f"{name} version {version}: an earlier load, abandoned after "
                f"{self._timeout:g}s, is still running; no second one is started."))
        future: Future[LoadedModel] = Future()
        threading.Thread(target=self._run, args=(key, future), daemon=True,
                         name=f"hotswap-load-{name}-v{version}").start()
        try:
            future.exception(timeout=self._timeout)  # waits; the load's own error comes below
        except concurrent.futures.TimeoutError:
            with self._lock:
                abandon = not future.done()
                if abandon:
                    self._abandoned[key] = self._clock()
            if abandon:
                logger.error("Loading %s version %s took over %gs: abandoned", name, version,
                             self._timeout)
                raise self._failed("timeout", key, LoadTimedOut(
                    f"{name} version {version} did not load and warm up within "
                    f"HOTSWAP_LOAD_TIMEOUT ({self._timeout:g}s); abandoned.")) from None
        return self._result(key, future)

    def _result(self, key: Key, future: Future[LoadedModel]) -> LoadedModel:
        try:
            return future.result()
        except (KeyboardInterrupt, ModelNotFound):
            raise
        except Exception as exc:
            self._failed("error", key, exc)
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit and kin: the model's
            raise self._failed("exit", key, ModelLoadFailed(
                f"{key[0]} version {key[1]} stopped its own load with "
                f"{type(exc).__name__}({exc}); not loaded, the process keeps running.")
            ) from None

    def _run(self, key: Key, future: Future[LoadedModel]) -> None:
        """The load itself, in its own thread; the result goes to the waiter, or is freed when
        nobody waits any more."""
        outcome: LoadedModel | BaseException
        try:
            outcome = self._registry.load(*key)
        except BaseException as exc:  # noqa: BLE001 - a model is arbitrary code: keep it all
            outcome = exc
        with self._lock:
            abandoned = self._abandoned.pop(key, None) is not None
            if not abandoned:  # decided under the lock, so the waiter sees it or abandons
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
                return
        if isinstance(outcome, BaseException):
            logger.warning("The abandoned load of %s version %s ended: %s: %s", *key,
                           type(outcome).__name__, scrub(str(outcome)))
        else:
            logger.warning("The abandoned load of %s version %s finished after all; "
                           "its result is discarded", *key)
            self._registry.release(outcome)

    def _failed(self, reason: FailureReason, key: Key, exc: BaseException) -> BaseException:
        self._metrics.load_failures.labels(reason=reason).inc()
        self.last_failure = scrub(f"{key[0]} version {key[1]}: {type(exc).__name__}: {exc}")
        return exc
