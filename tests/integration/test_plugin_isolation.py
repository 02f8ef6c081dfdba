"""A real `mlflow server` whose plugin notifies hung receivers beside healthy ones.

Five targets never answer (more than the four delivery workers the plugin once shared), and
one hostname resolves to a hung replica and a healthy one. Each wait is far shorter than one
delivery attempt to a hung receiver (HOTSWAP_TIMEOUT), so any delivery that queued behind a
hung one would miss it. When the server stops, its log says what it dropped.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from examples.processes import Process, start_mlflow_server, wait_until
from tests.support.capture import CaptureServer, Delivery, capture_server
from tests.support.hung import hung_server
from tests.support.registry import fake_dns_env, light_versions, ui_set_alias, ui_transition

SECRET = "isolation-secret"
TIMEOUT = 20  # HOTSWAP_TIMEOUT: one attempt at a hung receiver
PROMPT = 5.0  # a healthy receiver hears of each change within this, whatever the hung ones do
REPLICAS = "replicas.isolation.test"


@dataclass
class Stack:
    server: Process
    healthy: CaptureServer
    healthy_replica: CaptureServer
    hung: list[str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("plugin-isolation")
    with ExitStack() as stack:
        healthy = stack.enter_context(capture_server(secret=SECRET))
        hung = [stack.enter_context(hung_server()) for _ in range(5)]
        # A replica set behind one name: 127.0.0.2 hangs, 127.0.0.3 answers, same port.
        healthy_replica = stack.enter_context(capture_server("127.0.0.3", secret=SECRET))
        stack.enter_context(hung_server("127.0.0.2", healthy_replica.port))
        replica_url = f"http://{REPLICAS}:{healthy_replica.port}/webhooks/mlflow"
        server = start_mlflow_server(workdir, extra_env={
            "HOTSWAP_TARGETS": ",".join([*hung, replica_url, healthy.url]),
            "HOTSWAP_WEBHOOK_SECRET": SECRET, "HOTSWAP_TIMEOUT": str(TIMEOUT),
            "HOTSWAP_MAX_RETRIES": "1",
            **fake_dns_env(workdir, {REPLICAS: ["127.0.0.2", "127.0.0.3"]})})
        stack.callback(server.stop)
        yield Stack(server, healthy, healthy_replica, hung)


def of_isolated(delivery: Delivery) -> bool:
    return delivery.data.get("name") == "isolated"


def test_hung_receivers_never_delay_the_healthy_ones(stack: Stack) -> None:
    light_versions(stack.server.url, "isolated", 3)
    url = stack.server.url
    changes: list[Callable[[], object]] = [
        lambda: ui_transition(url, "isolated", "1", "Staging"),
        lambda: ui_set_alias(url, "isolated", "champion", "2"),
        lambda: ui_transition(url, "isolated", "3", "Production")]
    for count, change in enumerate(changes, start=1):
        change()
        for capture in (stack.healthy, stack.healthy_replica):
            def arrived(c: CaptureServer = capture, n: int = count) -> bool:
                return len(c.accepted(where=of_isolated)) >= n

            wait_until(arrived,
                       timeout=PROMPT, interval=0.02,
                       message=f"change {count} at {capture.url} while hung receivers hold theirs")
    events = [(d.event, d.signature_ok) for d in stack.healthy.accepted(where=of_isolated)]
    assert events == [("model_version.stage_transitioned", True),
                      ("model_version_alias.created", True),
                      ("model_version.stage_transitioned", True)]


def test_what_is_undelivered_at_exit_is_logged_per_target(stack: Stack) -> None:
    # SIGTERM, as a process manager stops it; then wait for the worker's last words (stop()
    # would SIGKILL the group as soon as the parent process has gone).
    os.killpg(stack.server.popen.pid, signal.SIGTERM)
    wait_until(lambda: all(f"for {url} not delivered" in stack.server.log()
                           for url in stack.hung),
               timeout=30, message="a line per hung target in the server log")
    stack.server.stop()
    log = stack.server.log()
    healthy_lines = [line for line in log.splitlines() if stack.healthy.url in line]
    assert not [line for line in healthy_lines if "not delivered" in line]
