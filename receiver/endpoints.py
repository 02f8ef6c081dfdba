"""Thin HTTP handlers: read the request, ask the service's parts, decide the HTTP answer.

A prediction flows one way: handler -> Router (who answers) -> ScoringLane -> batching, with
the request's codec (MLflow's scoring protocol here) -> back to the handler, which sends the
answer and then hands a shadow, if any, to ShadowScorer.
Domain exceptions pass through untouched; errors.py turns them into HTTP responses.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import compat, scoring
from receiver.codec import Codec, MlflowCodec
from receiver.errors import ApiError, ModelNotLoaded, error_response
from receiver.lane import ClientGone, DeadlineExceeded, Overloaded
from receiver.models import RefreshStatus
from receiver.redact import scrub
from receiver.references import Reference, Share
from receiver.registry import LoadedModel
from receiver.rollout import Contender, Role, Route
from receiver.service import Service
from receiver.shares import CurrentShare
from receiver.webhooks import MAX_NOTIFICATION_BYTES, InvalidSignature, MalformedNotification


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _served_or_503(service: Service, name: str) -> LoadedModel:
    model = service.models.served(name)
    if model is None:
        raise ModelNotLoaded(f"No version of {name} is loaded yet "
                             f"(following {name}{service.settings.reference}); retry shortly.",
                             service.updater.retry_after())
    return model


def _known_name_or_404(service: Service, name: str) -> str:
    if name not in service.settings.model_names:
        raise ApiError(404, "RESOURCE_DOES_NOT_EXIST",
                       f"Model {name!r} is not served here; served: "
                       f"{', '.join(service.settings.model_names)}.")
    return name


def _describe(service: Service, name: str) -> dict[str, Any]:
    settings = service.settings
    model = service.models.served(name)
    following = {"alias": settings.alias} if settings.alias else {"stage": settings.stage}
    rollout = _describe_rollout(service, name, model)
    if model is None:
        return {"name": name, "version": None, **following, **rollout}
    return {"name": name, "version": model.version, **following,
            "loaded_at": model.loaded_at, "load_seconds": round(model.load_seconds, 3),
            "run_id": model.run_id, **rollout}


def _describe_rollout(service: Service, name: str, primary: LoadedModel | None
                      ) -> dict[str, Any]:
    settings = service.settings
    if not settings.rollout_references:
        return {}

    def held(reference: Reference) -> dict[str, Any]:
        model = service.models.held(name, reference)
        return {"reference": str(reference), "version": model.version if model else None,
                "loaded_at": model.loaded_at if model else None}

    def share(value: Share | None, current: CurrentShare | None) -> dict[str, Any] | None:
        if value is None or current is None:
            return None
        described = held(value.reference)
        # Active: it exists and differs from the primary, so it takes its share.
        active = described["version"] is not None and (
            primary is None or described["version"] != primary.version)
        return {**described, "percent": current.percent, "active": active,
                "source": current.source}

    shares = service.models.shares(name)
    return {"prewarmed": [held(reference) for reference in settings.prewarm],
            "canary": share(settings.canary, shares.canary),
            "shadow": share(settings.shadow, shares.shadow)}


async def _read_body(request: Request, limit: int) -> bytes:
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


async def _disconnected(request: Request) -> None:
    """Done when the client disconnects. Only once the body is read: the next message the
    server has for this request is then its disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _score(request: Request, model: LoadedModel, role: Role = "primary",
                 shadow: LoadedModel | None = None, primary: LoadedModel | None = None
                 ) -> Response:
    """Score with `model`; for a canary, `primary` answers when the canary's predict fails."""
    service = _service(request)
    codec = MlflowCodec(scoring.media_type(request.headers.get("content-type")))
    # Admission first, from the backlog alone: a refusal costs no body read and no parse.
    with service.lane.admit() as ticket:
        body = await _read_body(request, service.settings.max_body_bytes)
        metrics = service.metrics
        labels = {"model": model.name, "version": model.version, "role": role}
        started = time.perf_counter()
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            content = await service.lane.score(model, body, codec, ticket, gone)
        except ClientGone:
            raise
        except (Overloaded, DeadlineExceeded):
            metrics.prediction_errors.labels(**labels).inc()
            raise  # the lane's own refusals: the primary would meet them just the same
        except Exception:
            if primary is None:
                metrics.prediction_errors.labels(**labels).inc()
                raise
            model, role = primary, "primary"
            content = await _fall_back(service, primary, body, codec, labels)
        else:
            metrics.prediction_duration.labels(role=role).observe(time.perf_counter() - started)
            metrics.predictions.labels(**labels).inc()
        finally:
            gone.cancel()
    # Starlette runs a background task once the response is sent: the shadow cannot touch it.
    background = (BackgroundTask(service.shadow, shadow, body, codec, content)
                  if shadow is not None else None)
    return Response(content, media_type=scoring.JSON, background=background,
                    headers={"X-Model-Name": model.name, "X-Model-Version": model.version,
                             "X-Model-Role": role})


