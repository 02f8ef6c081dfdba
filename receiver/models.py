"""Models: the versions served and held for the rollout, the cache they load through, and the
blocking refresh that moves them to what the registry says.

A refresh asks the registry once per model (its aliases, stages and tags at once), then swaps
the served version, the versions the rollout references point to (MODEL_PREWARM, MODEL_CANARY,
MODEL_SHADOW, after the followed one so a promotion never waits for them) and the canary's and
shadow's shares. Every version loads through the one cache, so a pre-warmed version's promotion
is a cache hit. A model leaves memory and disk once nothing serves, holds or caches it.

Readers on the event loop (`served`, `held`, `shares`, `cached`) never wait on a load or on
files being deleted: each answer is one dict read, and every swap one reference assignment, so
a request in flight keeps what it started with.
"""

from __future__ import annotations

import enum
import gc
import logging
from dataclasses import dataclass, field
from typing import Literal

from receiver.guard import LoadGuard
from receiver.loader import FastModelLoader
from receiver.metrics import Metrics
from receiver.references import Reference
from receiver.registry import LoadedModel, ModelSnapshot, RegistryLike
from receiver.settings import Settings
from receiver.shares import ShareReader, Shares

logger = logging.getLogger(__name__)

Trigger = Literal["webhook", "poll", "manual", "startup"]


class RefreshStatus(str, enum.Enum):
    """What a refresh did to one model."""

    RELOADED = "reloaded"    # swapped to another version
    UNCHANGED = "unchanged"  # the reference still points to the served version
    FAILED = "failed"        # resolve, load or warm-up failed; the served version stays
    ABSENT = "absent"        # nothing is at the stage or alias; the served version stays


@dataclass
class RefreshResult:
    """What one refresh did, per model name: a status and, when it failed, why."""

    status: dict[str, RefreshStatus] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # The refresh as a whole crashed before it could say anything per model.
    crash: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.crash is not None


