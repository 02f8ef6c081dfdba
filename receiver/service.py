"""The receiver's parts, wired together once per app. Wiring only: no HTTP, no model work."""

from __future__ import annotations

import time
from collections.abc import Sequence

from receiver.host import HostState, WorkerSeat
from receiver.lane import ScoringLane
from receiver.metrics import Metrics
from receiver.models import Models, RefreshResult
from receiver.pinning import PinnedModels
from receiver.registry import LoadedModel, Registry, RegistryLike
from receiver.relay import WorkerLink
from receiver.rollout import Router
from receiver.settings import Settings
from receiver.shadow import ShadowScorer
from receiver.threads import Limiters
from receiver.updater import ModelUpdater
from receiver.webhooks import WebhookVerifier


class Service:
    """`seat` and `preloaded`: given to a worker process by its supervisor (`--workers N`): its
    place among the workers, and the versions the supervisor loaded before forking it."""

    def __init__(self, settings: Settings, registry: RegistryLike | None = None,
                 metrics: Metrics | None = None, seat: WorkerSeat | None = None,
                 preloaded: Sequence[LoadedModel] = ()) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(multiprocess=seat is not None)
        self.limiters = Limiters.create(settings.predict_threads)
        self.registry: RegistryLike = registry or Registry(settings, preloaded)
        self.models = Models(settings, self.registry, self.metrics)
        # A worker's poll is timed by its supervisor, once for the whole host.
        self.updater = ModelUpdater(settings, self.models, self.limiters.model_work,
                                    polls=seat is None)
        self.pinned = PinnedModels(self.models, self.limiters.model_work, self.metrics)
        self.lane = ScoringLane(settings, self.limiters, self.metrics)
        self.router = Router()
        self.shadow = ShadowScorer(self.lane, self.limiters.shadow, self.metrics,
                                   settings.max_queue)
        self.verifier = WebhookVerifier(settings.webhook_secret, settings.webhook_max_age)
        self.started_at = time.monotonic()
        self.host = HostState(seat) if seat is not None else None
        self.link = (WorkerLink(seat.link, settings, self.models, self.updater)
                     if seat is not None else None)
        if self.host is not None:
            self.updater.on_refresh(self._publish)

    def _publish(self, _: RefreshResult) -> None:
        assert self.host is not None
        self.host.publish({name: getattr(self.models.served(name), "version", None)
                           for name in self.settings.model_names})
