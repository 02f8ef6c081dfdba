from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest

from examples.processes import free_port
from mlflow_hotswap_plugin import events, signing
from mlflow_hotswap_plugin.notifier import Notifier, Target, resolve
from mlflow_hotswap_plugin.settings import Settings
from tests.support.capture import capture_server, capture_servers_on_one_port

SECRET = "unit-secret"


def notifier(*targets: str, secret: str | None = SECRET, resolver=resolve, **settings) -> Notifier:
    return Notifier(Settings(targets=targets, secret=secret, timeout=2.0, **settings),
                    resolver=resolver, backoff_base=0.01, backoff_max=0.05)


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


def test_a_full_queue_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    release = threading.Event()
    resolving = threading.Event()

    def stuck_resolver(host: str, port: int) -> list[str]:
        resolving.set()
        release.wait(30)
        return ["127.0.0.1"]

    with capture_server() as capture:
        note = notifier(capture.url, secret=None, resolver=stuck_resolver, queue_size=2,
                        workers=1)
        note.emit(events.alias_created("iris", "a", "0"))
        assert resolving.wait(5)  # the one worker holds job 0; the queue is empty again
        for index in range(1, 6):
            note.emit(events.alias_created("iris", "a", str(index)))
        release.set()
        assert note.flush(5)
        versions = sorted(d.data["version"] for d in capture.accepted())
    assert versions == ["0", "1", "2"]
    assert caplog.text.count("Notification queue full (2): dropped") == 3


def test_no_targets_is_a_pass_through() -> None:
    before = set(threading.enumerate())
    note = notifier()
    note.emit(events.model_deleted("iris"))
    assert note.flush(0.1)
    assert set(threading.enumerate()) - before == set()


def test_default_resolver() -> None:
    assert resolve("127.0.0.5", 80) == ["127.0.0.5"]
    assert resolve("::1", 80) == ["::1"]
    assert resolve("localhost", 80) == ["127.0.0.1"]


def test_target_parsing_keeps_what_the_request_needs() -> None:
    target = Target.parse("https://u:p%40ss@receivers.ns.svc:8443/webhooks/mlflow?x=1")
    assert (target.scheme, target.host, target.port) == ("https", "receivers.ns.svc", 8443)
    assert target.host_header == "receivers.ns.svc:8443"
    assert target.path == "/webhooks/mlflow?x=1"
    assert target.auth_header is not None and target.auth_header.startswith("Basic ")
    assert Target.parse("http://r/").host_header == "r"
    assert Target.parse("http://r").path == "/"
    assert target.safe_url == "https://receivers.ns.svc:8443/webhooks/mlflow"

