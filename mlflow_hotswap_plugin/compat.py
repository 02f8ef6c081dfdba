"""Every difference between the MLflow versions the plugin runs on (2.16 through the newest 3.x).

Found by feature, not by version number, so a patch release that back-ports a feature works:
- workspaces (3.x): `MLFLOW_ENABLE_WORKSPACES` and `WorkspaceAwareSqlAlchemyStore`; absent in 2.x;
- read replicas (3.x): `SqlAlchemyStore(db_uri, read_db_uri=...)`, fed from an environment
  variable named in `mlflow.server.constants`; 2.x takes the URI alone;
- `SqlAlchemyStore._get_query(session, model)` (3.x) scopes a query to the active workspace;
  2.x queries the session directly;
- `ManagedSessionMaker(read_only=False)` (3.x) picks the primary database; 2.x has one.
- 3.x serves Flask's handlers from anyio worker threads of uvicorn's loop (the store is built in
  one of those), 2.x from gunicorn's main thread: `call_in_main_thread` reaches the main thread
  from either, where signal handlers may be set.
Also here: the types of the untyped MLflow helpers the plugin calls, stated once.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable
from typing import Any

from mlflow.entities.model_registry.model_version_stages import get_canonical_stage
from mlflow.store.model_registry.abstract_store import AbstractStore
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.uri import extract_db_type_from_uri, get_uri_scheme

# MLflow's helpers are untyped in every version; these are their types as the plugin uses them.
canonical_stage: Callable[[str], str] = get_canonical_stage
uri_scheme: Callable[[str], str] = get_uri_scheme
check_db_uri: Callable[[str], str] = extract_db_type_from_uri


def workspaces_enabled() -> bool:
    """True when the server would build the workspace-aware store (3.x, opted in)."""
    try:
        from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    except ImportError:  # MLflow 2.x: no workspaces
        return False
    flag: Any = MLFLOW_ENABLE_WORKSPACES
    return bool(flag.get())


def sql_store_class() -> type[AbstractStore]:
    """The SQL registry store class `mlflow server` itself builds (server/handlers.py)."""
    if workspaces_enabled():
        from mlflow.store.model_registry.sqlalchemy_workspace_store import (
            WorkspaceAwareSqlAlchemyStore,
        )

        return WorkspaceAwareSqlAlchemyStore
    return SqlAlchemyStore


def sql_store_kwargs() -> dict[str, Any]:
    """Keyword arguments besides the URI that `mlflow server` gives the SQL store."""
    if "read_db_uri" not in inspect.signature(SqlAlchemyStore.__init__).parameters:
        return {}  # MLflow 2.x
    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR

    return {"read_db_uri": os.environ.get(READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)}


def scoped_query(store: Any, session: Any, model: type[Any]) -> Any:
    """`session.query(model)`, limited to the store's workspace where the store has them."""
    get_query = getattr(store, "_get_query", None)
    if get_query is not None:
        return get_query(session, model)
    return session.query(model)


def primary_session(store: Any) -> Any:
    """A session on the primary database (3.x may route reads to a replica that lags)."""
    try:
        return store.ManagedSessionMaker(read_only=False)
    except TypeError:  # MLflow 2.x: one database, no argument
        return store.ManagedSessionMaker()


def call_in_main_thread(func: Callable[[], None]) -> bool:
    """Run `func` in the main thread and wait for it; False when this thread cannot reach it.

    At once in the main thread; from an anyio worker thread (MLflow 3.x runs Flask's handlers
    in those), through the event loop that started it, if that loop runs in the main thread.
    """
    if threading.current_thread() is threading.main_thread():
        func()
        return True
    ran: list[bool] = []

    def in_loop_thread() -> None:
        if threading.current_thread() is threading.main_thread():
            func()
            ran.append(True)

    try:
        from anyio import from_thread

        from_thread.run_sync(in_loop_thread)
    except Exception:  # noqa: BLE001 - no anyio, or not an anyio worker thread: unreachable
        return False
    return bool(ran)
