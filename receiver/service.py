"""The receiver's parts, wired together once per app. Wiring only: no HTTP, no model work."""

from __future__ import annotations

import time

from receiver.lane import ScoringLane
from receiver.metrics import Metrics
from receiver.models import Models
from receiver.pinning import PinnedModels
from receiver.registry import Registry, RegistryLike
from receiver.rollout import Router
from receiver.settings import Settings
from receiver.shadow import ShadowScorer
from receiver.threads import Limiters
from receiver.updater import ModelUpdater
from receiver.webhooks import WebhookVerifier


class Service:
    def __init__(self, settings: Settings, registry: RegistryLike | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.limiters = Limiters.create(settings.predict_threads)
        self.registry: RegistryLike = registry or Registry(settings)
        self.models = Models(settings, self.registry, self.metrics)
        self.updater = ModelUpdater(settings, self.models, self.limiters.model_work)
        self.pinned = PinnedModels(self.models, self.limiters.model_work, self.metrics)
        self.lane = ScoringLane(settings, self.limiters, self.metrics)
        self.router = Router()
        self.shadow = ShadowScorer(self.lane, self.limiters.shadow, self.metrics,
                                   settings.max_queue)
        self.verifier = WebhookVerifier(settings.webhook_secret, settings.webhook_max_age)
        self.started_at = time.monotonic()
