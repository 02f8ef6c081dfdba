"""End to end: a real `mlflow server` with the plugin pushes to real receivers under uvicorn.

Every receiver polls only every 600 s, so a swap within the test's deadline can only come from a
notification. The stage-following receivers are three replicas on 127.0.0.2-4 behind one name,
`replicas.hotswap.test`, which resolves to those three addresses inside the MLflow server's
process only (see tests/support/registry.fake_dns_env): the plugin's real resolution path, as
with a Kubernetes headless Service, without touching /etc/hosts.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from examples.processes import (
    Process,
    free_port,
    metric,
    start_receiver,
    wait_until,
)
from tests.support.capture import CaptureServer, capture_server
from tests.support.registry import fake_dns_env, ui_delete_alias, ui_set_alias, ui_transition
from tests.support.stack import PluginStack, ReceiverSpec, served_version

MODEL = "e2e-model"
SECRET = "e2e-plugin-secret"
NATIVE_SECRET = "e2e-native-webhook-secret"
REPLICA_NAME = "replicas.hotswap.test"
REPLICA_HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SWAP_DEADLINE = 2.0  # seconds from the registry call returning to the receiver serving it


@dataclass
class Stack:
    workdir: Path
    server: Process
    capture: CaptureServer
    replicas: list[Process]
    by_alias: Process  # follows the alias `champion`, notified by the plugin
    by_native_webhook: Process  # follows `champion`, notified by MLflow's own webhook only
    replica_port: int
    dns_env: dict[str, str]

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.server.url, registry_uri=self.server.url)

    @property
    def replica_target(self) -> str:
        return f"http://{REPLICA_NAME}:{self.replica_port}/webhooks/mlflow"


def port_free_on_all(hosts: list[str]) -> int:
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


def receiver_env(**env: str) -> dict[str, str]:
    return {"MODEL_UPDATE_INTERVAL": "600", "HOTSWAP_WEBHOOK_SECRET": SECRET, **env}


def start_replica(stack_dir: Path, server_url: str, host: str, port: int) -> Process:
    return start_receiver(stack_dir, server_url, MODEL, env=receiver_env(MODEL_STAGE="Production"),
                          host=host, port=port, log_name=f"replica-{host}.log")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("plugin-e2e")
    replica_port = port_free_on_all(REPLICA_HOSTS)
    replicas = [ReceiverSpec(MODEL, {"MODEL_STAGE": "Production"}, host=host, port=replica_port,
                             log_name=f"replica-{host}.log") for host in REPLICA_HOSTS]
    by_alias = ReceiverSpec(MODEL, {"MODEL_ALIAS": "champion"}, log_name="by-alias.log")
    by_native = ReceiverSpec(MODEL, {"MODEL_ALIAS": "champion",
                                     "HOTSWAP_WEBHOOK_SECRET": NATIVE_SECRET},
                             log_name="by-native-webhook.log")
    dns_env = fake_dns_env(workdir, {REPLICA_NAME: REPLICA_HOSTS})
    with capture_server(secret=SECRET) as capture, PluginStack(workdir, secret=SECRET) as plugin:
        targets = [f"http://{REPLICA_NAME}:{replica_port}/webhooks/mlflow", by_alias.webhook,
                   capture.url]
        server = plugin.start_server(targets, extra_env={
            **dns_env, "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true"})
        plugin.register(MODEL)
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        # Before any alias event: MLflow caches each event's webhook list for a while.
        client.create_webhook(name="native", events=["model_version_alias.created"],
                              url=by_native.webhook, secret=NATIVE_SECRET)
        client.set_registered_model_alias(MODEL, "champion", "1")
        receivers = plugin.start_receivers([*replicas, by_alias, by_native])
        plugin.wait_serving("1", receivers)
        yield Stack(workdir, server, capture, receivers[:3], receivers[3], receivers[4],
                    replica_port, dns_env)


def wait_served(receivers: list[Process], version: str,
                timeout: float = SWAP_DEADLINE) -> None:
    wait_until(lambda: all(served_version(r) == version for r in receivers), timeout=timeout,
               interval=0.05, message=f"{[r.url for r in receivers]} serving version {version}")


def other(version: str | None) -> str:
    return "2" if version == "1" else "1"


def webhook_count(receiver: Process, outcome: str) -> float:
    return metric(receiver.url, "hotswap_webhook_requests_total", {"outcome": outcome})


def test_ui_stage_transition_swaps_every_replica_within_2s(stack: Stack) -> None:
    target = other(served_version(stack.replicas[0]))
    ui_transition(stack.server.url, MODEL, target, "Production", archive_existing=True)
    wait_served(stack.replicas, target)
    # Each replica was told by its own delivery (one per address of the name).
    for replica in stack.replicas:
        assert webhook_count(replica, "accepted") >= 1


def test_client_stage_transition_swaps_every_replica_within_2s(stack: Stack) -> None:
    target = other(served_version(stack.replicas[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack.client.transition_model_version_stage(MODEL, target, "Production",
                                                    archive_existing_versions=True)
    wait_served(stack.replicas, target)
    archived = stack.capture.wait_for(
        "model_version.stage_transitioned",
        lambda d: d.data["to_stage"] == "Archived" and d.data["version"] == other(target))
    assert archived[-1].data["from_stage"] == "Production"


def test_alias_set_and_delete_reach_the_receiver(stack: Stack) -> None:
    receiver = stack.by_alias
    target = other(served_version(receiver))
    ui_set_alias(stack.server.url, MODEL, "champion", target)
    wait_served([receiver], target)
    accepted = webhook_count(receiver, "accepted")
    ui_delete_alias(stack.server.url, MODEL, "champion")
    wait_until(lambda: webhook_count(receiver, "accepted") == accepted + 1, timeout=SWAP_DEADLINE,
               message="the alias deletion accepted by the receiver")
    assert served_version(receiver) == target  # nothing to follow: it keeps serving what it has
    stack.client.set_registered_model_alias(MODEL, "champion", other(target))
    wait_served([receiver], other(target))


def test_mlflow_native_webhook_is_accepted_by_the_receiver(stack: Stack) -> None:
    # This receiver is not in HOTSWAP_TARGETS: only MLflow's own webhook can reach it.
    client = stack.client
    [webhook] = list(client.list_webhooks())
    result = client.test_webhook(webhook.webhook_id)
    assert (result.success, result.response_status) == (True, 202)
    target = other(served_version(stack.by_native_webhook))
    client.set_registered_model_alias(MODEL, "champion", target)
    wait_served([stack.by_native_webhook, stack.by_alias], target)
    assert webhook_count(stack.by_native_webhook, "rejected") == 0


def run_test_event(stack: Stack, secret: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("mlflow-hotswap-test-event")
    env = {**os.environ, **stack.dns_env, "HOTSWAP_WEBHOOK_SECRET": secret,
           "HOTSWAP_TARGETS": f"{stack.replica_target},{stack.by_alias.url}/webhooks/mlflow"}
    return subprocess.run([str(command)], env=env, capture_output=True, text=True, timeout=60)


def test_test_event_cli_against_the_receivers(stack: Stack) -> None:
    good = run_test_event(stack, SECRET)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines() == [
        *(f"{stack.replica_target} ({host}): accepted (HTTP 202), signature matched"
          for host in REPLICA_HOSTS),
        f"{stack.by_alias.url}/webhooks/mlflow (127.0.0.1): accepted (HTTP 202), "
        "signature matched"]
    bad = run_test_event(stack, "wrong")
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert len(lines) == 4 and all("rejected (HTTP 401), signature did not match" in line
                                   for line in lines)


def test_every_receiver_down_the_change_is_quick_and_a_returning_receiver_catches_up(
        stack: Stack) -> None:
    # Last in this module: it stops the receivers.
    target = other(served_version(stack.replicas[0]))
    for receiver in [*stack.replicas, stack.by_alias]:
        receiver.stop()
    failures_before = stack.server.log().count("failed after 4 attempt(s)")
    started = time.monotonic()
    ui_transition(stack.server.url, MODEL, target, "Production", archive_existing=True)
    elapsed = time.monotonic() - started
    # Delivering in line would take at least the retries' backoff (~1.75 s per address).
    assert elapsed < 1.5, f"the transition took {elapsed:.2f}s with every receiver down"
    stack.capture.wait_for("model_version.stage_transitioned",
                           lambda d: d.data["version"] == target and d.data["to_stage"] ==
                           "Production", count=1)
    back = start_replica(stack.workdir, stack.server.url, REPLICA_HOSTS[0], stack.replica_port)
    try:
        wait_served([back], target, timeout=60)
    finally:
        back.stop()
    # One logged failure per address down (three replicas and the alias receiver).
    wait_until(lambda: stack.server.log().count("failed after 4 attempt(s)")
               >= failures_before + 4, timeout=30,
               message="the failed deliveries logged by the MLflow server")
