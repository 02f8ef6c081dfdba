"""What the prediction handlers of both protocols share (MLflow's in endpoints.py, the Open
Inference Protocol's in v2_endpoints.py): the service, the body, the name asked for, the served
version, who answers, and scoring one request with its protocol's codec.

HTTP decisions live here once: 413 past the body's limit, 404 for a name not served here, 503
with Retry-After while nothing is served. Each protocol's handlers render the errors in their
own body; the decisions and status codes are the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from receiver.codec import Codec
from receiver.errors import ApiError, ModelNotLoaded
from receiver.lane import ClientGone, DeadlineExceeded, Overloaded
from receiver.registry import LoadedModel
from receiver.rollout import Contender, Role, Route
from receiver.scoring import JSON
from receiver.service import Service

# A request's codec for the model that answers it (the canary, the primary or a shadow): a
# protocol's answer may name the model version that made it.
CodecFor = Callable[[LoadedModel], Codec]


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def served_or_503(service: Service, name: str) -> LoadedModel:
    model = service.models.served(name)
    if model is None:
        raise ModelNotLoaded(f"No version of {name} is loaded yet "
                             f"(following {name}{service.settings.reference}); retry shortly.",
                             service.updater.retry_after())
    return model


def known_name_or_404(service: Service, name: str) -> str:
    if name not in service.settings.model_names:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST",
                       f"Model {name!r} is not served here; served: "
                       f"{', '.join(service.settings.model_names)}.")
    return name


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; ApiError 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "REQUEST_TOO_LARGE", f"The request body is over {limit} bytes.")


def route(request: Request, name: str) -> Route:
    """The served version of `name`, or its canary, and the shadow to run afterwards."""
    service = service_of(request)
    primary = served_or_503(service, name)
    settings, models = service.settings, service.models
    shares = models.shares(name)  # read once: one request, one reading of the shares
    canary = (Contender(models.held(name, settings.canary.reference), shares.canary.percent)
              if settings.canary and shares.canary else None)
    shadow = (Contender(models.held(name, settings.shadow.reference), shares.shadow.percent)
              if settings.shadow and shares.shadow else None)
    return service.router.route(primary, canary, shadow, request.headers.get("x-hotswap-key"))


async def _disconnected(request: Request) -> None:
    """Done when the client disconnects. Only once the body is read: the next message the
    server has for this request is then its disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def score(request: Request, route: Route, codec_for: CodecFor) -> Response:
    """The answer of `route.model` to the request's body, counted by model version, role and
    protocol; for a canary, `route.fallback` (the primary) answers when the canary's predict
    fails. A shadow, if any, scores the same body once the answer is sent."""
    service = service_of(request)
    model, role = route.model, route.role
    codec = codec_for(model)
    # Admission first, from the backlog alone: a refusal costs no body read and no parse.
    with service.lane.admit() as ticket:
        body = await read_body(request, service.settings.max_body_bytes)
        metrics = service.metrics
        labels = _labels(model, role, codec)
        started = time.perf_counter()
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            content = await service.lane.score(model, body, codec, ticket, gone)
        except ClientGone:
            raise  # nobody's prediction failed: the client left
        except (Overloaded, DeadlineExceeded):
            metrics.prediction_errors.labels(**labels).inc()
            raise  # the lane's own refusals: the primary would meet them just the same
        except Exception:
            if route.fallback is None:
                metrics.prediction_errors.labels(**labels).inc()
                raise
            model, role = route.fallback, "primary"
            content = await _fall_back(service, model, body, codec_for(model), labels)
        else:
            metrics.prediction_duration.labels(role=role).observe(time.perf_counter() - started)
            metrics.predictions.labels(**labels).inc()
        finally:
            gone.cancel()
    # Starlette runs a background task once the response is sent: the shadow cannot touch it.
    shadow = route.shadow
    background = (BackgroundTask(service.shadow, shadow, body, codec_for(shadow), content)
                  if shadow is not None else None)
    return Response(content, media_type=JSON, background=background,
                    headers={"X-Model-Name": model.name, "X-Model-Version": model.version,
                             "X-Model-Role": role})


async def _fall_back(service: Service, primary: LoadedModel, body: bytes, codec: Codec,
                     canary: dict[str, str]) -> bytes:
    """The primary's answer to a body the canary failed on. A failing canary is the rollout's
    problem, never the client's: it counts against the canary. A body the primary refuses too
    was a bad request: it counts against the primary, as it would have without a canary."""
    metrics = service.metrics
    primary_labels = _labels(primary, "primary", codec)
    try:
        content = await service.lane.score(primary, body, codec)
    except Exception:
        metrics.prediction_errors.labels(**primary_labels).inc()
        raise
    metrics.predictions.labels(**primary_labels).inc()
    metrics.prediction_errors.labels(**canary).inc()
    metrics.canary_fallbacks.labels(model=canary["model"], version=canary["version"]).inc()
    return content


def _labels(model: LoadedModel, role: Role, codec: Codec) -> dict[str, str]:
    return {"model": model.name, "version": model.version, "role": role,
            "protocol": codec.protocol}
