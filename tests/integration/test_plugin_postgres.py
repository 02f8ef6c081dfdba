"""The plugin on PostgreSQL: `hotswap+postgresql+psycopg2://` against the session's server.

The module creates its own database and drops it afterwards. The server is the one at
TEST_POSTGRES_URL, or an embedded one when nothing answers there: these tests always run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from examples.processes import Process, wait_until
from tests.support.capture import CaptureServer, capture_server
from tests.support.postgres import PostgresServer
from tests.support.registry import postgres_database, ui_delete_alias, ui_set_alias, ui_transition
from tests.support.stack import PluginStack, ReceiverSpec, served_version

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
    receiver = ReceiverSpec(MODEL)
    # The plugin's stack stops (the server with it) before the database is dropped.
    with postgres_database(postgres) as db_uri, capture_server(secret=SECRET) as capture, \
            PluginStack(tmp_path_factory.mktemp("plugin-postgres"), secret=SECRET) as plugin:
        server = plugin.start_server([receiver.webhook, capture.url], backend_uri=db_uri,
                                     registry_uri=f"hotswap+{db_uri}")
        plugin.register(MODEL)
        receivers = plugin.start_receivers([receiver])
        plugin.wait_serving("1", receivers)
        yield Stack(server, receivers[0], capture)


def test_ui_transition_with_archiving_swaps_the_receiver_within_2s(stack: Stack) -> None:
    ui_transition(stack.server.url, MODEL, "2", "Production", archive_existing=True)
    wait_until(lambda: served_version(stack.receiver) == "2", timeout=2.0, interval=0.05,
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
