"""A tiny HTTP proxy in front of a real MLflow server, on 127.0.0.1, that a test controls.

It forwards everything, except artifact requests (`.../mlflow-artifacts/...`) when told to:
- `fail`: answer them 500, as a broken artifact store does;
- `stall`: send the head of the file, then hold until `release` is set, then drop the
  connection mid-body: what a client sees when the server dies in the middle of a download.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

import requests

from tests.support.loopback import LoopbackServer

Mode = Literal["pass", "fail", "stall"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length",
               "content-encoding", "host"}


class MlflowProxy(LoopbackServer):
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode: Mode = "pass"
        self.stalled = threading.Event()  # a download is being held
        self.release = threading.Event()  # let held downloads drop their connection
        self.artifact_failures = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://{self.host}:{self.port}"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        artifact = "mlflow-artifacts" in handler.path
        if artifact and self.mode == "fail":
            self.artifact_failures += 1
            self._send(handler, 500, b'{"error_code": "INTERNAL_ERROR", "message": "injected"}',
                       {"Content-Type": "application/json"})
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            answer = requests.request(handler.command, self.upstream + handler.path, data=body,
                                      headers=headers, timeout=30, allow_redirects=False)
        except requests.RequestException:
            self._send(handler, 502, b'{"error_code": "BAD_GATEWAY", "message": "upstream"}',
                       {"Content-Type": "application/json"})
            return
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        if artifact and self.mode == "stall" and handler.command == "GET" and answer.ok:
            handler.send_response(answer.status_code)
            for key, value in out.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(answer.content) + 1))
            handler.end_headers()
            handler.wfile.write(answer.content[: len(answer.content) // 2])
            handler.wfile.flush()
            self.stalled.set()
            self.release.wait(timeout=120)
            handler.close_connection = True
            return  # the rest of the body never comes
        self._send(handler, answer.status_code, answer.content, out)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, content: bytes,
              headers: dict[str, str]) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    def stop(self) -> None:
        self.release.set()
        super().stop()


@contextmanager
def mlflow_proxy(upstream: str) -> Iterator[MlflowProxy]:
    proxy = MlflowProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
