"""The link between a worker process and its supervisor: refresh triggers, never state.

A notification or a manual reload reaches one worker; that worker refreshes and relays the
trigger to the supervisor, which passes it to every other worker, so they all re-resolve within
a few milliseconds of each other. The registry stays the truth: a relayed trigger only makes a
worker ask it again. The poll is timed once per host by the supervisor, which asks one worker
at a time; that worker relays only when the poll changed something.

Messages are single ASCII lines on a Unix socket pair:
supervisor -> worker `refresh <trigger>` or `poll`; worker -> supervisor `relay <trigger>`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from receiver.models import Models, RefreshResult, Trigger
from receiver.settings import Settings
from receiver.updater import ModelUpdater

logger = logging.getLogger(__name__)

TRIGGERS: tuple[Trigger, ...] = ("webhook", "poll", "manual", "startup")


def encode(*words: str) -> bytes:
    return (" ".join(words) + "\n").encode("ascii")


def decode(buffer: bytearray) -> list[list[str]]:
    """The complete lines in `buffer`, split into words; the rest stays in the buffer."""
    *lines, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return [line.decode("ascii", "replace").split() for line in lines if line.strip()]


class WorkerLink:
    def __init__(self, sock: socket.socket, settings: Settings, models: Models,
                 updater: ModelUpdater) -> None:
        self._sock = sock
        self._settings = settings
        self._models = models
        self._updater = updater
        self._buffer = bytearray()

    def start(self) -> None:
        self._sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._readable)

    def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self._sock.fileno())

    def relay(self, trigger: Trigger) -> None:
        """Ask the supervisor to pass `trigger` to every other worker."""
        try:
            self._sock.send(encode("relay", trigger))
        except OSError as exc:  # the supervisor is gone: _readable sees it and shuts down
            logger.warning("Could not relay a %s trigger to the supervisor: %s", trigger, exc)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # No supervisor, no restarts and no poll: drain and stop as on SIGTERM.
            logger.error("The supervisor is gone; this worker stops")
            self.stop()
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._buffer += data
        for words in decode(self._buffer):
            self._handle(words)

    def _handle(self, words: list[str]) -> None:
        if words == ["poll"]:
            self._poll()
        elif len(words) == 2 and words[0] == "refresh" and words[1] in TRIGGERS:
            self._updater.trigger(words[1])
        else:
            logger.warning("Unknown message from the supervisor: %r", " ".join(words))

    def _poll(self) -> None:
        before = self._fingerprint()

        def relay_if_changed(done: asyncio.Future[RefreshResult]) -> None:
            if self._fingerprint() != before:
                self.relay("poll")

        self._updater.trigger("poll").add_done_callback(relay_if_changed)

    def _fingerprint(self) -> object:
        """Everything a refresh may change that the other workers must change too."""
        models, references = self._models, self._settings.rollout_references
        return tuple(
            (name, getattr(models.served(name), "version", None),
             tuple(getattr(models.held(name, ref), "version", None) for ref in references),
             models.shares(name))
            for name in self._settings.model_names)
