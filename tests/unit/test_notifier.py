from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from examples.processes import free_port, wait_until
from mlflow_hotswap_plugin import events, signing
from mlflow_hotswap_plugin.delivery import Backoff
from mlflow_hotswap_plugin.notifier import Notifier
from mlflow_hotswap_plugin.settings import Settings
from mlflow_hotswap_plugin.targets import Resolver, resolve
from tests.support.capture import Delivery, capture_server, capture_servers_on_one_port
from tests.support.hung import hung_server

SECRET = "unit-secret"


def notifier(*targets: str, secret: str | None = SECRET, resolver: Resolver = resolve,
             clock: Callable[[], float] = time.time, lane_idle: float = 60.0,
             **settings: Any) -> Notifier:
    return Notifier(Settings(targets=targets, secrets=(secret,) if secret else (),
                             timeout=settings.pop("timeout", 2.0), **settings),
                    resolver=resolver, backoff=Backoff(0.01, 0.05), clock=clock, idle=lane_idle)


def test_delivers_the_native_webhook_wire_format_signed() -> None:
    with capture_server(secret=SECRET) as capture:
        note = notifier(capture.url)
        note.emit(events.stage_transitioned("iris", "2", "Staging", "Production"))
        [delivery] = capture.wait_for("model_version.stage_transitioned")
        assert note.flush(5)
    assert delivery.signature_ok is True
    assert delivery.path == "/webhooks/mlflow"
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    assert headers["content-type"] == "application/json"
    uuid.UUID(headers["x-mlflow-delivery-id"], version=4)
    assert abs(int(headers["x-mlflow-timestamp"]) - time.time()) < 60
    assert headers["x-mlflow-signature"].startswith("v1,")
    payload = json.loads(delivery.body)
    assert set(payload) == {"entity", "action", "timestamp", "data"}
    assert payload["data"] == {"name": "iris", "version": "2", "from_stage": "Staging",
                               "to_stage": "Production"}
    assert payload["timestamp"].endswith("+00:00")


def test_without_a_secret_deliveries_are_unsigned() -> None:
    with capture_server() as capture:
        notifier(capture.url, secret=None).emit(events.alias_deleted("iris", "champion"))
        [delivery] = capture.wait_for("model_version_alias.deleted")
    assert signing.SIGNATURE_HEADER.lower() not in {k.lower() for k in delivery.headers}
    assert delivery.data == {"name": "iris", "alias": "champion"}


def test_every_target_gets_each_event() -> None:
    with capture_server(secret=SECRET) as one, capture_server(secret=SECRET) as two:
        note = notifier(one.url, two.url)
        note.emit(events.alias_created("iris", "champion", "3"))
        note.emit(events.model_renamed("iris", "iris2"))
        assert note.flush(5)
        for capture in (one, two):
            assert [d.event for d in capture.accepted()].count("model_version_alias.created") == 1
            assert [d.event for d in capture.accepted()].count("registered_model.renamed") == 1


def test_a_name_with_several_addresses_is_notified_at_each_keeping_the_host_header() -> None:
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with capture_servers_on_one_port(hosts, secret=SECRET) as replicas:
        port = replicas[0].port
        asked: list[tuple[str, int]] = []

        def resolver(host: str, port: int) -> list[str]:
            asked.append((host, port))
            return hosts

        note = notifier(f"http://receivers.example:{port}/webhooks/mlflow", resolver=resolver)
        note.emit(events.version_deleted("iris", "1"))
        assert note.flush(5)
        assert asked == [("receivers.example", port)]
        for replica in replicas:
            [delivery] = replica.accepted("model_version.deleted")
            assert delivery.headers["Host"] == f"receivers.example:{port}"
            assert delivery.signature_ok is True


