"""Many receiver replicas on one port: one asyncio loop listening on each of N loopback addresses.

Each replica is one address (127.0.x.y), as behind a headless Service; the stub records, per
address (the local address the connection came in on), the body of each notification in the
order it arrived, and answers 202. Addresses listed as hung accept and never answer. Light on
purpose (a few hundred bytes of parsing per request) so that a thousand replicas fit in a test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def loopback_addresses(count: int, start: int = 256) -> list[str]:
    """`count` loopback addresses from 127.0.1.0 on, clear of the 127.0.0.x the others use."""
    return [f"127.0.{(start + i) // 256}.{(start + i) % 256}" for i in range(count)]


class FanoutStub:
    def __init__(self, addresses: list[str], hung: set[str] | None = None) -> None:
        self.addresses = addresses
        self.hung = hung or set()
        self.port = 0
        self._received: dict[str, list[dict[str, Any]]] = {a: [] for a in addresses}
        self._arrival: dict[str, float] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._sockets = self._bind()
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fanout-stub")

    def received(self, address: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received[address])

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {address: len(bodies) for address, bodies in self._received.items()}

    def last_arrival(self) -> float:
        """time.perf_counter() of the latest notification received."""
        with self._lock:
            return max(self._arrival.values(), default=0.0)

    def _bind(self) -> list[socket.socket]:
        for _ in range(20):
            sockets: list[socket.socket] = []
            try:
                port = 0
                for address in self.addresses:
                    sock = socket.socket()
                    sockets.append(sock)
                    sock.bind((address, port))
                    sock.listen(128)
                    sock.setblocking(False)
                    port = sock.getsockname()[1]
                self.port = port
                return sockets
            except OSError:  # the port is taken on one of the addresses: try another
                for sock in sockets:
                    sock.close()
        raise RuntimeError(f"no port free on all {len(self.addresses)} addresses")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stopping = asyncio.Event()
        self._servers = [self._loop.run_until_complete(asyncio.start_server(self._serve, sock=sock))
                         for sock in self._sockets]
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("sockname")[0]
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                if address in self.hung:
                    await self._stopping.wait()  # never answer
                    return
                with self._lock:
                    self._received[address].append(json.loads(body))
                    self._arrival[address] = time.perf_counter()
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def __enter__(self) -> FanoutStub:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        for sock in self._sockets:
            sock.close()

    async def _shutdown(self) -> None:
        """Stop accepting, close every connection (kept-alive or hung) and let each handler
        end by itself, so no task is left pending."""
        for server in self._servers:
            server.close()
        self._stopping.set()
        for writer in list(self._writers):
            writer.close()
        while self._writers:
            await asyncio.sleep(0.01)


@contextmanager
def fanout_stub(count: int, hung: int = 0) -> Iterator[FanoutStub]:
    """`count` replicas on one port, `hung` of them (spread evenly) never answering."""
    addresses = loopback_addresses(count)
    stuck = set(addresses[::count // hung][:hung]) if hung else set()
    with FanoutStub(addresses, stuck) as stub:
        yield stub
