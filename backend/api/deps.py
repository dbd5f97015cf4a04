"""Dependencies: the process's resources, a SQL session, the token check,
and the check that an id in a path is one the server could have made.

Route signatures read like plain types (``SessionDep``, ``ResourcesDep``);
tests swap resources by building the app with their own Settings.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from redis import Redis
from sqlalchemy.orm import Session

from backend.api.stream_hub import StreamHub
from backend.db import Database
from backend.settings import Settings


@dataclass
class Resources:
    """Clients the API holds for its lifetime, made in the lifespan."""

    settings: Settings
    db: Database
    redis: Redis
    aredis: aioredis.Redis
    celery: Celery
    streams: StreamHub  # the SSE clients' shared readers of run streams


def get_resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_session(resources: ResourcesDep) -> Iterator[Session]:
    with resources.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


TOKEN_REFUSED = "missing or wrong API token: send 'Authorization: Bearer <token>'"


def token_matches(authorization: str, expected: str) -> bool:
    """Whether an ``Authorization`` header carries the bearer token, compared
    in constant time so the answer's timing tells nothing about the token."""
    scheme, _, given = authorization.partition(" ")
    matches = hmac.compare_digest(given.encode(), expected.encode())
    return scheme.lower() == "bearer" and matches


def verify_token(request: Request, resources: ResourcesDep) -> None:
    """With CURVELAB_API_TOKEN set, every route but health needs the bearer token.

    ``TokenGate`` already refused a request without it before its body was
    read; this says the same at the router, where a reader looks for it."""
    expected = resources.settings.api_token
    if expected and not token_matches(request.headers.get("authorization", ""), expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=TOKEN_REFUSED,
            headers={"WWW-Authenticate": "Bearer"},
        )


# Ids are made by the server (``db.new_id``: uuid4 hex); anything else names nothing.
_SERVER_ID = re.compile(r"[0-9a-f]{1,64}")


def is_server_id(value: str) -> bool:
    return _SERVER_ID.fullmatch(value) is not None


def verify_path_ids(request: Request) -> None:
    """A ``*_id`` path parameter the server could not have made is a 404 before
    any lookup: a NUL byte, say, would make PostgreSQL fail rather than miss."""
    for name, value in request.path_params.items():
        if name.endswith("_id") and not is_server_id(str(value)):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{name.removesuffix('_id')} not found")
