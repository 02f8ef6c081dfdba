"""The plugin inside a real `mlflow server` and a receiver, both on the MLflow under test.

Also run on MLflow 2.x by scripts/test-compat.sh (marker `compat`): a team pinned to 2.x pip
installs this checkout into its server's environment. Registry changes are made with
`MlflowClient`, as a deployment script does; the receiver polls every 600 s, so its swap is
pushed, and a capture server checks each notification's exact content and signature.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from examples.processes import Process, wait_until
from mlflow_hotswap_plugin.fleet.registry import RegistryError, RestRegistry
from mlflow_hotswap_plugin.fleet.state import resolve
from tests.support.capture import CaptureServer, capture_server
from tests.support.stack import PluginStack, ReceiverSpec, served_version

pytestmark = pytest.mark.compat

MODEL = "compat-model"
SECRET = "compat-secret"
SWAP_DEADLINE = 30.0  # seconds: a pushed reload of a small model, on a busy 2-core machine


@dataclass
class Stack:
    server: Process
    receiver: Process  # follows Production, push only
    capture: CaptureServer

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.server.url, registry_uri=self.server.url)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    receiver = ReceiverSpec(MODEL)
    with capture_server(secret=SECRET) as capture, \
            PluginStack(tmp_path_factory.mktemp("compat"), secret=SECRET) as plugin:
        server = plugin.start_server([receiver.webhook, capture.url])
        plugin.register(MODEL)
        receivers = plugin.start_receivers([receiver])
        plugin.wait_serving("1", receivers)
        yield Stack(server, receivers[0], capture)


def test_runs_on_the_mlflow_under_test(stack: Stack) -> None:
    assert requests.get(stack.receiver.url + "/version", timeout=5).text == mlflow.__version__
    assert requests.get(stack.server.url + "/version", timeout=5).text == mlflow.__version__


def test_stage_transition_with_archiving_is_pushed(stack: Stack) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack.client.transition_model_version_stage(MODEL, "2", "Production",
                                                    archive_existing_versions=True)
    wait_until(lambda: served_version(stack.receiver) == "2", timeout=SWAP_DEADLINE, interval=0.1,
               message="receiver serving version 2")
    [promoted] = stack.capture.wait_for("model_version.stage_transitioned",
                                        lambda d: d.data["to_stage"] == "Production"
                                        and d.data["version"] == "2")
    [archived] = stack.capture.wait_for("model_version.stage_transitioned",
                                        lambda d: d.data["to_stage"] == "Archived")
    assert promoted.data == {"name": MODEL, "version": "2", "from_stage": "None",
                             "to_stage": "Production"}
    assert archived.data == {"name": MODEL, "version": "1", "from_stage": "Production",
                             "to_stage": "Archived"}
    assert promoted.signature_ok is True and archived.signature_ok is True


def test_alias_set_and_delete_are_pushed(stack: Stack) -> None:
    stack.client.set_registered_model_alias(MODEL, "champion", "1")
    stack.client.delete_registered_model_alias(MODEL, "champion")
    [created] = stack.capture.wait_for("model_version_alias.created")
    [deleted] = stack.capture.wait_for("model_version_alias.deleted")
    assert created.data == {"name": MODEL, "alias": "champion", "version": "1"}
    assert deleted.data == {"name": MODEL, "alias": "champion"}
    assert created.signature_ok is True and deleted.signature_ok is True


def test_tag_set_and_delete_are_pushed(stack: Stack) -> None:
    stack.client.set_registered_model_tag(MODEL, "hotswap.canary_percent", "10")
    stack.client.delete_registered_model_tag(MODEL, "hotswap.canary_percent")
    stack.client.set_model_version_tag(MODEL, "1", "hotswap.rollout", "running at 10 %")
    stack.client.delete_model_version_tag(MODEL, "1", "hotswap.rollout")
    stack.capture.wait_for("model_version_tag.deleted")
    tags = [(d.event, d.data, d.signature_ok) for d in stack.capture.accepted()
            if d.event.split(".")[0] in ("registered_model_tag", "model_version_tag")]
    assert tags == [
        ("registered_model_tag.set",
         {"name": MODEL, "key": "hotswap.canary_percent", "value": "10"}, True),
        ("registered_model_tag.deleted", {"name": MODEL, "key": "hotswap.canary_percent"}, True),
        ("model_version_tag.set",
         {"name": MODEL, "version": "1", "key": "hotswap.rollout", "value": "running at 10 %"},
         True),
        ("model_version_tag.deleted", {"name": MODEL, "version": "1", "key": "hotswap.rollout"},
         True),
    ]


def test_the_rollouts_registry_client_reads_and_writes_what_mlflow_sees(stack: Stack) -> None:
    registry = RestRegistry(stack.server.url)
    client = stack.client
    client.set_registered_model_alias(MODEL, "challenger", "2")
    assert resolve(registry, MODEL, "@challenger") == "2"
    assert resolve(registry, MODEL, "@nobody") is None
    assert resolve(registry, MODEL, "Staging") is None

    moved = registry.transition_model_version_stage(MODEL, "1", "Staging",
                                                    archive_existing_versions=True)
    assert (moved.version, moved.current_stage) == ("1", "Staging")
    assert resolve(registry, MODEL, "Staging") == "1"
    registry.set_model_version_tag(MODEL, "1", "hotswap.rollout", "running at 5 %")
    assert client.get_model_version(MODEL, "1").tags["hotswap.rollout"] == "running at 5 %"
    assert registry.get_model_version(MODEL, "1").tags["hotswap.rollout"] == "running at 5 %"
    registry.set_registered_model_tag(MODEL, "hotswap.canary_percent", "5")
    assert registry.get_registered_model(MODEL).tags["hotswap.canary_percent"] == "5"
    registry.delete_registered_model_tag(MODEL, "hotswap.canary_percent")
    assert "hotswap.canary_percent" not in client.get_registered_model(MODEL).tags
    registry.set_registered_model_alias(MODEL, "champion", "1")
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
    with pytest.raises(RegistryError) as missing:
        registry.get_model_version(MODEL, "99")
    assert missing.value.refused and missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
