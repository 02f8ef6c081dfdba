"""`mlflow server --workers 2`: each worker has its own store and notifier, and each change is
handled by exactly one worker, so each target gets exactly one delivery per change."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pytest

from examples.processes import Process, start_mlflow_server, wait_until
from tests.support.capture import CaptureServer, capture_server
from tests.support.registry import light_versions, ui_set_alias, ui_transition

MODEL = "workers"
ALIASES = [f"a{i}" for i in range(12)]
STAGES = ["Staging", "Production", "Archived", "Staging", "Production"]


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    with capture_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           capture: CaptureServer) -> Iterator[Process]:
    process = start_mlflow_server(tmp_path_factory.mktemp("plugin-workers"), workers=2,
                                  extra_env={"HOTSWAP_TARGETS": capture.url})
    yield process
    process.stop()


def worker_pids(server: Process) -> set[str]:
    # uvicorn (MLflow 3.x) or gunicorn (2.x)
    return set(re.findall(r"(?:Started server process \[|Booting worker with pid: )(\d+)",
                          server.log()))


def test_each_change_is_delivered_once_per_target(server: Process,
                                                  capture: CaptureServer) -> None:
    wait_until(lambda: len(worker_pids(server)) == 2, timeout=30, message="two server workers")
    light_versions(server.url, MODEL, 1)
    # Each request on a new connection, so the kernel spreads them over both workers.
    for alias in ALIASES:
        ui_set_alias(server.url, MODEL, alias, "1")
    for stage in STAGES:
        ui_transition(server.url, MODEL, "1", stage)
    ui_set_alias(server.url, MODEL, "sentinel", "1")
    capture.wait_for("model_version_alias.created", lambda d: d.data["alias"] == "sentinel")
    capture.wait_for("model_version_alias.created", count=len(ALIASES) + 1)
    capture.wait_for("model_version.stage_transitioned", count=len(STAGES))

    aliases = Counter(d.data["alias"] for d in capture.accepted("model_version_alias.created"))
    assert aliases == Counter(dict.fromkeys([*ALIASES, "sentinel"], 1))
    transitions = [(d.data["from_stage"], d.data["to_stage"])
                   for d in capture.accepted("model_version.stage_transitioned")]
    expected = list(zip(["None", *STAGES[:-1]], STAGES, strict=True))
    assert sorted(transitions) == sorted(expected)
    assert len(capture.deliveries) == len(ALIASES) + 1 + len(STAGES)
