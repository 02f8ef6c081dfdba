"""The Open Inference Protocol: V2 `infer` against `/invocations` on the same receiver
(same version, same rows), and against MLServer 1.7's V2 endpoint (its MLflow runtime, adaptive
batching on), serving the same version, in one run with the servers in rotating order.

MLServer runs from a virtualenv of its own (`.venv-mlserver`, made by the full run with pip,
as the run installs wrk): it pins its own FastAPI, uvicorn and pydantic. The smoke run leaves
MLServer out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import requests

from bench.config import Config
from bench.load import check_loopback, wrk_available
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, Stack, base_env
from bench.stats import ms
from bench.throughput import load_run
from examples import train_model
from examples.processes import Process, free_port, spawn_server, wait_until

ROOT = Path(__file__).resolve().parents[1]
MLSERVER_VENV = ROOT / ".venv-mlserver"
# uvloop 0.22 and later: MLServer 1.7.1's inference workers die at start (asyncio's
# get_event_loop with no loop), so the uvloop of its release.
MLSERVER_PACKAGES = ["mlserver==1.7.1", "mlserver-mlflow==1.7.1", "uvloop==0.21.0"]
# MLServer's adaptive batching: requests arriving within this window are merged, up to the size.
MLSERVER_BATCH = {"max_batch_size": 32, "max_batch_time": 0.005}
SERVERS = ("receiver /invocations", "receiver V2 infer", "MLServer 1.7 V2 infer")


def v2_request(rows: int) -> dict[str, Any]:
    """The same rows as the MLflow body, one FP64 tensor per column, as tritonclient or
    MLServer's pd codec send a DataFrame."""
    split = train_model.sample_request(rows)["dataframe_split"]
    columns = list(zip(*split["data"], strict=True))
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": name, "shape": [rows], "datatype": "FP64",
                        "data": list(values)}
                       for name, values in zip(split["columns"], columns, strict=True)]}


def body_file(stack: Stack, rows: int) -> tuple[Path, bytes]:
    body = json.dumps(v2_request(rows)).encode()
    path = stack.workdir / f"body-v2-{rows}.json"
    path.write_bytes(body)
    return path, body


def ensure_mlserver() -> Path:
    """`.venv-mlserver/bin/mlserver`, installed on first use (the same scikit-learn as ours)."""
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if mlserver.exists():
        return mlserver
    import sklearn

    subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
    subprocess.run([str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_PACKAGES,
                    f"scikit-learn=={sklearn.__version__}"], check=True, timeout=1200)
    return mlserver


def start_mlserver(stack: Stack, version: str, parallel_workers: int | None = None) -> Process:
    """MLServer serving the version's own files, with adaptive batching on; with
    `parallel_workers`, that many inference processes (None: MLServer's default), in a folder
    of its own so that several can run side by side."""
    mlserver = ensure_mlserver()
    name = "mlserver" if parallel_workers is None else f"mlserver-pw{parallel_workers}"
    folder = stack.workdir / name
    model_dir = folder / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{MODEL_NAME}/{version}", dst_path=str(folder / "artifacts"),
        tracking_uri=stack.tracking_uri)
    port = free_port()
    workers = {} if parallel_workers is None else {"parallel_workers": parallel_workers}
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
        "metrics_port": free_port(), "debug": False, **workers}))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": local, "version": version}, **MLSERVER_BATCH}))
    check_loopback(f"http://127.0.0.1:{port}")
    process = spawn_server("mlserver", [str(mlserver), "start", str(folder)],
                           {**base_env(), "PATH": f"{MLSERVER_VENV / 'bin'}:/usr/bin:/bin"},
                           stack.workdir / f"{name}.log", "127.0.0.1", port,
                           "/v2/health/live", 180)
    wait_until(lambda: requests.get(f"{process.url}/v2/models/{MODEL_NAME}/ready",
                                    timeout=2).ok, timeout=120, message="MLServer model ready")
    stack.extra.append(process)
    return process


