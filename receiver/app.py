"""create_app(): the Starlette application, its routes, and the updater's lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ExceptionHandler

from receiver import endpoints, redact
from receiver.errors import error_response, exception_handlers
from receiver.service import Service
from receiver.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, service: Service | None = None) -> Starlette:
    """The ASGI app. With no arguments, configured from the environment (docs/contract.md), so
    `uvicorn --factory receiver.app:create_app` works as well as `mlflow-hotswap-receiver`."""
    if service is None:
        service = Service(settings or Settings.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.updater.start()
        if service.link is not None:
            service.link.start()
        logger.info("Serving %s, following %s in MLflow at %s",
                    ", ".join(service.settings.model_names), service.settings.reference,
                    redact.uri(service.settings.tracking_uri))
        try:
            yield
        finally:
            if service.link is not None:
                service.link.stop()
            await service.shadow.stop()
            await service.updater.stop()
            service.registry.close()

    routes = [
        Route("/invocations", endpoints.invocations, methods=["POST"]),
        Route("/predict", endpoints.invocations, methods=["POST"]),
        Route("/models/current", endpoints.current_model, methods=["GET"]),
        Route("/models/reload", endpoints.reload_models, methods=["POST"]),
        Route("/models/{name}/invocations", endpoints.model_invocations, methods=["POST"]),
        Route("/models/{name}/versions/{version}/invocations", endpoints.pinned_invocations,
              methods=["POST"]),
        Route("/webhooks/mlflow", endpoints.webhook, methods=["POST"]),
        Route("/health", endpoints.health, methods=["GET"]),
        Route("/health/live", endpoints.live, methods=["GET"]),
        Route("/health/ready", endpoints.ready, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        Route("/ping", endpoints.ping, methods=["GET"]),
        Route("/version", endpoints.version, methods=["GET"]),
    ]
    handlers: dict[Any, ExceptionHandler] = exception_handlers()
    handlers.update({ClientDisconnect: _client_gone, Exception: _internal_error,
                     404: _not_found, 405: _method_not_allowed})
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.service = service
    return app


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "ENDPOINT_NOT_FOUND", f"No endpoint at {request.url.path}.")


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    return error_response(405, "METHOD_NOT_ALLOWED",
                          f"{request.method} is not allowed on {request.url.path}.")


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # The client hung up mid-body: nobody reads this answer, and it is not our error.
    logger.info("Client left before sending its whole body: %s %s", request.method,
                request.url.path)
    return error_response(400, "CLIENT_DISCONNECTED", "The request body was cut short.")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    # The details are in the log; a client learns only that it is our fault.
    return error_response(500, "INTERNAL_ERROR", f"Internal error ({type(exc).__name__}).")
