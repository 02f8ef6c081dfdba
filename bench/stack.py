"""The system under test, all on 127.0.0.1: a real `mlflow server` with the hotswap plugin,
fraud-detection model versions registered through it, receivers, and `mlflow models serve`.

Processes are started, scraped and promoted with examples/processes.py, so the benchmark runs
exactly what the demo and the integration tests run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient

from bench.config import Config
from examples import train_model
from examples.processes import (
    Process,
    free_port,
    promote,
    set_alias,
    spawn_server,
    start_mlflow_server,
    start_receiver,
    wait_until,
)

logger = logging.getLogger(__name__)

MODEL_NAME = train_model.DEFAULT_MODEL_NAME
SECRET = "bench-webhook-secret"
VENV_BIN = str(Path(sys.executable).parent)


def base_env() -> dict[str, str]:
    env = {
        # MLflow 3.17 refuses to deserialize scikit-learn models without it (examples/).
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "PYTHONWARNINGS": "ignore",
    }
    return env


@dataclass
class Stack:
    config: Config
    workdir: Path
    mlflow: Process | None = None
    # Receivers the plugin notifies: their ports are chosen before the server starts.
    receiver_ports: dict[str, int] = field(default_factory=dict)
    receivers: dict[str, Process] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    baseline: Process | None = None
    baseline_version: str | None = None
    extra: list[Process] = field(default_factory=list)
    # MLServer by its folder and the version it serves (v2.py), started once, shared by parts.
    mlservers: dict[str, Process] = field(default_factory=dict)
    # Run receivers from another source tree (a candidate change), not this checkout's.
    receiver_src: Path | None = None
    setup_seconds: dict[str, float] = field(default_factory=dict)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, with_baseline: bool = False) -> None:
        os.environ.update(base_env())
        self.workdir.mkdir(parents=True, exist_ok=True)
        for role in ("stage", "alias"):
            self.receiver_ports[role] = free_port()
        targets = ",".join(self.webhook_url(role) for role in ("stage", "alias"))
        started = time.perf_counter()
        self.mlflow = start_mlflow_server(
            self.workdir / "mlflow", port=free_port(),
            extra_env={**base_env(), "HOTSWAP_TARGETS": targets,
                       "HOTSWAP_WEBHOOK_SECRET": SECRET})
        self.setup_seconds["mlflow server start"] = time.perf_counter() - started
        started = time.perf_counter()
        self.register_versions(self.config.versions)
        self.setup_seconds[f"train and register {self.config.versions} versions"] = (
            time.perf_counter() - started)
        # Something to serve from the start: version 1 in Production and at @champion.
        self.promote(self.versions[0])
        self.set_alias("champion", self.versions[0])
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as pool:
            # `mlflow models serve` starts alongside the receivers: both take seconds of imports.
            baseline = pool.submit(self.start_baseline, self.versions[0]) if with_baseline else None
            self.start_receivers({
                "stage": {"MODEL_STAGE": "Production"},
                "alias": {"MODEL_ALIAS": "champion"},
            })
            if baseline is not None:
                baseline.result()
        self.setup_seconds["receivers and `mlflow models serve` start"] = (
            time.perf_counter() - started)

    def stop(self) -> None:
        for process in [*self.receivers.values(), *self.extra, self.baseline, self.mlflow]:
            if process is not None:
                process.stop()
        self.receivers.clear()
        self.extra.clear()
        self.mlservers.clear()
        self.baseline = self.mlflow = None

    @property
    def tracking_uri(self) -> str:
        assert self.mlflow is not None
        return self.mlflow.url

    @property
    def backend_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow' / 'mlflow.db'}"

    def webhook_url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.receiver_ports[role]}/webhooks/mlflow"

    # -- models -------------------------------------------------------------------------------

    def register_versions(self, count: int) -> None:
        """Train `count` fraud-detection forests (one seed each) and register them."""
        cfg = self.config
        frame, labels = train_model.make_transactions(cfg.train_rows, seed=0)
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        for seed in range(1, count + 1):
            trained = train_model.train(frame, labels, n_estimators=cfg.n_estimators, seed=seed)
            registered = train_model.register(trained, MODEL_NAME, self.tracking_uri,
                                              experiment="bench")
            self.versions.append(registered.version)

    def client(self, tracking_uri: str | None = None) -> MlflowClient:
        return MlflowClient(tracking_uri or self.tracking_uri)

    def promote(self, version: str, stage: str = "Production") -> None:
        promote(MODEL_NAME, version, stage, self.tracking_uri, archive_existing=True)

    def set_alias(self, alias: str, version: str) -> None:
        set_alias(MODEL_NAME, alias, version, self.tracking_uri)

    def sample_body(self, rows: int) -> bytes:
        return json.dumps(train_model.sample_request(rows)).encode()

    def body_file(self, rows: int) -> Path:
        path = self.workdir / f"body-{rows}.json"
        if not path.exists():
            path.write_bytes(self.sample_body(rows))
        return path

    # -- receivers ----------------------------------------------------------------------------

    def receiver_env(self, extra: dict[str, str]) -> dict[str, str]:
        return {**base_env(), "HOTSWAP_WEBHOOK_SECRET": SECRET,
                "HOTSWAP_MODEL_DIR": str(self.workdir / "models"), **extra}

    def start_receivers(self, specs: dict[str, dict[str, str]]) -> None:
        """Start several receivers at once (each takes seconds to import MLflow)."""
        def start(role: str) -> tuple[str, Process]:
            port = self.receiver_ports.setdefault(role, free_port())
            env = self.receiver_env(specs[role])
            if self.receiver_src is None:
                process = start_receiver(self.workdir, self.tracking_uri, MODEL_NAME, env=env,
                                         port=port, log_name=f"receiver-{role}.log")
            else:
                argv = [sys.executable, "-c",
                        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
                        "from receiver.__main__ import main; sys.exit(main(sys.argv[1:]))",
                        str(self.receiver_src), "--host", "127.0.0.1", "--port", str(port)]
                process = spawn_server("receiver", argv,
                                       {**os.environ, "PYTHONUNBUFFERED": "1", **env,
                                        "MLFLOW_TRACKING_URI": self.tracking_uri,
                                        "MODEL_NAME": MODEL_NAME},
                                       self.workdir / f"receiver-{role}.log", "127.0.0.1", port,
                                       "/health/live", 90)
            return role, process

        with ThreadPoolExecutor(len(specs)) as pool:
            for role, process in pool.map(start, specs):
                self.receivers[role] = process
        for role in specs:
            self.wait_serving(self.receivers[role].url, timeout=120)

    def stop_receiver(self, role: str) -> None:
        process = self.receivers.pop(role, None)
        if process is not None:
            process.stop()

    @staticmethod
    def wait_serving(url: str, version: str | None = None, timeout: float = 60) -> str:
        def check() -> str | None:
            answer = requests.get(url + "/models/current", timeout=2)
            if answer.status_code != 200:
                return None
            served = answer.json().get("version")
            return served if version is None or served == version else None

        return wait_until(check, timeout=timeout, interval=0.05,
                          message=f"{url} serving version {version or 'any'}")

    # -- the baseline: mlflow models serve ----------------------------------------------------

    def baseline_argv(self, version: str, port: int) -> list[str]:
        return [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                f"models:/{MODEL_NAME}/{version}", "--env-manager", "local", "--workers", "1",
                "--host", "127.0.0.1", "--port", str(port)]

    def start_baseline(self, version: str, port: int | None = None) -> Process:
        port = port or free_port()
        env = {**os.environ, **base_env(), "MLFLOW_TRACKING_URI": self.tracking_uri,
               "PYTHONUNBUFFERED": "1"}
        self.baseline = spawn_server("mlflow models serve", self.baseline_argv(version, port),
                                     env, self.workdir / "baseline.log", "127.0.0.1", port,
                                     "/ping", 120)
        self.baseline_version = version
        return self.baseline

    def stop_baseline(self) -> None:
        if self.baseline is not None:
            self.baseline.stop()
            self.baseline = None

    # -- other processes ----------------------------------------------------------------------

    def start_extra_mlflow(self, specs: dict[str, tuple[str, dict[str, str]]]
                           ) -> dict[str, Process]:
        """More `mlflow server`s on the same database (for registry_cost.py's side-by-side), started
        together: {label: (registry URI, environment)}."""
        def start(label: str) -> Process:
            registry_uri, extra_env = specs[label]
            folder = "mlflow-" + re.sub(r"[^a-z]+", "-", label.lower())
            return start_mlflow_server(self.workdir / folder, backend_uri=self.backend_uri,
                                       registry_uri=registry_uri, port=free_port(),
                                       extra_env={**base_env(), **extra_env})

        with ThreadPoolExecutor(len(specs)) as pool:
            servers = dict(zip(specs, pool.map(start, specs), strict=True))
        self.extra.extend(servers.values())
        return servers

    def mlflow_log_count(self, pattern: str) -> int:
        """Lines of the main mlflow server's access log matching `pattern` (a regex)."""
        assert self.mlflow is not None
        regex = re.compile(pattern)
        return sum(1 for line in self.mlflow.log().splitlines() if regex.search(line))


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next((line.split(":", 1)[1].strip() for line in meminfo
                if line.startswith("MemTotal")), "?")
    wrk = shutil.which("wrk")
    wrk_version = "not installed"
    if wrk:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
        said = out.stdout + out.stderr
        wrk_version = said.splitlines()[0] if said else wrk
    import mlflow
    import sklearn
    import uvicorn
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"nproc": nproc, "cpu": cpu, "memory": mem, "loadavg": load,
            "python": sys.version.split()[0], "mlflow": mlflow.__version__,
            "scikit-learn": sklearn.__version__,
            "uvicorn": uvicorn.__version__, "wrk": wrk_version}
