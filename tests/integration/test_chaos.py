"""Chaos against real processes: hostile model versions, MLflow dying mid-download, a broken
artifact store, an unusable model folder, a receiver killed while MLflow is down, a receiver
that never answers among healthy ones.

In each: whatever was served keeps being served, the process stays up, and the fault shows in
/health and /metrics. Every receiver polls only every 600 s, so what happens is what the test
triggers.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from examples.processes import (
    Process,
    free_port,
    metric,
    promote,
    start_mlflow_server,
    start_receiver,
    wait_until,
)
from tests.support.hung import hung_server
from tests.support.models import register_broken_model, register_sklearn_model, sample_rows
from tests.support.proxy import mlflow_proxy
from tests.support.stack import ReceiverFactory, served_version, serves, start_plain_mlflow

QUIET = {"MODEL_UPDATE_INTERVAL": 600}


def predicts(receiver: Process, version: str) -> None:
    answer = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=30)
    assert (answer.status_code, answer.headers.get("X-Model-Version")) == (200, version), \
        answer.text
    assert receiver.alive()


def reload(receiver: Process, timeout: float = 120) -> requests.Response:
    return requests.post(receiver.url + "/models/reload", timeout=timeout)


def health(receiver: Process) -> dict[str, Any]:
    reply = requests.get(receiver.url + "/health", timeout=10)
    return reply.json()


def release(tracking_uri: str, name: str, seed: int) -> str:
    """A new version of `name` in Production (the ones there archived); its number."""
    version = register_sklearn_model(tracking_uri, name, seed=seed)
    promote(name, version, tracking_uri=tracking_uri, archive_existing=True)
    return version


def update_fails(receiver: Process, kept: str) -> None:
    """A reload that fails with an error: `kept` is still served, and /health and /metrics
    show the failure."""
    assert reload(receiver).status_code == 502
    predicts(receiver, kept)
    assert health(receiver)["last_update_error"]
    assert metric(receiver.url, "hotswap_model_load_failures_total", {"reason": "error"}) >= 1


def updates_to(receiver: Process, version: str) -> None:
    assert reload(receiver).json()["status"] == "reloaded"
    predicts(receiver, version)


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[Process]:
    """An MLflow server of this test's own, for tests that kill it."""
    server = start_plain_mlflow(tmp_path / "mlflow")
    yield server
    server.stop()


def test_a_version_whose_load_calls_sys_exit(plain_mlflow, receivers: ReceiverFactory) -> None:
    name = "chaos-exit"
    good = release(plain_mlflow.url, name, seed=1)
    receiver = receivers(plain_mlflow.url, name, **QUIET)
    exits = register_broken_model(plain_mlflow.url, name, code="exit_model.py")
    promote(name, exits, tracking_uri=plain_mlflow.url, archive_existing=True)

    reply = reload(receiver)
    assert (reply.status_code, reply.json()["error_code"]) == (502, "RELOAD_FAILED")
    assert "SystemExit" in reply.json()["message"]
    predicts(receiver, good)
    # The pinned route to the same version: refused, and the process still stands.
    pinned = requests.post(f"{receiver.url}/models/{name}/versions/{exits}/invocations",
                           json=sample_rows(), timeout=60)
    assert (pinned.status_code, pinned.json()["error_code"]) == (502, "MODEL_LOAD_FAILED")
    predicts(receiver, good)
    report = health(receiver)
    assert report["model_loaded"] and report["load_failures"]["exit"] >= 2
    assert "SystemExit" in report["last_load_failure"]
    assert metric(receiver.url, "hotswap_model_load_failures_total", {"reason": "exit"}) >= 2
    assert metric(receiver.url, "hotswap_model_update_errors_total") >= 1


def test_a_version_whose_warm_up_hangs_is_abandoned(plain_mlflow,
                                                    receivers: ReceiverFactory) -> None:
    name = "chaos-hang"
    good = release(plain_mlflow.url, name, seed=1)
    receiver = receivers(plain_mlflow.url, name, HOTSWAP_LOAD_TIMEOUT=3,
                         HOTSWAP_TEST_HANG_ARMED=1, **QUIET)
    hangs = register_broken_model(plain_mlflow.url, name, code="hang_model.py")
    promote(name, hangs, tracking_uri=plain_mlflow.url, archive_existing=True)

    reply = reload(receiver)
    assert reply.status_code == 502
    assert "HOTSWAP_LOAD_TIMEOUT" in reply.json()["message"]
    predicts(receiver, good)
    report = health(receiver)
    assert report["abandoned_loads"] == [f"{name} version {hangs}"]
    assert report["load_failures"]["timeout"] >= 1
    assert metric(receiver.url, "hotswap_model_load_failures_total", {"reason": "timeout"}) >= 1
    # Later updates are not held up by the hung one.
    updates_to(receiver, release(plain_mlflow.url, name, seed=3))


