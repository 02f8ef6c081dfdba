"""A receiver that never answers: a listening socket that is never accepted.

Connections complete in the kernel's backlog and requests sit there unread, so a client waits
out its own timeout, exactly as with a receiver whose process is frozen.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager


@contextmanager
def hung_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Yield the webhook URL of a server on `host`:`port` that never answers."""
    with closing(socket.socket()) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(1024)
        yield f"http://{host}:{listener.getsockname()[1]}/webhooks/mlflow"
