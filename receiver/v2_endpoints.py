"""The Open Inference Protocol's REST routes (`/v2/...`): thin handlers over the same parts as
`/invocations`. Routing (canary, shadow), the scoring lane, pinned versions and the X-Model-*
headers are the MLflow protocol's; only the wire format (receiver/v2.py) and the error body
differ: errors here are `{"error": "<message>"}` with the receiver's status codes.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from importlib import metadata as package_metadata

from mlflow.types import Schema
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import endpoints, v2
from receiver.errors import DOMAIN_ERRORS, ApiError, handle_api_error, handle_domain_error
from receiver.registry import LoadedModel
from receiver.rollout import Role
from receiver.scoring import JSON, UnsupportedMediaType

Handler = Callable[[Request], Awaitable[Response]]
# JSON, or the binary tensor data extension's octet stream (a JSON header, then the tensors).
MEDIA_TYPES = (JSON, "application/octet-stream")


def _protocol_errors(handler: Handler) -> Handler:
    """The receiver's error decisions and status codes, in the protocol's `{"error"}` body."""
    @functools.wraps(handler)
    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _v2_error(await handle_api_error(request, exc))
        except tuple(DOMAIN_ERRORS) as exc:
            return _v2_error(await handle_domain_error(request, exc))
    return answer


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
    service = endpoints._service(request)
    ready = all(service.models.served(name) is not None
                for name in service.settings.model_names)
    headers = None if ready else {"Retry-After": str(service.updater.retry_after())}
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503, headers=headers)


@_protocol_errors
async def model_ready(request: Request) -> Response:
    service = endpoints._service(request)
    name = endpoints._known_name_or_404(service, request.path_params["name"])
    version = request.path_params.get("version")
    served = service.models.served(name)
    if version is None:
        ready = served is not None
    else:  # a probe never loads a version: ready when it is served or cached
        ready = ((served is not None and served.version == version)
                 or service.models.cached(name, version) is not None)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@_protocol_errors
async def model_metadata(request: Request) -> Response:
    model = await _model(request)
    return JSONResponse(v2.metadata(model.name, model.version, model.input_schema,
                                    _output_schema(model)))


async def _model(request: Request) -> LoadedModel:
    """The served version of the named model, or the pinned one the path names."""
    service = endpoints._service(request)
    name = endpoints._known_name_or_404(service, request.path_params["name"])
    version = request.path_params.get("version")
    if version is None:
        return endpoints._served_or_503(service, name)
    return await service.pinned.get(name, version)


@_protocol_errors
async def infer(request: Request) -> Response:
    service = endpoints._service(request)
    name = endpoints._known_name_or_404(service, request.path_params["name"])
    version = request.path_params.get("version")
    if version is not None:
        return await _score(request, await service.pinned.get(name, version))
    route = endpoints._route(request, name)
    return await _score(request, route.model, route.role, route.shadow)


def _media_type(content_type: str | None) -> None:
    """Protocol clients send JSON or the binary extension's octet stream (tritonclient names
    no type for plain JSON); anything else was meant for another endpoint."""
    if content_type is None:
        return
    mime = content_type.split(";")[0].strip().lower()
    if mime not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"Content-Type {content_type[:64]!r} is not supported; send "
                                   f"{' or '.join(MEDIA_TYPES)}.")


async def _score(request: Request, model: LoadedModel, role: Role = "primary",
                 shadow: LoadedModel | None = None) -> Response:
    service = endpoints._service(request)
    _media_type(request.headers.get("content-type"))
    body = await endpoints._read_body(request, service.settings.max_body_bytes)
    codec = v2.V2Codec(model.name, model.version, request.headers.get(v2.HEADER_LENGTH),
                       _output_schema(model))
    metrics = service.metrics
    labels = {"model": model.name, "version": model.version, "role": role,
              "protocol": v2.PROTOCOL}
    started = time.perf_counter()
    try:
        content = await service.lane.score(model, body, codec)
    except Exception:
        metrics.prediction_errors.labels(**labels).inc()
        raise
    metrics.prediction_duration.labels(role=role).observe(time.perf_counter() - started)
    metrics.predictions.labels(**labels).inc()
    background = (BackgroundTask(service.shadow, shadow, body, codec, content)
                  if shadow is not None else None)
    return Response(content, media_type=JSON, background=background,
                    headers={"X-Model-Name": model.name, "X-Model-Version": model.version,
                             "X-Model-Role": role})


def _output_schema(model: LoadedModel) -> Schema | None:
    try:
        schema: Schema | None = model.pyfunc.metadata.get_output_schema()
    except AttributeError:  # a model object without MLflow metadata (unit tests' fakes)
        return None
    return schema
