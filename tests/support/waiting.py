"""Wait on a condition with a deadline instead of sleeping."""

from __future__ import annotations

import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition") -> T:
    """Call `check` until it returns a truthy value; raise TimeoutError after `timeout` s.

    Exceptions raised by `check` count as "not yet", so it can probe a server still starting.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a probe may fail until ready
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s (last error: {last_error!r})")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
