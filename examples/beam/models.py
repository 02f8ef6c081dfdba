"""MLflow model references for the Beam integration: parse `models:/` URIs, ask the registry
which version a stage or alias points to, and load one version ready to predict."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel

from receiver.registry import single_threaded

logger = logging.getLogger(__name__)

# models:/name/3, models:/name/Production, models:/name@champion
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<ref>[^/@]+)|@(?P<alias>[^/@]+))$")
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}


@dataclass(frozen=True)
class Reference:
    """A registered model and what picks its version: a fixed version, a stage or an alias."""

    name: str
    version: str | None = None
    stage: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> Reference:
        match = _MODEL_URI.match(uri)
        if not match:
            raise ValueError(f"{uri!r} is not a model URI like 'models:/name/3', "
                             "'models:/name/Production' or 'models:/name@alias'")
        ref = match["ref"]
        if match["alias"]:
            return cls(match["name"], alias=match["alias"])
        if ref.isdigit():
            return cls(match["name"], version=ref)
        return cls(match["name"], stage=ref)

    @classmethod
    def following(cls, name: str, stage: str | None, alias: str | None) -> Reference:
        if (stage is None) == (alias is None):
            raise ValueError(f"Follow {name!r} by a stage or by an alias (one of the two); "
                             f"got stage={stage!r}, alias={alias!r}")
        return cls(name, stage=stage, alias=alias)

    def __str__(self) -> str:
        if self.alias:
            return f"models:/{self.name}@{self.alias}"
        return f"models:/{self.name}/{self.version or self.stage}"


def version_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def resolve(client: MlflowClient, reference: Reference) -> str | None:
    """The version `reference` points to now; None when nothing does."""
    if reference.version:
        return reference.version
    try:
        if reference.alias:
            return str(client.get_model_version_by_alias(reference.name, reference.alias).version)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # stages: deprecated, still served
            latest = client.get_latest_versions(reference.name, stages=[reference.stage])
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise
    versions = [int(v.version) for v in latest]
    return str(max(versions)) if versions else None


@dataclass(frozen=True)
class LoadedVersion:
    """One model version, loaded and warmed up."""

    name: str
    version: str
    pyfunc: PyFuncModel

    @property
    def uri(self) -> str:
        return version_uri(self.name, self.version)

    def predict(self, rows: pd.DataFrame, params: dict[str, Any] | None = None) -> list[Any]:
        """One prediction per row: a value, or a dict when the model returns columns."""
        predicted = self.pyfunc.predict(rows, params=params) if params else \
            self.pyfunc.predict(rows)
        if isinstance(predicted, pd.DataFrame):
            return list(predicted.to_dict("records"))
        return list(np.asarray(predicted).tolist())


def load_version(name: str, version: str, tracking_uri: str | None = None) -> LoadedVersion:
    """Download, load and warm up one version; raises when any of it fails, so a version that
    cannot predict is never swapped in. Its files stay until the loaded version is dropped."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    uri = version_uri(name, version)
    folder = tempfile.mkdtemp(prefix="hotswap-beam-")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
            pyfunc = mlflow.pyfunc.load_model(local)
            single_threaded(pyfunc)
            example = pyfunc.metadata.load_input_example(local)
            if example is not None:
                pyfunc.predict(example)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    loaded = LoadedVersion(name, version, pyfunc)
    weakref.finalize(loaded, shutil.rmtree, folder, True)
    logger.info("Loaded %s", uri)
    return loaded
