"""GET /api/runs/{id}/events: the run's Redis Stream as Server-Sent Events.

Replayed from the start (or after ``Last-Event-ID``), then followed live; the
stream entry id is the SSE id, so a reconnecting client misses nothing. The
response ends once the run's final status has been sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from redis.exceptions import RedisError

from backend import events
from backend.api.deps import ResourcesDep
from backend.db import Run

router = APIRouter(prefix="/runs", tags=["runs"])

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
BLOCK_MS = 2000


def _cursor(
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[str | None, Query(description="Resume after this event id.")] = None,
) -> str:
    cursor = last_event_id or after or "0-0"
    if not _STREAM_ID.match(cursor):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"not an event id: {cursor[:40]!r} (expected like 1700000000000-0)",
        )
    return cursor


def _run_status(resources: ResourcesDep, run_id: str) -> str | None:
    with resources.db.session() as session:
        run = session.get(Run, run_id)
        return run.status if run else None


def _existing_run(run_id: str, resources: ResourcesDep) -> str:
    if _run_status(resources, run_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "run not found")
    return run_id


@router.get("/{run_id}/events", response_class=EventSourceResponse)
async def run_events(
    resources: ResourcesDep,
    run_id: Annotated[str, Depends(_existing_run)],
    cursor: Annotated[str, Depends(_cursor)],
) -> AsyncIterator[ServerSentEvent]:
    """The run's events (status, epoch, batch), replayed then followed live."""
    key = events.stream_key(run_id)
    over = False
    while True:
        try:
            # Once SQL says the run is over, one last read without blocking
            # picks up the final status event published just after the commit.
            block = None if over else BLOCK_MS
            reply: Any = await resources.aredis.xread({key: cursor}, count=500, block=block)
        except RedisError as exc:
            yield ServerSentEvent(
                event="error", raw_data=json.dumps({"type": "error", "error": str(exc)})
            )
            return
        if not reply:
            if over:
                return
            status_now = await run_in_threadpool(_run_status, resources, run_id)
            over = status_now is None or status_now in events.FINAL_STATUSES
            continue
        for raw_id, fields in reply[0][1]:
            cursor = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            event = events.decode(fields)
            yield ServerSentEvent(id=cursor, event=event["type"], raw_data=json.dumps(event))
            if event["type"] == "status" and event["status"] in events.FINAL_STATUSES:
                return
