"""The Open Inference Protocol's REST routes (`/v2/...`): thin handlers over the same parts as
`/invocations`. Routing (canary, shadow), the scoring lane, pinned versions and the X-Model-*
headers are the MLflow protocol's; only the wire format (receiver/v2.py) and the error body
differ: errors here are `{"error": "<message>"}` with the receiver's status codes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from importlib import metadata as package_metadata
from typing import cast

from mlflow.types import Schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import handling, v2
from receiver.errors import exception_handlers
from receiver.handling import known_name_or_404, service_of
from receiver.registry import LoadedModel
from receiver.rollout import Route
from receiver.scoring import JSON, UnsupportedMediaType

Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[JSONResponse]]
# errors.py's handlers, as Starlette finds them: each answers an HTTP request with JSON.
_HANDLERS = cast(dict[type, ErrorHandler], exception_handlers())
# JSON, or the binary tensor data extension's octet stream (a JSON header, then the tensors).
MEDIA_TYPES = (JSON, "application/octet-stream")


def protocol_errors(handler: Handler) -> Handler:
    """The receiver's error decisions and status codes (errors.py's handlers), in the
    protocol's `{"error"}` body."""
    @functools.wraps(handler)
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            handle = _handler_for(exc)
            if handle is None:
                raise  # not a decision: the app's handlers answer (a 500, a disconnect)
            return _v2_error(await handle(request, exc))
    return answer


def _handler_for(exc: Exception) -> ErrorHandler | None:
    """The handler Starlette would pick: the first of the exception's classes that has one."""
    return next((_HANDLERS[kind] for kind in type(exc).__mro__ if kind in _HANDLERS), None)


def _v2_error(response: JSONResponse) -> JSONResponse:
    message = json.loads(bytes(response.body))["message"]  # scrubbed already
    retry_after = response.headers.get("retry-after")
    return JSONResponse({"error": message}, status_code=response.status_code,
                        headers={"Retry-After": retry_after} if retry_after else None)


def _package_version() -> str:
    try:
        return package_metadata.version("mlflow-hotswap")
    except package_metadata.PackageNotFoundError:
        return "unknown"


async def server_metadata(request: Request) -> JSONResponse:
    return JSONResponse({"name": "mlflow-hotswap", "version": _package_version(),
                         "extensions": []})


async def server_live(request: Request) -> JSONResponse:
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> JSONResponse:
    service = service_of(request)
    names = service.settings.model_names
    ready = all(service.models.served(name) is not None for name in names)
    if ready and service.host is not None:  # under a supervisor: every worker serves them
        ready = all(worker["versions"].get(name) is not None
                    for worker in service.host.workers() for name in names)
    headers = None if ready else {"Retry-After": str(service.updater.retry_after())}
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503, headers=headers)


@protocol_errors
async def model_ready(request: Request) -> Response:
    service = service_of(request)
    name = known_name_or_404(service, request.path_params["name"])
    version = request.path_params.get("version")
    served = service.models.served(name)
    if version is None:
        ready = served is not None
    else:  # a probe never loads a version: ready when it is served or cached
        ready = ((served is not None and served.version == version)
                 or service.models.cached(name, version) is not None)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@protocol_errors
async def model_metadata(request: Request) -> Response:
    model = await _model(request)
    return JSONResponse(v2.metadata(model.name, model.version, model.input_schema,
                                    _output_schema(model)))


async def _model(request: Request) -> LoadedModel:
    """The served version of the named model, or the pinned one the path names."""
    service = service_of(request)
    name = known_name_or_404(service, request.path_params["name"])
    version = request.path_params.get("version")
    if version is None:
        return handling.served_or_503(service, name)
    return await service.pinned.get(name, version)


@protocol_errors
async def infer(request: Request) -> Response:
    service = service_of(request)
    name = known_name_or_404(service, request.path_params["name"])
    version = request.path_params.get("version")
    codec_for = _v2_codec(request)
    if version is not None:
        pinned = await service.pinned.get(name, version)
        return await handling.score(request, Route(pinned, "primary"), codec_for)
    return await handling.score(request, handling.route(request, name), codec_for)


def _v2_codec(request: Request) -> handling.CodecFor:
    """The request's codec for the model that answers it (its answer names that version).
    Protocol clients send JSON or the binary extension's octet stream (tritonclient names no
    type for plain JSON); anything else was meant for another endpoint: 415."""
    content_type = request.headers.get("content-type")
    if content_type is not None and content_type.split(";")[0].strip().lower() not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"Content-Type {content_type[:64]!r} is not supported; send "
                                   f"{' or '.join(MEDIA_TYPES)}.")
    header_length = request.headers.get(v2.HEADER_LENGTH)
    return lambda model: v2.V2Codec(model.name, model.version, header_length,
                                    _output_schema(model))


def _output_schema(model: LoadedModel) -> Schema | None:
    try:
        schema: Schema | None = model.pyfunc.metadata.get_output_schema()
    except AttributeError:  # a model object without MLflow metadata (unit tests' fakes)
        return None
    return schema
