"""`--workers N` against a real MLflow server with the plugin: the workers start on the version
their supervisor loaded before forking them (or load it themselves when it could not), every
worker follows a promotion, swaps lose no request, a killed worker comes back on the current
version, the poll runs once per host, /metrics sums the workers, and SIGTERM lets a request in
flight finish.

One stack for the module: an MLflow server notifying a 2-worker receiver (push only), so a
notification reaching one worker must be relayed to the other; a 3-worker receiver that is not
notified and polls every second, so the one worker that polls must relay what it found, and
that reaches MLflow through a proxy refusing downloads while its supervisor starts; and a
2-worker receiver of a gated model (a custom pyfunc, its predict held while a gate file
exists), which its supervisor leaves to the workers, for the drain.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from examples.processes import Process, metric, promote, wait_until
from tests.support.models import FEATURES, register_gated_model
from tests.support.proxy import mlflow_proxy
from tests.support.stack import PluginStack, ReceiverSpec

MODEL = "workers-model"
GATED = "workers-gated"
BODY = json.dumps({"dataframe_split": {"columns": FEATURES,
                                       "data": [[0.5] * len(FEATURES)]}}).encode()
POLL_SECONDS = 1.0


@dataclass
class Stack:
    plugin: PluginStack
    two: Process
    three: Process
    gated: Process
    gate: Path
    promoted: str = "1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("workers")
    gate = workdir / "gate"
    specs = [ReceiverSpec(MODEL, {"HOTSWAP_WORKERS": "2"}, log_name="two.log"),
             ReceiverSpec(MODEL, {"HOTSWAP_WORKERS": "3",
                                  "MODEL_UPDATE_INTERVAL": str(POLL_SECONDS)},
                          log_name="three.log"),
             ReceiverSpec(GATED, {"HOTSWAP_WORKERS": "2", "HOTSWAP_TEST_GATE": str(gate)},
                          log_name="gated.log")]
    with PluginStack(workdir) as plugin:
        plugin.start_server([specs[0].webhook, specs[2].webhook])
        plugin.register(MODEL, versions=2)
        version = register_gated_model(plugin.server.url, GATED, factor=1.0)
        promote(GATED, version, tracking_uri=plugin.server.url)
        with mlflow_proxy(plugin.server.url) as proxy:
            proxy.mode = "fail"  # until its workers start: its supervisor cannot load
            specs[1].tracking_uri = proxy.url
            two, three, gated = plugin.start_receivers(specs)  # each answering: workers up
            proxy.mode = "pass"
            for receiver, serving in ((two, "1"), (three, "1"), (gated, version)):
                wait_until(partial(all_serve, receiver, serving), timeout=120,
                           message=f"every worker of {receiver.url} serving {serving}")
            yield Stack(plugin, two, three, gated, gate)


def current(receiver: Process) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(receiver.url + "/models/current", timeout=10).json()
    return body


def all_serve(receiver: Process, version: str) -> bool:
    try:
        workers = current(receiver)["workers"]
    except (requests.RequestException, KeyError, ValueError):
        return False
    return all(worker["versions"].get(worker_model(receiver)) == version for worker in workers)


def worker_model(receiver: Process) -> str:
    return receiver.env["MODEL_NAME"]


def post(receiver: Process, session: requests.Session | None = None) -> requests.Response:
    # Without a session, a new connection per request, so the kernel picks a worker each time.
    send = session.post if session is not None else requests.post
    headers = {"Content-Type": "application/json"}
    if session is None:
        headers["Connection"] = "close"
    return send(receiver.url + "/invocations", data=BODY, timeout=30, headers=headers)


def promote_next(stack: Stack) -> str:
    stack.promoted = "2" if stack.promoted == "1" else "1"
    promote(MODEL, stack.promoted, tracking_uri=stack.plugin.server.url)
    return stack.promoted


def test_the_workers_start_on_the_version_their_supervisor_loaded(stack: Stack) -> None:
    # Version 1, followed at start: loaded once for the host, before both workers were forked;
    # each worker warmed it up (its first predict) and served it.
    log = stack.two.log()
    assert log.count(f"Loaded version 1 of {MODEL} before starting the workers") == 1
    assert log.count(f"Loading model {MODEL} version 1 from MLflow") == 1
    assert log.count(f"Warming up model {MODEL} version 1, loaded before this worker") == 2
    assert log.count(f"Swapped to model version 1 of {MODEL} (was none, trigger startup)") == 2


@pytest.mark.parametrize("which", ["three", "gated"])
def test_the_workers_load_on_their_own_what_their_supervisor_did_not(stack: Stack,
                                                                     which: str) -> None:
    # three's supervisor could not download; gated is a custom pyfunc, whose load_context may
    # start threads or open connections that forked workers could not share.
    receiver = getattr(stack, which)
    log = receiver.log()
    assert f"{worker_model(receiver)} is not loaded before starting the workers" in log
    assert "before starting the workers, which share it" not in log
    assert which != "gated" or "not known to be safe to load before a fork" in log
    assert all(worker["versions"].get(worker_model(receiver))
               for worker in current(receiver)["workers"])


@pytest.mark.parametrize("which", ["two", "three"])
def test_a_promotion_reaches_every_worker(stack: Stack, which: str) -> None:
    receiver = getattr(stack, which)
    version = promote_next(stack)
    wait_until(lambda: all_serve(receiver, version), timeout=60,
               message=f"every worker of {receiver.url} serving {version}")
    body = current(receiver)
    assert body["converged"] is True
    assert len({worker["pid"] for worker in body["workers"]}) == {"two": 2, "three": 3}[which]
    # Fifty new connections, spread by the kernel over the workers: all answer the new version.
    versions = {post(receiver).headers["X-Model-Version"] for _ in range(50)}
    assert versions == {version}


def test_no_request_fails_across_swaps_under_load(stack: Stack) -> None:
    receiver, stop = stack.two, threading.Event()

    def client(kept_alive: bool) -> list[tuple[int, str | None]]:
        seen, session = [], requests.Session() if kept_alive else None
        while not stop.is_set():
            response = post(receiver, session)
            seen.append((response.status_code, response.headers.get("X-Model-Version")))
        return seen

    with ThreadPoolExecutor(max_workers=6) as pool:
        clients = [pool.submit(client, i % 2 == 0) for i in range(6)]
        for _ in range(2):
            version = promote_next(stack)
            wait_until(partial(all_serve, receiver, version), timeout=60,
                       message=f"every worker serving {version}")
        stop.set()
        answers = [answer for future in clients for answer in future.result()]
    assert {status for status, _ in answers} == {200}
    assert {version for _, version in answers} == {"1", "2"}


@pytest.mark.parametrize("which", ["two", "three"])
def test_a_killed_worker_comes_back_on_the_current_version(stack: Stack, which: str) -> None:
    receiver = getattr(stack, which)
    if stack.promoted == "1":  # two's supervisor loaded 1: its new worker must not stay on it
        promote_next(stack)
    wait_until(lambda: all_serve(receiver, stack.promoted), timeout=60,
               message=f"every worker serving {stack.promoted}")
    victim = current(receiver)["workers"][1]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        worker = current(receiver)["workers"][1]
        return worker["pid"] not in (None, victim["pid"]) and \
            worker["versions"].get(MODEL) == stack.promoted

    wait_until(replaced, timeout=90, message="worker 1 started again, serving")
    assert receiver.alive()
    assert {post(receiver).status_code for _ in range(20)} == {200}


def test_the_poll_runs_once_per_host(stack: Stack) -> None:
    # Three workers, one model, no notification, a poll every second (+-10 %): one registry
    # look-up per poll, where three workers polling on their own would make three.
    url = stack.three.url
    # Settled first: a poll that finds a change makes every worker look (one relayed refresh).
    wait_until(lambda: all_serve(stack.three, stack.promoted), timeout=60,
               message=f"every worker serving {stack.promoted}")
    before, started = metric(url, "hotswap_registry_resolves_total"), time.monotonic()
    wait_until(lambda: metric(url, "hotswap_registry_resolves_total") >= before + 3,
               timeout=60, message="three polls")
    resolves = metric(url, "hotswap_registry_resolves_total") - before
    most_polls = (time.monotonic() - started) / (POLL_SECONDS * 0.9) + 1
    assert resolves <= most_polls


def test_metrics_sum_the_workers(stack: Stack) -> None:
    url = stack.two.url
    labels = {"model": MODEL, "version": stack.promoted, "role": "primary"}
    before = metric(url, "hotswap_predictions_total", labels)
    timed = metric(url, "hotswap_prediction_duration_seconds_count", {"role": "primary"})
    sent = 40
    assert {post(stack.two).status_code for _ in range(sent)} == {200}
    assert metric(url, "hotswap_predictions_total", labels) - before == sent
    assert metric(url, "hotswap_prediction_duration_seconds_count",
                  {"role": "primary"}) - timed == sent


def test_sigterm_lets_every_worker_finish_its_requests(stack: Stack) -> None:
    receiver, url = stack.gated, stack.gated.url
    stack.gate.touch()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(post, receiver)
            wait_until(lambda: metric(url, "hotswap_lane_queue_depth") >= 1, timeout=30,
                       message="the request held in its predict")
            os.kill(receiver.pid, signal.SIGTERM)  # the supervisor alone, as an orchestrator
            wait_until(lambda: receiver.log().count("Shutting down") >= 2, timeout=30,
                       message="both workers draining")
            stack.gate.unlink()
            assert held.result(timeout=30).status_code == 200
        assert receiver.popen.wait(timeout=30) == 0
    finally:
        stack.gate.unlink(missing_ok=True)
