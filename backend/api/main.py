"""Wiring: the app factory, its lifespan resources, routers and error shape.

Run with ``uvicorn --factory backend.api.main:create_app``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import Redis

from backend.api.body_limit import BodySizeLimit
from backend.api.deps import Resources, verify_token
from backend.api.routes import datasets, diagnosis, events, health, presets, runs
from backend.db import Database
from backend.queue import make_celery
from backend.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        settings.ensure_dirs()
        # The SSE loop blocks in XREAD for a few seconds: the socket timeout
        # must be longer than that block.
        resources = Resources(
            settings=settings,
            db=Database(settings.sqlalchemy_url),
            redis=Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2),
            aredis=aioredis.from_url(
                settings.redis_url, socket_timeout=30, socket_connect_timeout=2
            ),
            celery=make_celery(settings),
        )
        yield {"resources": resources}
        await resources.aredis.aclose()
        resources.redis.close()
        resources.db.dispose()

    app = FastAPI(
        title="curvelab",
        summary="Train CNNs on your image datasets and see why the curves look the way they do.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)

    protected = [Depends(verify_token)]
    app.include_router(health.router, prefix="/api")
    app.include_router(presets.router, prefix="/api", dependencies=protected)
    app.include_router(datasets.router, prefix="/api", dependencies=protected)
    app.include_router(runs.router, prefix="/api", dependencies=protected)
    app.include_router(diagnosis.router, prefix="/api", dependencies=protected)
    app.include_router(events.router, prefix="/api", dependencies=protected)
    return app


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 with one readable ``detail`` string naming each field, plus the
    structured errors for clients that place messages next to fields."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors():
        if error["type"] == "json_invalid":
            reason = error.get("ctx", {}).get("error", "")
            parts.append(f"the request body is not valid JSON: {reason}".rstrip(": "))
            continue
        where = ".".join(str(p) for p in error["loc"] if p != "body")
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return JSONResponse(
        status_code=422,
        content={"detail": "; ".join(parts), "errors": jsonable_encoder(exc.errors())},
    )