def test_retries_429_and_5xx_with_the_same_delivery() -> None:
    with capture_server(secret=SECRET) as capture:
        capture.scripted = [503, 429, 500]
        note = notifier(capture.url, max_retries=3)
        note.emit(events.model_deleted("iris"))
        capture.wait_for("registered_model.deleted")
        assert note.flush(5)
        attempts = capture.deliveries
    assert [d.status for d in attempts] == [503, 429, 500, 202]
    assert len({d.headers[signing.DELIVERY_ID_HEADER] for d in attempts}) == 1
    assert all(d.signature_ok for d in attempts)


def test_gives_up_after_max_retries_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    with capture_server(secret=SECRET) as capture:
        capture.scripted = [502] * 10
        note = notifier(capture.url, max_retries=2)
        note.emit(events.model_deleted("iris"))
        assert note.flush(5)
        assert len(capture.deliveries) == 3
    assert "failed after 3 attempt(s): HTTP 502" in caplog.text


def test_client_errors_are_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    with capture_server(secret="the receiver's secret") as capture:
        note = notifier(capture.url, max_retries=3)
        note.emit(events.model_deleted("iris"))
        assert note.flush(5)
        [delivery] = capture.deliveries
    assert delivery.status == 401 and delivery.signature_ok is False
    assert "401: is HOTSWAP_WEBHOOK_SECRET the same" in caplog.text
    assert SECRET not in caplog.text


