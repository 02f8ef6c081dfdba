"""Everything the receiver asks of MLflow: what a registered model's aliases, stages and tags say
(one call), and downloading, loading and warming up one model version. Blocking: call from
worker threads."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from receiver import compat
from receiver.references import Reference
from receiver.settings import Settings

logger = logging.getLogger(__name__)

_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


class ModelNotFound(LookupError):
    """The registered model or version does not exist in the registry."""


class RegistryUnavailable(ConnectionError):
    """MLflow could not be asked, or refused to answer."""


class ModelLoadFailed(RuntimeError):
    """A version exists but could not be downloaded, loaded or warmed up."""


class NotForkSafe(ModelLoadFailed):
    """A version a supervisor leaves to its workers: its flavor is not known to be safe to load
    before a fork."""


# Flavors whose load makes plain objects and arrays, nothing a forked process could not use.
# Others may start threads (ONNX Runtime's session, TensorFlow) or open connections (a custom
# pyfunc's load_context) as they load: after a fork the workers would share the connection,
# or wait for threads that are not there.
FORK_SAFE_LOADERS = frozenset({"mlflow.sklearn"})


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    pyfunc: PyFuncModel
    input_schema: Schema | None
    local_path: Path
    run_id: str | None
    load_seconds: float
    loaded_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    # The process that downloaded the files, the only one that deletes them: a worker forked
    # from its supervisor shares the supervisor's loaded versions, not their files.
    owner_pid: int = field(default_factory=os.getpid)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)


@dataclass(frozen=True)
class ModelSnapshot:
    """What the registry says of one registered model at one moment: the version each alias
    and each stage points to, and the model's tags. Empty for a model that does not exist."""

    aliases: Mapping[str, str] = field(default_factory=dict)
    stages: Mapping[str, str] = field(default_factory=dict)  # lower-cased stage -> version
    tags: Mapping[str, str] = field(default_factory=dict)

    def version(self, reference: Reference) -> str | None:
        """The version `reference` points to; None when nothing is there."""
        if reference.kind == "alias":
            return self.aliases.get(reference.name)
        # MLflow matches stage names case-insensitively (MODEL_STAGE=production works).
        return self.stages.get(reference.name.lower())


def latest_by_stage(versions: Iterable[Any]) -> dict[str, str]:
    """{stage (lower case): the highest version in it} from MLflow ModelVersion entities."""
    latest: dict[str, int] = {}
    for version in versions:
        stage = str(version.current_stage).lower()
        latest[stage] = max(latest.get(stage, 0), int(version.version))
    return {stage: str(number) for stage, number in latest.items()}


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code in _NOT_FOUND_CODES


# MLflow's client retries a failed call for minutes by default; the updater has its own
# back-off (5, 10, 30, 60 s), so a call fails fast and the updater decides. Users may override.
_MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class RegistryLike(Protocol):
    """What the receiver's parts ask of a registry: `Registry` asks MLflow, tests pass a fake.
    Every method blocks: call them through `threads.run`."""

    def snapshot(self, name: str) -> ModelSnapshot: ...

    def load(self, name: str, version: str) -> LoadedModel: ...

    def release(self, model: LoadedModel) -> None: ...

    def close(self) -> None: ...


