"""The connection deadlines and cap, driven by hand: a loop whose clock the test moves, a
transport that records what is written. (The real thing over sockets: the integration test
test_receiver_connections.py.)"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from receiver import connections
from receiver.connections import HttpProtocol, Limits
from receiver.settings import Settings, SettingsError

LIMITS = Limits(header_timeout=1.0, body_timeout=2.0, max_connections=3)
POST_HEAD = (b"POST /invocations HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
             b"Content-Length: 10\r\n\r\n")


class Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualLoop:
    """Just what the protocol asks of its loop; time moves only in `advance`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(self.now + delay, callback)
        self.timers.append(handle)
        return handle

    def create_task(self, coro: Any, **kwargs: Any) -> Any:
        coro.close()  # the app never runs here: the protocol's side is what is tested

        class Task:
            def add_done_callback(self, callback: Any) -> None:
                pass

        return Task()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := sorted((t for t in self.timers if t.when <= self.now and not t.cancelled),
                            key=lambda t: t.when):
            self.timers.remove(due[0])
            due[0].callback()

    def pending(self) -> int:
        return sum(not t.cancelled for t in self.timers)


class Transport:
    def __init__(self) -> None:
        self.written, self.closing = b"", False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


@pytest.fixture
def loop() -> ManualLoop:
    return ManualLoop()


@pytest.fixture
def state() -> ServerState:
    return ServerState()


def connected(loop: ManualLoop, state: ServerState,
              limits: Limits = LIMITS) -> tuple[HttpProtocol, Transport]:
    config = uvicorn.Config(_app, log_config=None, lifespan="off")
    made = connections.protocol(limits)(config=config, server_state=state, app_state={},
                                        _loop=loop)
    transport = Transport()
    made.connection_made(transport)  # type: ignore[arg-type]
    return made, transport


def test_the_first_request_s_header_clock_starts_at_connect(loop, state) -> None:
    made, transport = connected(loop, state)
    loop.advance(0.6)
    made.data_received(b"GET /heal")
    loop.advance(0.3)
    assert not transport.closing
    loop.advance(0.2)  # 1.1 s after connect, 0.5 s after the first byte
    assert transport.closing
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"error_code": "HEADER_TIMEOUT"' in transport.written
    assert b"connection: close\r\n" in transport.written


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(loop, state) -> None:
    _, transport = connected(loop, state)
    loop.advance(1.0)
    assert transport.closing and transport.written == b""


def test_a_stalled_body_is_answered_408_and_its_handler_hears_a_disconnect(loop, state) -> None:
    made, transport = connected(loop, state)
    made.data_received(POST_HEAD + b'{"a"')
    loop.advance(1.9)
    assert not transport.closing  # the header deadline no longer applies
    loop.advance(0.2)
    assert transport.closing and made.cycle.disconnected
    assert transport.written.startswith(b"HTTP/1.1 408 ")
    assert b'"error_code": "BODY_TIMEOUT"' in transport.written


def test_a_body_that_keeps_coming_is_not_cut(loop, state) -> None:
    made, transport = connected(loop, state)
    made.data_received(POST_HEAD)
    for byte in b'{"a": 12}':
        loop.advance(1.5)
        made.data_received(bytes([byte]))
    loop.advance(1.5)
    made.data_received(b" ")  # the tenth byte: the request is read
    loop.advance(60)
    assert not transport.closing and transport.written == b""
    assert loop.pending() == 0  # nothing awaited, no timer left running


def test_time_with_reading_paused_is_not_the_client_s(loop, state) -> None:
    made, transport = connected(loop, state)
    made.data_received(POST_HEAD + b"{")
    made.flow.pause_reading()  # the app has not taken the body yet
    loop.advance(30)
    assert not transport.closing
    made.flow.resume_reading()
    loop.advance(2.5)
    assert transport.closing


def test_once_the_answer_is_sent_a_late_body_is_closed_without_a_second(loop, state) -> None:
    made, transport = connected(loop, state)
    made.data_received(POST_HEAD + b"{")
    made.cycle.response_started = made.cycle.response_complete = True  # answered early (503)
    loop.advance(2.1)
    assert transport.closing and transport.written == b""


def test_a_kept_alive_connection_s_next_request_gets_its_own_header_clock(loop, state) -> None:
    made, transport = connected(loop, state)
    made.data_received(b"GET /ping HTTP/1.1\r\nHost: r\r\n\r\n")
    made.cycle.response_started = made.cycle.response_complete = True
    loop.advance(30)  # idle between requests: uvicorn's keep-alive timeout, not ours
    assert not transport.closing
    made.data_received(b"GET /pi")
    loop.advance(0.9)
    assert not transport.closing
    loop.advance(0.2)
    assert transport.closing and transport.written.startswith(b"HTTP/1.1 408 ")


def test_beyond_the_cap_a_new_connection_is_closed_at_once(loop, state) -> None:
    opened = [connected(loop, state) for _ in range(3)]
    assert len(state.connections) == 3
    refused, transport = connected(loop, state)
    assert transport.closing and transport.written == b""
    assert refused not in state.connections and len(state.connections) == 3
    refused.connection_lost(None)  # uvicorn never knew of it: nothing to undo
    opened[0][0].connection_lost(None)
    assert not connected(loop, state)[1].closing


def test_no_cap_when_none(loop, state) -> None:
    for _ in range(10):
        assert not connected(loop, state, Limits(1.0, 2.0, None))[1].closing


@pytest.mark.parametrize(("soft", "cap"), [(1024, 896), (100, 50), (1, 1), (1 << 20, 1048448),
                                          (resource.RLIM_INFINITY, None)])
def test_the_default_cap_keeps_files_for_the_process_itself(
        monkeypatch: pytest.MonkeyPatch, soft: int, cap: int | None) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, resource.RLIM_INFINITY))
    assert connections.default_max_connections() == cap


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"MLFLOW_TRACKING_URI": "x", "MODEL_NAME": "m"}
    monkeypatch.setattr(connections, "default_max_connections", lambda: 77)
    assert Limits.of(Settings.from_env(base)) == Limits(10.0, 30.0, 77)
    read = Settings.from_env({**base, "HOTSWAP_HEADER_TIMEOUT": "2.5",
                              "HOTSWAP_BODY_TIMEOUT": "4", "HOTSWAP_MAX_CONNECTIONS": "9"})
    assert Limits.of(read) == Limits(2.5, 4.0, 9)


@pytest.mark.parametrize(("key", "value"), [("HOTSWAP_HEADER_TIMEOUT", "0"),
                                            ("HOTSWAP_BODY_TIMEOUT", "soon"),
                                            ("HOTSWAP_MAX_CONNECTIONS", "0")])
def test_bad_connection_settings_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({"MLFLOW_TRACKING_URI": "x", "MODEL_NAME": "m", key: value})


def test_under_uvicorn_directly_the_limits_are_read_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, loop: ManualLoop, state: ServerState) -> None:
    monkeypatch.setattr(HttpProtocol, "limits", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "x")
    monkeypatch.setenv("MODEL_NAME", "m")
    monkeypatch.setenv("HOTSWAP_HEADER_TIMEOUT", "3")
    config = uvicorn.Config(_app, log_config=None, lifespan="off")
    HttpProtocol(config=config, server_state=state, app_state={}, _loop=loop)
    assert HttpProtocol.limits is not None and HttpProtocol.limits.header_timeout == 3.0
