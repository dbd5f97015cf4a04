"""The stream hub against a real Redis: one blocking reader per stream, its
followers answered as XREAD would answer them, through errors and flushes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from redis.exceptions import RedisError

from backend.api.main import create_app
from backend.api.stream_hub import READER_BLOCK_MS, StreamHub
from backend.settings import Settings
from tests.conftest import RedisServer

KEY = "curvelab:run:hubtest:events"


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 60))


@asynccontextmanager
async def hub_on(url: str, **options: Any) -> AsyncIterator[tuple[StreamHub, list[tuple]]]:
    """A hub on its own client; the list records every XREAD it sends
    (cursor, block), so a test can tell the shared reads from the direct ones."""
    client = aioredis.from_url(url, socket_timeout=30, socket_connect_timeout=2)
    hub = StreamHub(client, **options)
    sent: list[tuple] = []
    xread = hub._xread

    async def recorded(key: str, cursor: str, count: int, block: int | None = None) -> Any:
        sent.append((cursor, block))
        return await xread(key, cursor, count, block)

    hub._xread = recorded  # type: ignore[method-assign]
    try:
        yield hub, sent
    finally:
        await hub.aclose()
        await client.aclose()


async def follow(hub: StreamHub, cursor: str, until: int) -> list[str]:
    """Read as the SSE feed does until ``until`` entries came; their ids."""
    got: list[str] = []
    while len(got) < until:
        reply = await hub.read(KEY, cursor, count=500, block=2000)
        for raw_id, _fields in reply[0][1] if reply else []:
            cursor = raw_id.decode()
            got.append(cursor)
    return got


async def publish(client: aioredis.Redis, count: int, pause: float = 0.0) -> list[str]:
    ids = []
    for n in range(count):
        entry_id = await client.xadd(KEY, {"n": n})
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
        if pause:
            await asyncio.sleep(pause)
    return ids


def test_many_followers_share_one_reader_and_get_every_entry_in_order(redis_url: str) -> None:
    async def body() -> None:
        async with hub_on(redis_url) as (hub, sent):
            writer = aioredis.from_url(redis_url)
            followers = [asyncio.create_task(follow(hub, "0-0", 300)) for _ in range(50)]
            await asyncio.sleep(0.2)  # all waiting on the hub
            published = await publish(writer, 300, pause=0.002)
            for got in await asyncio.gather(*followers):
                assert got == published
            await writer.aclose()
        # Blocking reads: only the hub's, never one per follower.
        assert {block for _, block in sent if block is not None} == {READER_BLOCK_MS}

    run(body)


def test_a_late_follower_catches_up_with_direct_reads_then_joins(redis_url: str) -> None:
    async def body() -> None:
        async with hub_on(redis_url, ring=10) as (hub, sent):
            writer = aioredis.from_url(redis_url)
            early = asyncio.create_task(follow(hub, "0-0", 100))
            await asyncio.sleep(0.2)
            published = await publish(writer, 100)
            assert await early == published  # the ring, 10 to 20 long, has the last ones only
            sent.clear()
            assert await follow(hub, "0-0", 100) == published
            catch_up = [cursor for cursor, block in sent if block is None]
            assert catch_up == ["0-0"]  # one direct read (COUNT 500) had all the history
            # From the newest id on, the hub answers: no direct read.
            sent.clear()
            later = asyncio.create_task(follow(hub, published[-1], 1))
            await asyncio.sleep(0.1)
            newest = await publish(writer, 1)
            assert await later == newest
            assert [c for c, block in sent if block is None] == []
            await writer.aclose()

    run(body)


def test_a_read_with_nothing_new_waits_its_block_then_returns_empty(redis_url: str) -> None:
    async def body() -> None:
        async with hub_on(redis_url) as (hub, _sent):
            writer = aioredis.from_url(redis_url)
            (last,) = await publish(writer, 1)
            for cursor in (last, "99999999999999-0"):  # caught up; ahead of every entry
                started = time.monotonic()
                assert await hub.read(KEY, cursor, count=500, block=300) == []
                assert 0.25 <= time.monotonic() - started < 2
            # No stream at all: the same.
            assert await hub.read("curvelab:run:none:events", "0-0", count=500, block=200) == []
            await writer.aclose()

    run(body)


def test_a_redis_outage_reaches_the_followers_and_the_hub_recovers(
    redis_server_own: RedisServer,
) -> None:
    async def body() -> None:
        async with hub_on(redis_server_own.url, retry_s=0.2) as (hub, _sent):
            writer = aioredis.from_url(redis_server_own.url)
            (first,) = await publish(writer, 1)
            await writer.aclose()
            waiting = asyncio.create_task(hub.read(KEY, first, count=500, block=30_000))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(redis_server_own.stop)
            with pytest.raises(RedisError):
                await waiting  # long before its 30 s block
            with pytest.raises(RedisError):  # while Redis is away, at once
                await hub.read(KEY, first, count=500, block=30_000)
            await asyncio.to_thread(redis_server_own.start)  # its data comes back

            # Back: the next entry reaches a follower through the hub again.
            after = asyncio.create_task(follow(hub, first, 1))
            await asyncio.sleep(0.3)
            writer = aioredis.from_url(redis_server_own.url)
            newest = await publish(writer, 1)
            assert await after == newest
            await writer.aclose()

    run(body)


def test_a_stream_that_starts_again_at_lower_ids_is_followed(redis_url: str) -> None:
    async def body() -> None:
        async with hub_on(redis_url) as (hub, _sent):
            # Followed from before its first entry: the hub holds all of it.
            assert await hub.read(KEY, "0-0", count=500, block=100) == []
            writer = aioredis.from_url(redis_url)
            for seq in range(1, 4):
                await writer.xadd(KEY, {"n": seq}, id=f"100-{seq}")
            assert await follow(hub, "0-0", 3) == ["100-1", "100-2", "100-3"]
            await writer.flushall()
            await writer.xadd(KEY, {"n": 1}, id="50-1")
            # Ahead of every entry, as XREAD: nothing, after the block.
            assert await hub.read(KEY, "100-3", count=500, block=300) == []
            assert await follow(hub, "0-0", 1) == ["50-1"]
            await asyncio.sleep(1.5)  # the hub's XINFO: a lower last id than it read
            # A follower at the new stream's end (the hub's to answer) gets what comes next.
            waiting = asyncio.create_task(follow(hub, "50-1", 1))
            await asyncio.sleep(0.1)
            await writer.xadd(KEY, {"n": 2}, id="50-2")
            assert await waiting == ["50-2"]
            await writer.aclose()

    run(body)


def test_a_flushed_stream_is_not_served_from_the_ring(redis_url: str) -> None:
    async def body() -> None:
        async with hub_on(redis_url) as (hub, _sent):
            assert await hub.read(KEY, "0-0", count=500, block=100) == []
            writer = aioredis.from_url(redis_url)
            old = await publish(writer, 3)
            assert await follow(hub, "0-0", 3) == old
            await writer.flushall()
            new = await publish(writer, 1)  # later ids than the old stream's
            await asyncio.sleep(2.5)  # the hub's XINFO: fewer entries added than it read
            # A cursor below both streams, answered from the ring: the new stream only.
            assert await follow(hub, "1-0", 1) == new
            assert await hub.read(KEY, new[0], count=500, block=100) == []
            await writer.aclose()

    run(body)


def test_a_stream_without_followers_is_let_go_and_close_cancels_the_rest(
    redis_url: str,
) -> None:
    async def body() -> None:
        async with hub_on(redis_url, idle_s=0.2) as (hub, _sent):
            assert await hub.read(KEY, "0-0", count=500, block=100) == []
            assert hub.following() == [KEY]
            deadline = time.monotonic() + 5
            while hub.following() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert hub.following() == []

            waiting = asyncio.create_task(hub.read(KEY, "0-0", count=500, block=30_000))
            await asyncio.sleep(0.2)
            readers = [t for t in asyncio.all_tasks() if t.get_name().startswith("stream-hub")]
            assert len(readers) == 1
            await hub.aclose()
            assert await asyncio.wait_for(waiting, 2) == []
            assert all(reader.done() for reader in readers)

    run(body)


def test_the_apps_lifespan_stops_its_readers(settings: Settings) -> None:
    async def readers() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("stream-hub")]

    with TestClient(create_app(settings)) as client:
        assert client.portal is not None
        hub: StreamHub = client.app_state["resources"].streams
        assert client.portal.call(partial(hub.read, KEY, "0-0", count=500, block=100)) == []
        running = client.portal.call(readers)
        assert len(running) == 1
    assert hub.following() == []
    assert all(task.done() for task in running)
