"""errors: each exception class answered by its own handler, as Starlette finds it; a Retryable
one with its Retry-After; the lane's refusals are 503 OVERLOADED and 504 REQUEST_TIMEOUT."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from receiver.errors import ModelNotLoaded, exception_handlers
from receiver.lane import DeadlineExceeded, Overloaded


def answer_to(exc: Exception) -> tuple[int, str | None, Any]:
    """The status, Retry-After and JSON body the app's handlers answer when a request's
    handler raised `exc`."""
    async def raising(request: Request) -> Response:
        raise exc

    app = Starlette(routes=[Route("/", raising)], exception_handlers=exception_handlers())
    response = TestClient(app).get("/")
    return response.status_code, response.headers.get("retry-after"), response.json()


def test_overloaded_is_503_with_retry_after() -> None:
    status, retry_after, document = answer_to(Overloaded("full"))
    assert status == 503
    assert retry_after is not None and int(retry_after) >= 1
    assert document == {"error_code": "OVERLOADED", "message": "full"}


def test_deadline_exceeded_is_504() -> None:
    status, retry_after, document = answer_to(DeadlineExceeded("late"))
    assert status == 504
    assert retry_after is None
    assert document == {"error_code": "REQUEST_TIMEOUT", "message": "late"}


def test_a_retryable_error_carries_its_own_retry_after() -> None:
    status, retry_after, document = answer_to(ModelNotLoaded("nothing yet", retry_after=7))
    assert (status, retry_after) == (503, "7")
    assert document == {"error_code": "MODEL_NOT_LOADED", "message": "nothing yet"}