def same_answers(urls: dict[str, str], v2_body: bytes, mlflow_body: bytes) -> bool:
    """Every server answers the same rows with the same predictions."""
    answers = []
    for name, url in urls.items():
        body = mlflow_body if "invocations" in name else v2_body
        reply = requests.post(url, data=body, headers={"Content-Type": "application/json"},
                              timeout=30)
        reply.raise_for_status()
        document = reply.json()
        answers.append(document["predictions"] if "predictions" in document
                       else document["outputs"][0]["data"])
    return all(answer == answers[0] for answer in answers)


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(11, "Open Inference Protocol: V2 against /invocations and MLServer")
    use_wrk = wrk_available()
    version = stack.versions[0]
    receiver = stack.receivers["stage"]
    stack.promote(version)
    stack.wait_serving(receiver.url, version, timeout=60)
    urls = {SERVERS[0]: receiver.url + "/invocations",
            SERVERS[1]: f"{receiver.url}/v2/models/{MODEL_NAME}/infer"}
    if not cfg.smoke:
        mlserver = start_mlserver(stack, version)
        urls[SERVERS[2]] = f"{mlserver.url}/v2/models/{MODEL_NAME}/infer"
    rows = 1
    v2_file, v2_body = body_file(stack, rows)
    mlflow_file, mlflow_body = stack.body_file(rows), stack.sample_body(rows)
    result.add("the same predictions from every server for the same rows",
               str(same_answers(urls, v2_body, mlflow_body)), "True",
               same_answers(urls, v2_body, mlflow_body))
    for name, url in urls.items():  # warm-up
        body, path = (mlflow_body, mlflow_file) if "invocations" in name else (v2_body, v2_file)
        load_run(url, path, body, 2, 1.0, use_wrk)
    concurrencies = sorted({1, 32} | set(cfg.concurrencies)) if not cfg.smoke else list(
        cfg.concurrencies)
    figures: dict[tuple[str, int], dict[str, float]] = {}
    for cell, concurrency in enumerate(concurrencies):
        names = list(urls)
        for name in names[cell % len(names):] + names[:cell % len(names)]:
            body, path = ((mlflow_body, mlflow_file) if "invocations" in name
                          else (v2_body, v2_file))
            figures[(name, concurrency)] = load_run(urls[name], path, body, concurrency,
                                                    cfg.load_seconds, use_wrk)
    report(result, cfg, urls, figures, concurrencies, use_wrk)
    return result


def report(result: PartResult, cfg: Config, urls: dict[str, str],
           figures: dict[tuple[str, int], dict[str, float]], concurrencies: list[int],
           use_wrk: bool) -> None:
    mid = 32 if 32 in concurrencies else max(concurrencies)
    targeted = mid == 32
    mlflow_cell, v2_cell = figures[(SERVERS[0], mid)], figures[(SERVERS[1], mid)]
    ratio = v2_cell["rps"] / mlflow_cell["rps"] if mlflow_cell["rps"] else float("nan")
    result.add(f"requests/s at {mid} one-row clients: V2 infer vs /invocations, same receiver",
               f"{v2_cell['rps']:.0f} vs {mlflow_cell['rps']:.0f} ({ratio:.2f}x)",
               ">= 0.9x" if targeted else "(context)", ratio >= 0.9 if targeted else None)
    if SERVERS[2] in urls:
        other = figures[(SERVERS[2], mid)]
        against = v2_cell["rps"] / other["rps"] if other["rps"] else float("nan")
        result.add(f"requests/s at {mid} one-row clients: receiver V2 vs MLServer 1.7 V2 "
                   "(adaptive batching on)",
                   f"{v2_cell['rps']:.0f} vs {other['rps']:.0f} ({against:.1f}x)",
                   ">= 3x" if targeted else "(context)", against >= 3 if targeted else None)
    failed = sum(f["failed"] for (name, _), f in figures.items() if name != SERVERS[2])
    result.add("failed requests, receiver, both protocols, every cell", f"{failed:.0f}", "0",
               failed == 0)
    rows = [[name, str(c), f"{figures[(name, c)]['rps']:.0f}",
             f"{ms(figures[(name, c)]['p50'])} / {ms(figures[(name, c)]['p99'])}",
             f"{figures[(name, c)]['failed']:.0f}", f"{figures[(name, c)]['gen_cpu']:.0%}"]
            for c in concurrencies for name in urls]
    result.tables.append(table(["server", "clients", "req/s", "p50 / p99", "failed",
                                "load gen CPU"], rows))
    generator = "wrk" if use_wrk else "bench/load.py threaded client (wrk not installed)"
    result.notes += [
        f"Load generator: {generator}, {cfg.load_seconds:g} s per cell, one-row bodies, "
        "servers in rotating order. The V2 body is one FP64 tensor per column with "
        "`parameters.content_type: \"pd\"`, which both servers read as a DataFrame.",
        "MLServer: `mlserver start` with `mlserver_mlflow.MLflowRuntime` on the same version's "
        f"files, default parallel workers, adaptive batching {MLSERVER_BATCH}, from "
        f"{', '.join(MLSERVER_PACKAGES)} in `.venv-mlserver`."
        if SERVERS[2] in urls else "MLServer: not in the smoke run (it installs a virtualenv).",
    ]
