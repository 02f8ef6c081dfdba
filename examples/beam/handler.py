"""A Beam `ModelHandler` for MLflow pyfunc models, and the model object it hands RunInference.

`MlflowModelHandler("models:/fraud/Production")` resolves the stage (or alias, or takes the
fixed version), loads that version and predicts batches of rows: dicts (one row each) or
DataFrames (several rows each, one list of predictions back per frame). Batching is Beam's own
(`min_batch_size`, `max_batch_size`, `max_batch_duration_secs` go to `BatchElements`). Each
`PredictionResult.model_id` says which version scored it, as `models:/<name>/<version>`.

The model follows the registry either way Beam allows:
- through a side input: `RunInference(handler, model_metadata_pcoll=WatchMlflowRegistry(...))`
  calls `update_model_path` with the new version, then `load_model`;
- inside the worker: `follow=Follow(interval, listen=...)` swaps the version between two
  batches, from a thread that polls the registry and hears the plugin's notifications.
Either way a version that fails to download, load or warm up is never swapped in: the worker
keeps predicting with the version it had.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import pandas as pd
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult
from mlflow import MlflowClient

from examples.beam.models import LoadedVersion, Reference, load_version, resolve
from examples.beam.watch import Follow, RegistryWatch

logger = logging.getLogger(__name__)

Row = Union[Mapping[str, Any], pd.DataFrame]  # noqa: UP007 - a runtime alias on Python 3.10

# The last version that loaded in this process, per model name: what a worker keeps
# predicting with when a newer one fails to load.
_last_loaded: dict[str, ServedModel] = {}
# The stop switch of each model name's follower thread (follow mode).
_followers: dict[str, threading.Event] = {}
_last_loaded_lock = threading.Lock()


class ServedModel:
    """The version a worker predicts with; follow mode swaps it in place."""

    def __init__(self, loaded: LoadedVersion) -> None:
        self._current = loaded

    def current(self) -> LoadedVersion:
        return self._current

    def swap(self, loaded: LoadedVersion) -> None:
        previous, self._current = self._current, loaded
        logger.info("Swapped %s for %s", previous.uri, loaded.uri)

    def predict(self, rows: pd.DataFrame,
                params: dict[str, Any] | None = None) -> tuple[str, list[Any]]:
        """(the version's URI, one prediction per row): one version for the whole batch."""
        loaded = self._current  # read once: a swap during predict affects the next batch
        return loaded.uri, loaded.predict(rows, params)


class MlflowModelHandler(ModelHandler):
    def __init__(self, model_uri: str, *, follow: Follow | None = None,
                 tracking_uri: str | None = None, min_batch_size: int | None = None,
                 max_batch_size: int | None = None, max_batch_duration_secs: int | None = None,
                 large_model: bool = False) -> None:
        """`model_uri`: models:/name/3, models:/name/Production or models:/name@alias.
        `large_model`: one copy per machine shared by its processes (Beam's
        `share_model_across_processes`) instead of one per process."""
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         max_batch_duration_secs=max_batch_duration_secs,
                         large_model=large_model)
        reference = Reference.parse(model_uri)
        if follow is not None and reference.version:
            raise ValueError(f"{model_uri} names a fixed version: follow a stage or an alias")
        self._model_uri = model_uri
        self._follow = follow
        self._tracking_uri = tracking_uri

    def update_model_path(self, model_path: str | None = None) -> None:
        # RunInference passes the side input's model_id; '' means "keep the one you have".
        if model_path:
            self._model_uri = model_path

    def load_model(self) -> ServedModel:
        reference = Reference.parse(self._model_uri)
        try:
            version = resolve(MlflowClient(self._tracking_uri), reference)
            if version is None:
                raise LookupError(f"Nothing is at {reference} in the registry yet")
            if (kept := _kept(reference.name)) and kept.current().version == version:
                served = kept
            else:
                served = ServedModel(load_version(reference.name, version, self._tracking_uri))
        except Exception:
            kept = _kept(reference.name)
            if kept is None:
                raise
            logger.exception("%s did not load; still predicting with %s", reference,
                             kept.current().uri)
            return kept
        with _last_loaded_lock:
            _last_loaded[reference.name] = served
        if self._follow is not None:
            _start_following(served, reference, self._follow, self._tracking_uri)
        return served

    def run_inference(self, batch: Sequence[Row], model: ServedModel,
                      inference_args: dict[str, Any] | None = None) -> list[PredictionResult]:
        rows, sizes = _rows(batch)
        uri, predictions = model.predict(rows, inference_args)
        per_element = predictions if sizes is None else _split(predictions, sizes)
        return [PredictionResult(example, inference, uri)
                for example, inference in zip(batch, per_element, strict=True)]

    def get_metrics_namespace(self) -> str:
        return "MlflowRunInference"

    def __repr__(self) -> str:
        return f"MlflowModelHandler({self._model_uri!r}, follow={self._follow!r})"


