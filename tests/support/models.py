"""Train small real scikit-learn models and register them through a real MLflow server."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from examples.train_model import pip_requirements

# MLflow 3 names a logged model with `name`; 2.x only knows `artifact_path` (deprecated in 3).
ARTIFACT = ({"name": "model"} if "name" in inspect.signature(mlflow.sklearn.log_model).parameters
            else {"artifact_path": "model"})

# Every server has the Default experiment; naming it keeps an experiment that another test set
# as active (examples/train_model.py does, in-process) from leaking into this server.
DEFAULT_EXPERIMENT = "0"

# Stated at each registration, so MLflow does not infer them in a subprocess (seconds a model).
REQUIREMENTS = pip_requirements()

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
        with mlflow.start_run(experiment_id=DEFAULT_EXPERIMENT):
            info = mlflow.sklearn.log_model(model, **ARTIFACT, signature=signature,
                                            input_example=example,
                                            registered_model_name=name,
                                            pip_requirements=REQUIREMENTS)
    return str(info.registered_model_version)


def register_tree_regressor(tracking_uri: str, name: str, seed: int = 0) -> str:
    """A DecisionTreeRegressor: a distinct float for nearly every row, so a prediction handed to
    the wrong request shows. Trees score each row alone, bit for bit, in any batch."""
    from sklearn.tree import DecisionTreeRegressor

    frame, _ = training_frame(seed)
    target = frame["f0"] * 3 + frame["f1"] ** 2 - frame["f2"]
    model = DecisionTreeRegressor(max_depth=10, random_state=seed).fit(frame, target)
    example = frame.head(3)
    signature = infer_signature(example, model.predict(example))
    mlflow.set_tracking_uri(tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=DEFAULT_EXPERIMENT):
            info = mlflow.sklearn.log_model(model, **ARTIFACT, signature=signature,
                                            input_example=example, registered_model_name=name,
                                            skops_trusted_types=["sklearn.tree._tree.Tree"],
                                            pip_requirements=REQUIREMENTS)
    return str(info.registered_model_version)


def register_gated_model(tracking_uri: str, name: str, factor: float) -> str:
    """A custom pyfunc (tests/support/gated_model.py) that predicts f0 * factor and holds each
    predict while the file named by HOTSWAP_TEST_GATE exists. No input example: loading it
    runs no warm-up prediction, so a closed gate cannot hold a load."""
    frame, _ = training_frame(0)
    example = frame.head(3)
    signature = infer_signature(example, (example["f0"] * factor).to_numpy())
    mlflow.set_tracking_uri(tracking_uri)
    code = Path(__file__).with_name("gated_model.py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=DEFAULT_EXPERIMENT):
            info = mlflow.pyfunc.log_model(**ARTIFACT, python_model=str(code),
                                           model_config={"factor": factor},
                                           signature=signature, registered_model_name=name,
                                           pip_requirements=REQUIREMENTS)
    return str(info.registered_model_version)


def register_challenger(tracking_uri: str, name: str, fail_every: int = 0,
                        delay: float = 0.0) -> str:
    """A challenger (tests/support/challenger_model.py) that fails on about 1 row in
    `fail_every` (0: never) or takes `delay` seconds per predict call."""
    frame, labels = training_frame(0)
    example = frame.head(3)
    signature = infer_signature(example, labels[:3])
    mlflow.set_tracking_uri(tracking_uri)
    code = Path(__file__).with_name("challenger_model.py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=DEFAULT_EXPERIMENT):
            info = mlflow.pyfunc.log_model(
                **ARTIFACT, python_model=str(code), signature=signature,
                model_config={"fail_every": fail_every, "delay": delay},
                registered_model_name=name, pip_requirements=REQUIREMENTS)
    return str(info.registered_model_version)


def register_broken_model(tracking_uri: str, name: str, code: str = "broken_model.py") -> str:
    """Register a version whose load raises, to test that a bad promotion changes nothing.

    `code` names another hostile model in tests/support: `exit_model.py` (load calls
    sys.exit), `hang_model.py` (warm-up never returns where HOTSWAP_TEST_HANG_ARMED is set).
    """
    mlflow.set_tracking_uri(tracking_uri)
    path = Path(__file__).with_name(code)
    # An input example, so the receiver warms the model up on it.
    example = training_frame(0, rows=2)[0] if code == "hang_model.py" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mlflow.start_run(experiment_id=DEFAULT_EXPERIMENT):
            info = mlflow.pyfunc.log_model(**ARTIFACT, python_model=str(path),
                                           input_example=example,
                                           registered_model_name=name,
                                           pip_requirements=REQUIREMENTS)
    return str(info.registered_model_version)


def sample_rows(n: int = 2, seed: int = 99) -> dict[str, Any]:
    """A `dataframe_split` body for the test models."""
    frame, _ = training_frame(seed, rows=n)
    return {"dataframe_split": {"columns": FEATURES, "data": frame.to_numpy().tolist()}}
