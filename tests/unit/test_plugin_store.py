from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag, RegisteredModelTag
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.file_store import FileStore
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from sqlalchemy import event

from mlflow_hotswap_plugin import compat, stage_changes
from mlflow_hotswap_plugin.events import Event
from mlflow_hotswap_plugin.notifier import Notifier
from mlflow_hotswap_plugin.settings import ConfigError, Settings
from mlflow_hotswap_plugin.store import HotswapRegistryStore
from tests.support.bulk import bulk_versions


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(Settings(targets=("http://receiver.invalid/webhooks/mlflow",)))
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def taken(self) -> list[tuple[str, dict[str, str]]]:
        taken = [(e.name, e.data) for e in self.events]
        self.events.clear()
        return taken


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotswapRegistryStore]:
    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    store = HotswapRegistryStore(f"hotswap+sqlite:///{db}", notifier=RecordingNotifier())
    yield store
    store.close(timeout=0)  # releases the exit hooks the store installed


@pytest.fixture
def notes(store: HotswapRegistryStore) -> RecordingNotifier:
    notifier = store.notifier
    assert isinstance(notifier, RecordingNotifier)
    notifier.events.clear()
    return notifier


def new_model(store: HotswapRegistryStore, name: str, versions: int) -> None:
    store.create_registered_model(name)
    for _ in range(versions):
        store.create_model_version(name, source=f"/tmp/{name}/model")


def transition(store: HotswapRegistryStore, name: str, version: str, stage: str,
               archive: bool = False) -> ModelVersion:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return store.transition_model_version_stage(name, version, stage, archive)


