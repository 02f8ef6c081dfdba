"""The stage changes a SQL registry store makes, seen as it makes them: no query of our own.

MLflow's SqlAlchemyStore moves a version by setting `current_stage` on its ORM row, the promoted
version and each version it archives alike. A SQLAlchemy attribute event on that column hears
each set with the value it replaces; `recording()` collects those made in the calling thread,
so a transition's from_stage and the versions it archived cost nothing to learn, whatever the
size of the registry, and are exactly what the transaction did.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageChange:
    name: str
    version: str
    from_stage: str
    to_stage: str


_local = threading.local()
_install_lock = threading.Lock()
_installed = False


@contextmanager
def recording() -> Iterator[list[StageChange]]:
    """Collect the stage changes made in this thread inside the block."""
    _install()
    outer = getattr(_local, "changes", None)
    changes: list[StageChange] = []
    _local.changes = changes
    try:
        yield changes
    finally:
        _local.changes = outer


def _install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
        from sqlalchemy import event

        # active_history: the replaced value is loaded even if the row's was expired.
        event.listen(SqlModelVersion.current_stage, "set", _on_set, active_history=True)
        _installed = True


def _on_set(target: Any, value: Any, oldvalue: Any, initiator: Any) -> None:
    changes: list[StageChange] | None = getattr(_local, "changes", None)
    if changes is None:
        return
    before = oldvalue if isinstance(oldvalue, str) else ""  # NO_VALUE and the like: unknown
    changes.append(StageChange(str(target.name), str(target.version), before, str(value)))