async def _fall_back(service: Service, primary: LoadedModel, body: bytes, codec: Codec,
                     canary: dict[str, str]) -> bytes:
    """The primary's answer to a body the canary failed on. A failing canary is the rollout's
    problem, never the client's: it counts against the canary. A body the primary refuses too
    was a bad request: it counts against the primary, as it would have without a canary."""
    metrics = service.metrics
    primary_labels = {"model": primary.name, "version": primary.version, "role": "primary"}
    try:
        content = await service.lane.score(primary, body, codec)
    except Exception:
        metrics.prediction_errors.labels(**primary_labels).inc()
        raise
    metrics.predictions.labels(**primary_labels).inc()
    metrics.prediction_errors.labels(**canary).inc()
    metrics.canary_fallbacks.labels(model=canary["model"], version=canary["version"]).inc()
    return content


def _route(request: Request, name: str) -> Route:
    """The served version of `name`, or its canary, and the shadow to run afterwards."""
    service = _service(request)
    primary = _served_or_503(service, name)
    settings, models = service.settings, service.models
    shares = models.shares(name)  # read once: one request, one reading of the shares
    canary = (Contender(models.held(name, settings.canary.reference), shares.canary.percent)
              if settings.canary and shares.canary else None)
    shadow = (Contender(models.held(name, settings.shadow.reference), shares.shadow.percent)
              if settings.shadow and shares.shadow else None)
    return service.router.route(primary, canary, shadow, request.headers.get("x-hotswap-key"))


async def invocations(request: Request) -> Response:
    route = _route(request, _service(request).settings.default_model)
    return await _score(request, route.model, route.role, route.shadow, route.fallback)


async def model_invocations(request: Request) -> Response:
    service = _service(request)
    name = _known_name_or_404(service, request.path_params["name"])
    route = _route(request, name)
    return await _score(request, route.model, route.role, route.shadow, route.fallback)


async def pinned_invocations(request: Request) -> Response:
    service = _service(request)
    name = _known_name_or_404(service, request.path_params["name"])
    version = request.path_params["version"]
    return await _score(request, await service.pinned.get(name, version))


async def current_model(request: Request) -> JSONResponse:
    service = _service(request)
    default = _served_or_503(service, service.settings.default_model)
    models = {name: _describe(service, name) for name in service.settings.model_names}
    return JSONResponse({**_describe(service, default.name), "models": models,
                         **_describe_host(service)})


def _describe_host(service: Service) -> dict[str, Any]:
    """Under a supervisor: every worker's served versions, and whether they all agree."""
    if service.host is None:
        return {}
    workers = service.host.workers()
    versions = [worker["versions"].get(service.settings.default_model) for worker in workers]
    return {"workers": workers,
            "converged": None not in versions and len(set(versions)) == 1}


def _ready(service: Service) -> bool:
    """The default model is served here, and by every worker of the host."""
    name = service.settings.default_model
    if service.models.served(name) is None:
        return False
    if service.host is None:
        return True
    return all(worker["versions"].get(name) is not None for worker in service.host.workers())


