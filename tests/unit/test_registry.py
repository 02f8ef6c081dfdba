"""Registry: its model folder, and load's model preparation on a real scikit-learn model saved by
MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
from mlflow.pyfunc import PyFuncModel
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from receiver.registry import Registry, _single_threaded
from receiver.settings import Settings
from tests.support.models import training_frame


def saved(model: object, path: Path) -> PyFuncModel:
    mlflow.sklearn.save_model(model, str(path), serialization_format="cloudpickle")
    return mlflow.pyfunc.load_model(str(path))


def test_a_parallel_forest_predicts_on_one_thread_with_the_same_answers(tmp_path: Path) -> None:
    frame, labels = training_frame(seed=1)
    forest = RandomForestClassifier(n_estimators=10, n_jobs=-1, random_state=0)
    pipeline = make_pipeline(StandardScaler(), forest).fit(frame, labels)
    pyfunc = saved(pipeline, tmp_path / "m")
    before = pyfunc.predict(frame)
    _single_threaded(pyfunc)
    assert pyfunc.get_raw_model().get_params()["randomforestclassifier__n_jobs"] == 1
    assert (np.asarray(pyfunc.predict(frame)) == np.asarray(before)).all()


def test_a_model_not_asking_for_parallelism_is_left_alone(tmp_path: Path) -> None:
    frame, labels = training_frame(seed=1)
    pyfunc = saved(LogisticRegression().fit(frame, labels), tmp_path / "m")
    _single_threaded(pyfunc)
    assert pyfunc.get_raw_model().get_params()["n_jobs"] is None


def test_the_model_folder_made_at_start_is_removed_by_close(tmp_path: Path) -> None:
    made = Registry(Settings(tracking_uri="http://127.0.0.1:9", model_names=("m",)))
    root = made._model_root
    assert root.is_dir()
    made.close()
    assert not root.exists()
    given = Registry(Settings(tracking_uri="http://127.0.0.1:9", model_names=("m",),
                              model_dir=str(tmp_path / "models")))
    given.close()
    assert (tmp_path / "models").is_dir()  # the user's folder is theirs
