"""Registry: its model folder, one call's snapshot of a registered model, on MLflow's own SQLite
store in process, and Registry.load's model preparation, on a real scikit-learn model saved by
MLflow."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.pyfunc import PyFuncModel
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from receiver.references import Reference
from receiver.registry import LoadedModel, ModelSnapshot, Registry, single_threaded
from receiver.settings import Settings
from tests.support.fakes import loaded_model
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
    single_threaded(pyfunc)
    assert pyfunc.get_raw_model().get_params()["randomforestclassifier__n_jobs"] == 1
    assert (np.asarray(pyfunc.predict(frame)) == np.asarray(before)).all()


def test_a_model_not_asking_for_parallelism_is_left_alone(tmp_path: Path) -> None:
    frame, labels = training_frame(seed=1)
    pyfunc = saved(LogisticRegression().fit(frame, labels), tmp_path / "m")
    single_threaded(pyfunc)
    assert pyfunc.get_raw_model().get_params()["n_jobs"] is None


# -- what one registry call says ----------------------------------------------------------------

@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite registry (MLflow's own store, in process) with versions 1 in Production, 2 in
    Staging, 3 in no stage and @challenger on it, and a canary share tag. Returns its URI."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model("m", tags={"hotswap.canary_percent": "20"})
    for version in range(1, 4):
        client.create_model_version("m", f"s3://hotswap-tests/m/{version}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage("m", "1", "Production")
        client.transition_model_version_stage("m", "2", "Staging")
    client.set_registered_model_alias("m", "challenger", "3")
    return uri


def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the reads that reach the registry's store (over HTTP, each is one request)."""
    counted: Counter[str] = Counter()
    for method in ("get_registered_model", "get_latest_versions",
                   "get_model_version_by_alias"):
        real = getattr(SqlAlchemyStore, method)

        def counting(self: SqlAlchemyStore, *args: Any, _real: Any = real,
                     _name: str = method, **kwargs: Any) -> Any:
            counted[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(SqlAlchemyStore, method, counting)
    return counted


def test_one_call_says_every_alias_stage_and_tag(registered: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(Settings(tracking_uri=registered, model_names=("m",),
                                 prewarm=(Reference("stage", "Staging"),)))
    counted = calls(monkeypatch)
    snapshot = registry.snapshot("m")
    assert counted == {"get_registered_model": 1}
    assert snapshot.version(Reference("stage", "Production")) == "1"
    assert snapshot.version(Reference("stage", "production")) == "1"  # as MODEL_STAGE may say
    assert snapshot.version(Reference("stage", "Staging")) == "2"
    assert snapshot.version(Reference("alias", "challenger")) == "3"
    assert snapshot.version(Reference("stage", "Archived")) is None
    assert snapshot.version(Reference("alias", "champion")) is None
    assert snapshot.tags["hotswap.canary_percent"] == "20"
    registry.close()


def test_a_missing_model_is_an_empty_snapshot(registered: str) -> None:
    registry = Registry(Settings(tracking_uri=registered, model_names=("gone",)))
    assert registry.snapshot("gone") == ModelSnapshot()
    registry.close()


def test_stages_are_asked_separately_only_when_the_answer_leaves_them_out(
        registered: str, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(Settings(tracking_uri=registered, model_names=("m",)))
    real = MlflowClient.get_registered_model

    def without_latest_versions(self: MlflowClient, name: str) -> Any:
        model = real(self, name)
        model.latest_versions = []  # as a store that does not fill it answers
        return model

    monkeypatch.setattr(MlflowClient, "get_registered_model", without_latest_versions)
    counted = calls(monkeypatch)
    snapshot = registry.snapshot("m")
    # (MLflow 3's client asks get_registered_model again before get_latest_versions, to refuse
    # a prompt's name: not counted here, it is the client's own.)
    assert counted["get_latest_versions"] == 1 and counted["get_model_version_by_alias"] == 0
    assert snapshot.version(Reference("stage", "Production")) == "1"
    assert snapshot.version(Reference("alias", "challenger")) == "3"
    registry.close()


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


def test_only_the_process_that_downloaded_a_version_deletes_its_files(tmp_path: Path) -> None:
    # A worker forked from its supervisor shares the supervisor's loaded versions; their files
    # stay the supervisor's.
    registry = Registry(Settings(tracking_uri="http://127.0.0.1:9", model_names=("m",),
                                 model_dir=str(tmp_path)))
    folder = tmp_path / "m-v1"
    folder.mkdir()
    model = dataclasses.replace(loaded_model("1"), local_path=folder)
    child = os.fork()
    if child == 0:  # the worker: lets the version go
        registry.release(model)
        os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    assert folder.is_dir()
    registry.release(model)
    assert not folder.exists()


def test_a_preloaded_version_is_warmed_up_not_downloaded(tmp_path: Path) -> None:
    frame, labels = training_frame(seed=1)
    path = tmp_path / "m"
    mlflow.sklearn.save_model(LogisticRegression().fit(frame, labels), str(path),
                              input_example=frame.head(2), serialization_format="cloudpickle")
    pyfunc = mlflow.pyfunc.load_model(str(path))
    predicted, predict = [], pyfunc.predict

    def counted(*args: Any, **kwargs: Any) -> Any:
        predicted.append(len(args[0]))
        return predict(*args, **kwargs)

    pyfunc.predict = counted
    preloaded = LoadedModel(name="m", version="1", pyfunc=pyfunc, input_schema=None,
                            local_path=path, run_id=None, load_seconds=5.0)
    # Nothing answers at this address: a download would fail.
    registry = Registry(Settings(tracking_uri="http://127.0.0.1:9", model_names=("m",),
                                 model_dir=str(tmp_path / "models")), preloaded=[preloaded])
    loaded = registry.load("m", "1")
    assert loaded.pyfunc is pyfunc and predicted == [2]  # the input example, once
    assert loaded.load_seconds < 5.0  # its own warm-up's, not the supervisor's load
