"""Many model versions at once, written straight into a SQL registry store's tables.

10,000 versions through the API would take minutes; one multi-row INSERT takes a fraction of a
second. For benchmarks and tests of how the plugin's cost grows with the registry.
"""

from __future__ import annotations

import time
from typing import Any


def bulk_versions(store: Any, name: str, count: int, stage: str = "None") -> None:
    """Add versions 1..`count` of a new registered model `name`, all in `stage`."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from sqlalchemy import insert

    store.create_registered_model(name)
    now = int(time.time() * 1000)
    rows = [{"name": name, "version": version, "current_stage": stage, "creation_time": now,
             "last_updated_time": now, "source": f"s3://bulk/{name}/{version}",
             "status": "READY"} for version in range(1, count + 1)]
    try:
        session_maker = store.ManagedSessionMaker(read_only=False)
    except TypeError:  # MLflow 2.x
        session_maker = store.ManagedSessionMaker()
    with session_maker as session:
        session.execute(insert(SqlModelVersion), rows)
