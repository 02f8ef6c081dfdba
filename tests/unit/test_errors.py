"""The lane's refusals as HTTP: 503 OVERLOADED with Retry-After, 504 REQUEST_TIMEOUT."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request

from receiver.errors import handle_domain_error
from receiver.lane import DeadlineExceeded, Overloaded

REQUEST = Request({"type": "http", "method": "POST", "path": "/invocations", "headers": []})


def test_overloaded_is_503_with_retry_after() -> None:
    response = asyncio.run(handle_domain_error(REQUEST, Overloaded("full")))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert json.loads(bytes(response.body)) == {"error_code": "OVERLOADED", "message": "full"}


def test_deadline_exceeded_is_504() -> None:
    response = asyncio.run(handle_domain_error(REQUEST, DeadlineExceeded("late")))
    assert response.status_code == 504
    assert "retry-after" not in response.headers
    assert json.loads(bytes(response.body)) == {"error_code": "REQUEST_TIMEOUT", "message": "late"}
