"""One Redis reader per followed run stream, shared by every SSE client of
this API process.

Without it each SSE client blocked in its own ``XREAD``; with 200 viewers of
a run that is 200 blocking reads on the shared client. A ``StreamHub`` runs,
per stream with at least one follower, one task that blocks in ``XREAD`` from
its own cursor, keeps the recent entries (a bounded ring) and wakes the
followers. ``StreamHub.read`` answers as ``XREAD {key: cursor} COUNT BLOCK``
would: the entries after the cursor, or after up to ``block`` ms none.

- A cursor the ring covers is answered from memory. One older than the ring
  (a client catching up), ``0-0``, or met while the reader is (re)starting
  is read directly, without blocking; once that finds nothing new the
  follower waits on the hub like the others.
- A ``RedisError`` in the reader reaches its waiting followers as a
  ``RedisError``; the reader then forgets what it held and starts again.
- A stream that vanished or started again (``FLUSHALL``, ``DEL``, Redis
  restarted without its data) is seen by ``XINFO STREAM`` within about a
  second: fewer entries ever added, or a lower last id, than the reader saw.
  The ring is then emptied and the new stream read from its start, each
  follower getting what comes after its own cursor, as ``XREAD`` gives it;
  until then a follower may get entries of the old stream newer than its
  cursor, as it would have had it read them just before. A cursor ahead of
  every entry waits out its block and gets nothing, as with ``XREAD``.
- A stream without followers for ``idle_s`` is let go; ``aclose`` cancels
  every reader (the app's lifespan calls it).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger(__name__)

Order = tuple[int, int]
READ_COUNT = 500  # entries a reader's XREAD takes at once
READER_BLOCK_MS = 1000  # below the async client's socket timeout (backend.api.main)
CHECK_S = 1.0  # how often a busy reader asks XINFO whether its stream started again


def order(entry_id: Any) -> Order:
    """A stream id as a sortable pair: ``b"1700000000000-3"`` → (1700000000000, 3)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class _Tail:
    """What the hub holds of one stream: every entry after ``base`` up to ``last``."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.entries: list[tuple[Order, Any, Any]] = []  # (order, raw id, fields)
        self.base: Order | None = None  # None: not (re)started, nothing covered
        self.last: Order = (0, 0)  # the reader's XREAD cursor
        self.added: int | None = 0  # XINFO's entries-added as expected now (None: Redis < 7)
        self.checked_at = 0.0
        self.followers = 0
        self.idle_since = 0.0
        self.failures = 0  # reader errors so far: a waiter that sees it move raises
        self.error: Exception | None = None
        self.changed = asyncio.Event()  # set (and replaced) on every change
        self.task: asyncio.Task[None] | None = None

    def covers(self, cursor: Order) -> bool:
        # 0-0 (replay from the start) reads Redis first: its ring may hold, for
        # a moment, entries of a stream flushed since (see ``StreamHub._step``).
        return self.base is not None and cursor >= self.base and cursor > (0, 0)

    def after(self, cursor: Order, count: int) -> list[tuple[Any, Any]]:
        start = bisect.bisect_right(self.entries, cursor, key=lambda entry: entry[0])
        return [(raw_id, fields) for _, raw_id, fields in self.entries[start : start + count]]

    def restart(self, last: Order, added: int | None) -> None:
        self.entries.clear()
        self.base = self.last = last
        self.added = added

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class StreamHub:
    """Shares one blocking reader per stream among the API's SSE clients."""

    def __init__(
        self,
        aredis: aioredis.Redis,
        *,
        ring: int = 1000,
        idle_s: float = 5.0,
        retry_s: float = 0.5,
    ) -> None:
        self.aredis = aredis
        self.ring = ring
        self.idle_s = idle_s
        self.retry_s = retry_s
        self._tails: dict[str, _Tail] = {}
        self._closed = False

    def following(self) -> list[str]:
        """The streams that have a reader now."""
        return list(self._tails)

    async def read(self, key: str, cursor: str, *, count: int, block: int) -> list[Any]:
        """``XREAD COUNT count BLOCK block STREAMS key cursor``, through the hub."""
        if self._closed:
            return await self._xread(key, cursor, count, block)
        loop = asyncio.get_running_loop()
        tail = self._tail(key)
        tail.followers += 1
        try:
            deadline = loop.time() + block / 1000
            want = order(cursor)
            while not self._closed:
                failures, changed = tail.failures, tail.changed
                if tail.covers(want):
                    entries = tail.after(want, count)
                    if entries:
                        return [[key, entries]]
                else:  # behind the ring, or the reader (re)starts: a catch-up read
                    reply = await self._xread(key, cursor, count)
                    if reply:
                        return reply
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                try:
                    async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                        await changed.wait()
                except TimeoutError:
                    return []
                if tail.failures != failures:
                    raise RedisError(f"stream reader: {tail.error}") from tail.error
            return []
        finally:
            tail.followers -= 1
            if not tail.followers:
                tail.idle_since = loop.time()

    async def aclose(self) -> None:
        """Stop every reader; later reads go straight to Redis."""
        self._closed = True
        tails, self._tails = list(self._tails.values()), {}
        tasks = [tail.task for tail in tails if tail.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tail in tails:
            tail.notify()

    def _tail(self, key: str) -> _Tail:
        tail = self._tails.get(key)
        if tail is None or tail.task is None or tail.task.done():
            tail = self._tails[key] = _Tail(key)
            tail.task = asyncio.create_task(self._follow(tail), name=f"stream-hub {key}")
        return tail

    async def _follow(self, tail: _Tail) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._step(tail)
            except Exception as exc:  # its followers raise it; the reader starts again
                if isinstance(exc, RedisError):
                    log.warning("stream hub %s: Redis: %s; starting again", tail.key, exc)
                else:
                    log.exception("stream hub %s failed; starting again", tail.key)
                tail.base, tail.error = None, exc
                tail.entries.clear()
                tail.failures += 1
                tail.notify()
                await asyncio.sleep(self.retry_s)
            if not tail.followers and loop.time() - tail.idle_since >= self.idle_s:
                if self._tails.get(tail.key) is tail:
                    del self._tails[tail.key]
                return

    async def _step(self, tail: _Tail) -> None:
        loop = asyncio.get_running_loop()
        if tail.base is None:
            tail.restart(*await self._mark(tail.key))
            tail.checked_at = loop.time()
            tail.notify()
        last = f"{tail.last[0]}-{tail.last[1]}"
        reply = await self._xread(tail.key, last, READ_COUNT, READER_BLOCK_MS)
        if reply:
            self._keep(tail, reply[0][1])
        if not reply or loop.time() - tail.checked_at >= CHECK_S:
            tail.checked_at = loop.time()
            mark, added = await self._mark(tail.key)
            fewer = added is not None and tail.added is not None and added < tail.added
            if mark < tail.last or fewer:  # the stream started again
                tail.restart((0, 0), None if added is None else 0)
                tail.notify()

    def _keep(self, tail: _Tail, entries: list[Any]) -> None:
        for raw_id, fields in entries:
            tail.entries.append((order(raw_id), raw_id, fields))
        tail.last = tail.entries[-1][0]
        if tail.added is not None:
            tail.added += len(entries)
        if len(tail.entries) > 2 * self.ring:  # cut now and then, not at every entry
            dropped = len(tail.entries) - self.ring
            tail.base = tail.entries[dropped - 1][0]
            del tail.entries[:dropped]
        tail.notify()

    async def _xread(self, key: str, cursor: str, count: int, block: int | None = None) -> Any:
        """XREAD's RESP2 reply: ``[[key, [(id, fields), ...]]]``, or empty."""
        return await self.aredis.xread({key: cursor}, count=count, block=block)

    async def _mark(self, key: str) -> tuple[Order, int | None]:
        """The stream's last id and entries ever added (None before Redis 7);
        (0-0, 0) when there is no stream."""
        try:
            info = await self.aredis.xinfo_stream(key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return (0, 0), 0
            raise
        added = info.get("entries-added")
        return order(info["last-generated-id"]), None if added is None else int(added)
