"""The receiver's event loop takes every connection waiting on its listening socket when the
socket is readable, not one per turn of the loop (libuv's rule under plain uvloop). Real
sockets on 127.0.0.1; the loop is turned by hand, so what is counted is turns, not time."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import uvicorn

from receiver import accepting

WAITING = 60  # fewer than the listening socket's backlog: the kernel completes every handshake


class Recorder(asyncio.Protocol):
    made: ClassVar[list[asyncio.BaseTransport]] = []  # every connection the server was given

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = accepting.prompt_loop_class()()
    Recorder.made = []
    yield loop
    for transport in Recorder.made:
        transport.close()
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def turn(loop: asyncio.AbstractEventLoop, turns: int) -> None:
    """Run the loop for `turns` turns: a callback scheduled with call_soon runs in the next."""
    done = loop.create_future()

    def step(left: int) -> None:
        if left:
            loop.call_soon(step, left - 1)
        else:
            done.set_result(None)

    loop.call_soon(step, turns)
    loop.run_until_complete(done)


def serve(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.AbstractServer, int]:
    server = loop.run_until_complete(
        loop.create_server(Recorder, "127.0.0.1", 0, backlog=128))
    listeners: list[Any] = getattr(server, "sockets", [])
    return server, listeners[0].getsockname()[1]


def test_connections_waiting_together_are_all_taken_within_a_few_turns(
        loop: asyncio.AbstractEventLoop) -> None:
    server, port = serve(loop)
    # The loop is not running: each handshake completes in the kernel, and waits there.
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(WAITING)]
    try:
        # Taken in one turn, handed to the protocol in the next, connection_made in the third;
        # uvloop alone would have taken one connection per turn.
        turn(loop, 4)
        assert len(Recorder.made) == WAITING
    finally:
        for client in clients:
            client.close()
        server.close()


def test_a_closed_server_takes_no_more_connections(loop: asyncio.AbstractEventLoop) -> None:
    server, port = serve(loop)
    server.close()
    loop.run_until_complete(server.wait_closed())
    # The acceptor held a descriptor of its own for the listening socket: closed too, so the
    # port is no longer listening at all.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_run_serves_uvicorn_on_the_prompt_loop() -> None:
    server: uvicorn.Server

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                server.should_exit = True  # started: stop at the next tick
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    accepting.run(server)
    assert server.started
    assert [type(listening) for listening in server.servers] == [accepting.BurstServer]
