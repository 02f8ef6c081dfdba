"""What the supervisor of `--workers N` loads before it forks its workers: the version each
model follows, downloaded and loaded once, so that every worker serves it from memory the
workers share copy-on-write instead of loading a copy of its own.

Only flavors known to be safe to load before a fork are loaded (registry.FORK_SAFE_LOADERS:
scikit-learn's), and the supervisor never predicts: each worker warms its copy up before
serving it (a first predict may start a thread pool, OpenMP's, that a forked process inherits
broken). A head start, not a decision: each worker still asks the registry as it starts (the
registry is the truth) and takes a preloaded version only if it is still the one followed;
otherwise it loads as usual. A worker restarted later is forked from the supervisor too, so it
finds the same versions, current or not. When the supervisor does not load one (another
flavor, the registry down, a failed load), the workers start without it and load it on their
own.
"""

from __future__ import annotations

import logging

from receiver.guard import LoadGuard
from receiver.metrics import Metrics
from receiver.registry import LoadedModel, Registry, RegistryLike
from receiver.settings import Settings

logger = logging.getLogger(__name__)


class Preload:
    def __init__(self, settings: Settings, registry: RegistryLike | None = None) -> None:
        self._settings = settings
        self._registry: RegistryLike = registry or Registry(settings, before_fork=True)
        self.models: tuple[LoadedModel, ...] = ()

    def load(self) -> tuple[LoadedModel, ...]:
        """Blocking: the followed version of each model that could be loaded; never raises
        for one that could not."""
        # The supervisor's own counters: it serves no /metrics, the failure is logged.
        guard = LoadGuard(self._registry, self._settings.load_timeout, Metrics())
        loaded = []
        for name in self._settings.model_names:
            try:
                version = self._registry.snapshot(name).version(self._settings.followed)
                if version is None:
                    logger.info("No version of %s is at %s yet: nothing to load before "
                                "starting the workers", name, self._settings.reference)
                    continue
                loaded.append(guard.load(name, version))
            except Exception as exc:  # noqa: BLE001 - each worker will load it on its own
                logger.warning("%s is not loaded before starting the workers; each worker loads "
                               "it on its own: %s: %s", name, type(exc).__name__, exc)
                continue
            logger.info("Loaded version %s of %s before starting the workers, which share it",
                        version, name)
        self.models = tuple(loaded)
        return self.models

    def close(self) -> None:
        """Blocking: delete the preloaded versions' files (the workers leave them to us)."""
        for model in self.models:
            self._registry.release(model)
        self._registry.close()