class Registry:
    """Under `--workers N`: `before_fork`, the supervisor's, loads only the flavors of
    FORK_SAFE_LOADERS and never predicts (a first predict may start a thread pool that a
    forked process inherits broken; OpenMP's hangs in it); `preloaded`, a worker's, are the
    versions its supervisor loaded, which `load` warms up rather than downloads again."""

    def __init__(self, settings: Settings, preloaded: Iterable[LoadedModel] = (),
                 before_fork: bool = False) -> None:
        for key, value in _MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(key, value)
        self._settings = settings
        self._preloaded = {model.key: model for model in preloaded}
        self._before_fork = before_fork
        self._client = MlflowClient(settings.tracking_uri, settings.registry_uri)
        references = (settings.followed, *settings.rollout_references)
        self._stages = [r.name for r in references if r.kind == "stage"]
        # A folder we made is ours to remove at shutdown; HOTSWAP_MODEL_DIR is the user's.
        self._owns_root = not settings.model_dir
        root = settings.model_dir or tempfile.mkdtemp(prefix="hotswap-models-")
        self._model_root = Path(root)
        try:
            self._model_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # serve nothing yet rather than not start: loads will say why
            logger.error("The model folder %s cannot be made: %s", root, exc)

    def close(self) -> None:
        """Blocking: remove the model folder made at start (every version's download too)."""
        if self._owns_root:
            shutil.rmtree(self._model_root, ignore_errors=True)
            logger.info("Removed the model folder %s", self._model_root)

    def snapshot(self, name: str) -> ModelSnapshot:
        """Blocking: the aliases, stages and tags of `name`, from one `get_registered_model`.

        Its `latest_versions` holds the newest version of every stage in use (SQL and file
        stores, MLflow 2.16 to 3.x). Only when it is empty while a stage is followed, as from a
        store that leaves it out, is `get_latest_versions` asked as well.
        """
        try:
            model = self._client.get_registered_model(name)
            stages = latest_by_stage(model.latest_versions or ())
            if not stages and self._stages:
                stages = self._latest_versions(name)
        except MlflowException as exc:
            if is_not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
                return ModelSnapshot()
            raise
        return ModelSnapshot(aliases={a: str(v) for a, v in (model.aliases or {}).items()},
                             stages=stages, tags=dict(model.tags or {}))

    def _latest_versions(self, name: str) -> dict[str, str]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages are in our contract
            return latest_by_stage(self._client.get_latest_versions(name, stages=self._stages))

    def load(self, name: str, version: str) -> LoadedModel:
        """Blocking: download, load and warm up one version (only warm up a preloaded one).
        Raises ModelNotFound if it does not exist."""
        preloaded = self._preloaded.get((name, version))
        if preloaded is not None:
            return self._warmed_up(preloaded)
        try:
            model_version = self._client.get_model_version(name, version)
        except MlflowException as exc:
            if is_not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
                raise ModelNotFound(f"Model {name!r} has no version {version!r}.") from exc
            raise
        if self._before_fork:
            loader = self._loader_module(name, version)
            if loader not in FORK_SAFE_LOADERS:
                raise NotForkSafe(f"{name} version {version} loads with {loader}, not known to "
                                  "be safe to load before a fork")
        logger.info("Loading model %s version %s from MLflow", name, version)
        started = time.perf_counter()
        folder = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-v{version}-{uuid.uuid4().hex[:8]}")
        destination = self._model_root / folder
        try:
            local = compat.download_model(
                name, version, str(destination), self._settings.tracking_uri,
                self._settings.registry_uri or self._settings.tracking_uri)
            pyfunc = mlflow.pyfunc.load_model(local)
            single_threaded(pyfunc)
            if not self._before_fork:
                _warm_up(pyfunc, local)
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
        seconds = time.perf_counter() - started
        logger.info("Model loaded successfully in %.1fs", seconds)
        return LoadedModel(name=name, version=str(version), pyfunc=pyfunc,
                           input_schema=pyfunc.metadata.get_input_schema(),
                           local_path=destination, run_id=model_version.run_id,
                           load_seconds=seconds)

    def _loader_module(self, name: str, version: str) -> str | None:
        """Blocking: the module that loads this version as a pyfunc, from its MLmodel alone."""
        with tempfile.TemporaryDirectory(dir=self._model_root) as folder:
            path = compat.download_model(
                name, version, folder, self._settings.tracking_uri,
                self._settings.registry_uri or self._settings.tracking_uri, path=MLMODEL_FILE_NAME)
            pyfunc = Model.load(path).flavors.get("python_function", {})
        loader = pyfunc.get("loader_module")
        return str(loader) if loader is not None else None

    def _warmed_up(self, model: LoadedModel) -> LoadedModel:
        logger.info("Warming up model %s version %s, loaded before this worker started",
                    model.name, model.version)
        started = time.perf_counter()
        # A models:/ download writes the version's files straight into the folder it is given.
        _warm_up(model.pyfunc, str(model.local_path))
        return dataclasses.replace(model, load_seconds=time.perf_counter() - started)

    def release(self, model: LoadedModel) -> None:
        """Blocking: delete a model's downloaded files once nothing serves or caches it; another
        process's (the supervisor's, `--workers N`) are left to it."""
        if model.owner_pid != os.getpid():
            return
        shutil.rmtree(model.local_path, ignore_errors=True)
        logger.info("Cleaned up model version %s of %s", model.version, model.name)


def single_threaded(pyfunc: PyFuncModel) -> None:
    """Make each predict run on one thread.

    A scikit-learn estimator fitted with n_jobs=-1 (a RandomForest, or one inside a Pipeline)
    starts a joblib thread pool on every predict, which costs several times the work itself
    on a small forest (bench/'s profile shows both). The server already predicts requests in
    parallel, so that pool only adds overhead and contention.
    """
    try:
        raw = pyfunc.get_raw_model()
        params = raw.get_params(deep=True)
    except Exception:  # noqa: BLE001 - not a scikit-learn model: nothing to do
        return
    updates = {key: 1 for key, value in params.items()
               if (key == "n_jobs" or key.endswith("__n_jobs")) and value not in (None, 1)}
    if updates:
        try:
            raw.set_params(**updates)
            logger.info("Predicting on one thread per request (was %s)", updates)
        except Exception:  # keep the model as it is
            logger.warning("Could not set n_jobs=1 on the model", exc_info=True)


def _warm_up(pyfunc: PyFuncModel, local_path: str) -> None:
    """One prediction on the saved input example, so the first request is not the slow one and
    a model that loads but cannot predict is never swapped in."""
    example: Any = pyfunc.metadata.load_input_example(local_path)
    if example is None:
        return
    params = pyfunc.metadata.load_input_example_params(local_path)
    pyfunc.predict(example, params=params)
