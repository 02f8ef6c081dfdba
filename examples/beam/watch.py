"""Follow an MLflow stage or alias from a Beam pipeline.

`RegistryWatch` is the one piece that decides when the registry points to a new version: it
asks the registry every `interval` seconds, and at once when the plugin's notification for the
model arrives (the notification is a hint; the registry says which version). Two users:

- `WatchMlflowRegistry`, a PTransform emitting Beam's `ModelMetadata` each time the version
  changes, for `RunInference(handler, model_metadata_pcoll=...)` on runners whose streaming
  side inputs refresh (Dataflow, Flink, Spark, Prism);
- `MlflowModelHandler(..., follow=Follow(...))`, which swaps the model inside the worker,
  between two batches, on any runner (examples/beam/handler.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelMetadata
from apache_beam.transforms import trigger, window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp
from mlflow import MlflowClient

from examples.beam import notifications
from examples.beam.models import Reference, resolve, version_uri

logger = logging.getLogger(__name__)

# After a failed registry call, ask again this soon (or at the interval, when shorter).
RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class Follow:
    """How a watcher learns that the registry moved: it asks every `interval` seconds and,
    with `listen` ("host:port", where the plugin's HOTSWAP_TARGETS points), on each verified
    notification. `secret` defaults to HOTSWAP_WEBHOOK_SECRET in the worker's environment.
    `tick` bounds how long a notification waits to be looked at."""

    interval: float = 60.0
    listen: str | None = None
    secret: str | None = None
    tick: float = 0.25

    def __post_init__(self) -> None:
        if self.interval <= 0 or self.tick <= 0:
            raise ValueError(f"interval and tick must be > 0 (got {self.interval}, {self.tick})")
        if self.listen:
            notifications.parse_address(self.listen)


class RegistryWatch:
    """Which version a stage or alias points to, asked on schedule and on notification."""

    def __init__(self, reference: Reference, follow: Follow, tracking_uri: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if reference.version:
            raise ValueError(f"{reference} names a fixed version: there is nothing to follow")
        self.reference = reference
        self.version: str | None = None
        self._follow = follow
        self._client = MlflowClient(tracking_uri)
        self._clock = clock
        self._next_poll = clock()  # the first check asks at once
        listener = notifications.acquire(follow.listen, follow.secret) if follow.listen else None
        self._inbox = listener.inbox if listener else None
        self._seen = self._inbox.count(reference.name) if self._inbox else 0

    def check(self) -> str | None:
        """The new version when the registry points to another one than last time; None when
        nothing changed, nothing is there, or it is not time to ask."""
        notified = self._inbox is not None and self._inbox.count(self.reference.name) > self._seen
        if not notified and self._clock() < self._next_poll:
            return None
        if self._inbox is not None:
            self._seen = self._inbox.count(self.reference.name)
        self._next_poll = self._clock() + self._follow.interval
        try:
            version = resolve(self._client, self.reference)
        except Exception:
            logger.warning("Could not ask the registry about %s", self.reference, exc_info=True)
            self._next_poll = self._clock() + min(self._follow.interval, RETRY_SECONDS)
            return None
        if version is None or version == self.version:
            return None
        logger.info("%s now points to version %s (was %s)", self.reference, version,
                    self.version)
        self.version = version
        return version

    def wait(self) -> None:
        """Block for one tick, or less when a notification arrives."""
        if self._inbox is not None:
            self._inbox.wait_past(self.reference.name, self._seen, self._follow.tick)
        else:
            time.sleep(self._follow.tick)

    def close(self) -> None:
        if self._follow.listen:
            notifications.release(self._follow.listen)


class WatchMlflowRegistry(beam.PTransform):
    """Emits `ModelMetadata(model_id="models:/<name>/<version>", model_name=...)` each time
    `stage` or `alias` of `name` points to a new version: once at start, then on change.

    Polls every `interval` seconds; with `listen`, also reacts to the plugin's notifications
    (looked at every `tick` seconds). Ends at `stop_timestamp` (never, by default), like
    Beam's `WatchFilePattern`. Give the result to `RunInference(model_metadata_pcoll=...)`.
    """

    def __init__(self, name: str, stage: str | None = None, alias: str | None = None,
                 interval: float = 60.0, *, listen: str | None = None,
                 secret: str | None = None, tick: float = 1.0,
                 tracking_uri: str | None = None,
                 stop_timestamp: Timestamp = MAX_TIMESTAMP) -> None:
        super().__init__()
        self._reference = Reference.following(name, stage, alias)
        self._follow = Follow(interval, listen, secret, tick)
        self._tracking_uri = tracking_uri
        self._stop_timestamp = stop_timestamp

    def expand(self, pbegin: Any) -> Any:
        fire_interval = min(self._follow.tick, self._follow.interval) if self._follow.listen \
            else self._follow.interval
        return (pbegin
                | "Tick" >> PeriodicImpulse(start_timestamp=Timestamp.now(),
                                            stop_timestamp=self._stop_timestamp,
                                            fire_interval=fire_interval)
                | "AskRegistry" >> beam.ParDo(
                    _WatchFn(self._reference, self._follow, self._tracking_uri))
                # Each new version is a pane of its own: the side input is the latest one.
                | "LatestVersion" >> beam.WindowInto(
                    window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterCount(1)),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING))


class _WatchFn(beam.DoFn):
    def __init__(self, reference: Reference, follow: Follow, tracking_uri: str | None) -> None:
        self._reference = reference
        self._follow = follow
        self._tracking_uri = tracking_uri
        self._watch: RegistryWatch | None = None

    def setup(self) -> None:
        self._watch = RegistryWatch(self._reference, self._follow, self._tracking_uri)

    def process(self, unused_tick: Any) -> Iterator[ModelMetadata]:
        assert self._watch is not None, "setup() makes the watch"
        version = self._watch.check()
        if version is not None:
            yield ModelMetadata(model_id=version_uri(self._reference.name, version),
                                model_name=f"{self._reference.name}-v{version}")

    def teardown(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