class Models:
    def __init__(self, settings: Settings, registry: RegistryLike, metrics: Metrics) -> None:
        self._settings = settings
        self._registry = registry
        self._metrics = metrics
        self.guard = LoadGuard(registry, settings.load_timeout, metrics)
        self._cache: FastModelLoader[tuple[str, str], LoadedModel] = FastModelLoader(
            self._load, settings.cache_size, metrics, on_evict=self._evicted)
        self._served: dict[str, LoadedModel] = {}
        # Per name, the version each rollout reference points to; None when nothing is there
        # or it failed to load. Replaced as a whole on change, like `_served` entries.
        self._held: dict[str, dict[Reference, LoadedModel | None]] = {}
        self._reader = ShareReader(settings.canary, settings.shadow)
        self._shares = {name: self._reader.read(name, {}) for name in settings.model_names}
        self.last_error: str | None = None

    def served(self, name: str) -> LoadedModel | None:
        return self._served.get(name)

    def held(self, name: str, reference: Reference) -> LoadedModel | None:
        """The loaded version a rollout reference points to, if any."""
        return self._held.get(name, {}).get(reference)

    def shares(self, name: str) -> Shares:
        """The canary's and the shadow's shares of `name`'s traffic now."""
        return self._shares[name]

    def cached(self, name: str, version: str) -> LoadedModel | None:
        """A version already in the cache (counted as a hit), or None; never loads or waits."""
        return self._cache.cached((name, version))

    def get(self, name: str, version: str) -> LoadedModel:
        """Blocking: one version from the cache, or loaded into it."""
        return self._cache.get((name, version))

    def refresh_all(self, trigger: Trigger) -> RefreshResult:
        """Blocking: re-resolve every followed model and swap what changed."""
        result = RefreshResult()
        for name in self._settings.model_names:
            self._refresh(name, trigger, result)
        self.last_error = "; ".join(f"{n}: {e}" for n, e in result.errors.items()) or None
        return result

    def _refresh(self, name: str, trigger: Trigger, result: RefreshResult) -> None:
        try:
            self._metrics.registry_resolves.inc()
            snapshot = self._registry.snapshot(name)
        except Exception as exc:  # noqa: BLE001 - no answer: everything stays as it was
            self._failed(name, exc, result)
            return
        try:
            result.status[name] = self._swap(name, snapshot, trigger)
        except Exception as exc:  # noqa: BLE001 - keep serving what we have
            self._failed(name, exc, result)
        for reference in self._settings.rollout_references:
            try:
                self._hold_new(name, reference, snapshot.version(reference), trigger)
            except Exception as exc:  # the served model is never affected
                self._metrics.update_errors.inc()
                result.errors[f"{name} {reference}"] = f"{type(exc).__name__}: {exc}"
                logger.error("Could not load %s of %s for the rollout: %s", reference, name,
                             exc, exc_info=not isinstance(exc, ConnectionError))
        shares = self._reader.read(name, snapshot.tags)
        if shares != self._shares[name]:
            logger.info("Shares of %s now: %s (trigger %s)", name, shares, trigger)
            self._shares = {**self._shares, name: shares}

    def _failed(self, name: str, exc: Exception, result: RefreshResult) -> None:
        self._metrics.update_errors.inc()
        result.status[name] = RefreshStatus.FAILED
        result.errors[name] = f"{type(exc).__name__}: {exc}"
        logger.error("Model update for %s failed; still serving version %s: %s", name,
                     self._served_version(name), exc,
                     exc_info=not isinstance(exc, ConnectionError))

    def _swap(self, name: str, snapshot: ModelSnapshot, trigger: Trigger) -> RefreshStatus:
        version = snapshot.version(self._settings.followed)
        if version is None:
            logger.warning("No version of %s is at %s in MLflow; still serving version %s",
                           name, self._settings.reference, self._served_version(name))
            return RefreshStatus.ABSENT
        current = self._served.get(name)
        if current is not None and current.version == version:
            return RefreshStatus.UNCHANGED
        model = self._cache.get((name, version))
        self._served[name] = model
        self._metrics.model_version.labels(model=name).set(float(version))
        self._metrics.reloads.labels(trigger=trigger).inc()
        logger.info("Swapped to model version %s of %s (was %s, trigger %s)",
                    version, name, current.version if current else "none", trigger)
        self._drop(current)  # evicted while served: now nothing may hold it
        return RefreshStatus.RELOADED

    def _hold_new(self, name: str, reference: Reference, version: str | None,
                  trigger: Trigger) -> None:
        current = self.held(name, reference)
        if current is not None and current.version == version:
            return
        # The registry no longer points at `current`: let it go before loading, so a version
        # that fails to load leaves nothing stale behind.
        self._hold(name, reference, None)
        self._drop(current)
        if version is None:
            if current is not None:
                logger.info("No version of %s is at %s any more (was %s)", name, reference,
                            current.version)
            return
        self._hold(name, reference, self._cache.get((name, version)))
        logger.info("Holding model version %s of %s for %s, loaded and warmed up "
                    "(trigger %s)", version, name, reference, trigger)

    def _hold(self, name: str, reference: Reference, model: LoadedModel | None) -> None:
        self._held[name] = {**self._held.get(name, {}), reference: model}

    def _served_version(self, name: str) -> str:
        model = self._served.get(name)
        return model.version if model else "none"

    def _in_use(self, model: LoadedModel) -> bool:
        return self._served.get(model.name) is model or any(
            held is model for held in self._held.get(model.name, {}).values())

    def _drop(self, model: LoadedModel | None) -> None:
        """Free a model no longer served or held, unless the cache still keeps it."""
        if model is not None and model.key not in self._cache and not self._in_use(model):
            self._registry.release(model)

    def _load(self, key: tuple[str, str]) -> LoadedModel:
        model = self.guard.load(*key)
        self._metrics.load_duration.observe(model.load_seconds)
        # What is loaded by now (MLflow, the model's libraries, the model) lives on: take it out
        # of the cyclic collector's walks. A full collection walks every tracked object while
        # holding the GIL, a stall of every request in flight. Collect first, so the load's own
        # cyclic garbage is not frozen with it; that walk is a long one only the first time.
        # Frozen objects are still freed by reference counting when the cache lets a model go.
        gc.collect()
        gc.freeze()
        return model

    def _evicted(self, key: tuple[str, str], model: LoadedModel) -> None:
        """Free an evicted model's files unless it is still served or held (then the swap or
        the rollout refresh frees them). Runs after the cache's lock is let go."""
        if not self._in_use(model):
            self._registry.release(model)
