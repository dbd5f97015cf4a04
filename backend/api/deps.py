"""Dependencies: the process's resources, a SQL session, the token check.

Route signatures read like plain types (``SessionDep``, ``ResourcesDep``);
tests swap resources by building the app with their own Settings.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from celery import Celery
from fastapi import Depends, HTTPException, Request, status
from redis import Redis
from sqlalchemy.orm import Session

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


def get_resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_session(resources: ResourcesDep) -> Iterator[Session]:
    with resources.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def verify_token(request: Request, resources: ResourcesDep) -> None:
    """With CURVELAB_API_TOKEN set, every route but health needs the bearer token."""
    expected = resources.settings.api_token
    if not expected:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
