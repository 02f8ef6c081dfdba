"""The registry store behind `hotswap+<uri>`: the real store, plus a notification after changes.

`HotswapRegistryStore("hotswap+postgresql://...")` returns an instance of a subclass of the store
MLflow itself would have built for `postgresql://...` (SqlAlchemyStore, its workspace-aware
variant, or FileStore). Being that class keeps every `isinstance` check in MLflow true, so native
webhooks, the UI and every REST endpoint behave exactly as without the plugin. Each change listed
in docs/contract.md ("Events") calls the real method first and emits only once it has returned.

A stage transition's event needs the stage the version left and, with archive_existing_versions,
the versions MLflow archived in the same transaction (it returns only the promoted one). A SQL
store's are heard as MLflow makes them (stage_changes.py): no query of ours, whatever the size
of the registry. Other stores (FileStore) look them up first through the public API.
"""

from __future__ import annotations

import logging
from typing import Any

from mlflow.store.model_registry.abstract_store import AbstractStore
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from mlflow_hotswap_plugin import compat, events, exit_hooks, stage_changes
from mlflow_hotswap_plugin.notifier import Notifier
from mlflow_hotswap_plugin.settings import TARGETS, Settings, redact

logger = logging.getLogger(__name__)

PREFIX = "hotswap+"


def real_uri(store_uri: str) -> str:
    if not store_uri.startswith(PREFIX):
        raise ValueError(f"Not a hotswap registry URI (expected '{PREFIX}<uri>'): "
                         f"{redact(store_uri)!r}")
    return store_uri[len(PREFIX):]


def _real_store_class(uri: str) -> tuple[type[AbstractStore], dict[str, Any]]:
    """The class and extra arguments MLflow's server would use for `uri` (handlers.py)."""
    if compat.uri_scheme(uri) in ("", "file"):
        from mlflow.store.model_registry.file_store import FileStore

        return FileStore, {}
    compat.check_db_uri(uri)  # raises MLflow's own error for an unsupported scheme
    return compat.sql_store_class(), compat.sql_store_kwargs()


def _number(version: Any) -> str:
    """A version as MLflow shows it: "01" (which MLflow accepts) is version "1"."""
    text = str(version).strip()
    return str(int(text)) if text.isdigit() else text


_classes: dict[type[AbstractStore], type[HotswapRegistryStore]] = {}


def _hotswap_class(real_cls: type[AbstractStore]) -> type[HotswapRegistryStore]:
    if real_cls not in _classes:
        name = f"Hotswap{real_cls.__name__}"
        _classes[real_cls] = type(name, (HotswapRegistryStore, real_cls), {"__module__": __name__})
    return _classes[real_cls]


