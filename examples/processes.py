"""Local server processes for the demo: each in a session of its own, so that stopping one ends
its whole process group (`mlflow server` runs its workers as children)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass
class Process:
    name: str
    url: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_pids(self) -> list[int]:
        """Every live process in this process's group (its leader first)."""
        return group_pids(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left after `timeout`."""
        _killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # Workers may outlive their leader for a moment; the group is done only when empty.
        deadline = time.monotonic() + timeout
        while group_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=timeout)


def spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path, port: int,
          cwd: Path) -> Process:
    """Start `argv` in a new session with its output in `log_path`; returns at once."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return Process(name, f"http://127.0.0.1:{port}", port, popen, log_path)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them.

    Around starting a process and recording it, so that a Ctrl-C can never fall between the
    two and leave something running that nobody stops. (Not a signal mask: children inherit
    masks, and a server that ignores SIGTERM can only be killed.)
    """
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`, from /proc."""
    found = []
    for pid in _all_pids():
        state, group = _stat(pid)
        if group == pgid and state not in ("Z", "X"):
            found.append(pid)
    return sorted(found, key=lambda pid: pid != pgid)


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie does not count)."""
    state = _stat(pid)[0]
    return state not in ("", "Z", "X")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat(pid: int) -> tuple[str, int]:
    """(state, process group) of `pid`; ("", -1) when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command may hold spaces and parentheses: the fields start after the last ')'.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", -1
    return fields[0], int(fields[2])


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `port`."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.05,
               message: str = "condition") -> T:
    """Call `check` until it returns something truthy; exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a probe fails until the server is up
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout:.0f}s"
                               + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)
