"""Connection limits uvicorn lacks: a deadline for a request's headers, one for a stalled body,
and a cap on open connections.

uvicorn closes an idle kept-alive connection, but holds forever one that sends half a request
line and stops, or stops midway through its body; enough of them and the process runs out of
file descriptors, and nobody new can connect. `HttpProtocol` is uvicorn's httptools protocol
with one timer per connection, armed while a request's headers or body are awaited and checked
when it fires: a request costs a few clock reads, not a timer of its own.

`mlflow-hotswap-receiver` uses it; under uvicorn directly:
`uvicorn --factory receiver.app:create_app --http receiver.connections:HttpProtocol`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlflow_hotswap_plugin import env
from receiver.settings import Settings

logger = logging.getLogger(__name__)

Awaited = Literal["headers", "body"]
# File descriptors kept for the process's own use (model files, MLflow connections, logs).
_SPARE_FILES = 128


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    max_connections: int | None  # None: no cap

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        cap = settings.max_connections
        return cls(settings.header_timeout, settings.body_timeout,
                   cap if cap is not None else default_max_connections())


def default_max_connections() -> int | None:
    """Below the soft open-file limit, so that a flood of connections meets a clean close
    rather than failing accept() calls; None where the limit is unknown or unlimited."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(soft // 2, soft - _SPARE_FILES, 1)


def protocol(limits: Limits) -> type[HttpProtocol]:
    """`HttpProtocol` with these limits, for `uvicorn.run(..., http=...)`."""
    class Limited(HttpProtocol):
        pass

    Limited.limits = limits
    return Limited


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the header and body deadlines and the connection cap.

    The timer runs while a request's headers are awaited (from the connection's start for its
    first request, else from the request's first byte) or its body is (from the last bytes
    received; time spent with reading paused because the app has not taken the body yet does
    not count). Once a request is read, what follows is the app's business and the keep-alive
    timeout's.
    """

    limits: ClassVar[Limits | None] = None  # read from the environment on first use

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = type(self).limits
        if limits is None:
            limits = type(self).limits = Limits.of(Settings.from_env())
        self._limits = limits
        self._awaiting: Awaited | None = None
        self._since = 0.0
        self._begun = False  # some bytes of the awaited request have arrived
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cap = self._limits.max_connections
        if cap is not None and len(self.connections) >= cap:
            self._refused = True
            _refusals.note(cap)
            transport.close()
            return
        super().connection_made(transport)
        self._await("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return  # uvicorn never knew of it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # The connection is handed to a WebSocket protocol: its requests are no longer ours.
        self._awaiting = None
        super().handle_websocket_upgrade()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._awaiting != "headers":  # the first request's clock started at connect
            self._await("headers")
        self._begun = True

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._await("body")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._since = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting, self._begun = None, False

    def _await(self, part: Awaited) -> None:
        self._awaiting, self._since = part, self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(self._deadline(part), self._check)

    def _deadline(self, part: Awaited) -> float:
        return self._limits.header_timeout if part == "headers" else self._limits.body_timeout

    def _check(self) -> None:
        self._timer = None
        part = self._awaiting
        if part is None or self.transport.is_closing():
            return  # nothing awaited: the next request's first byte arms the timer again
        if self._reading_paused():
            self._since = self.loop.time()  # we stopped reading, not the client
        left = self._since + self._deadline(part) - self.loop.time()
        if left > 0:
            self._timer = self.loop.call_later(left, self._check)
            return
        self._expire(part)

    def _reading_paused(self) -> bool:
        # Paused by flow control (the app has not taken the body yet), or a client waiting
        # for its "100 Continue", which goes out when the app first reads.
        waiting = self.cycle is not None and self.cycle.waiting_for_100_continue
        return self.flow.read_paused or (self._awaiting == "body" and waiting)

    def _expire(self, part: Awaited) -> None:
        logger.debug("Closing a connection from %s: no complete request %s within %g s",
                     self.client, part, self._deadline(part))
        if part == "body":
            answer = not self.cycle.response_started
            # The handler waiting for the rest hears a disconnect; its answer goes nowhere.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        else:  # nothing of this request has reached the app; no answer is being written
            answer = self._begun and (self.cycle is None or self.cycle.response_complete)
        if answer:
            self.transport.write(self._timeout_response(part))
        self.transport.close()

    def _timeout_response(self, part: Awaited) -> bytes:
        body = json.dumps({
            "error_code": "HEADER_TIMEOUT" if part == "headers" else "BODY_TIMEOUT",
            "message": f"The request's {part} did not arrive within "
                       f"{self._deadline(part):g} s."}).encode()
        head = [STATUS_LINE[408]]
        head += [name + b": " + value + b"\r\n" for name, value in
                 self.server_state.default_headers]
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(body)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        return b"".join(head) + body


class _Refusals:
    """Connections closed at the cap, logged at most once a minute (a flood would otherwise
    write a line per connection)."""

    def __init__(self) -> None:
        self._count = 0
        self._logged = float("-inf")

    def note(self, cap: int) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._logged >= 60:
            logger.warning("%d connection(s) closed at once: %d are open (%s)", self._count,
                           cap, env.declared(Settings, "max_connections").variable)
            self._count, self._logged = 0, now


_refusals = _Refusals()
