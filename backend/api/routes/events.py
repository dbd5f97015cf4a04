"""GET /api/runs/{id}/events: the run's Redis Stream as Server-Sent Events.

Replayed from the start (or after ``Last-Event-ID``), then followed live; the
stream entry id is the SSE id, so a reconnecting client misses nothing. The
response ends once the run's final status has been sent.

SQL is the record and fills in what the stream lacks, so that no client
misses an epoch: a stream that lost its head (Redis flushed or restarted
without its data) or was trimmed past the client's id is preceded by the
epochs from SQL, ids ``0-<epoch>`` (see ``backend.events``); an epoch missing
between two of the stream's (lost while Redis was away) is sent from SQL,
without an id, just before the next one; while Redis does not answer, new
epochs and the final status come from SQL. A client may so get an epoch
twice (same number, same values), never miss one.

A run that resumes from a checkpoint older than its last published epoch
re-trains epochs the stream already had: a ``running`` status with
``resumed_at_epoch`` = k comes first, then epoch k again, with new values.
A client may so get an epoch twice with different values: after a
``running`` status with ``resumed_at_epoch`` = k, the epochs from k on
replace what it had.

The live tail is read through the process's ``StreamHub`` (one Redis reader
per followed run, ``backend.api.stream_hub``), which answers as ``XREAD``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent
from redis.exceptions import RedisError

from backend import events, runs
from backend.api.deps import Resources, ResourcesDep
from backend.db import Run

log = logging.getLogger(__name__)

router = APIRouter(prefix="/runs", tags=["runs"])

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
BLOCK_MS = 2000
FINAL_WAIT_MS = 500  # for the final status event, published just after SQL's commit
REDIS_RETRY_S = 1.0  # while Redis does not answer: SQL is read, Redis tried again
SCAN_LIMIT = 2000  # stream entries read back to learn a resuming client's epoch


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


@dataclass(frozen=True)
class _Snapshot:
    status: str | None
    epochs_done: int = 0
    error: str | None = None

    @property
    def over(self) -> bool:
        return self.status is None or self.status in events.FINAL_STATUSES


def _snapshot(resources: Resources, run_id: str) -> _Snapshot:
    with resources.db.session() as session:
        run = session.get(Run, run_id)
        return _Snapshot(run.status, run.epochs_done, run.error) if run else _Snapshot(None)


def _epochs_after(resources: Resources, run_id: str, after: int) -> list[dict[str, Any]]:
    with resources.db.session() as session:
        return runs.epoch_rows(session, run_id, after=after)


def _existing_run(run_id: str, resources: ResourcesDep) -> str:
    if _snapshot(resources, run_id).status is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "run not found")
    return run_id


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _sse(event: dict[str, Any], event_id: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(id=event_id, event=event["type"], raw_data=json.dumps(event))


class _Feed:
    """One client's view: the stream after its cursor, with SQL's epochs where
    the stream lacks them."""

    def __init__(self, resources: Resources, run_id: str, cursor: str) -> None:
        self.resources = resources
        self.run_id = run_id
        self.key = events.stream_key(run_id)
        self.cursor = cursor
        self.last_epoch: int | None = None  # the highest epoch the client has, when known
        self.from_sql: set[int] = set()  # sent from SQL: skipped when the stream has them
        self.over = False  # SQL says the run is final: its last events are due now

    async def __aiter__(self) -> AsyncIterator[ServerSentEvent]:
        async for sse in self._start():
            yield sse
        over = self.over
        while True:
            try:
                block = FINAL_WAIT_MS if over else BLOCK_MS
                reply: Any = await self.resources.streams.read(
                    self.key, self.cursor, count=500, block=block
                )
            except RedisError as exc:
                log.warning("run %s events: Redis: %s; following SQL", self.run_id, exc)
                snapshot = await run_in_threadpool(_snapshot, self.resources, self.run_id)
                self.last_epoch = self.last_epoch or 0
                async for sse in self._fill(snapshot.epochs_done):
                    yield sse
                if snapshot.over:
                    for sse in self._final(snapshot):
                        yield sse
                    return
                await asyncio.sleep(REDIS_RETRY_S)
                continue
            if not reply:
                snapshot = await run_in_threadpool(_snapshot, self.resources, self.run_id)
                if over:  # final in SQL, and its status event never came
                    async for sse in self._fill(snapshot.epochs_done):
                        yield sse
                    for sse in self._final(snapshot):
                        yield sse
                    return
                over = snapshot.over
                continue
            for raw_id, fields in reply[0][1]:
                self.cursor = _text(raw_id)
                event = events.decode(fields)
                if event["type"] == "epoch":
                    epoch = int(event["epoch"])
                    if epoch in self.from_sql:
                        self.from_sql.discard(epoch)
                        continue
                    async for sse in self._fill(epoch - 1):
                        yield sse
                    self.last_epoch = epoch
                elif event["type"] == "status" and event["status"] in events.FINAL_STATUSES:
                    async for sse in self._fill(int(event.get("epochs_done") or 0)):
                        yield sse
                    yield _sse(event, self.cursor)
                    return
                elif event["type"] == "status" and event["status"] == "running":
                    self._rewind(event.get("resumed_at_epoch"))
                yield _sse(event, self.cursor)

    def _rewind(self, resumed_at: int | None) -> None:
        """The run goes on from epoch ``resumed_at`` (None: a first start): what
        comes from there on is new, even where the client had those epochs."""
        if resumed_at is None:
            return
        resumed_at = int(resumed_at)
        if self.last_epoch is not None:
            # Lower only: a client that lacks earlier epochs still gets them filled.
            self.last_epoch = min(self.last_epoch, resumed_at - 1)
        self.from_sql = {epoch for epoch in self.from_sql if epoch < resumed_at}

    async def _start(self) -> AsyncIterator[ServerSentEvent]:
        """Where the client stands, and SQL's epochs first if the stream lost them."""
        held = events.sql_epoch(self.cursor)
        try:
            first = await self.resources.aredis.xrange(self.key, count=1)
            if held is not None:
                self.last_epoch = held
                self.from_sql = set(range(1, held + 1))
                replay = not (first and events.opens_stream(events.decode(first[0][1])))
            elif first and _order(_text(first[0][0])) <= _order(self.cursor):
                self.last_epoch = await self._epochs_before_cursor()
                replay = False
            else:  # trimmed or flushed past the client's id: what it has is unknown
                self.last_epoch, replay = 0, True
        except RedisError:
            self.last_epoch, replay = held or 0, True
        if replay:
            self.over = (await run_in_threadpool(_snapshot, self.resources, self.run_id)).over
            async for sse in self._fill(None, with_ids=True):
                yield sse

    async def _epochs_before_cursor(self) -> int | None:
        end, scanned = self.cursor, 0
        while scanned < SCAN_LIMIT:
            entries = await self.resources.aredis.xrevrange(self.key, max=end, min="-", count=200)
            if not entries:
                return 0
            for raw_id, fields in entries:
                done = events.epochs_done_at(events.decode(fields))
                if done is not None:
                    return done
                end = f"({_text(raw_id)}"
            scanned += len(entries)
        return None

    async def _fill(
        self, upto: int | None, with_ids: bool = False
    ) -> AsyncIterator[ServerSentEvent]:
        """SQL's epochs after the client's last, up to ``upto`` (None: all)."""
        if self.last_epoch is None or (upto is not None and upto <= self.last_epoch):
            return
        rows = await run_in_threadpool(_epochs_after, self.resources, self.run_id, self.last_epoch)
        for row in rows:
            epoch = int(row.pop("epoch"))
            if upto is not None and epoch > upto:
                break
            self.last_epoch = epoch
            self.from_sql.add(epoch)
            event_id = events.sql_event_id(epoch) if with_ids else None
            yield _sse(events.epoch_event(epoch, row), event_id)

    def _final(self, snapshot: _Snapshot) -> list[ServerSentEvent]:
        """The final status as SQL has it (its stream event was lost); none for
        a run deleted meanwhile."""
        if snapshot.status is None:
            return []
        extra: dict[str, Any] = {"epochs_done": snapshot.epochs_done}
        if snapshot.error:
            extra["error"] = snapshot.error
        return [_sse(events.status_event(snapshot.status, **extra))]


@router.get("/{run_id}/events", response_class=EventSourceResponse)
async def run_events(
    resources: ResourcesDep,
    run_id: Annotated[str, Depends(_existing_run)],
    cursor: Annotated[str, Depends(_cursor)],
) -> AsyncIterator[ServerSentEvent]:
    """The run's events (status, epoch, batch), replayed then followed live."""
    async for sse in _Feed(resources, run_id, cursor):
        yield sse
