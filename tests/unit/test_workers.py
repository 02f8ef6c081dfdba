"""The pieces of `--workers N` that need no MLflow: the shared socket, the relay's wire form,
the host's state files. Integration tests run the supervisor and its workers for real."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from receiver.host import HostState, WorkerSeat
from receiver.relay import decode, encode
from receiver.workers import listen


def test_connections_accepted_on_the_shared_socket_have_tcp_nodelay() -> None:
    # As uvicorn serves a socket handed to it: asyncio's create_server(sock=...).
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(seen, timeout=10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0


def test_relay_messages_are_lines_and_a_partial_line_waits_for_its_end() -> None:
    buffer = bytearray(encode("relay", "webhook") + encode("poll") + b"refre")
    assert decode(buffer) == [["relay", "webhook"], ["poll"]]
    buffer += b"sh manual\n"
    assert decode(buffer) == [["refresh", "manual"]]
    assert buffer == b""


def test_the_host_state_lists_every_worker_and_a_silent_one_serves_nothing(
        tmp_path: Path) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        first = HostState(WorkerSeat(0, 2, tmp_path, ours))
        first.publish({"m": "3"})
        workers = first.workers()
    assert [w["versions"] for w in workers] == [{"m": "3"}, {}]
    assert workers[0]["pid"] == os.getpid()
    assert workers[0]["rss_bytes"] > 0
    assert workers[1]["pid"] is None
