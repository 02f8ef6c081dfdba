"""The host's view of its worker processes (`--workers N`).

Each worker writes what it serves to a small file of its own in a directory the supervisor
made for them, replaced atomically after every refresh; any worker reads them all to answer
`/health` and `/models/current` for the host. The supervisor deletes a dead worker's file, so a
worker that is starting again counts as not ready until it has published.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class WorkerSeat:
    """What a worker process is given by its supervisor: its place among the workers, the
    directory where they publish their state, and its end of the link to the supervisor."""

    index: int
    count: int
    state_dir: Path
    link: socket.socket


class HostState:
    def __init__(self, seat: WorkerSeat) -> None:
        self._seat = seat

    @property
    def count(self) -> int:
        return self._seat.count

    def publish(self, versions: Mapping[str, str | None]) -> None:
        """Write this worker's served versions; readers see the old file or the new, whole."""
        path = state_path(self._seat.state_dir, self._seat.index)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"index": self._seat.index, "pid": os.getpid(),
                                         "versions": dict(versions)}))
        os.replace(temporary, path)

    def workers(self) -> list[dict[str, Any]]:
        """Every worker's published state, in order; `versions` is empty for a worker that
        has not published (starting, or restarting after it died). A few small files: cheap
        enough to read on the event loop."""
        found = []
        for index in range(self._seat.count):
            try:
                state = json.loads(state_path(self._seat.state_dir, index).read_text())
            except (OSError, ValueError):
                state = {"index": index, "pid": None, "versions": {}}
            state["rss_bytes"] = rss_bytes(state["pid"]) if state["pid"] else None
            found.append(state)
        return found


def state_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.json"


def rss_bytes(pid: int) -> int | None:
    """Resident memory of `pid` (Linux); None where /proc is not there or the process left.
    Pages shared with the supervisor and the other workers count in each worker's figure."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None