def test_a_receiver_that_is_down_is_retried_then_logged_without_credentials(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    port = free_port()  # nothing listens there
    note = notifier(f"http://user:hunter2@127.0.0.1:{port}/hook?token=abc", max_retries=2)
    note.emit(events.alias_deleted("iris", "champion"))
    assert note.flush(10)
    assert f"http://127.0.0.1:{port}/hook (127.0.0.1)" in caplog.text
    assert "failed after 3 attempt(s)" in caplog.text
    assert "hunter2" not in caplog.text and "abc" not in caplog.text


def test_emit_never_waits_for_resolution_or_delivery() -> None:
    release = threading.Event()

    def slow_resolver(host: str, port: int) -> list[str]:
        release.wait(30)
        return ["127.0.0.1"]

    with capture_server() as capture:
        note = notifier(capture.url, secret=None, resolver=slow_resolver)
        emitted = threading.Event()

        def emit_all() -> None:
            for index in range(20):
                note.emit(events.alias_created("iris", "a", str(index)))
            emitted.set()

        threading.Thread(target=emit_all, daemon=True).start()
        try:
            assert emitted.wait(5), "emit() blocked on resolution"
            assert capture.deliveries == []
        finally:
            release.set()
        capture.wait_for("model_version_alias.created", count=20)


def test_a_full_lane_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    release = threading.Event()
    resolving = threading.Event()

    def stuck_resolver(host: str, port: int) -> list[str]:
        resolving.set()
        release.wait(30)
        return ["127.0.0.1"]

    with capture_server() as capture:
        note = notifier(capture.url, secret=None, resolver=stuck_resolver, queue_size=2)
        note.emit(events.alias_created("iris", "a", "0"))
        assert resolving.wait(5)  # the target's lane holds job 0; its queue is empty again
        for index in range(1, 6):
            note.emit(events.alias_created("iris", "a", str(index)))
        release.set()
        assert note.flush(5)
        versions = sorted(d.data["version"] for d in capture.accepted())
    # The target's lane kept 1 and 2 and dropped 3 to 5. Fanned out at once after the release,
    # 0 to 2 may overrun the address's lane too (it holds 2): each is delivered or logged.
    target_drops = caplog.text.count(f"Notification queue for {capture.url} full (2): dropped")
    address_drops = caplog.text.count(f"{capture.url} (127.0.0.1) full (2): dropped")
    assert target_drops == 3
    assert "0" in versions and set(versions) <= {"0", "1", "2"}
    assert len(versions) + address_drops == 3


def test_no_targets_is_a_pass_through() -> None:
    before = set(threading.enumerate())
    note = notifier()
    note.emit(events.model_deleted("iris"))
    assert note.flush(0.1)
    assert set(threading.enumerate()) - before == set()


def of_version(version: str) -> Callable[[Delivery], bool]:
    return lambda delivery: delivery.data["version"] == version


def test_hung_targets_never_delay_a_healthy_one() -> None:
    # More hung targets than the old shared pool had workers (4), each retried with a timeout.
    with capture_server(secret=SECRET) as healthy, hung_servers(5) as hung:
        note = notifier(*hung, healthy.url, timeout=30.0, max_retries=3)
        for index in range(3):
            note.emit(events.alias_created("iris", "champion", str(index)))
            # Each event reaches the healthy target while every hung one still holds its first.
            healthy.wait_for("model_version_alias.created",
                             where=of_version(str(index)), timeout=5)
        pending = note.pending()
        assert healthy.url not in pending
        assert all(pending[url] == 3 for url in hung)


def test_a_hung_replica_never_delays_the_others_behind_the_same_name() -> None:
    with capture_servers_on_one_port(["127.0.0.3", "127.0.0.4"], secret=SECRET) as replicas, \
            hung_server("127.0.0.2", replicas[0].port):
        port = replicas[0].port
        note = notifier(f"http://receivers.example:{port}/webhooks/mlflow", timeout=30.0,
                        resolver=lambda host, p: ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        note.emit(events.version_deleted("iris", "1"))
        note.emit(events.version_deleted("iris", "2"))
        for replica in replicas:
            replica.wait_for("model_version.deleted", count=2, timeout=5)


def test_a_slow_name_never_delays_another_target() -> None:
    release = threading.Event()

    def resolver(host: str, port: int) -> list[str]:
        if host == "slow.example":
            release.wait(30)
        return ["127.0.0.1"]

    with capture_server(secret=SECRET) as healthy:
        note = notifier("http://slow.example:9/webhooks/mlflow", healthy.url, resolver=resolver)
        try:
            note.emit(events.model_deleted("iris"))
            healthy.wait_for("registered_model.deleted", timeout=5)
            assert note.pending() == {"http://slow.example:9/webhooks/mlflow": 1}
        finally:
            release.set()


# -- DNS failures are retried ------------------------------------------------------------------

def test_dns_failures_are_retried_like_connection_errors() -> None:
    calls: list[str] = []

    def flaky(host: str, port: int) -> list[str]:
        calls.append(host)
        if len(calls) <= 2:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return ["127.0.0.1"]

    with capture_server(secret=SECRET) as capture:
        note = notifier(capture.url.replace("127.0.0.1", "receiver.example"), resolver=flaky,
                        max_retries=3)
        note.emit(events.model_deleted("iris"))
        [delivery] = capture.wait_for("registered_model.deleted")
        assert note.flush(5)
    assert calls == ["receiver.example"] * 3
    assert delivery.headers["Host"] == f"receiver.example:{capture.port}"


def test_a_name_that_never_resolves_is_given_up_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    calls: list[str] = []

    def failing(host: str, port: int) -> list[str]:
        calls.append(host)
        if len(calls) % 2:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return []  # a headless Service with no ready pod

    note = notifier("http://nowhere.example/webhooks/mlflow", resolver=failing, max_retries=2)
    note.emit(events.model_deleted("iris"))
    assert note.flush(5)
    assert len(calls) == 3
    assert ("Cannot resolve nowhere.example after 3 attempt(s): registered_model.deleted "
            "not sent") in caplog.text


# -- each attempt signed afresh ----------------------------------------------------------------

def test_each_attempt_has_a_fresh_timestamp_and_signature_under_one_delivery_id() -> None:
    now = [1_000_000.0]

    def clock() -> float:
        now[0] += 600  # a long backoff between attempts: a reused timestamp would be stale
        return now[0]

    with capture_server(secret=SECRET) as capture:
        capture.scripted = [503, 503]
        note = notifier(capture.url, clock=clock, max_retries=2)
        note.emit(events.model_deleted("iris"))
        assert note.flush(5)
        attempts = capture.deliveries
    assert [d.status for d in attempts] == [503, 503, 202]
    assert len({d.headers[signing.DELIVERY_ID_HEADER] for d in attempts}) == 1
    assert [d.headers[signing.TIMESTAMP_HEADER] for d in attempts] == [
        "1000600", "1001200", "1001800"]
    assert len({d.headers[signing.SIGNATURE_HEADER] for d in attempts}) == 3
    assert all(d.signature_ok for d in attempts)


def test_signs_with_the_first_of_several_secrets() -> None:
    with capture_server(secret="new") as new, capture_server(secret="old") as old:
        note = Notifier(Settings(targets=(new.url, old.url), secrets=("new", "old")))
        note.emit(events.model_deleted("iris"))
        assert note.flush(10)
    assert [d.signature_ok for d in new.deliveries] == [True]
    assert [d.signature_ok for d in old.deliveries] == [False]


# -- what is dropped at exit is said ------------------------------------------------------------

def test_close_logs_what_each_target_still_had(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    with capture_server(secret=SECRET) as healthy, hung_server() as hung:
        note = notifier(f"http://user:pw@{hung.removeprefix('http://')}", healthy.url,
                        timeout=30.0)
        for index in range(3):
            note.emit(events.alias_created("iris", "champion", str(index)))
        healthy.wait_for("model_version_alias.created", count=3)
        wait_until(lambda: note.pending() == {hung: 3}, timeout=5)
        left = note.close(timeout=0.2)
    assert left == {hung: (2, 1)}
    assert (f"exiting with 3 notification(s) for {hung} not delivered (2 queued, 1 in flight)"
            in caplog.text)
    assert "pw" not in caplog.text


def test_close_after_everything_was_delivered_says_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    with capture_server(secret=SECRET) as healthy:
        note = notifier(healthy.url)
        note.emit(events.model_deleted("iris"))
        assert note.close(timeout=5) == {}
    assert "exiting" not in caplog.text


# -- bounded: idle lanes end --------------------------------------------------------------------

def test_idle_lanes_end_their_threads_and_come_back_on_demand() -> None:
    before = set(threading.enumerate())
    with capture_server(secret=SECRET) as capture:
        note = notifier(capture.url, lane_idle=0.05)
        note.emit(events.model_deleted("a"))
        capture.wait_for("registered_model.deleted")
        wait_until(lambda: not [t for t in set(threading.enumerate()) - before
                                if t.name.startswith("hotswap-notify")], timeout=5)
        note.emit(events.model_deleted("b"))
        capture.wait_for("registered_model.deleted", count=2)


@contextmanager
def hung_servers(count: int) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(hung_server()) for _ in range(count)]


EXITING_SCRIPT = """
import os, signal, sys
from examples.processes import wait_until
from mlflow_hotswap_plugin import events
from mlflow_hotswap_plugin.notifier import Notifier
from mlflow_hotswap_plugin.settings import Settings
from mlflow_hotswap_plugin import exit_hooks
note = Notifier(Settings(targets=(sys.argv[1],), timeout=1.0))  # waited for at exit
exit_hooks.watch(note)  # as the store does when it is built
note.emit(events.model_deleted("iris"))
note.emit(events.model_deleted("iris"))
wait_until(lambda: note.pending().get(sys.argv[1]) == 2, timeout=10, interval=0.01,
           message="one delivery in flight and one queued")
if sys.argv[2] == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()  # never returns: SIGTERM still ends the process
"""


@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_a_process_that_ends_says_what_it_dropped(how: str) -> None:
    with hung_server() as hung:
        done = subprocess.run([sys.executable, "-c", EXITING_SCRIPT, hung, how],
                              capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parents[2])  # for `examples`
    assert done.returncode == (-signal.SIGTERM if how == "sigterm" else 0), done.stderr
    assert (f"exiting with 2 notification(s) for {hung} not delivered (1 queued, 1 in flight)"
            in done.stderr)
    assert done.stderr.count("exiting with") == 1
