"""`--workers N`: a supervisor and N worker processes sharing one listening socket.

The supervisor binds the port once, loads the followed versions (preload.py), then forks each
worker, which runs uvicorn on the socket it inherited (worker.py); the kernel hands each new
connection to one of them. Forking after the imports and that load shares their memory
(MLflow, pandas, scikit-learn, the model) between the workers, copy-on-write. A version a
worker swaps to later is loaded by that worker, a copy of its own.

The supervisor serves nothing. It relays refresh triggers between workers (relay.py), times
the poll once for the host, restarts a worker that died (it resolves the current version as it
starts), and on SIGTERM or SIGINT asks every worker to drain and waits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import selectors
import shutil
import signal
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

from receiver.host import WorkerSeat, state_path
from receiver.relay import TRIGGERS, decode, encode
from receiver.updater import JITTER

logger = logging.getLogger(__name__)

# A worker that dies sooner than this after it started is restarted only after this long, so a
# worker that cannot start does not spin the supervisor.
RESTART_PAUSE = 1.0

Serve = Callable[[WorkerSeat, socket.socket, Path], int]


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The shared listening socket. Made with IPPROTO_TCP named, because asyncio turns on
    TCP_NODELAY only for sockets whose `proto` says TCP, and an accepted socket takes the
    listener's; set on the listener too, which Linux copies to accepted sockets."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(address)
    sock.listen(backlog)
    return sock


@dataclass
class _Worker:
    pid: int
    started: float


class Links:
    """The supervisor's ends of the workers' links: relays a trigger from one worker to the
    others, and asks one worker at a time to poll for the host."""

    def __init__(self, selector: selectors.BaseSelector) -> None:
        self._selector = selector
        self._links: dict[int, socket.socket] = {}
        self._buffers: dict[int, bytearray] = {}
        self._poller = -1

    def add(self, index: int, link: socket.socket) -> None:
        link.setblocking(False)
        self._links[index], self._buffers[index] = link, bytearray()
        self._selector.register(link, selectors.EVENT_READ, data=index)

    def remove(self, index: int) -> None:
        link = self._links.pop(index)
        del self._buffers[index]
        with contextlib.suppress(KeyError):  # already, if it hung up first
            self._selector.unregister(link)
        link.close()

    def close_all(self) -> None:
        """In a new worker: the other workers' links are not its business."""
        for link in self._links.values():
            link.close()

    def read(self, index: int) -> None:
        try:
            data = self._links[index].recv(4096)
        except (KeyError, BlockingIOError, ConnectionError):
            return
        if not data:  # the worker is exiting: stop watching until it is reaped
            self._selector.unregister(self._links[index])
            return
        self._buffers[index] += data
        for words in decode(self._buffers[index]):
            if len(words) == 2 and words[0] == "relay" and words[1] in TRIGGERS:
                for other in self._links:
                    if other != index:
                        self._send(other, encode("refresh", words[1]))
            else:
                logger.warning("Unknown message from worker %d: %r", index, " ".join(words))

    def poll(self) -> None:
        # One worker asks the registry for the host; it relays if anything changed.
        alive = sorted(self._links)
        if alive:
            self._poller = next((i for i in alive if i > self._poller), alive[0])
            self._send(self._poller, encode("poll"))

    def _send(self, index: int, message: bytes) -> None:
        try:
            self._links[index].send(message)
        except OSError as exc:  # full (the worker is stuck) or gone: it re-resolves at start
            logger.warning("Could not reach worker %d: %s", index, exc)


class Supervisor:
    def __init__(self, count: int, listener: socket.socket, serve: Serve,
                 poll_interval: float) -> None:
        self._count = count
        self._listener = listener
        self._serve = serve
        self._poll_interval = poll_interval
        self._workdir = Path(tempfile.mkdtemp(prefix="hotswap-workers-"))
        self._state_dir = self._workdir / "state"
        self._metrics_dir = self._workdir / "metrics"
        self._workers: dict[int, _Worker] = {}
        self._restarts: dict[int, float] = {}  # index -> when to start it again
        self._selector = selectors.DefaultSelector()
        self._links = Links(self._selector)
        self._wakeup = socket.socketpair()  # signals wake the select loop through it
        self._stopping = False
        self._next_poll = 0.0

    def run(self) -> int:
        self._state_dir.mkdir()
        self._metrics_dir.mkdir()
        wakeup_read, wakeup_write = self._wakeup
        wakeup_read.setblocking(False)
        wakeup_write.setblocking(False)
        signal.set_wakeup_fd(wakeup_write.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self._selector.register(wakeup_read, selectors.EVENT_READ)
        # What the workers inherit lives as long as they do: out of the cyclic collector's
        # walks, which write to every object they visit, so a collection in a worker leaves
        # the shared pages shared.
        gc.collect()
        gc.freeze()
        try:
            for index in range(self._count):
                self._start(index)
            self._schedule_poll()
            while not self._stopping:
                self._step(wakeup_read)
            self._drain()
        finally:
            signal.set_wakeup_fd(-1)
            shutil.rmtree(self._workdir, ignore_errors=True)
        return 0

    def _on_signal(self, sig: int, frame: object) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True

    def _step(self, wakeup: socket.socket) -> None:
        now = time.monotonic()
        due = min([self._next_poll, *self._restarts.values()])
        for key, _ in self._selector.select(max(0.0, due - now)):
            if key.fileobj is wakeup:
                while True:
                    try:
                        if not wakeup.recv(4096):
                            break
                    except BlockingIOError:
                        break
            else:
                self._links.read(key.data)
        self._reap()
        now = time.monotonic()
        for index, at in list(self._restarts.items()):
            if at <= now and not self._stopping:
                del self._restarts[index]
                self._start(index)
        if now >= self._next_poll:
            self._links.poll()
            self._schedule_poll()

    def _start(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        seat = WorkerSeat(index, self._count, self._state_dir, theirs)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                ours.close()
                self._links.close_all()
                self._selector.close()
                for end in self._wakeup:
                    end.close()
                code = self._serve(seat, self._listener, self._metrics_dir)
            except BaseException:  # noqa: BLE001 - a worker never returns into the supervisor
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        self._workers[index] = _Worker(pid, time.monotonic())
        self._links.add(index, ours)
        logger.info("Worker %d started (pid %d)", index, pid)

    def _reap(self) -> None:
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._exited(pid, status)

    def _exited(self, pid: int, status: int) -> None:
        for index, worker in list(self._workers.items()):
            if worker.pid != pid:
                continue
            self._forget(index, worker)
            if self._stopping:
                logger.info("Worker %d (pid %d) stopped", index, pid)
                return
            logger.error("Worker %d (pid %d) exited (%s); starting it again", index, pid,
                         _describe_status(status))
            lived = time.monotonic() - worker.started
            pause = RESTART_PAUSE if lived < RESTART_PAUSE else 0.0
            self._restarts[index] = time.monotonic() + pause

    def _forget(self, index: int, worker: _Worker) -> None:
        del self._workers[index]
        self._links.remove(index)
        state_path(self._state_dir, index).unlink(missing_ok=True)
        multiprocess.mark_process_dead(worker.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]

    def _schedule_poll(self) -> None:
        jitter = 1 + JITTER * (2 * random.random() - 1)
        self._next_poll = time.monotonic() + self._poll_interval * jitter

    def _drain(self) -> None:
        logger.info("Stopping: each worker finishes its requests in flight")
        self._restarts.clear()
        self._listener.close()  # the workers' copies close as they stop accepting
        for worker in self._workers.values():
            os.kill(worker.pid, signal.SIGTERM)
        while self._workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            self._exited(pid, status)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