def test_is_the_real_store_class(store: HotswapRegistryStore, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow checks isinstance(store, SqlAlchemyStore) (webhooks) and FileStore.
    assert isinstance(store, SqlAlchemyStore) and isinstance(store, HotswapRegistryStore)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own opt-in for file stores
    file_store = HotswapRegistryStore(f"hotswap+file://{tmp_path}", notifier=RecordingNotifier())
    assert isinstance(file_store, FileStore) and isinstance(file_store, HotswapRegistryStore)


def test_rejects_uris_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Not a hotswap registry URI"):
        HotswapRegistryStore(f"sqlite:///{tmp_path}/x.db", notifier=RecordingNotifier())
    with pytest.raises(MlflowException):
        HotswapRegistryStore("hotswap+nosuchdb://x/y", notifier=RecordingNotifier())


def test_bad_settings_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOTSWAP_TIMEOUT"):
        HotswapRegistryStore(f"hotswap+sqlite:///{tmp_path}/x.db",
                             settings=Settings.from_env({"HOTSWAP_TIMEOUT": "soon"}))


def test_stage_transition(store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "stages", 1)
    result = transition(store, "stages", "1", "staging")
    assert result.current_stage == "Staging"
    transition(store, "stages", "1", "Production")
    assert notes.taken() == [
        ("model_version.stage_transitioned",
         {"name": "stages", "version": "1", "from_stage": "None", "to_stage": "Staging"}),
        ("model_version.stage_transitioned",
         {"name": "stages", "version": "1", "from_stage": "Staging", "to_stage": "Production"}),
    ]


def test_archive_existing_versions_notifies_each_archived_version(
        store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "archiving", 4)
    transition(store, "archiving", "1", "Production")
    transition(store, "archiving", "2", "Production")
    transition(store, "archiving", "3", "Staging")
    notes.taken()
    transition(store, "archiving", "4", "Production", archive=True)
    taken = notes.taken()
    assert taken[0] == ("model_version.stage_transitioned",
                        {"name": "archiving", "version": "4", "from_stage": "None",
                         "to_stage": "Production"})
    assert sorted(taken[1:], key=lambda item: item[1]["version"]) == [
        ("model_version.stage_transitioned",
         {"name": "archiving", "version": v, "from_stage": "Production", "to_stage": "Archived"})
        for v in ("1", "2")]
    stages = {str(mv.version): mv.current_stage
              for mv in store.search_model_versions("name = 'archiving'")}
    assert stages == {"1": "Archived", "2": "Archived", "3": "Staging", "4": "Production"}


def test_names_with_quotes_still_find_archived_versions(
        store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "it's", 2)
    transition(store, "it's", "1", "Staging")
    transition(store, "it's", "2", "Staging", archive=True)
    assert [e[1]["version"] for e in notes.taken()] == ["1", "2", "1"]


def test_aliases_and_deletions(store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "aliases", 2)
    store.set_registered_model_alias("aliases", "champion", "2")
    store.delete_registered_model_alias("aliases", "champion")
    store.delete_model_version("aliases", "1")
    store.rename_registered_model("aliases", "aliases2")
    store.delete_registered_model("aliases2")
    assert notes.taken() == [
        ("model_version_alias.created", {"name": "aliases", "alias": "champion", "version": "2"}),
        ("model_version_alias.deleted", {"name": "aliases", "alias": "champion"}),
        ("model_version.deleted", {"name": "aliases", "version": "1"}),
        ("registered_model.renamed", {"name": "aliases", "new_name": "aliases2"}),
        ("registered_model.deleted", {"name": "aliases2"}),
    ]


def test_tag_changes(store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "tags", 2)
    store.set_registered_model_tag("tags", RegisteredModelTag("hotswap.canary_percent", "25"))
    store.delete_registered_model_tag("tags", "hotswap.canary_percent")
    store.set_model_version_tag("tags", "02", ModelVersionTag("hotswap.rollout", "running at 5 %"))
    store.delete_model_version_tag("tags", "2", "hotswap.rollout")
    assert notes.taken() == [
        ("registered_model_tag.set",
         {"name": "tags", "key": "hotswap.canary_percent", "value": "25"}),
        ("registered_model_tag.deleted", {"name": "tags", "key": "hotswap.canary_percent"}),
        ("model_version_tag.set",
         {"name": "tags", "version": "2", "key": "hotswap.rollout", "value": "running at 5 %"}),
        ("model_version_tag.deleted", {"name": "tags", "version": "2", "key": "hotswap.rollout"}),
    ]
    assert store.get_registered_model("tags").tags == {}


def test_a_failed_call_emits_nothing(store: HotswapRegistryStore,
                                     notes: RecordingNotifier) -> None:
    new_model(store, "failing", 1)
    failing_calls = [
        lambda: transition(store, "failing", "9", "Production"),
        lambda: transition(store, "failing", "1", "Archived", archive=True),
        lambda: transition(store, "failing", "1", "Nowhere"),
        lambda: store.set_registered_model_alias("failing", "champion", "9"),
        lambda: store.delete_model_version("failing", "9"),
        lambda: store.delete_registered_model("missing"),
        lambda: store.rename_registered_model("missing", "other"),
        lambda: store.set_registered_model_tag("missing", RegisteredModelTag("k", "v")),
        lambda: store.delete_registered_model_tag("missing", "k"),
        lambda: store.set_model_version_tag("failing", "9", ModelVersionTag("k", "v")),
        lambda: store.delete_model_version_tag("failing", "9", "k"),
    ]
    for call in failing_calls:
        with pytest.raises(MlflowException):
            call()
    assert notes.taken() == []


def test_a_notifier_that_raises_never_fails_the_call(store: HotswapRegistryStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("notifier bug")

    new_model(store, "robust", 1)
    monkeypatch.setattr(store.notifier, "emit", broken)
    assert transition(store, "robust", "1", "Production").current_stage == "Production"
    store.set_registered_model_alias("robust", "champion", "1")
    assert str(store.get_model_version_by_alias("robust", "champion").version) == "1"


@pytest.mark.parametrize("scheme", [
    "hotswap+sqlite", "hotswap+postgresql", "hotswap+postgresql+psycopg2", "hotswap+mysql",
    "hotswap+mysql+pymysql", "hotswap+mssql", "hotswap+mssql+pyodbc", "hotswap+file"])
def test_mlflow_finds_the_plugin_for_each_scheme(scheme: str) -> None:
    from mlflow.tracking._model_registry.utils import _get_store_registry

    builder = _get_store_registry().get_store_builder(f"{scheme}://host/db")
    assert builder is HotswapRegistryStore


# -- the look-up before a transition: one query, whatever the number of versions ---------------

@contextmanager
def count_selects(store: Any) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    engine = store.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("versions", [5, 3000])
def test_a_transition_costs_no_query_beyond_mlflows_own_whatever_the_models_size(
        store: HotswapRegistryStore, notes: RecordingNotifier, versions: int) -> None:
    name = f"sized-{versions}"
    bulk_versions(store, name, versions)
    transition(store, name, "1", "Production")
    transition(store, name, "2", "Production")
    transition(store, name, "5", "Staging")
    notes.taken()
    plain: Any = SqlAlchemyStore(store.db_uri)  # type: ignore[attr-defined]
    with count_selects(store) as through_plugin:
        transition(store, name, "3", "Production", archive=True)
    with count_selects(plain) as through_mlflow:
        transition(plain, name, "4", "Production", archive=True)
    assert len(through_plugin) == len(through_mlflow)
    assert notes.taken() == [
        ("model_version.stage_transitioned",
         {"name": name, "version": "3", "from_stage": "None", "to_stage": "Production"}),
        ("model_version.stage_transitioned",
         {"name": name, "version": "1", "from_stage": "Production", "to_stage": "Archived"}),
        ("model_version.stage_transitioned",
         {"name": name, "version": "2", "from_stage": "Production", "to_stage": "Archived"}),
    ]


@pytest.mark.parametrize("versions", [3, 3000])
def test_the_fallback_look_up_is_one_query_on_the_model(
        store: HotswapRegistryStore, notes: RecordingNotifier, versions: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"looked-up-{versions}"
    bulk_versions(store, name, versions)
    transition(store, name, "1", "Production")
    transition(store, name, "2", "Production")
    notes.taken()

    def no_listing(*args: object, **kwargs: object) -> None:
        raise AssertionError("the plugin listed the model's versions")

    monkeypatch.setattr(store, "_recording", False)
    monkeypatch.setattr(store, "search_model_versions", no_listing)
    with count_selects(store) as selects:
        looked_up = store._before_transition(name, "3", "Production", True)
    [query] = selects
    assert "model_versions.name = " in query and "current_stage" in query
    assert looked_up == ("None", [("1", "Production"), ("2", "Production")])


def test_a_store_that_changes_stages_unheard_falls_back_to_looking_up(
        store: HotswapRegistryStore, notes: RecordingNotifier, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    new_model(store, "unheard", 3)
    transition(store, "unheard", "1", "Staging")
    notes.taken()

    @contextmanager
    def deaf() -> Iterator[list[object]]:
        yield []  # as if a future MLflow moved stages with a bulk UPDATE

    monkeypatch.setattr(stage_changes, "recording", deaf)
    monkeypatch.setattr(store, "_recording", True)
    transition(store, "unheard", "2", "Staging", archive=True)
    assert "changed a stage without our hearing it" in caplog.text
    assert notes.taken() == [("model_version.stage_transitioned",
                              {"name": "unheard", "version": "2", "from_stage": "",
                               "to_stage": "Staging"})]
    transition(store, "unheard", "3", "Staging", archive=True)
    assert notes.taken() == [
        ("model_version.stage_transitioned",
         {"name": "unheard", "version": "3", "from_stage": "None", "to_stage": "Staging"}),
        ("model_version.stage_transitioned",
         {"name": "unheard", "version": "2", "from_stage": "Staging", "to_stage": "Archived"})]


def test_another_models_versions_in_the_stage_are_not_archived_events(
        store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "mine", 2)
    new_model(store, "theirs", 1)
    transition(store, "theirs", "1", "Staging")
    transition(store, "mine", "1", "Staging")
    notes.taken()
    transition(store, "mine", "2", "Staging", archive=True)
    assert [(d["name"], d["version"], d["to_stage"]) for _, d in notes.taken()] == [
        ("mine", "2", "Staging"), ("mine", "1", "Archived")]


def test_a_version_spelled_with_leading_zeros_gets_its_from_stage(
        store: HotswapRegistryStore, notes: RecordingNotifier) -> None:
    new_model(store, "zeros", 1)
    transition(store, "zeros", "1", "Staging")
    notes.taken()
    transition(store, "zeros", "01", "Production")
    assert notes.taken() == [("model_version.stage_transitioned",
                              {"name": "zeros", "version": "1", "from_stage": "Staging",
                               "to_stage": "Production"})]


def test_a_failed_look_up_before_a_transition_that_succeeds_is_logged(
        store: HotswapRegistryStore, notes: RecordingNotifier, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    new_model(store, "lookup", 1)

    def broken(*args: object) -> dict[str, str]:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(store, "_recording", False)
    monkeypatch.setattr(store, "_sql_stages", broken)
    transition(store, "lookup", "1", "Staging", archive=True)
    assert notes.taken() == [("model_version.stage_transitioned",
                              {"name": "lookup", "version": "1", "from_stage": "",
                               "to_stage": "Staging"})]
    assert "the stages of 'lookup' before this transition are unknown" in caplog.text


def test_file_store_archives_are_notified_too(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    notes = RecordingNotifier()
    store = HotswapRegistryStore(f"hotswap+file://{tmp_path}", notifier=notes)
    new_model(store, "files", 3)
    transition(store, "files", "1", "Production")
    transition(store, "files", "2", "Staging")
    notes.taken()
    transition(store, "files", "3", "Production", archive=True)
    assert notes.taken() == [
        ("model_version.stage_transitioned",
         {"name": "files", "version": "3", "from_stage": "None", "to_stage": "Production"}),
        ("model_version.stage_transitioned",
         {"name": "files", "version": "1", "from_stage": "Production", "to_stage": "Archived"}),
    ]


# -- compat: the store MLflow's server would build ----------------------------------------------

def test_compat_builds_the_store_the_server_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES", raising=False)
    assert compat.sql_store_class() is SqlAlchemyStore
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    expected: type = SqlAlchemyStore
    try:
        from mlflow.store.model_registry.sqlalchemy_workspace_store import (
            WorkspaceAwareSqlAlchemyStore,
        )
        expected = WorkspaceAwareSqlAlchemyStore
    except ImportError:  # MLflow 2.x has no workspaces: the variable means nothing there
        pass
    assert compat.sql_store_class() is expected
    kwargs = compat.sql_store_kwargs()
    assert set(kwargs) <= {"read_db_uri"}
