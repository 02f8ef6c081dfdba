"""The README's receiver commands, run as written against a real receiver and MLflow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from examples.processes import free_port, promote, spawn_server, wait_until
from tests.support.models import register_sklearn_model

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
TOKEN = "my-admin-token"


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def shell_commands(section: str, program: str) -> list[str]:
    """Commands starting with `program` in the section's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines()
                     if line.strip().startswith(program)]
    return commands


@pytest.fixture(scope="module")
def readme_model(plain_mlflow):
    name = "readme_model"
    version = register_sklearn_model(plain_mlflow.url, name, seed=4)
    promote(name, version, tracking_uri=plain_mlflow.url, archive_existing=False)
    return name, version


def receiver_env(tracking_uri: str, name: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MODEL_NAME": name,
            "HOTSWAP_ADMIN_TOKEN": TOKEN, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def test_endpoint_examples_work_as_written(plain_mlflow, readme_model, tmp_path) -> None:
    name, _version = readme_model
    port = free_port()
    argv = [str(BIN / "mlflow-hotswap-receiver"), "--host", "127.0.0.1", "--port", str(port)]
    receiver = spawn_server("receiver", argv, receiver_env(plain_mlflow.url, name),
                            tmp_path / "receiver.log", "127.0.0.1", port, "/health/live",
                            timeout=60)
    try:
        wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok, timeout=60)
        commands = shell_commands(readme_section("Endpoints"), "curl")
        assert len(commands) >= 6
        for command in commands:
            local = command.replace("localhost:8000", f"127.0.0.1:{port}").replace(
                "fraud_detection_model", name)
            done = subprocess.run(["bash", "-c", local], capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, (command, done.stderr)
            answer = json.loads(done.stdout)
            assert "error_code" not in answer and "error" not in answer, (command, answer)
            if "invocations" in command:
                assert len(answer["predictions"]) == 1
            if "/infer" in command:
                assert (answer["id"], len(answer["outputs"][0]["data"])) == ("42", 1)
    finally:
        receiver.stop()


def test_the_app_factory_runs_under_plain_uvicorn(plain_mlflow, readme_model, tmp_path) -> None:
    name, version = readme_model
    assert "uvicorn --factory receiver.app:create_app" in readme_section("Run a receiver")
    port = free_port()
    argv = [str(BIN / "uvicorn"), "--factory", "receiver.app:create_app", "--host", "127.0.0.1",
            "--port", str(port)]
    server = spawn_server("uvicorn", argv, receiver_env(plain_mlflow.url, name),
                          tmp_path / "uvicorn.log", "127.0.0.1", port, "/health/live", timeout=60)
    try:
        wait_until(lambda: requests.get(server.url + "/models/current", timeout=2).ok, timeout=60)
        assert requests.get(server.url + "/models/current", timeout=2).json()["version"] == version
    finally:
        server.stop()
