"""Taking new connections as fast as they arrive, however busy the event loop.

uvloop's libuv takes one waiting connection each turn of the event loop (libuv 1.45 and later).
Under load a turn lasts tens of milliseconds (every ready request is read, parsed and answered
in it), so a thousand clients connecting at once wait in the kernel's accept queue for seconds:
they have sent their requests, and no deadline, admission decision or metric of the receiver
sees them until their turn comes. asyncio's own loop takes a burst at a time instead.

`Loop` is uvloop's loop whose TCP servers also take up to `ACCEPT_BURST` waiting connections
each time the listening socket is readable, and hand them to the server's protocol as libuv
would. `run` serves a uvicorn server on it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    import uvloop

logger = logging.getLogger(__name__)

# Connections taken per readiness of the listening socket: a thousand new connections in a few
# turns, and worker processes sharing one socket (`--workers N`) each take a share of a burst.
ACCEPT_BURST = 128
# accept() failing for lack of descriptors or memory: the acceptor waits this long, as asyncio
# does (libuv's own acceptor keeps taking one per turn, and closes what it cannot serve).
RETRY_DELAY = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def run(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
    """`server.run(sockets)`, on `Loop` where uvloop is installed; else on asyncio's loop,
    which takes bursts already."""
    try:
        import uvloop
    except ImportError:  # not installed on Windows
        asyncio.run(server.serve(sockets=sockets))
        return
    uvloop.run(server.serve(sockets=sockets), loop_factory=prompt_loop_class())


def prompt_loop_class() -> type[uvloop.Loop]:
    """`Loop`, defined on first use: uvloop is imported only where it is installed."""
    import uvloop

    class Loop(uvloop.Loop):
        """uvloop's loop; its plain TCP servers take waiting connections in bursts."""

        # One signature for typeshed's overloads; the server returned is uvloop's, wrapped.
        async def create_server(  # type: ignore[override]
                self, protocol_factory: Any, host: Any = None, port: Any = None,
                **options: Any) -> asyncio.AbstractServer:
            server = await super().create_server(protocol_factory, host, port, **options)
            listeners: Sequence[socket.socket] = getattr(server, "sockets", None) or ()
            if (options.get("ssl") is not None or not options.get("start_serving", True)
                    or not listeners):
                return server  # TLS (a handshake per connection), or not serving yet: uvloop's
            acceptors = [Acceptor(self, listener, protocol_factory) for listener in listeners]
            for acceptor in acceptors:
                acceptor.start()
            return BurstServer(server, acceptors)

    return Loop


class Acceptor:
    """Takes up to `burst` waiting connections each time `listener` is readable, through a
    descriptor of its own for the same socket, and gives each to `protocol_factory` by
    `loop.connect_accepted_socket`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listener: socket.socket,
                 protocol_factory: Callable[[], asyncio.BaseProtocol],
                 burst: int = ACCEPT_BURST) -> None:
        self._loop = loop
        self._socket = socket.socket(fileno=os.dup(listener.fileno()))
        self._socket.setblocking(False)
        self._factory = protocol_factory
        self._burst = burst
        self._tasks: set[asyncio.Task[Any]] = set()  # handing over: never garbage-collected
        self._stopped = False

    def start(self) -> None:
        self._loop.add_reader(self._socket.fileno(), self._accept)

    def stop(self) -> None:
        """No more connections taken (uvicorn's shutdown); those taken are served."""
        if self._stopped:
            return
        self._stopped = True
        self._loop.remove_reader(self._socket.fileno())
        self._socket.close()

    def _accept(self) -> None:
        for _ in range(self._burst):
            try:
                connection, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return  # none waiting (or libuv took it)
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    # Linux reports a connection's own network error (reset, unreachable)
                    # from accept(): that connection is lost, the next ones are not.
                    logger.debug("A connection failed as it was accepted: %s", exc)
                    continue
                logger.warning("Cannot accept connections for now (%s); again in %g s",
                               os.strerror(exc.errno), RETRY_DELAY)
                self._loop.remove_reader(self._socket.fileno())
                self._loop.call_later(RETRY_DELAY, self._resume)
                return
            connection.setblocking(False)
            task = self._loop.create_task(self._hand_over(connection))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume(self) -> None:
        if not self._stopped:
            self.start()

    async def _hand_over(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, connection)
        except OSError as exc:  # the client left before its transport was made
            logger.debug("A connection closed as it was accepted: %s", exc)
            connection.close()


class BurstServer(asyncio.AbstractServer):
    """The server uvicorn is given: uvloop's, whose close() stops the acceptors first (their
    descriptors would keep the port accepting)."""

    def __init__(self, server: asyncio.AbstractServer, acceptors: list[Acceptor]) -> None:
        self._server = server
        self._acceptors = acceptors

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(getattr(self._server, "sockets", None) or ())

    def close(self) -> None:
        for acceptor in self._acceptors:
            acceptor.stop()
        self._server.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()
