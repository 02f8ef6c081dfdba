"""The V2 routes' error decisions: the receiver's status codes and Retry-After, in the
protocol's `{"error": ...}` body. The same routes against a real receiver, with real clients,
are in tests/integration/test_receiver_v2.py."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from receiver import v2_endpoints
from receiver.errors import ApiError, ModelNotLoaded
from receiver.host import HostState, WorkerSeat
from receiver.lane import DeadlineExceeded, Overloaded
from receiver.pinning import PinnedLoadsBusy
from receiver.registry import ModelLoadFailed, ModelNotFound
from receiver.scoring import BadInput, UnsupportedMediaType
from receiver.service import Service
from tests.unit.test_endpoints import make_client

RAISED = [
    (BadInput("bad tensor"), 400, None),
    (ModelNotFound("no version 7"), 404, None),
    (ApiError(413, "REQUEST_TOO_LARGE", "too big"), 413, None),
    (UnsupportedMediaType("text/csv"), 415, None),
    (ModelLoadFailed("broken"), 502, None),
    (ModelNotLoaded("none yet", 5), 503, "5"),
    (Overloaded("full"), 503, "1"),
    (PinnedLoadsBusy("busy"), 503, "1"),
    (DeadlineExceeded("late"), 504, None),
]


@pytest.mark.parametrize(("raised", "status", "retry_after"), RAISED,
                         ids=[type(r[0]).__name__ for r in RAISED])
def test_each_decision_keeps_its_status_in_the_protocols_body(
        raised: Exception, status: int, retry_after: str | None) -> None:
    @v2_endpoints.protocol_errors
    async def handler(request: Request) -> Response:
        raise raised

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []})

    async def call() -> Response:
        return await handler(request)

    answer = asyncio.run(call())
    assert answer.status_code == status
    assert json.loads(bytes(answer.body)) == {"error": str(raised)}
    assert answer.headers.get("retry-after") == retry_after


@pytest.fixture(scope="module")
def empty() -> Iterator[tuple[TestClient, Service]]:
    """Nothing at the followed stage yet."""
    yield from make_client(None)


def test_nothing_served_is_live_not_ready_and_503_with_retry_after(
        empty: tuple[TestClient, Service]) -> None:
    http, _ = empty
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (503, {"ready": False})
    assert http.get("/v2/models/m/ready").status_code == 503
    for answer in (http.post("/v2/models/m/infer", content=b"{}"), http.get("/v2/models/m")):
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        assert list(answer.json()) == ["error"]
    assert http.get("/v2").json()["name"] == "mlflow-hotswap"


def test_under_a_supervisor_the_host_is_ready_once_every_worker_serves(tmp_path: Path) -> None:
    for http, service in make_client("1"):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            this, other = (HostState(WorkerSeat(index, 2, tmp_path, ours)) for index in (0, 1))
            service.host = this
            this.publish({"m": "1"})
            assert http.get("/v2/health/ready").status_code == 503  # the other one is silent
            other.publish({"m": "1"})
            assert http.get("/v2/health/ready").json() == {"ready": True}
