"""A client cannot hold a connection forever by sending half a request, nor lock the others out
by opening many: the real receiver (`python -m receiver`) over raw sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.processes import Process, promote, start_receiver, wait_until
from tests.support.models import register_sklearn_model, sample_rows

BODY = json.dumps(sample_rows(2)).encode()
PREDICT_HEAD = (b"POST /invocations HTTP/1.1\r\nHost: receiver\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n")
PREDICT = PREDICT_HEAD % len(BODY) + BODY
LIVE = b"GET /health/live HTTP/1.1\r\nHost: receiver\r\n\r\n"
CAP = 20


@pytest.fixture(scope="module")
def model(plain_mlflow: Process) -> str:
    name = "connections"
    version = register_sklearn_model(plain_mlflow.url, name, seed=5)
    promote(name, version, tracking_uri=plain_mlflow.url, archive_existing=False)
    return name


def serving_receiver(workdir: Path, tracking_uri: str, name: str, **env: str) -> Process:
    receiver = start_receiver(workdir, tracking_uri, name,
                              env={"MODEL_UPDATE_INTERVAL": "600", **env})
    wait_until(lambda: answer(connect(receiver), PREDICT)[0] == 200, timeout=60,
               message="receiver serving")
    return receiver


@pytest.fixture(scope="module")
def impatient(plain_mlflow: Process, model: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A receiver that gives a request's headers, and a stalled body, one second."""
    receiver = serving_receiver(tmp_path_factory.mktemp("impatient"), plain_mlflow.url, model,
                                HOTSWAP_HEADER_TIMEOUT="1", HOTSWAP_BODY_TIMEOUT="1")
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def capped(plain_mlflow: Process, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """A receiver that holds at most CAP connections, and waits long for headers. It follows a
    model nobody registered, so it loads nothing: its liveness answers are what it serves."""
    receiver = start_receiver(tmp_path_factory.mktemp("capped"), plain_mlflow.url, "absent",
                              env={"HOTSWAP_MAX_CONNECTIONS": str(CAP),
                                   "HOTSWAP_HEADER_TIMEOUT": "120"})
    yield receiver
    receiver.stop()


def connect(receiver: Process) -> socket.socket:
    sock = socket.create_connection((receiver.host, receiver.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def answer(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one request on `sock` (kept open) and read its whole answer."""
    sock.sendall(request)
    return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {received!r}")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = int(next(v for k, _, v in (line.partition(": ") for line in lines[1:])
                      if k.lower() == "content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


class Watched:
    """A connection whose end is noticed without blocking: everything received, and whether
    the receiver has closed it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.received, self.closed = sock, b"", False
        sock.setblocking(False)

    def poll(self) -> bool:
        while not self.closed:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                chunk = b""
            self.received += chunk
            self.closed = not chunk
        return True


def test_connections_that_send_half_a_request_or_nothing_are_closed(impatient: Process) -> None:
    half = [Watched(connect(impatient)) for _ in range(200)]
    for watched in half:
        watched.sock.sendall(b"POST /invoc")
    silent = [Watched(connect(impatient)) for _ in range(20)]
    everyone = half + silent
    wait_until(lambda: all(w.poll() for w in everyone), timeout=60,
               message="every stalled connection closed")
    for watched in half:  # bytes of a request arrived: it gets its answer
        assert watched.received.startswith(b"HTTP/1.1 408 ")
        assert b'"error_code": "HEADER_TIMEOUT"' in watched.received
    assert all(w.received == b"" for w in silent)  # nothing was asked: nothing to answer
    for watched in everyone:
        watched.sock.close()
    assert answer(connect(impatient), PREDICT)[0] == 200


def test_a_stalled_body_is_closed_with_408(impatient: Process) -> None:
    stalled = connect(impatient)
    stalled.sendall(PREDICT_HEAD % len(BODY) + BODY[:10])
    status, body = read_answer(stalled)
    assert status == 408 and json.loads(body)["error_code"] == "BODY_TIMEOUT"
    assert stalled.recv(1) == b""  # and closed
    assert "Exception in ASGI application" not in impatient.log()


def test_headers_and_body_arriving_slowly_but_steadily_are_served(impatient: Process) -> None:
    # Each gap is shorter than the timeouts, together they are longer: the deadline counts
    # from the last bytes received for a body, so a slow upload goes through.
    sock = connect(impatient)
    sock.sendall(PREDICT_HEAD % len(BODY))
    pieces = [BODY[i:i + len(BODY) // 8 + 1] for i in range(0, len(BODY), len(BODY) // 8 + 1)]
    for piece in pieces:
        time.sleep(0.2)  # the client's pace, not a wait for the server
        sock.sendall(piece)
    assert read_answer(sock)[0] == 200


def refused(receiver: Process) -> bool:
    """A new connection is closed at once, before any answer."""
    sock = connect(receiver)
    try:
        sock.sendall(LIVE)
        return sock.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.close()


def test_beyond_the_cap_new_connections_are_closed_and_open_ones_served(capped: Process) -> None:
    kept = connect(capped)
    assert answer(kept, LIVE)[0] == 200
    held = [connect(capped) for _ in range(CAP - 1)]
    try:
        wait_until(lambda: refused(capped), timeout=30, message="a connection refused at the cap")
        assert refused(capped)
        status, body = answer(kept, LIVE)  # the same kept-alive connection, still served
        assert status == 200 and json.loads(body) == {"status": "alive"}
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: answer(connect(capped), LIVE)[0] == 200, timeout=30,
               message="new connections served once the others closed")
    assert answer(kept, LIVE)[0] == 200