def test_the_artifact_store_answering_500(plain_mlflow, receivers: ReceiverFactory) -> None:
    name = "chaos-artifacts"
    good = release(plain_mlflow.url, name, seed=1)
    with mlflow_proxy(plain_mlflow.url) as proxy:
        receiver = receivers(proxy.url, name, **QUIET)
        newer = release(plain_mlflow.url, name, seed=2)
        proxy.mode = "fail"
        update_fails(receiver, good)
        assert proxy.artifact_failures >= 1
        proxy.mode = "pass"  # the store recovers: the next update goes through
        updates_to(receiver, newer)


def test_mlflow_killed_in_the_middle_of_a_download(own_mlflow: Process,
                                                   receivers: ReceiverFactory) -> None:
    name = "chaos-download"
    good = release(own_mlflow.url, name, seed=1)
    with mlflow_proxy(own_mlflow.url) as proxy:
        receiver = receivers(proxy.url, name, **QUIET)
        release(own_mlflow.url, name, seed=2)
        proxy.mode = "stall"
        replies: list[requests.Response] = []
        reloading = threading.Thread(target=lambda: replies.append(reload(receiver)))
        reloading.start()
        assert proxy.stalled.wait(timeout=60), "the download never started"
        predicts(receiver, good)  # served while the download hangs
        own_mlflow.kill()
        proxy.release.set()  # the connection drops mid-body, as the dead server's would
        reloading.join(timeout=120)
        assert replies and replies[0].status_code == 502
    predicts(receiver, good)
    assert health(receiver)["last_update_error"]
    assert metric(receiver.url, "hotswap_model_update_errors_total") >= 1


def test_an_unusable_model_folder(plain_mlflow, receivers: ReceiverFactory,
                                  tmp_path: Path) -> None:
    name = "chaos-folder"
    good = release(plain_mlflow.url, name, seed=1)
    folder = tmp_path / "models"
    receiver = receivers(plain_mlflow.url, name, HOTSWAP_MODEL_DIR=folder, **QUIET)
    # The folder turns unusable: a file where the directory was (root ignores permissions).
    os.rename(folder, tmp_path / "models-aside")
    folder.write_text("not a directory")
    newer = release(plain_mlflow.url, name, seed=2)
    update_fails(receiver, good)
    folder.unlink()
    os.rename(tmp_path / "models-aside", folder)
    updates_to(receiver, newer)


def test_receiver_killed_and_restarted_while_mlflow_is_down(own_mlflow: Process,
                                                            tmp_path: Path) -> None:
    name = "chaos-restart"
    good = release(own_mlflow.url, name, seed=1)
    receiver = start_receiver(tmp_path, own_mlflow.url, name, env={"MODEL_UPDATE_INTERVAL": "600"})
    mlflow = own_mlflow
    try:
        wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok,
                   timeout=60, message="receiver ready")
        receiver.kill()
        mlflow.stop()
        receiver = start_receiver(tmp_path, mlflow.url, name, port=receiver.port,
                                  env={"MODEL_UPDATE_INTERVAL": "600"},
                                  log_name="receiver-restarted.log")
        # The error is recorded once the first refresh has failed (the counter moves first).
        wait_until(lambda: health(receiver)["last_update_error"], timeout=60,
                   message="a failed first load")
        assert metric(receiver.url, "hotswap_model_update_errors_total") >= 1
        answer = requests.post(receiver.url + "/invocations", json=sample_rows(), timeout=10)
        assert (answer.status_code, answer.json()["error_code"]) == (503, "MODEL_NOT_LOADED")
        assert int(answer.headers["Retry-After"]) >= 1
        report = requests.get(receiver.url + "/health", timeout=5)
        assert report.status_code == 503 and not report.json()["model_loaded"]
        # MLflow is back: the receiver's retry loads the model.
        mlflow = start_plain_mlflow(mlflow.log_path.parent, port=mlflow.port)
        wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok,
                   timeout=90, message="ready after MLflow returned")
        predicts(receiver, good)
    finally:
        receiver.stop()
        mlflow.stop()


def test_a_receiver_that_never_answers_does_not_delay_the_others(tmp_path: Path) -> None:
    name = "chaos-hung-target"
    with hung_server() as hung_a, hung_server() as hung_b:
        receiver_port = free_port()
        targets = f"{hung_a},{hung_b},http://127.0.0.1:{receiver_port}/webhooks/mlflow"
        # A delivery attempt may wait 30 s: a swap within a few seconds can only come from
        # deliveries that do not wait for the hung targets.
        workdir = tmp_path / "mlflow"
        server = start_mlflow_server(workdir, extra_env={
            "HOTSWAP_TARGETS": targets, "HOTSWAP_TIMEOUT": "30", "HOTSWAP_MAX_RETRIES": "0"})
        try:
            first = release(server.url, name, seed=1)
            receiver = start_receiver(tmp_path, server.url, name, port=receiver_port,
                                      env={"MODEL_UPDATE_INTERVAL": "600"})
            try:
                wait_until(lambda: served_version(receiver) == first, timeout=60)
                for seed in (2, 3):  # the second swap comes while the first is still stuck
                    version = release(server.url, name, seed=seed)
                    wait_until(partial(serves, receiver, version), timeout=10,
                               interval=0.05, message=f"pushed swap to {version}")
                    predicts(receiver, version)
            finally:
                receiver.stop()
        finally:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
