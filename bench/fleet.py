"""Progressive delivery: `mlflow-hotswap rollout` from its start to promoted across three
receivers, and the time from an abort decision to 0 % on every replica.

Its own `mlflow server` with the plugin (on the stack's database) notifies three receivers that
follow @champion with MODEL_CANARY=@challenger (the share from the registry's tag; polling only
every 600 s, so every change arrives by push), under a steady one-client-per-replica load.

- Rollout: the real console script, `--steps 5,25,50,100 --step-seconds S`, timed from its
  start (Python and its imports included) to its exit; the goal is 4 x S + 2 s. Each round
  promotes the next version.
- Abort: the share tag set to 25 and every replica at 25; then the controller's first abort
  write (the share to 0), timed until every replica reports 0 % (each polled every 5 ms).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import requests

from bench.config import Config
from bench.load import ClientPool
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, SECRET, Stack, base_env
from bench.stats import percentile, sec
from examples.processes import Process, free_port, start_receiver, wait_until
from mlflow_hotswap_plugin.fleet.registry import RestRegistry
from mlflow_hotswap_plugin.fleet.state import RolloutTags

STEPS = (5, 25, 50, 100)
SLACK_TARGET = 2.0  # seconds over steps x step-seconds
ABORT_TARGET = 1.0  # seconds, p95


def _canary(url: str) -> dict[str, Any]:
    canary: dict[str, Any] = requests.get(url + "/models/current", timeout=2).json()["canary"]
    return canary


def _at(urls: list[str], percent: float, version: str | None = None) -> bool:
    return all(_canary(url)["percent"] == percent
               and (version is None or _canary(url)["version"] == version) for url in urls)


def _start_fleet(stack: Stack) -> tuple[Process, list[Process]]:
    ports = [free_port() for _ in range(3)]
    targets = ",".join(f"http://127.0.0.1:{port}/webhooks/mlflow" for port in ports)
    server = stack.start_extra_mlflow({"fleet": (
        f"hotswap+{stack.backend_uri}",
        {"HOTSWAP_TARGETS": targets, "HOTSWAP_WEBHOOK_SECRET": SECRET})})["fleet"]
    env = stack.receiver_env({"MODEL_ALIAS": "champion", "MODEL_CANARY": "@challenger",
                              "MODEL_UPDATE_INTERVAL": "600"})
    with ThreadPoolExecutor(3) as pool:
        receivers = list(pool.map(
            # The stack's server holds the artifacts; this one (same database) pushes.
            lambda i: start_receiver(stack.workdir, stack.tracking_uri, MODEL_NAME, env=env,
                                     port=ports[i], log_name=f"receiver-fleet-{i}.log"),
            range(3)))
    stack.extra.extend(receivers)
    for receiver in receivers:
        stack.wait_serving(receiver.url, timeout=120)
    return server, receivers


def _rollout(server: Process, urls: list[str], step_seconds: float
             ) -> tuple[float, int, list[tuple[float, str]]]:
    """Run the console script; its total time, exit code and lines with their time."""
    argv = [sys.executable, "-m", "mlflow_hotswap_plugin.commands", "rollout", MODEL_NAME,
            "--canary", "@challenger", "--promote-alias", "champion",
            "--steps", ",".join(map(str, STEPS)), "--step-seconds", str(step_seconds),
            "--min-requests", "10", "--max-latency-ratio", "3", "--receivers", ",".join(urls)]
    env = {**os.environ, **base_env(), "MLFLOW_TRACKING_URI": server.url}
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as controller:
        assert controller.stdout is not None
        for line in controller.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
        code = controller.wait(timeout=600)
    return time.perf_counter() - started, code, lines


def _phases(lines: list[tuple[float, str]], total: float) -> list[str]:
    """Seconds to the first line; per step: the push to every replica, then the rest of the
    step; from the last step's verdict to the exit (the promotion's registry writes)."""
    def at(text: str) -> float:
        return next((when for when, line in lines if text in line), math.nan)

    cells = [sec(lines[0][0]) if lines else "n/a"]
    for index, percent in enumerate(STEPS):
        label = f"step {index + 1}/{len(STEPS)} {percent} %"
        set_at, took_at = at(f"{label}: share set"), at(f"{label}: every replica took it")
        cells.append(f"{sec(took_at - set_at)} + {sec(at(f'{label}: canary') - took_at)}")
    last = f"step {len(STEPS)}/{len(STEPS)} {STEPS[-1]} %: canary"
    return [*cells, sec(total - at(last))]


def _abort_lag(tags: RolloutTags, urls: list[str]) -> float:
    tags.set_share(25)
    wait_until(partial(_at, urls, 25), timeout=30, message="every replica at 25 %")
    started = time.perf_counter()
    tags.set_share(0)
    wait_until(partial(_at, urls, 0), timeout=30, interval=0.005,
               message="every replica at 0 %")
    return time.perf_counter() - started


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(10, "Progressive delivery")
    server, receivers = _start_fleet(stack)
    urls = [receiver.url for receiver in receivers]
    client = stack.client(server.url)
    step_seconds = cfg.rollout_step_seconds
    rounds = min(cfg.rollout_rounds, len(stack.versions) - 1)
    client.set_registered_model_alias(MODEL_NAME, "champion", stack.versions[0])
    pools = [ClientPool(url + "/invocations", stack.sample_body(1), 1, 600).start()
             for url in urls]
    rows, totals = [], []
    try:
        for index in range(1, rounds + 1):
            client.set_registered_model_alias(MODEL_NAME, "challenger", stack.versions[index])
            wait_until(partial(_at, urls, 0, stack.versions[index]), timeout=120,
                       message="every replica holding the challenger")
            seconds, code, lines = _rollout(server, urls, step_seconds)
            totals.append(seconds)
            outcome = "promoted" if code == 0 else f"exit {code}: {lines[-1][1] if lines else ''}"
            rows.append([str(index), stack.versions[index], sec(seconds), *_phases(lines, seconds),
                         outcome])
        tags = RolloutTags(RestRegistry(server.url), MODEL_NAME, stack.versions[rounds])
        lags = [_abort_lag(tags, urls) for _ in range(cfg.rollout_aborts)]
    finally:
        samples = [sample for pool in pools for sample in pool.stop()]
    goal = len(STEPS) * step_seconds + SLACK_TARGET
    result.add(f"rollout start to promoted, 3 replicas, --step-seconds {step_seconds:g} (max)",
               sec(max(totals)), f"< {goal:g} s", max(totals) < goal)
    result.add("abort decision to 0 % on every replica, p50",
               sec(percentile(lags, 50)))
    result.add(f"abort decision to 0 % on every replica, p95 ({len(lags)} aborts)",
               sec(percentile(lags, 95)), f"< {ABORT_TARGET:g} s",
               percentile(lags, 95) < ABORT_TARGET)
    failed = sum(1 for sample in samples if sample.status != 200)
    result.add("client requests during the part / failed", f"{len(samples)} / {failed}",
               "0 failed", failed == 0)
    steps = [f"{percent} %: to every replica + rest of step" for percent in STEPS]
    result.tables.append(table(["round", "challenger", "start to promoted", "to first line",
                                *steps, "last verdict to exit", "outcome"], rows))
    result.notes.append("Start to promoted includes the controller's own start (Python, "
                        "`requests`; it talks to MLflow's REST API without importing MLflow) "
                        "and its registry calls: the plan's reads and the lease before the "
                        "first line, the promotion's writes after the last verdict. A step "
                        "lasts --step-seconds from the moment its share is set, the push to "
                        "every replica included.")
    return result
