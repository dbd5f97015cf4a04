"""GET /api/health: is the API up, and can it reach Redis, SQL and workers?"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from backend import events
from backend.api.deps import ResourcesDep
from backend.api.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", response_model=Health, responses={503: {"model": Health}})
def health(resources: ResourcesDep) -> JSONResponse:
    """Reachability of Redis and SQL, and the number of live workers (503 if degraded)."""
    try:
        redis_ok = bool(resources.redis.ping())
        # Workers refresh a key with a TTL while alive, even mid-training
        # (a solo-pool worker does not answer Celery's ping while busy).
        workers = sum(1 for _ in resources.redis.scan_iter(events.WORKER_KEY_PATTERN))
    except RedisError:
        redis_ok, workers = False, 0
    database_ok = resources.db.ping()
    ok = redis_ok and database_ok
    body = Health(
        status="ok" if ok else "degraded", redis=redis_ok, database=database_ok, workers=workers
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
