"""The registry store behind `hotswap+<uri>`: the real store, plus a notification after changes.

`HotswapRegistryStore("hotswap+postgresql://...")` returns an instance of a subclass of the store
MLflow itself would have built for `postgresql://...` (SqlAlchemyStore, its workspace-aware
variant, or FileStore). Being that class keeps every `isinstance` check in MLflow true, so native
webhooks, the UI and every REST endpoint behave exactly as without the plugin. Each change listed
in DESIGN.md calls the real method first and emits only once it has returned.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

from mlflow.entities.model_registry.model_version_stages import get_canonical_stage
from mlflow.store.model_registry.abstract_store import AbstractStore
from mlflow.utils.uri import extract_db_type_from_uri, get_uri_scheme

from mlflow_hotswap_plugin import events
from mlflow_hotswap_plugin.notifier import Notifier
from mlflow_hotswap_plugin.settings import TARGETS, Settings

logger = logging.getLogger(__name__)

PREFIX = "hotswap+"


def real_uri(store_uri: str) -> str:
    if not store_uri.startswith(PREFIX):
        raise ValueError(f"Not a hotswap registry URI (expected '{PREFIX}<uri>'): {store_uri!r}")
    return store_uri[len(PREFIX):]


def _real_store_class(uri: str) -> tuple[type[AbstractStore], dict[str, Any]]:
    """The class and extra arguments MLflow's server would use for `uri` (handlers.py)."""
    if get_uri_scheme(uri) in ("", "file"):
        from mlflow.store.model_registry.file_store import FileStore

        return FileStore, {}
    extract_db_type_from_uri(uri)  # raises MLflow's own error for an unsupported scheme
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store_cls: type[AbstractStore] = SqlAlchemyStore
    if MLFLOW_ENABLE_WORKSPACES.get():
        from mlflow.store.model_registry.sqlalchemy_workspace_store import (
            WorkspaceAwareSqlAlchemyStore,
        )

        store_cls = WorkspaceAwareSqlAlchemyStore
    return store_cls, {"read_db_uri": os.environ.get(READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)}


@lru_cache(maxsize=None)
def _hotswap_class(real_cls: type[AbstractStore]) -> type[HotswapRegistryStore]:
    name = f"Hotswap{real_cls.__name__}"
    return type(name, (HotswapRegistryStore, real_cls), {"__module__": __name__})


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
        real_cls.__init__(self, uri, **extra)  # type: ignore[misc]
        self.notifier = notifier
        if notifier.targets:
            logger.info("mlflow-hotswap: notifying %d target(s) of registry changes",
                        len(notifier.targets))
        else:
            logger.warning("mlflow-hotswap: %s is not set; registry changes notify no one",
                           TARGETS)

    def _emit(self, event: events.Event) -> None:
        try:
            self.notifier.emit(event)
        except Exception:  # a notification must never fail a registry call that succeeded
            logger.exception("mlflow-hotswap: could not queue %s", event.name)

    # -- changes that notify ------------------------------------------------------------------

    def transition_model_version_stage(self, name: str, version: str, stage: str,
                                       archive_existing_versions: bool) -> Any:
        from_stage, archived = self._before_transition(name, version, stage,
                                                       archive_existing_versions)
        result = super().transition_model_version_stage(name, version, stage,
                                                        archive_existing_versions)
        self._emit(events.stage_transitioned(name, str(result.version), from_stage,
                                             result.current_stage))
        for other_version, other_from in archived:
            self._emit(events.stage_transitioned(name, other_version, other_from, "Archived"))
        return result

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        super().set_registered_model_alias(name, alias, version)
        self._emit(events.alias_created(name, alias, str(version)))

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        super().delete_registered_model_alias(name, alias)
        self._emit(events.alias_deleted(name, alias))

    def delete_model_version(self, name: str, version: str) -> None:
        super().delete_model_version(name, version)
        self._emit(events.version_deleted(name, str(version)))

    def delete_registered_model(self, name: str) -> None:
        super().delete_registered_model(name)
        self._emit(events.model_deleted(name))

    def rename_registered_model(self, name: str, new_name: str) -> Any:
        result = super().rename_registered_model(name, new_name)
        self._emit(events.model_renamed(name, new_name))
        return result

    # -- helpers ------------------------------------------------------------------------------

    def _before_transition(self, name: str, version: str, stage: str,
                           archive: bool) -> tuple[str, list[tuple[str, str]]]:
        """The version's stage now, and (when archiving) the other versions in the target stage.

        MLflow archives those in the same transaction and returns only the promoted version, so
        they are looked up first. A failed look-up costs those events, never the transition.
        """
        if not self.notifier.targets:
            return "", []
        try:
            from_stage = self.get_model_version(name, version).current_stage
        except Exception:
            return "", []  # the transition itself will raise MLflow's error for this
        if not archive:
            return from_stage, []
        try:
            canonical = get_canonical_stage(stage)
            archived = [(str(mv.version), mv.current_stage)
                        for mv in self._all_versions(name)
                        if mv.current_stage == canonical and str(mv.version) != str(version)]
        except Exception:
            logger.warning("mlflow-hotswap: cannot list versions of %r; archived versions will "
                           "not be notified", name, exc_info=True)
            archived = []
        return from_stage, archived

    def _all_versions(self, name: str) -> list[Any]:
        quote = '"' if "'" in name else "'"
        found: list[Any] = []
        token = None
        while True:
            page = self.search_model_versions(filter_string=f"name = {quote}{name}{quote}",
                                              max_results=1000, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return found
