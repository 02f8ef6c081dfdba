"""Train small real scikit-learn models and register them through a real MLflow server."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

N_FEATURES = 4
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def training_frame(seed: int, rows: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, N_FEATURES)), columns=FEATURES)
    labels = (frame["f0"] + 0.5 * frame["f1"] > 0).astype(int).to_numpy()
    return frame, labels


def register_sklearn_model(tracking_uri: str, name: str, seed: int = 0,
                           inverted: bool = False) -> str:
    """Log a LogisticRegression with signature and input example; register it; return its version.

    `inverted` trains it on flipped labels: a version that disagrees with the others on
    (nearly) every row, for tests that compare versions.
    """
    frame, labels = training_frame(seed)
    if inverted:
        labels = 1 - labels
    model = LogisticRegression(C=1.0 + seed).fit(frame, labels)
    example = frame.head(3)
    signature = infer_signature(example, model.predict(example))
    mlflow.set_tracking_uri(tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(model, name="model", signature=signature,
                                            input_example=example,
                                            registered_model_name=name)
    return str(info.registered_model_version)


def register_broken_model(tracking_uri: str, name: str) -> str:
    """Register a version whose load raises, to test that a bad promotion changes nothing."""
    mlflow.set_tracking_uri(tracking_uri)
    code = Path(__file__).with_name("broken_model.py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code),
                                           registered_model_name=name)
    return str(info.registered_model_version)


def promote(tracking_uri: str, name: str, version: str, stage: str = "Production",
            archive_existing: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MlflowClient(tracking_uri).transition_model_version_stage(
            name, version, stage, archive_existing_versions=archive_existing)


def sample_rows(n: int = 2, seed: int = 99) -> dict[str, object]:
    """A `dataframe_split` body for the test models."""
    frame, _ = training_frame(seed, rows=n)
    return {"dataframe_split": {"columns": FEATURES, "data": frame.to_numpy().tolist()}}