async def reload_models(request: Request) -> JSONResponse:
    service = _service(request)
    _require_admin(request, service.settings.admin_token)
    refreshed = service.updater.trigger("manual")
    if service.link is not None:
        service.link.relay("manual")  # the other workers refresh alongside this one
    result = await refreshed
    name = service.settings.default_model
    version = _version(service, name)
    if result.status.get(name, RefreshStatus.FAILED) == RefreshStatus.FAILED:
        return error_response(502, "RELOAD_FAILED",
                              result.errors.get(name) or result.crash or "reload failed",
                              fields={"model_version": version})
    status = "reloaded" if result.status[name] == RefreshStatus.RELOADED else "unchanged"
    details = {n: {"status": s.value, "version": _version(service, n),
                   "error": scrub(result.errors[n]) if n in result.errors else None}
               for n, s in result.status.items()}
    return JSONResponse({"status": status, "model_version": version, "models": details})


def _version(service: Service, name: str) -> str | None:
    model = service.models.served(name)
    return model.version if model else None


def _require_admin(request: Request, token: str | None) -> None:
    if token is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "UNAUTHENTICATED",
                       "POST /models/reload needs 'Authorization: Bearer <HOTSWAP_ADMIN_TOKEN>'.")


async def webhook(request: Request) -> JSONResponse:
    service = _service(request)
    outcomes = service.metrics.webhook_requests
    # A notification is a few hundred bytes: anything big is refused before any work. The
    # checks below then stay cheap enough (microseconds) to run on the event loop.
    try:
        body = await _read_body(request, MAX_NOTIFICATION_BYTES)
    except ApiError:
        outcomes.labels(outcome="too_large").inc()
        raise
    try:
        notification = service.verifier.check(request.headers, body)
    except InvalidSignature:
        outcomes.labels(outcome="rejected").inc()
        raise
    except MalformedNotification:
        outcomes.labels(outcome="malformed").inc()
        raise
    if notification is None:
        outcomes.labels(outcome="duplicate").inc()
        return JSONResponse({"status": "duplicate"}, status_code=202)
    if not notification.model_names() & set(service.settings.model_names):
        outcomes.labels(outcome="ignored").inc()
        return JSONResponse({"status": "ignored"}, status_code=202)
    service.updater.trigger("webhook")
    if service.link is not None:
        service.link.relay("webhook")
    outcomes.labels(outcome="accepted").inc()
    return JSONResponse({"status": "accepted"}, status_code=202)


async def health(request: Request) -> JSONResponse:
    service = _service(request)
    loaded = _ready(service)
    body = {"model_loaded": loaded,
            "models": {n: _version(service, n) for n in service.settings.model_names},
            "following": service.settings.reference,
            "last_update_error": scrub(service.models.last_error or "") or None,
            "load_failures": _load_failures(service),
            "last_load_failure": service.models.guard.last_failure,
            "abandoned_loads": service.models.guard.abandoned(),
            "uptime_seconds": round(time.monotonic() - service.started_at, 1),
            **_describe_host(service)}
    return JSONResponse(body, status_code=200 if loaded else 503)


def _load_failures(service: Service) -> dict[str, int]:
    """Failed loads by reason (error, exit, timeout), as /metrics counts them."""
    counts = {"error": 0, "exit": 0, "timeout": 0}
    for family in service.metrics.load_failures.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["reason"]] = int(sample.value)
    return counts


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def ready(request: Request) -> JSONResponse:
    service = _service(request)
    if not _ready(service):
        reason = "no model loaded yet" if service.host is None else \
            "a worker serves no model yet"
        return JSONResponse({"status": "not ready", "reason": reason},
                            status_code=503,
                            headers={"Retry-After": str(service.updater.retry_after())})
    return JSONResponse({"status": "ready"})


async def ping(request: Request) -> Response:
    """`mlflow models serve`'s health check, for its clients and probes: 200 once the default
    model is served; until then 503 with Retry-After (MLflow answers 404: it never waits)."""
    service = _service(request)
    _served_or_503(service, service.settings.default_model)
    return Response("\n", media_type=scoring.JSON)


async def version(request: Request) -> Response:
    """The MLflow version that loads and scores the models, as `mlflow models serve` says it."""
    return Response(compat.MLFLOW_VERSION, media_type="text/plain")


async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