class HotswapRegistryStore(AbstractStore):
    """Mixin over the real store class; constructing it picks that class from the URI."""

    notifier: Notifier

    def __new__(cls, store_uri: str, tracking_uri: str | None = None, *,
                settings: Settings | None = None, notifier: Notifier | None = None) -> Any:
        if cls is HotswapRegistryStore:
            real_cls, _ = _real_store_class(real_uri(store_uri))
            cls = _hotswap_class(real_cls)
        return super().__new__(cls)

    def __init__(self, store_uri: str, tracking_uri: str | None = None, *,
                 settings: Settings | None = None, notifier: Notifier | None = None) -> None:
        uri = real_uri(store_uri)
        if notifier is None:
            # Read before the real store connects: a bad setting fails the server start fast.
            notifier = Notifier(settings if settings is not None else Settings.from_env())
        real_cls, extra = _real_store_class(uri)
        real_init: Any = real_cls.__init__
        real_init(self, uri, **extra)
        self.notifier = notifier
        if notifier.targets:
            logger.info("mlflow-hotswap: notifying %d target(s) of registry changes",
                        len(notifier.targets))
            # Deliveries still queued when the process ends are logged, not lost in silence.
            exit_hooks.watch(notifier)
        else:
            logger.warning("mlflow-hotswap: %s is not set; registry changes notify no one",
                           TARGETS)

    def close(self, timeout: float = exit_hooks.EXIT_GRACE) -> None:
        """Give queued deliveries `timeout` seconds, log what is dropped, and release the exit
        hooks this store installed (the last store to close restores the previous ones)."""
        exit_hooks.unwatch(self.notifier)
        self.notifier.close(timeout)

    def _real(self) -> Any:
        """The real store's methods (MLflow's are untyped: Any keeps that in one place)."""
        return super()

    def _emit(self, event: events.Event) -> None:
        try:
            self.notifier.emit(event)
        except Exception:  # a notification must never fail a registry call that succeeded
            logger.exception("mlflow-hotswap: could not queue %s", event.name)

    # -- changes that notify ------------------------------------------------------------------

    def transition_model_version_stage(self, name: str, version: str, stage: str,
                                       archive_existing_versions: bool) -> Any:
        if self.notifier.targets and isinstance(self, SqlAlchemyStore) and self._recording:
            with stage_changes.recording() as changes:
                result = self._real().transition_model_version_stage(
                    name, version, stage, archive_existing_versions)
            before = self._recorded(result, changes)
        else:
            before = self._before_transition(name, version, stage, archive_existing_versions)
            result = self._real().transition_model_version_stage(name, version, stage,
                                                                 archive_existing_versions)
        if before is None:
            logger.warning("mlflow-hotswap: the stages of %r before this transition are "
                           "unknown; the event has no from_stage and versions it archived are "
                           "not notified", name)
        from_stage, archived = before or ("", [])
        self._emit(events.stage_transitioned(name, str(result.version), from_stage,
                                             result.current_stage))
        for other_version, other_from in archived:
            self._emit(events.stage_transitioned(name, other_version, other_from, "Archived"))
        return result

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._real().set_registered_model_alias(name, alias, version)
        self._emit(events.alias_created(name, alias, str(version)))

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self._real().delete_registered_model_alias(name, alias)
        self._emit(events.alias_deleted(name, alias))

    def delete_model_version(self, name: str, version: str) -> None:
        self._real().delete_model_version(name, version)
        self._emit(events.version_deleted(name, str(version)))

    def delete_registered_model(self, name: str) -> None:
        self._real().delete_registered_model(name)
        self._emit(events.model_deleted(name))

    def rename_registered_model(self, name: str, new_name: str) -> Any:
        result = self._real().rename_registered_model(name, new_name)
        self._emit(events.model_renamed(name, new_name))
        return result

    # Same signatures from MLflow 2.16 to 3.x: `tag` is a RegisteredModelTag / ModelVersionTag.
    # A prompt's tags (3.x) go through these too: a prompt is a registered model in the store.
    def set_registered_model_tag(self, name: str, tag: Any) -> None:
        self._real().set_registered_model_tag(name, tag)
        self._emit(events.model_tag_set(name, str(tag.key), str(tag.value)))

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self._real().delete_registered_model_tag(name, key)
        self._emit(events.model_tag_deleted(name, key))

    def set_model_version_tag(self, name: str, version: str, tag: Any) -> None:
        self._real().set_model_version_tag(name, version, tag)
        self._emit(events.version_tag_set(name, _number(version), str(tag.key), str(tag.value)))

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        self._real().delete_model_version_tag(name, version, key)
        self._emit(events.version_tag_deleted(name, _number(version), key))

    # -- helpers ------------------------------------------------------------------------------

    # SQL stores: learn the stages from the changes MLflow makes (stage_changes), until a
    # transition is seen that made none we could hear; then look them up before each one.
    _recording = True

    def _recorded(self, result: Any, changes: list[stage_changes.StageChange]
                  ) -> tuple[str, list[tuple[str, str]]] | None:
        promoted = str(result.version)
        mine = [c for c in changes if c.version == promoted and c.to_stage == result.current_stage]
        if not mine:
            self._recording = False
            logger.warning("mlflow-hotswap: this MLflow changed a stage without our hearing it; "
                           "stages are looked up before each transition from now on")
            return None
        archived = sorted(((c.version, c.from_stage) for c in changes
                           if c.version != promoted and c.to_stage == "Archived"),
                          key=lambda row: int(row[0]))
        return mine[-1].from_stage, archived

    def _before_transition(self, name: str, version: str, stage: str,
                           archive: bool) -> tuple[str, list[tuple[str, str]]] | None:
        """The version's stage now, and (when archiving) the other versions in the target stage;
        None when they cannot be read.

        MLflow archives those in the same transaction and returns only the promoted version, so
        they are looked up first. A failed look-up costs those events, never the transition
        (which, for a bad name, version or stage, raises MLflow's own error).
        """
        if not self.notifier.targets:
            return "", []
        try:
            target_stage = compat.canonical_stage(stage) if archive else None
            if isinstance(self, SqlAlchemyStore):
                rows = self._sql_stages(name, int(version), target_stage)
            else:
                rows = self._searched_stages(name, str(version), target_stage)
        except Exception:
            logger.debug("mlflow-hotswap: look-up before transitioning %r %r failed", name,
                         version, exc_info=True)
            return None
        from_stage = rows.pop(str(int(version)), "")
        return from_stage, sorted(rows.items(), key=lambda row: int(row[0]))

    def _sql_stages(self, name: str, version: int,
                    target_stage: str | None) -> dict[str, str]:
        """{version: stage} of `version` and the versions in `target_stage`: one query on the
        (name, version) key, the rows MLflow's own archiving reads, so the cost does not grow
        with the registry."""
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
        from sqlalchemy import or_

        wanted: Any = SqlModelVersion.version == version
        if target_stage is not None:
            wanted = or_(wanted, SqlModelVersion.current_stage == target_stage)
        with compat.primary_session(self) as session:
            rows = (compat.scoped_query(self, session, SqlModelVersion)
                    .filter(SqlModelVersion.name == name, wanted)
                    .with_entities(SqlModelVersion.version, SqlModelVersion.current_stage)
                    .all())
        return {str(number): str(current) for number, current in rows}

    def _searched_stages(self, name: str, version: str,
                         target_stage: str | None) -> dict[str, str]:
        """The same through the public API, for stores without SQL (FileStore, which reads
        every version of the model for a transition anyway)."""
        real = self._real()
        promoted = real.get_model_version(name, version)
        version = str(promoted.version)
        stages = {version: promoted.current_stage}
        if target_stage is None:
            return stages
        quote = '"' if "'" in name else "'"
        token = None
        while True:
            page = real.search_model_versions(filter_string=f"name = {quote}{name}{quote}",
                                              max_results=1000, page_token=token)
            stages.update((str(mv.version), mv.current_stage) for mv in page
                          if mv.current_stage == target_stage and str(mv.version) != version)
            token = page.token
            if not token:
                return stages
