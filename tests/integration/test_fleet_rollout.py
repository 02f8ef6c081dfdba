"""`mlflow-hotswap rollout` and `status` against a real `mlflow server` with the plugin and three
real receivers on 127.0.0.1-3 behind one host name (a headless Service stand-in), under client
load from a thread. The receivers follow @champion with MODEL_CANARY=@challenger and no percent:
the share comes from the registry's tag, by push (they poll only every 600 s).

Versions: 1 and 2 are good scikit-learn models; 3 fails on about 1 row in 20; 4 takes 0.1 s per
call. Each test points @champion and @challenger where it needs them first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from examples.processes import Process, free_port, port_open, wait_until
from tests.support.models import register_challenger, register_sklearn_model, sample_rows
from tests.support.registry import fake_dns_env
from tests.support.stack import PluginStack, ReceiverSpec

MODEL = "fleet-model"
SECRET = "fleet-secret"
NAME = "replicas.fleet.test"
ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
PUSH_DEADLINE = 5.0  # far below the 600 s poll: whatever lands within it came by push
MAX_REQUESTS = 40_000  # bounds every load thread
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Fleet:
    server: Process
    receivers: list[Process]
    port: int
    env: dict[str, str]

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.server.url)

    @property
    def url(self) -> str:
        return f"http://{NAME}:{self.port}"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mlflow_hotswap_plugin.commands", *args]


def shared_port() -> int:
    """A port free on all three loopback addresses."""
    return wait_until(lambda: next((port for port in [free_port()]
                                    if not any(port_open(port, a) for a in ADDRESSES)), None),
                      timeout=10, message="a port free on 127.0.0.1-3")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    dns = fake_dns_env(workdir, {NAME: ADDRESSES})
    port = shared_port()
    env = {"MODEL_ALIAS": "champion", "MODEL_CANARY": "@challenger"}
    specs = [ReceiverSpec(MODEL, env, host=address, port=port, log_name=f"receiver-{i}.log")
             for i, address in enumerate(ADDRESSES)]
    with PluginStack(workdir, secret=SECRET) as plugin:
        server = plugin.start_server([f"http://{NAME}:{port}/webhooks/mlflow"], extra_env=dns)
        for seed in (0, 1):
            register_sklearn_model(server.url, MODEL, seed=seed)
        register_challenger(server.url, MODEL, fail_every=20)
        register_challenger(server.url, MODEL, delay=0.1)
        client = MlflowClient(server.url)
        client.set_registered_model_alias(MODEL, "champion", "1")
        client.set_registered_model_alias(MODEL, "challenger", "2")
        receivers = plugin.start_receivers(specs)
        plugin.wait_serving("1", receivers)
        yield Fleet(server, receivers, port,
                    {**os.environ, **dns, "MLFLOW_TRACKING_URI": server.url})


def canary_of(receiver: Process) -> dict[str, Any]:
    canary: dict[str, Any] = requests.get(receiver.url + "/models/current",
                                          timeout=5).json()["canary"]
    return canary


def point(fleet: Fleet, champion: str, challenger: str) -> None:
    """@champion and @challenger where a test needs them, share 0, every replica caught up."""
    client = fleet.client
    client.set_registered_model_tag(MODEL, "hotswap.canary_percent", "0")
    client.set_registered_model_alias(MODEL, "champion", champion)
    client.set_registered_model_alias(MODEL, "challenger", challenger)
    def caught_up(receiver: Process) -> bool:
        current = requests.get(receiver.url + "/models/current", timeout=5).json()
        canary = current["canary"]
        return bool(current["version"] == champion and canary["version"] == challenger
                    and canary["percent"] == 0)

    for receiver in fleet.receivers:
        wait_until(partial(caught_up, receiver), timeout=60,
                   message=f"{receiver.url} at champion {champion}, challenger {challenger}, "
                           "0 %")


@dataclass
class Load:
    """Single-row predictions from a thread, round robin over the replicas, each answer
    recorded as (time, status, role)."""

    receivers: list[Process]
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        session = requests.Session()
        for i in range(MAX_REQUESTS):
            if self.stop.is_set():
                return
            receiver = self.receivers[i % len(self.receivers)]
            answer = session.post(receiver.url + "/invocations",
                                  json=sample_rows(1, seed=i), timeout=30)
            self.answers.append((time.monotonic(), answer.status_code,
                                 answer.headers.get("X-Model-Role", "")))

    def failures(self) -> list[int]:
        return [status for _, status, _ in self.answers if status != 200]

    def canary_share(self, start: float, end: float) -> tuple[float, int]:
        """Percent answered by the canary between two moments, and the count."""
        inside = [role for at, _, role in self.answers if start <= at <= end]
        return 100 * inside.count("canary") / max(1, len(inside)), len(inside)


class Controller:
    """`mlflow-hotswap rollout` as a child process, its lines recorded with their time."""

    def __init__(self, fleet: Fleet, *args: str) -> None:
        self.popen = subprocess.Popen(
            fleet.command("rollout", MODEL, "--canary", "@challenger", "--promote-alias",
                          "champion", "--receivers", fleet.url, *args),
            env=fleet.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait(self, timeout: float = 180) -> int:
        code = self.popen.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def kill(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=15)

    def when(self, text: str) -> float:
        return next(at for at, line in self.lines if text in line)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def version_tag(fleet: Fleet, version: str) -> str:
    return str(fleet.client.get_model_version(MODEL, version).tags.get("hotswap.rollout", ""))


def champion(fleet: Fleet) -> str:
    return str(fleet.client.get_model_version_by_alias(MODEL, "champion").version)


def all_at_zero(fleet: Fleet) -> bool:
    return all(canary_of(receiver)["percent"] == 0 for receiver in fleet.receivers)


def test_a_good_challenger_is_promoted_step_by_step_at_the_shares_the_tag_says(
        fleet: Fleet) -> None:
    point(fleet, champion="1", challenger="2")
    with Load(fleet.receivers) as load:
        # Each step holds long enough for 50+ answers from one client thread on a loaded
        # machine: the share a step measures is only as good as its sample.
        rollout = Controller(fleet, "--steps", "5,25,50,100", "--step-seconds", "5",
                             "--min-requests", "20", "--max-latency-ratio", "4")
        code = rollout.wait()
    assert code == 0, rollout.output()
    for index, percent in enumerate((5, 25, 50, 100)):
        label = f"step {index + 1}/4 {percent} %"
        start, end = rollout.when(f"{label}: every replica took it"), rollout.when(
            f"{label}: canary")
        share, count = load.canary_share(start, end)
        assert count >= 50 and abs(share - percent) <= 10, (label, share, count)
    assert champion(fleet) == "2"
    assert fleet.client.get_registered_model(MODEL).tags["hotswap.canary_percent"] == "0"
    assert version_tag(fleet, "2").startswith("promoted after steps 5,25,50,100 %")
    assert load.failures() == []


def test_a_challenger_failing_on_some_rows_is_rolled_back_at_the_first_step_unseen(
        fleet: Fleet) -> None:
    point(fleet, champion="2", challenger="3")
    with Load(fleet.receivers) as load:
        rollout = Controller(fleet, "--steps", "20,100", "--step-seconds", "15",
                             "--min-requests", "100")
        code = rollout.wait()
        wait_until(lambda: all_at_zero(fleet), timeout=PUSH_DEADLINE,
                   message="every replica at 0 %")
    assert code == 1, rollout.output()
    assert version_tag(fleet, "3").startswith("aborted at 20 %: error rate"), rollout.output()
    assert champion(fleet) == "2"
    assert load.failures() == []  # the primary answered every row the challenger failed on
    fallbacks = sum(float(line.split()[-1]) for receiver in fleet.receivers
                    for line in requests.get(receiver.url + "/metrics", timeout=5).text
                    .splitlines() if line.startswith("hotswap_canary_fallbacks_total{"))
    assert fallbacks >= 2


def test_a_slow_challenger_is_rolled_back_by_the_latency_check(fleet: Fleet) -> None:
    point(fleet, champion="2", challenger="4")
    with Load(fleet.receivers) as load:
        rollout = Controller(fleet, "--steps", "20,100", "--step-seconds", "2",
                             "--min-requests", "20")
        code = rollout.wait()
    assert code == 1, rollout.output()
    assert version_tag(fleet, "4").startswith("aborted at 20 %: p99 latency ratio"), (
        rollout.output())
    assert champion(fleet) == "2" and load.failures() == []


def test_a_killed_controller_leaves_its_place_a_second_refuses_resume_and_abort_finish(
        fleet: Fleet) -> None:
    client = fleet.client
    point(fleet, champion="2", challenger="1")
    with Load(fleet.receivers) as load:
        first = Controller(fleet, "--steps", "5,50,100", "--step-seconds", "600",
                           "--min-requests", "5")
        wait_until(lambda: "every replica took it" in first.output(), timeout=60,
                   message="the first step held")
        first.kill()
        assert version_tag(fleet, "1") == "running at 5 %"
        assert client.get_registered_model(MODEL).tags["hotswap.canary_percent"] == "5"
        second = Controller(fleet, "--step-seconds", "1")
        assert second.wait() == 1 and "lease" in second.output()
        resumed = Controller(fleet, "--steps", "5,50,100", "--step-seconds", "1",
                             "--min-requests", "5", "--max-latency-ratio", "4", "--resume")
        assert resumed.wait() == 0, resumed.output()
        assert champion(fleet) == "1" and version_tag(fleet, "1").startswith("promoted")

        point(fleet, champion="1", challenger="2")
        third = Controller(fleet, "--steps", "25,100", "--step-seconds", "600",
                           "--min-requests", "5")
        wait_until(lambda: "every replica took it" in third.output(), timeout=60,
                   message="the third controller's first step held")
        third.kill()
        abort = Controller(fleet, "--abort")
        assert abort.wait() == 1, abort.output()
        wait_until(lambda: all_at_zero(fleet), timeout=PUSH_DEADLINE,
                   message="every replica at 0 %")
    assert version_tag(fleet, "2") == "aborted at 25 %: by request (--abort)"
    assert "hotswap.rollout.lease" not in client.get_registered_model(MODEL).tags
    assert champion(fleet) == "1" and load.failures() == []


def test_status_lists_every_replica_and_one_down_fails_wait_converged(fleet: Fleet) -> None:
    status = subprocess.run(fleet.command("status", "--receivers", fleet.url,
                                          "--wait-converged", "30"),
                            env=fleet.env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    rows = status.stdout.splitlines()[1:]
    assert sorted(row.split()[0] for row in rows) == [f"{a}:{fleet.port}" for a in ADDRESSES]
    assert all(row.split()[1] == "yes" for row in rows)

    nobody = f"http://127.0.0.4:{free_port('127.0.0.4')}"
    down = subprocess.run(fleet.command("status", "--receivers", f"{fleet.url},{nobody}",
                                        "--wait-converged", "2"),
                          env=fleet.env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1
    assert any(line.split()[:2] == [nobody.removeprefix("http://"), "down"]
               for line in down.stdout.splitlines())
    assert "not converged within 2 s" in down.stdout
