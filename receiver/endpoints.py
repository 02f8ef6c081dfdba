"""Thin HTTP handlers: read the request, ask the service's parts, decide the HTTP answer.

A prediction flows one way: handler -> Router (who answers) -> ScoringLane -> batching, with
the request's codec (MLflow's scoring protocol here) -> back to the handler, which sends the
answer and then hands a shadow, if any, to ShadowScorer. What the prediction routes of both
protocols share (the body, the name, the served version, the route, scoring) is handling.py's.
Domain exceptions pass through untouched; errors.py turns them into HTTP responses.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver import compat, handling, scoring
from receiver.codec import MlflowCodec
from receiver.errors import ApiError, error_response
from receiver.handling import known_name_or_404, read_body, served_or_503, service_of
from receiver.models import RefreshStatus
from receiver.redact import scrub
from receiver.references import Reference, Share
from receiver.registry import LoadedModel
from receiver.rollout import Route
from receiver.service import Service
from receiver.shares import CurrentShare
from receiver.webhooks import MAX_NOTIFICATION_BYTES, InvalidSignature, MalformedNotification


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


def _mlflow_codec(request: Request) -> handling.CodecFor:
    """MLflow's scoring protocol in the request's media type (415 before the body is read)."""
    codec = MlflowCodec(scoring.media_type(request.headers.get("content-type")))
    return lambda model: codec


async def invocations(request: Request) -> Response:
    route = handling.route(request, service_of(request).settings.default_model)
    codec_for = _mlflow_codec(request)
    return await handling.score(request, route, codec_for)


async def model_invocations(request: Request) -> Response:
    name = known_name_or_404(service_of(request), request.path_params["name"])
    route = handling.route(request, name)
    codec_for = _mlflow_codec(request)
    return await handling.score(request, route, codec_for)


async def pinned_invocations(request: Request) -> Response:
    service = service_of(request)
    name = known_name_or_404(service, request.path_params["name"])
    codec_for = _mlflow_codec(request)  # before the version loads: a 415 costs no load
    model = await service.pinned.get(name, request.path_params["version"])
    return await handling.score(request, Route(model, "primary"), codec_for)


async def current_model(request: Request) -> JSONResponse:
    service = service_of(request)
    default = served_or_503(service, service.settings.default_model)
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
    service = service_of(request)
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
    service = service_of(request)
    outcomes = service.metrics.webhook_requests
    # A notification is a few hundred bytes: anything big is refused before any work. The
    # checks below then stay cheap enough (microseconds) to run on the event loop.
    try:
        body = await read_body(request, MAX_NOTIFICATION_BYTES)
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
    service = service_of(request)
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
    service = service_of(request)
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
    service = service_of(request)
    served_or_503(service, service.settings.default_model)
    return Response("\n", media_type=scoring.JSON)


async def version(request: Request) -> Response:
    """The MLflow version that loads and scores the models, as `mlflow models serve` says it."""
    return Response(compat.MLFLOW_VERSION, media_type="text/plain")


async def metrics(request: Request) -> Response:
    return Response(service_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
