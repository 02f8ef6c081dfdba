"""A real HTTP server on a loopback address that records the webhook deliveries it receives.

It checks each signature with `mlflow_hotswap_plugin.signing.verify` (when given a secret) and
answers like the receiver: 401 on a bad signature, 202 otherwise, unless told to answer
something else first (to exercise retries).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from examples.processes import wait_until
from mlflow_hotswap_plugin import signing
from tests.support.loopback import LoopbackServer


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered
    signature_ok: bool | None  # None: no secret to check against

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return f"{self.payload['entity']}.{self.payload['action']}"

    @property
    def data(self) -> dict[str, Any]:
        return self.payload["data"]


class CaptureServer(LoopbackServer):
    def __init__(self, host: str = "127.0.0.1", port: int = 0, secret: str | None = None) -> None:
        self.secret = secret
        self.scripted: list[int] = []  # statuses to answer before the usual 202/401
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._attempts = 0
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                status = capture._record(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler, host, port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/webhooks/mlflow"

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        signature_ok = None
        if self.secret is not None:
            signature_ok = signing.verify(
                self.secret, headers.get(signing.DELIVERY_ID_HEADER, ""),
                headers.get(signing.TIMESTAMP_HEADER, ""), body,
                headers.get(signing.SIGNATURE_HEADER, ""))
        with self._lock:
            self._attempts += 1
            if self.scripted:
                status = self.scripted.pop(0)
            else:
                status = 401 if signature_ok is False else 202
            self._deliveries.append(Delivery(path, headers, body, status, signature_ok))
        return status

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def accepted(self, event: str | None = None,
                 where: Callable[[Delivery], bool] | None = None) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == 202
                and (event is None or d.event == event) and (where is None or where(d))]

    def wait_for(self, event: str, where: Callable[[Delivery], bool] | None = None,
                 count: int = 1, timeout: float = 10.0) -> list[Delivery]:
        def enough() -> list[Delivery] | None:
            found = self.accepted(event, where)
            return found if len(found) >= count else None

        return wait_until(enough, timeout=timeout, interval=0.02,
                          message=f"{count} x {event} at {self.url} (got {self.deliveries!r})")

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()


@contextmanager
def capture_server(host: str = "127.0.0.1", secret: str | None = None) -> Iterator[CaptureServer]:
    server = CaptureServer(host, secret=secret).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def capture_servers_on_one_port(hosts: list[str],
                                secret: str | None = None) -> Iterator[list[CaptureServer]]:
    """One capture server per loopback address, all on the same port: replicas behind one name."""
    for _ in range(20):
        first = CaptureServer(hosts[0], secret=secret)
        servers = [first]
        try:
            for host in hosts[1:]:
                servers.append(CaptureServer(host, first.port, secret=secret))
        except OSError:  # the port is taken on another address: try another
            for server in servers:
                server.stop()
            continue
        break
    else:
        raise RuntimeError(f"no port free on all of {hosts}")
    for server in servers:
        server.start()
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()
