"""The plugin's notifications inside a Beam worker: a small HTTP endpoint that checks each
notification exactly as the receiver does (signature, freshness, replay) and posts the model
names it names to an inbox the registry watchers wait on. A notification is only a hint: the
watchers ask the registry what changed."""

from __future__ import annotations

import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from requests.structures import CaseInsensitiveDict

from receiver.webhooks import (
    MAX_NOTIFICATION_BYTES,
    InvalidSignature,
    MalformedNotification,
    WebhookVerifier,
)

logger = logging.getLogger(__name__)

SECRET_VARIABLE = "HOTSWAP_WEBHOOK_SECRET"
MAX_AGE_SECONDS = 300.0


class Inbox:
    """How many notifications arrived per model name; watchers wait for the count to move."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._counts: dict[str, int] = {}

    def post(self, names: set[str]) -> None:
        with self._changed:
            for name in names:
                self._counts[name] = self._counts.get(name, 0) + 1
            self._changed.notify_all()

    def count(self, name: str) -> int:
        with self._changed:
            return self._counts.get(name, 0)

    def wait_past(self, name: str, seen: int, timeout: float) -> int:
        """The count for `name` once it is above `seen`, or as it is after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self._counts.get(name, 0) > seen, timeout)
            return self._counts.get(name, 0)


class NotificationListener:
    """`POST <any path>` on host:port, as the plugin's HOTSWAP_TARGETS sends it."""

    def __init__(self, host: str, port: int, secret: str | None) -> None:
        self.inbox = Inbox()
        handler = type("Handler", (_NotificationHandler,), {
            "verifier": WebhookVerifier(secret, MAX_AGE_SECONDS), "inbox": self.inbox})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"hotswap-notifications-{port}", daemon=True)
        self._thread.start()
        logger.info("Listening for model registry notifications on %s:%s", host, port)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _NotificationHandler(BaseHTTPRequestHandler):
    verifier: ClassVar[WebhookVerifier]
    inbox: ClassVar[Inbox]

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._answer(411, "Content-Length is required.")
        if int(length) > MAX_NOTIFICATION_BYTES:
            return self._answer(413, f"A notification is at most {MAX_NOTIFICATION_BYTES} bytes.")
        body = self.rfile.read(int(length))
        try:
            notification = self.verifier.check(CaseInsensitiveDict(self.headers.items()), body)
        except InvalidSignature as exc:
            return self._answer(401, str(exc))
        except MalformedNotification as exc:
            return self._answer(400, str(exc))
        if notification is None:
            return self._answer(200, "Already received.")
        self.inbox.post(notification.model_names())
        self._answer(202, "Accepted.")

    def _answer(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("notification listener: " + format, *args)


# One listener per address and process, shared by every watcher in the process that asks for it.
_listeners: dict[tuple[str, int], tuple[NotificationListener, int]] = {}
_listeners_lock = threading.Lock()


def acquire(address: str, secret: str | None = None) -> NotificationListener:
    """The process's listener on `address` ("host:port"), started on first use; `secret`
    defaults to HOTSWAP_WEBHOOK_SECRET in the worker's environment. Pair with `release`."""
    host, port = parse_address(address)
    with _listeners_lock:
        listener, users = _listeners.get((host, port), (None, 0))
        if listener is None:
            secret = secret if secret is not None else os.environ.get(SECRET_VARIABLE)
            listener = NotificationListener(host, port, secret)
        _listeners[(host, port)] = (listener, users + 1)
        return listener


def release(address: str) -> None:
    """Stop the listener on `address` once its last watcher lets go."""
    key = parse_address(address)
    with _listeners_lock:
        listener, users = _listeners.pop(key, (None, 0))
        if listener is None:
            return
        if users > 1:
            _listeners[key] = (listener, users - 1)
            return
    listener.close()


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{address!r} is not an address like '127.0.0.1:8765'")
    return host, int(port)
