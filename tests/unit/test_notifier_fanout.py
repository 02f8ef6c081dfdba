"""A name resolving to 1,000 loopback addresses, each a replica of one stub server."""

from __future__ import annotations

import threading

import pytest

from examples.processes import wait_until
from mlflow_hotswap_plugin import events
from mlflow_hotswap_plugin.delivery import Backoff
from mlflow_hotswap_plugin.notifier import WORKERS, Notifier
from mlflow_hotswap_plugin.settings import Settings
from tests.support.fanout import fanout_stub

REPLICAS = 1000
HUNG = 5
EVENTS = 3


def test_every_replica_gets_each_notification_once_in_order_whatever_the_hung_ones_do() -> None:
    with fanout_stub(REPLICAS, hung=HUNG) as stub:
        note = Notifier(Settings(targets=(f"http://replicas.test:{stub.port}/webhooks/mlflow",),
                                 timeout=60.0),  # a hung replica holds its first attempt
                        resolver=lambda host, port: list(stub.addresses),
                        backoff=Backoff(0.01, 0.05))
        threads_before = threading.active_count()
        for version in range(1, EVENTS + 1):
            note.emit(events.alias_created("fleet", "champion", str(version)))
        healthy = [a for a in stub.addresses if a not in stub.hung]
        wait_until(lambda: all(n == EVENTS for a, n in stub.counts().items() if a in healthy),
                   timeout=20, interval=0.05, message="every healthy replica notified")
        for address in healthy:
            versions = [body["data"]["version"] for body in stub.received(address)]
            assert versions == ["1", "2", "3"], address
        assert all(stub.received(address) == [] for address in stub.hung)
        # The hung replicas still hold their first delivery, and the rest wait behind it.
        assert note.pending() == {f"http://replicas.test:{stub.port}/webhooks/mlflow":
                                  HUNG * EVENTS}
        assert note.workers <= WORKERS
        assert threading.active_count() - threads_before <= WORKERS


def test_more_addresses_than_the_limit_are_cut_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with fanout_stub(50) as stub:
        note = Notifier(Settings(targets=(f"http://replicas.test:{stub.port}/hook",),
                                 max_addresses=40),
                        resolver=lambda host, port: list(stub.addresses))
        note.emit(events.model_deleted("fleet"))
        assert note.flush(20)
        assert sum(stub.counts().values()) == 40
        assert list(stub.counts().values())[:40] == [1] * 40
    assert ("replicas.test resolves to 50 addresses, more than HOTSWAP_MAX_ADDRESSES=40: 10 "
            "replica(s) are NOT notified") in caplog.text
