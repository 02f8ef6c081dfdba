"""Errors as HTTP: the one place a domain exception becomes `{"error_code", "message"}`.

The domain modules raise their own exceptions and know nothing of HTTP; the handlers raise
ApiError only for decisions that are HTTP's own (404 for an unknown name, 413, 401 for the
admin token) and ModelNotLoaded while nothing is served. Each exception class has a handler of
its own, registered with Starlette, which finds it by the exception's class; a Retryable one
is answered with its Retry-After.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ExceptionHandler

from receiver.lane import DeadlineExceeded, Overloaded
from receiver.pinning import PinnedLoadsBusy
from receiver.redact import scrub
from receiver.registry import ModelLoadFailed, ModelNotFound, RegistryUnavailable
from receiver.retryable import Retryable
from receiver.scoring import BadInput, UnsupportedMediaType
from receiver.webhooks import InvalidSignature, MalformedNotification


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class ModelNotLoaded(Retryable):
    """No version of the model asked for is loaded yet (MLflow unreachable at start, or the
    stage or alias points to nothing); one may be soon."""


# Domain exception -> (status, error_code); the message is the exception's own.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    BadInput: (400, "BAD_REQUEST"),
    MalformedNotification: (400, "BAD_REQUEST"),
    InvalidSignature: (401, "UNAUTHENTICATED"),
    ModelNotFound: (404, "RESOURCE_DOES_NOT_EXIST"),
    UnsupportedMediaType: (415, "UNSUPPORTED_MEDIA_TYPE"),
    # The version is bad, not the request: the upstream (the registry's model) failed.
    ModelLoadFailed: (502, "MODEL_LOAD_FAILED"),
    RegistryUnavailable: (502, "MLFLOW_UNAVAILABLE"),
    ModelNotLoaded: (503, "MODEL_NOT_LOADED"),
    PinnedLoadsBusy: (503, "OVERLOADED"),
    Overloaded: (503, "OVERLOADED"),
    DeadlineExceeded: (504, "REQUEST_TIMEOUT"),
}


def error_response(status: int, error_code: str, message: str,
                   headers: dict[str, str] | None = None,
                   fields: Mapping[str, Any] | None = None) -> JSONResponse:
    """`{"error_code", "message"}` (plus `fields`), the message scrubbed of credentials."""
    # MLflow's error texts name the tracking URL, which may carry a password.
    return JSONResponse({"error_code": error_code, "message": scrub(message), **(fields or {})},
                        status_code=status, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error_code, exc.message)


def domain_handler(status: int, error_code: str) -> ExceptionHandler:
    """The handler of one domain exception class, answering `status` and `error_code`."""
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers = ({"Retry-After": str(exc.retry_after)} if isinstance(exc, Retryable)
                   else None)
        return error_response(status, error_code, str(exc), headers)
    return handle


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """One handler per exception class, for Starlette's `exception_handlers`."""
    handlers: dict[Any, ExceptionHandler] = {
        kind: domain_handler(status, error_code)
        for kind, (status, error_code) in DOMAIN_ERRORS.items()}
    handlers[ApiError] = handle_api_error
    return handlers
