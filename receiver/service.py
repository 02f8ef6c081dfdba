"""The receiver's parts wired together: what the HTTP handlers ask for."""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.to_thread
from mlflow.exceptions import MlflowException

from receiver import scoring
from receiver.errors import ApiError
from receiver.loader import FastModelLoader
from receiver.metrics import Metrics
from receiver.registry import LoadedModel, Registry
from receiver.settings import Settings
from receiver.updater import ModelUpdater
from receiver.webhooks import WebhookVerifier


class Service:
    def __init__(self, settings: Settings, registry: Registry | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry = registry or Registry(settings)
        self.loader: FastModelLoader[tuple[str, str], LoadedModel] = FastModelLoader(
            self._load, settings.cache_size, self.metrics,
            on_evict=lambda key, model: self.updater.on_evict(key, model))
        self.updater = ModelUpdater(settings, self.registry, self.loader, self.metrics)
        self.verifier = WebhookVerifier(settings.webhook_secret, settings.webhook_max_age)
        self.started_at = time.monotonic()
        self._predict_limiter: anyio.CapacityLimiter | None = None

    async def score(self, model: LoadedModel, body: bytes, mime: str) -> bytes:
        """`predict` in a worker thread, at most `predict_threads` at once."""
        if self._predict_limiter is None:  # made on the event loop, where anyio wants it
            self._predict_limiter = anyio.CapacityLimiter(self.settings.predict_threads)
        return await anyio.to_thread.run_sync(self.predict, model, body, mime,
                                              limiter=self._predict_limiter)

    def _load(self, key: tuple[str, str]) -> LoadedModel:
        model = self.registry.load(*key)
        self.metrics.load_duration.observe(model.load_seconds)
        return model

    def served_or_503(self, name: str) -> LoadedModel:
        model = self.updater.served(name)
        if model is None:
            raise ApiError(503, "MODEL_NOT_LOADED",
                           f"No version of {name} is loaded yet "
                           f"(following {name}{self.settings.reference}); retry shortly.",
                           headers={"Retry-After": str(self.updater.retry_after())})
        return model

    def known_name_or_404(self, name: str) -> str:
        if name not in self.settings.model_names:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST",
                           f"Model {name!r} is not served here; served: "
                           f"{', '.join(self.settings.model_names)}.")
        return name

    def predict(self, model: LoadedModel, body: bytes, mime: str) -> bytes:
        """Score one request on `model`. Blocking: runs in the threadpool."""
        started = time.perf_counter()
        data, params = scoring.parse(body, mime, model.input_schema)
        try:
            raw = model.pyfunc.predict(data, params=params)
        except MlflowException as exc:  # schema enforcement speaks through MlflowException
            raise scoring.bad_request(exc.message) from None
        except Exception as exc:  # noqa: BLE001 - bad input can make any model raise
            raise scoring.bad_request(
                "The model could not score this input; check that it matches the model's "
                f"signature. {type(exc).__name__}: {exc}") from None
        content = scoring.predictions_json(raw)
        self.metrics.prediction_duration.observe(time.perf_counter() - started)
        return content

    def describe(self, name: str) -> dict[str, Any]:
        model = self.updater.served(name)
        following = ({"alias": self.settings.alias} if self.settings.alias
                     else {"stage": self.settings.stage})
        if model is None:
            return {"name": name, "version": None, **following}
        return {"name": name, "version": model.version, **following,
                "loaded_at": model.loaded_at, "load_seconds": round(model.load_seconds, 3),
                "run_id": model.run_id}
