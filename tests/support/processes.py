"""Start and stop real server processes: `mlflow server` and the receiver under uvicorn.

Each process runs in its own session so that stopping it ends its whole group
(`mlflow server` spawns workers of its own).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.support.waiting import free_port, wait_until


@dataclass
class ServerProcess:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """Hard stop, as a crash would: SIGKILL to the whole group."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=15)


def spawn_server(name: str, argv: list[str], env: dict[str, str], log_path: Path, host: str,
                 port: int, health_path: str, timeout: float) -> ServerProcess:
    """Start `argv` in its own session, logging to `log_path`; return once `health_path`
    answers, or raise with the log when it exits or the timeout passes."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
    popen = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    log_file.close()
    url = f"http://{host}:{port}"
    server = ServerProcess(name, url, popen, log_path, port, host, env)

    def ready_or_exited() -> bool:
        # wait_until takes exceptions as "not yet": an exit has to end the wait by returning.
        if not server.alive():
            return True
        return requests.get(url + health_path, timeout=1).status_code < 500

    try:
        wait_until(ready_or_exited, timeout=timeout, interval=0.1,
                   message=f"{name} ready at {url}")
    except BaseException:
        server.stop()
        raise RuntimeError(f"{name} did not start; log:\n{server.log()[-4000:]}") from None
    if not server.alive():
        raise RuntimeError(f"{name} exited with {popen.returncode}:\n{server.log()[-4000:]}")
    return server


def start_mlflow_server(workdir: Path, backend_uri: str | None = None,
                        registry_uri: str | None = None, port: int | None = None,
                        workers: int = 1, extra_env: dict[str, str] | None = None,
                        timeout: float = 90.0) -> ServerProcess:
    """A real `mlflow server` on 127.0.0.1 with the hotswap plugin as its registry store.

    `registry_uri` defaults to `hotswap+<backend_uri>`; pass the backend URI itself for the
    plain store.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    backend_uri = backend_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    registry_uri = registry_uri or f"hotswap+{backend_uri}"
    port = port or free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    argv = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_uri, "--registry-store-uri", registry_uri,
            "--artifacts-destination", str(workdir / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return spawn_server("mlflow server", argv, env, workdir / "mlflow-server.log", "127.0.0.1",
                        port, "/health", timeout)


def start_receiver(workdir: Path, tracking_uri: str, model_name: str,
                   env: dict[str, str] | None = None, host: str = "127.0.0.1",
                   port: int | None = None, timeout: float = 90.0,
                   log_name: str = "receiver.log") -> ServerProcess:
    """The real receiver (`python -m receiver`) under uvicorn; ready once /health/live answers."""
    port = port or free_port(host)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": tracking_uri,
                "MODEL_NAME": model_name, **(env or {})}
    argv = [sys.executable, "-m", "receiver", "--host", host, "--port", str(port)]
    return spawn_server("receiver", argv, full_env, workdir / log_name, host, port,
                        "/health/live", timeout)
