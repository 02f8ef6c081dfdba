"""Errors as HTTP: the one place a domain exception becomes `{"error_code", "message"}`.

The domain modules raise their own exceptions and know nothing of HTTP; the handlers raise
ApiError only for decisions that are HTTP's own (503 while nothing is served, 404 for an
unknown name, 413, 401 for the admin token).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from receiver.lane import DeadlineExceeded, Overloaded
from receiver.pinning import PinnedLoadsBusy
from receiver.redact import scrub
from receiver.registry import ModelLoadFailed, ModelNotFound, RegistryUnavailable
from receiver.scoring import BadInput, UnsupportedMediaType
from receiver.webhooks import InvalidSignature, MalformedNotification


class ApiError(Exception):
    def __init__(self, status: int, error_code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.headers = headers or {}


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
    PinnedLoadsBusy: (503, "OVERLOADED"),
    Overloaded: (503, "OVERLOADED"),
    DeadlineExceeded: (504, "REQUEST_TIMEOUT"),
}


def error_response(status: int, error_code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    # MLflow's error texts name the tracking URL, which may carry a password.
    return JSONResponse({"error_code": error_code, "message": scrub(message)},
                        status_code=status, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error_code, exc.message, exc.headers)


async def handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    status, error_code = next(mapped for kind, mapped in DOMAIN_ERRORS.items()
                              if isinstance(exc, kind))
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return error_response(status, error_code, str(exc), headers)