def KeyedMlflowModelHandler(model_uri: str, **options: Any) -> KeyedModelHandler:
    """The keyed variant: elements are `(key, row)`, results `(key, PredictionResult)`, so ids
    pass through scoring untouched. Options as for MlflowModelHandler."""
    return KeyedModelHandler(MlflowModelHandler(model_uri, **options))


def _kept(name: str) -> ServedModel | None:
    with _last_loaded_lock:
        return _last_loaded.get(name)


def _rows(batch: Sequence[Row]) -> tuple[pd.DataFrame, list[int] | None]:
    """One frame for the whole batch, and each element's row count when elements are frames."""
    if all(isinstance(element, pd.DataFrame) for element in batch):
        frames = list(batch)
        return pd.concat(frames, ignore_index=True), [len(frame) for frame in frames]
    if all(isinstance(element, Mapping) for element in batch):
        return pd.DataFrame.from_records(list(batch)), None
    kinds = sorted({type(element).__name__ for element in batch})
    raise TypeError(f"MlflowModelHandler takes dicts or DataFrames, one kind per batch; "
                    f"got {', '.join(kinds)}")


def _split(predictions: list[Any], sizes: Iterable[int]) -> list[list[Any]]:
    parts, start = [], 0
    for size in sizes:
        parts.append(predictions[start:start + size])
        start += size
    return parts


def _start_following(served: ServedModel, reference: Reference, follow: Follow,
                     tracking_uri: str | None) -> None:
    """A daemon thread that swaps `served` to each new version: one per model name and
    process (a newer one replaces it)."""
    watch = RegistryWatch(reference, follow, tracking_uri)
    watch.version = served.current().version
    stop = threading.Event()
    with _last_loaded_lock:
        previous = _followers.pop(reference.name, None)
        _followers[reference.name] = stop
    if previous is not None:
        previous.set()
    threading.Thread(target=_follow, args=(served, watch, stop, tracking_uri),
                     name=f"hotswap-follow-{reference.name}", daemon=True).start()


def _follow(served: ServedModel, watch: RegistryWatch, stop: threading.Event,
            tracking_uri: str | None) -> None:
    name = watch.reference.name
    try:
        while not stop.is_set():
            watch.wait()
            version = watch.check()
            if version is None or served.current().version == version or stop.is_set():
                continue
            try:
                served.swap(load_version(name, version, tracking_uri))
            except Exception:
                logger.exception("Version %s of %s did not load; still predicting with %s",
                                 version, name, served.current().uri)
    finally:
        watch.close()


def reset() -> None:
    """Stop every follower thread and forget the kept versions of this process: for a process
    that runs several pipelines one after another (tests, notebooks)."""
    with _last_loaded_lock:
        stops = list(_followers.values())
        _followers.clear()
        _last_loaded.clear()
    for stop in stops:
        stop.set()
