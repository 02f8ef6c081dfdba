"""The plugin on PostgreSQL: `hotswap+postgresql+psycopg2://` against the session's server.

The module creates its own database and drops it afterwards. The server is the one at
TEST_POSTGRES_URL, or an embedded one when nothing answers there: these tests always run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from examples.processes import (
    Process,
    free_port,
    promote,
    start_mlflow_server,
    start_receiver,
    wait_until,
)
from tests.support.capture import CaptureServer, capture_server
from tests.support.models import register_sklearn_model
from tests.support.postgres import PostgresServer
from tests.support.registry import postgres_database, ui_delete_alias, ui_set_alias, ui_transition

pytestmark = pytest.mark.postgres

MODEL = "pg-model"
SECRET = "pg-secret"


@dataclass
class Stack:
    server: Process
    receiver: Process
    capture: CaptureServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("plugin-postgres")
    receiver_port = free_port()
    with postgres_database(postgres) as db_uri, capture_server(secret=SECRET) as capture:
        server = start_mlflow_server(workdir, backend_uri=db_uri, registry_uri=f"hotswap+{db_uri}",
                                     extra_env={
            "HOTSWAP_TARGETS": f"http://127.0.0.1:{receiver_port}/webhooks/mlflow,{capture.url}",
            "HOTSWAP_WEBHOOK_SECRET": SECRET})
        receiver = None
        try:
            for seed in (0, 1):
                register_sklearn_model(server.url, MODEL, seed=seed)
            promote(MODEL, "1", tracking_uri=server.url, archive_existing=False)
            receiver = start_receiver(workdir, server.url, MODEL, port=receiver_port, env={
                "MODEL_UPDATE_INTERVAL": "600", "HOTSWAP_WEBHOOK_SECRET": SECRET})
            wait_until(lambda: served(receiver) == "1", timeout=120,
                       message="receiver serving version 1")
            yield Stack(server, receiver, capture)
        finally:
            if receiver is not None:
                receiver.stop()
            server.stop()  # before the database is dropped


def served(receiver: Process) -> str | None:
    response = requests.get(f"{receiver.url}/models/current", timeout=5)
    return str(response.json()["version"]) if response.status_code == 200 else None


def test_ui_transition_with_archiving_swaps_the_receiver_within_2s(stack: Stack) -> None:
    ui_transition(stack.server.url, MODEL, "2", "Production", archive_existing=True)
    wait_until(lambda: served(stack.receiver) == "2", timeout=2.0, interval=0.05,
               message="receiver serving version 2")
    [archived] = stack.capture.wait_for("model_version.stage_transitioned",
                                        lambda d: d.data["to_stage"] == "Archived")
    assert archived.data == {"name": MODEL, "version": "1", "from_stage": "Production",
                             "to_stage": "Archived"}
    assert archived.signature_ok is True


def test_alias_set_and_delete(stack: Stack) -> None:
    ui_set_alias(stack.server.url, MODEL, "champion", "1")
    ui_delete_alias(stack.server.url, MODEL, "champion")
    [created] = stack.capture.wait_for("model_version_alias.created")
    [deleted] = stack.capture.wait_for("model_version_alias.deleted")
    assert created.data == {"name": MODEL, "alias": "champion", "version": "1"}
    assert deleted.data == {"name": MODEL, "alias": "champion"}
