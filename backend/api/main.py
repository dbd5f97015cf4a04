"""Wiring: the app factory, its lifespan resources, routers and error shape.

Run with ``uvicorn --factory backend.api.main:create_app``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from redis import Redis
from sqlalchemy.exc import SQLAlchemyError

from backend.api.body_limit import BodyCap, BodySizeLimit, RouteCap
from backend.api.deps import Resources, verify_path_ids, verify_token
from backend.api.metrics_reply import BodyCache
from backend.api.routes import (
    datasets,
    diagnosis,
    evaluation,
    events,
    external,
    health,
    predict,
    presets,
    runs,
    sweeps,
)
from backend.api.stream_hub import StreamHub
from backend.api.token_gate import TokenGate
from backend.db import Database
from backend.queue import make_celery
from backend.settings import Settings, get_settings

log = logging.getLogger(__name__)

MAX_ERRORS = 20  # listed in a 422; the rest are counted


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        settings.ensure_dirs()
        # SSE reads (the stream hub's and catch-up ones) block in XREAD for a
        # few seconds: the socket timeout must be longer than that block.
        aredis = aioredis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=2)
        resources = Resources(
            settings=settings,
            db=Database(settings.sqlalchemy_url),
            redis=Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2),
            aredis=aredis,
            celery=make_celery(settings),
            streams=StreamHub(aredis),
        )
        try:  # the workers' sweepers refresh them every 10 minutes too
            resources.db.refresh_statistics()
        except SQLAlchemyError as exc:
            log.warning("could not refresh the database's planner statistics: %s", exc)
        # Per app, bounded in bytes (CURVELAB_METRICS_CACHE_MB): see metrics_reply.
        bodies = BodyCache(settings.metrics_cache_bytes)
        yield {"resources": resources, "metrics_bodies": bodies}
        await resources.streams.aclose()
        await resources.aredis.aclose()
        resources.redis.close()
        resources.db.dispose()

    app = FastAPI(
        title="curvelab",
        summary="Train CNNs on your image datasets and see why the curves look the way they do.",
        version="0.1.0",
        lifespan=lifespan,
    )
    # Middleware added last runs first: CORS answers preflights, then the
    # token is checked, then the body is counted as it streams in.
    default_cap, route_caps = body_caps(settings)
    app.add_middleware(BodySizeLimit, default=default_cap, routes=route_caps)
    if settings.api_token:
        app.add_middleware(TokenGate, token=settings.api_token)
    if settings.cors_origins:
        # Only when configured: by default no browser page of another site may
        # read the API's answers. Bearer tokens, not cookies: no credentials.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "If-None-Match"],
            # A page on another origin revalidates GET /metrics with it.
            expose_headers=["ETag"],
        )
    app.add_exception_handler(RequestValidationError, _validation_error)

    # The token first: a stranger learns nothing, not even which ids exist.
    protected = [Depends(verify_token), Depends(verify_path_ids)]
    app.include_router(health.router, prefix="/api")
    app.include_router(presets.router, prefix="/api", dependencies=protected)
    app.include_router(datasets.router, prefix="/api", dependencies=protected)
    app.include_router(runs.router, prefix="/api", dependencies=protected)
    app.include_router(sweeps.router, prefix="/api", dependencies=protected)
    app.include_router(external.router, prefix="/api", dependencies=protected)
    app.include_router(diagnosis.router, prefix="/api", dependencies=protected)
    app.include_router(evaluation.router, prefix="/api", dependencies=protected)
    app.include_router(predict.router, prefix="/api", dependencies=protected)
    app.include_router(events.router, prefix="/api", dependencies=protected)
    _document_validation_errors(app)
    return app


# The image's own cap plus room for the multipart part's headers and boundary.
MULTIPART_SLACK = 64 * 1024


def body_caps(settings: Settings) -> tuple[BodyCap, list[RouteCap]]:
    """The cap of every request body: small for JSON, the upload routes their own."""
    json_cap = BodyCap(settings.max_json_bytes, "request body", "CURVELAB_MAX_JSON_KB")
    return json_cap, [
        RouteCap(
            "POST",
            "/api/datasets",
            BodyCap(settings.max_upload_bytes, "upload", "CURVELAB_MAX_UPLOAD_MB"),
        ),
        RouteCap(
            "POST",
            "/api/runs/{run_id}/predict",
            BodyCap(settings.max_image_bytes, "image", "CURVELAB_MAX_IMAGE_MB", MULTIPART_SLACK),
        ),
        # An external run's .keras file; its other routes are JSON, under the JSON cap.
        RouteCap(
            "PUT",
            "/api/runs/{run_id}/model",
            BodyCap(settings.max_model_bytes, "model", "CURVELAB_MAX_MODEL_MB", MULTIPART_SLACK),
        ),
    ]


def _document_validation_errors(app: FastAPI) -> None:
    """Make the schema say what a 422 really is (``_validation_error``'s shape:
    a ``detail`` string and the structured ``errors``), so generated clients
    and schema checks read it right."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schemas = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = {
                    "title": "HTTPValidationError",
                    "type": "object",
                    "required": ["detail", "errors"],
                    "properties": {
                        "detail": {"type": "string", "description": "Every problem, by field."},
                        "errors": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ValidationError"},
                        },
                    },
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable ``detail`` string naming each field, plus the
    structured errors for clients that place messages next to fields."""
    assert isinstance(exc, RequestValidationError)
    # A hostile body can fail thousands of ways (a huge list) and name fields
    # with any text: the answer stays short, and never echoes the ``input``.
    errors = [
        {
            "type": error["type"],
            "loc": [_printable(p) if isinstance(p, str) else p for p in error["loc"]],
            "msg": _printable(str(error["msg"]), 300),
            **({"ctx": error["ctx"]} if "ctx" in error else {}),
        }
        for error in exc.errors()[:MAX_ERRORS]
    ]
    parts = []
    for error in errors:
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error", "")
            parts.append(f"the request body is not valid JSON: {reason}".rstrip(": "))
            continue
        where = ".".join(str(p) for p in error["loc"] if p != "body")
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = len(exc.errors()) - len(errors)
    if more > 0:
        parts.append(f"and {more} more")
    return JSONResponse(
        status_code=422, content={"detail": "; ".join(parts), "errors": jsonable_encoder(errors)}
    )


def _printable(text: str, limit: int = 80) -> str:
    """Text that encodes as UTF-8 (lone surrogates escaped), shortened in the middle."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else f"{text[: limit - 20]}…{text[-15:]}"
