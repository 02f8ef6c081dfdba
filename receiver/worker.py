"""One worker process of `--workers N`: the receiver's app under uvicorn, on the listening
socket its supervisor bound before forking it, with the versions it loaded (preload.py)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import values

from receiver.app import create_app
from receiver.host import WorkerSeat
from receiver.registry import LoadedModel
from receiver.service import Service
from receiver.settings import Settings


def serve(settings: Settings, preloaded: Sequence[LoadedModel], seat: WorkerSeat,
          listener: socket.socket, metrics_dir: Path, uvicorn_options: dict[str, Any]) -> int:
    """Run until SIGTERM or SIGINT (uvicorn finishes the requests in flight first)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)  # the supervisor's handlers are not ours
    signal.set_wakeup_fd(-1)
    # prometheus_client picks its value class when imported, before the supervisor knew the
    # directory: pick it again, as its import would have with the variable set.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    app = create_app(settings, service=Service(settings, seat=seat, preloaded=preloaded))
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options))
    server.run(sockets=[listener])
    return 0
