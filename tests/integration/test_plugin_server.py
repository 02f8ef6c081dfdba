"""The plugin inside a real `mlflow server` (SQLite), watched by a capturing HTTP target.

The changes are made as people make them: the UI's ajax requests, MlflowClient, plain REST, and
MlflowClient with a `hotswap+sqlite` registry URI and no server at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from examples.processes import Process, free_port, start_mlflow_server
from tests.support.capture import CaptureServer, capture_server
from tests.support.registry import light_versions, ui_delete_alias, ui_set_alias, ui_transition

SECRET = "plugin-server-secret"
TRANSITIONED = "model_version.stage_transitioned"


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    with capture_server(secret=SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           capture: CaptureServer) -> Iterator[Process]:
    # A second target that is down throughout: it must hold up neither the registry nor capture.
    down = f"http://127.0.0.1:{free_port()}/webhooks/mlflow"
    process = start_mlflow_server(tmp_path_factory.mktemp("plugin-server"), extra_env={
        "HOTSWAP_TARGETS": f"{down},{capture.url}", "HOTSWAP_WEBHOOK_SECRET": SECRET,
        "HOTSWAP_MAX_RETRIES": "1",
        # MLflow's opt-ins for native webhooks to plain-http loopback URLs.
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"})
    yield process
    process.stop()


@pytest.fixture
def client(server: Process) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def of_model(name: str):
    return lambda delivery: delivery.data.get("name") == name


def test_ui_stage_transition_is_pushed_signed(server: Process,
                                              capture: CaptureServer) -> None:
    light_versions(server.url, "ui-stage", 1)
    ui_transition(server.url, "ui-stage", "1", "Staging")
    [delivery] = capture.wait_for(TRANSITIONED, of_model("ui-stage"))
    assert delivery.data == {"name": "ui-stage", "version": "1", "from_stage": "None",
                             "to_stage": "Staging"}
    assert delivery.signature_ok is True


def test_archive_existing_versions_pushes_an_event_per_archived_version(
        server: Process, capture: CaptureServer) -> None:
    light_versions(server.url, "archiving", 4)
    for version in ("1", "2"):
        ui_transition(server.url, "archiving", version, "Production")
    ui_transition(server.url, "archiving", "3", "Staging")
    ui_transition(server.url, "archiving", "4", "Production", archive_existing=True)
    archived = capture.wait_for(TRANSITIONED, lambda d: d.data["name"] == "archiving"
                                and d.data["to_stage"] == "Archived", count=2)
    assert sorted((d.data["version"], d.data["from_stage"]) for d in archived) == [
        ("1", "Production"), ("2", "Production")]
    promoted = capture.wait_for(TRANSITIONED, lambda d: d.data["name"] == "archiving"
                                and d.data["version"] == "4")
    assert promoted[0].data["to_stage"] == "Production"


def test_alias_set_and_delete_from_the_ui(server: Process, capture: CaptureServer) -> None:
    light_versions(server.url, "ui-alias", 2)
    ui_set_alias(server.url, "ui-alias", "champion", "2")
    ui_delete_alias(server.url, "ui-alias", "champion")
    [created] = capture.wait_for("model_version_alias.created", of_model("ui-alias"))
    [deleted] = capture.wait_for("model_version_alias.deleted", of_model("ui-alias"))
    assert created.data == {"name": "ui-alias", "alias": "champion", "version": "2"}
    assert deleted.data == {"name": "ui-alias", "alias": "champion"}


def test_client_changes_are_pushed(server: Process, capture: CaptureServer,
                                   client: MlflowClient) -> None:
    light_versions(server.url, "client", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.transition_model_version_stage("client", "2", "Production")
    client.set_registered_model_alias("client", "champion", "1")
    client.delete_model_version("client", "1")
    client.rename_registered_model("client", "client-renamed")
    client.delete_registered_model("client-renamed")
    capture.wait_for("registered_model.deleted", of_model("client-renamed"))
    seen = [(d.event, d.data) for d in capture.accepted()
            if d.data.get("name") in ("client", "client-renamed")]
    assert seen == [
        (TRANSITIONED, {"name": "client", "version": "2", "from_stage": "None",
                        "to_stage": "Production"}),
        ("model_version_alias.created", {"name": "client", "alias": "champion", "version": "1"}),
        ("model_version.deleted", {"name": "client", "version": "1"}),
        ("registered_model.renamed", {"name": "client", "new_name": "client-renamed"}),
        ("registered_model.deleted", {"name": "client-renamed"}),
    ]


def test_tag_changes_are_pushed_signed(server: Process, capture: CaptureServer,
                                       client: MlflowClient) -> None:
    light_versions(server.url, "tags", 1)
    client.set_registered_model_tag("tags", "hotswap.canary_percent", "25")
    client.delete_registered_model_tag("tags", "hotswap.canary_percent")
    client.set_model_version_tag("tags", "1", "hotswap.rollout", "running at 25 %")
    client.delete_model_version_tag("tags", "1", "hotswap.rollout")
    capture.wait_for("model_version_tag.deleted", of_model("tags"))
    seen = [(d.event, d.data, d.signature_ok) for d in capture.accepted(where=of_model("tags"))]
    assert seen == [
        ("registered_model_tag.set",
         {"name": "tags", "key": "hotswap.canary_percent", "value": "25"}, True),
        ("registered_model_tag.deleted",
         {"name": "tags", "key": "hotswap.canary_percent"}, True),
        ("model_version_tag.set",
         {"name": "tags", "version": "1", "key": "hotswap.rollout", "value": "running at 25 %"},
         True),
        ("model_version_tag.deleted",
         {"name": "tags", "version": "1", "key": "hotswap.rollout"}, True),
    ]


def test_a_failed_change_pushes_nothing(server: Process, capture: CaptureServer) -> None:
    light_versions(server.url, "failing", 1)
    response = requests.post(f"{server.url}/ajax-api/2.0/mlflow/model-versions/transition-stage",
                             json={"name": "failing", "version": "7", "stage": "Production",
                                   "archive_existing_versions": False}, timeout=30)
    assert response.status_code == 404
    response = requests.post(f"{server.url}/ajax-api/2.0/mlflow/registered-models/alias",
                             json={"name": "failing", "alias": "a", "version": "7"}, timeout=30)
    assert response.status_code == 404
    # Had the failed calls emitted, those deliveries would have been queued before this one
    # and, with nothing to retry, would have arrived by the time it does.
    ui_transition(server.url, "failing", "1", "Staging")
    capture.wait_for(TRANSITIONED, of_model("failing"))
    assert [d.data for d in capture.deliveries if d.data.get("name") == "failing"] == [
        {"name": "failing", "version": "1", "from_stage": "None", "to_stage": "Staging"}]


def test_registry_reads_work_through_the_plugin(client: MlflowClient) -> None:
    client.create_registered_model("reads")
    assert client.get_registered_model("reads").name == "reads"
    assert [m.name for m in client.search_registered_models("name = 'reads'")] == ["reads"]


@pytest.mark.skipif(not hasattr(MlflowClient, "create_webhook"),
                    reason="this MLflow has no native webhooks (they came with 3.x)")
def test_native_webhook_apis_work_through_the_plugin(client: MlflowClient,
                                                     capture: CaptureServer) -> None:
    # MLflow serves webhooks only for SqlAlchemyStore instances: the plugin's store is one.
    webhook = client.create_webhook(name="crud", url=capture.url,
                                    events=["model_version_alias.created"])
    assert [w.webhook_id for w in client.list_webhooks()] == [webhook.webhook_id]
    client.delete_webhook(webhook.webhook_id)
    assert list(client.list_webhooks()) == []


def test_bad_configuration_stops_the_server_at_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as info:
        start_mlflow_server(tmp_path, extra_env={"HOTSWAP_TARGETS": "receiver:8000"},
                            timeout=60)
    assert "mlflow server exited with 1" in str(info.value)
    assert "HOTSWAP_TARGETS must be comma-separated http(s) URLs" in str(info.value)
    assert "got 'receiver:8000'" in str(info.value)


def test_client_with_a_hotswap_registry_uri_and_no_server(tmp_path: Path,
                                                          capture: CaptureServer) -> None:
    db = f"sqlite:///{tmp_path / 'direct.db'}"
    script = textwrap.dedent(f"""
        import warnings
        from mlflow import MlflowClient
        warnings.simplefilter("ignore")
        client = MlflowClient(tracking_uri={db!r}, registry_uri="hotswap+" + {db!r})
        client.create_registered_model("direct")
        client.create_model_version("direct", source={str(tmp_path / "model")!r})
        client.transition_model_version_stage("direct", "1", "Production")
        client.set_registered_model_alias("direct", "champion", "1")
    """)
    env = {**os.environ, "HOTSWAP_TARGETS": capture.url, "HOTSWAP_WEBHOOK_SECRET": SECRET}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120,
                   capture_output=True)
    # The script has exited: what it queued was flushed on the way out.
    events = [(d.event, d.signature_ok) for d in capture.accepted(where=of_model("direct"))]
    assert events == [(TRANSITIONED, True), ("model_version_alias.created", True)]


def run_test_event(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("mlflow-hotswap-test-event")
    return subprocess.run([str(command)], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def test_test_event_cli_reports_each_target(capture: CaptureServer) -> None:
    down = f"http://127.0.0.1:{free_port()}/webhooks/mlflow"
    good = run_test_event({"HOTSWAP_TARGETS": capture.url, "HOTSWAP_WEBHOOK_SECRET": SECRET})
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == (f"{capture.url} (127.0.0.1): accepted (HTTP 202), "
                                   "signature matched")
    bad = run_test_event({"HOTSWAP_TARGETS": f"{capture.url},{down}",
                          "HOTSWAP_WEBHOOK_SECRET": "not the receiver's"})
    assert bad.returncode == 1
    lines = bad.stdout.strip().splitlines()
    assert lines[0].startswith(f"{capture.url} (127.0.0.1): rejected (HTTP 401), signature did "
                               "not match")
    assert lines[1].startswith(f"{down} (127.0.0.1): unreachable")
    config = run_test_event({"HOTSWAP_TARGETS": "", "HOTSWAP_TIMEOUT": "x"})
    assert config.returncode == 2 and "HOTSWAP_TIMEOUT must be a number" in config.stderr
