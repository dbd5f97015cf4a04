"""Limits that hold: each route's body cap while the body streams, metrics
whose memory does not grow with a run's length (downsampled curve, streamed
CSV), caches bounded in bytes, and predict waits that hold no thread.

Over the real app, Redis and SQL; rows are inserted in bulk, as a worker that
recorded a batch point every step would have left them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import threading
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import insert, update
from sqlalchemy.orm import Session

from backend import artifacts, runs
from backend.api import metrics_csv, metrics_reply
from backend.api.main import MULTIPART_SLACK, body_caps, create_app
from backend.api.routes.runs import metrics_bodies
from backend.db import Database, Dataset, EpochMetrics, Run
from backend.downsample import DEFAULT_MAX_POINTS, MAX_POINTS_LIMIT, BucketPicker
from backend.settings import Settings
from backend.train_config import TrainConfig
from tests.backend import hostile_corpus
from tests.conftest import BOTH_DATABASES, wait_for

MiB = 1024 * 1024
TINY = TrainConfig(image_size=(16, 16), filters=[4], epochs=2)


CHUNK = 64 * 1024


def chunked(total: int, sent: dict[str, int], head: bytes = b"") -> Iterator[bytes]:
    """A body of ``total`` bytes in 64 KiB chunks, with no Content-Length.
    (TestClient reads it whole before the app runs: ``pulled`` counts what
    an app really reads.)"""
    yield head
    while sent["bytes"] < total:
        sent["bytes"] += CHUNK
        yield b" " * CHUNK


def pulled(
    app: Any, path: str, content_type: bytes, total: int, head: bytes = b""
) -> tuple[int, int, dict[str, Any]]:
    """POST a chunked body of ``total`` bytes straight through ``app``'s ASGI
    interface, as a server hands it over (a message per chunk): (bytes the
    app pulled, status, JSON answer)."""
    state = {"pulled": 0, "sent": 0}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if state["sent"] >= total:
            return {"type": "http.request", "body": b"", "more_body": False}
        body = head if state["sent"] == 0 and head else b" " * CHUNK
        state["sent"] += len(body)
        state["pulled"] += len(body)
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return state["pulled"], start["status"], json.loads(body)


MULTIPART = {"content-type": "multipart/form-data; boundary=x"}
PART_HEAD = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'


def multipart(data: bytes) -> bytes:
    return PART_HEAD + data + b"\r\n--x--\r\n"


# -- body caps ---------------------------------------------------------------


def test_a_json_route_refuses_a_2_mib_body(api: TestClient, make_dataset_row) -> None:
    said = "request body is larger than the 1 MiB limit (CURVELAB_MAX_JSON_KB)"
    body = json.dumps({"dataset_id": make_dataset_row(), "config": {}, "name": "x" * (2 * MiB)})
    declared = api.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert (declared.status_code, declared.json()) == (413, {"detail": said})

    sent = {"bytes": 0}
    streamed = api.post(
        "/api/runs",
        content=chunked(2 * MiB, sent, b'{"name": "'),
        headers={"content-type": "application/json"},
    )
    assert (streamed.status_code, streamed.json()) == (413, {"detail": said})

    # As a server streams it: refused at the cap, the rest never read.
    read, status, answer = pulled(api.app, "/api/runs", b"application/json", 8 * MiB, b'{"a": "')
    assert (status, answer) == (413, {"detail": said})
    assert read <= MiB + CHUNK

    small = api.post(
        "/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY.model_dump()}
    )
    assert small.status_code != 413


def test_the_json_cap_is_a_setting(settings: Settings, make_dataset_row) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_json_kb": 4}))) as api:
        reply = api.post("/api/runs/" + "a" * 32 + "/cancel", content=b"x" * 5000)
        assert reply.status_code == 413
        assert reply.json()["detail"] == (
            "request body is larger than the 4 KiB limit (CURVELAB_MAX_JSON_KB)"
        )


def test_the_token_is_checked_before_the_cap(settings: Settings) -> None:
    locked = settings.model_copy(update={"api_token": "a-real-token-for-tests"})
    with TestClient(create_app(locked)) as api:
        sent = {"bytes": 0}
        reply = api.post("/api/runs", content=chunked(4 * MiB, sent))
        assert reply.status_code == 401
        read, status, _ = pulled(api.app, "/api/runs", b"application/json", 4 * MiB)
        assert (read, status) == (0, 401)


def test_every_upload_route_has_its_own_cap_and_every_cap_a_route(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    uploads = {
        (method.upper(), path)
        for path, operations in paths.items()
        for method, operation in operations.items()
        if "multipart/form-data" in operation.get("requestBody", {}).get("content", {})
    }
    _, route_caps = body_caps(Settings())
    assert {(cap.method, cap.path) for cap in route_caps} == uploads


@pytest.fixture
def finished_run(database: Database, make_dataset_row, settings: Settings) -> str:
    """A succeeded run with a (stand-in) model file: predict accepts it."""
    with database.session() as session:
        dataset = session.get(Dataset, make_dataset_row(("cats", "dogs")))
        assert dataset is not None
        run_id = runs.create_run(session, dataset, TINY, None).id
        runs.finish(session, None, run_id, "succeeded")
    folder = artifacts.run_dir(settings.runs_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifacts.MODEL_FILES["final"]).write_bytes(b"stand-in")
    return run_id


def test_predict_refuses_an_image_over_its_cap_as_it_streams(
    settings: Settings, finished_run: str
) -> None:
    small = settings.model_copy(update={"max_image_mb": 1, "predict_timeout_s": 0.5})
    said = "image is larger than the 1 MiB limit (CURVELAB_MAX_IMAGE_MB)"
    url = f"/api/runs/{finished_run}/predict"
    with TestClient(create_app(small)) as api:
        # Declared too large: refused before a byte is read.
        reply = api.post(url, content=multipart(bytes(3 * MiB)), headers=MULTIPART)
        assert (reply.status_code, reply.json()) == (413, {"detail": said})

        # Chunked: refused once the cap (and the part's headers' slack) is passed.
        sent = {"bytes": 0}
        reply = api.post(url, content=chunked(8 * MiB, sent, PART_HEAD), headers=MULTIPART)
        assert (reply.status_code, reply.json()) == (413, {"detail": said})
        content_type = MULTIPART["content-type"].encode()
        read, status, answer = pulled(api.app, url, content_type, 8 * MiB, PART_HEAD)
        assert (status, answer) == (413, {"detail": said})
        assert read <= MiB + MULTIPART_SLACK + CHUNK

        # Just over the image cap, inside the slack: the route's own check, same words.
        reply = api.post(url, content=multipart(bytes(MiB + 1000)), headers=MULTIPART)
        assert (reply.status_code, reply.json()) == (413, {"detail": said})

        # An image under the cap goes on to the (absent) predict worker.
        png = hostile_corpus.image((8, 8))
        assert api.post(url, files={"file": ("a.png", png)}).status_code == 504
    assert list(settings.tmp_dir.iterdir()) == []


def test_uploads_still_take_up_to_their_cap(settings: Settings, tmp_path: Path) -> None:
    limits = settings.model_copy(update={"max_json_kb": 64, "max_upload_mb": 1})
    # Incompressible images, stored: a ZIP of about 0.6 MiB, ten times the JSON cap.
    entries = hostile_corpus.classes({"cats": 4, "dogs": 4}, size=(160, 160))
    archive = tmp_path / "d.zip"
    data = hostile_corpus.write_zip(archive, entries)
    assert 64 * 1024 < len(data) < MiB
    with TestClient(create_app(limits)) as api:
        reply = api.post("/api/datasets", files={"file": ("d.zip", data)})
        assert reply.status_code == 201, reply.text
        over = hostile_corpus.write_zip(archive, [*entries, ("cats/pad.bin", bytes(MiB))])
        reply = api.post("/api/datasets", files={"file": ("d.zip", over)})
        assert reply.status_code == 413
        assert reply.json()["detail"] == (
            "upload is larger than the 1 MiB limit (CURVELAB_MAX_UPLOAD_MB)"
        )
    assert list(settings.tmp_dir.iterdir()) == []


# -- metrics of long runs ----------------------------------------------------


def loss_at(step: int) -> float | None:
    """A decaying loss with a spike every 997 steps, a dip every 1009, and a
    diverged (null) stretch."""
    if 150_000 < step <= 150_300:
        return None
    value = 2.0 * math.exp(-step / 50_000) + 0.01 * math.sin(step)
    if step % 997 == 0:
        value += 5.0
    if step % 1009 == 0:
        value -= 1.0
    return round(value, 6)


def batch_values(step: int) -> dict[str, Any]:
    values: dict[str, Any] = {"loss": loss_at(step), "accuracy": 0.5}
    if step > 7000:
        values["lr"] = 0.001  # a column that only later rows carry
    return values


def insert_points(session: Session, rows: Iterable[tuple[str, int, float, str]]) -> None:
    """Batch point rows (run id, step, epoch, values as JSON) through the
    driver, in the session's transaction: ten times faster than the ORM."""
    driver: Any = session.connection().connection.driver_connection
    columns = 'batch_metrics (run_id, step, epoch, "values")'
    if session.get_bind().dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {columns} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        driver.executemany(f"INSERT INTO {columns} VALUES (?, ?, ?, ?)", rows)


@pytest.fixture
def long_run(database: Database, make_dataset_row) -> Callable[[int], str]:
    """A run with ``steps`` batch points (one per step, 1000 steps an epoch)."""

    def make(steps: int) -> str:
        with database.session() as session:
            dataset = session.get(Dataset, make_dataset_row())
            assert dataset is not None
            run_id = runs.create_run(session, dataset, TINY, None).id
            epochs = math.ceil(steps / 1000)
            session.execute(
                insert(EpochMetrics),
                [
                    {"run_id": run_id, "epoch": e, "values": {"loss": 1.0 / e, "val_loss": 2.0}}
                    for e in range(1, epochs + 1)
                ],
            )
            insert_points(
                session,
                ((run_id, s, s / 1000, json.dumps(batch_values(s))) for s in range(1, steps + 1)),
            )
            session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(epochs_done=epochs, metrics_version=Run.metrics_version + 1)
            )
            session.commit()
        return run_id

    return make


def expected_buckets(steps: int, max_points: int) -> dict[int, list[int]]:
    """The documented buckets (equal step ranges) of steps 1..``steps``."""
    buckets = (max_points - 2) // 2
    members: dict[int, list[int]] = {}
    for step in range(1, steps + 1):
        members.setdefault((step - 1) * buckets // steps, []).append(step)
    return members


@BOTH_DATABASES
def test_metrics_of_a_long_run_keep_each_buckets_min_and_max(
    api: TestClient, long_run: Callable[[int], str]
) -> None:
    steps = 200_000
    run_id = long_run(steps)
    reply = api.get(f"/api/runs/{run_id}/metrics")
    assert reply.status_code == 200
    body = reply.json()
    assert len(body["epochs"]) == 200
    assert body["batches_total"] == steps and body["downsampled"] is True
    points = body["batches"]
    assert len(points) <= DEFAULT_MAX_POINTS
    by_step = {point["step"]: point for point in points}
    assert [point["step"] for point in points] == sorted(by_step)  # in order, no repeats
    for point in points:  # real rows, unchanged
        step = point["step"]
        assert point == {"step": step, "epoch": step / 1000, **batch_values(step)}
    assert points[0]["step"] == 1 and points[-1]["step"] == steps
    for members in expected_buckets(steps, DEFAULT_MAX_POINTS).values():
        finite = [s for s in members if loss_at(s) is not None]
        if not finite:
            assert members[0] in by_step
            continue
        lowest = min(loss_at(s) for s in finite)  # type: ignore[type-var]
        highest = max(loss_at(s) for s in finite)  # type: ignore[type-var]
        kept = [by_step[s]["loss"] for s in members if s in by_step]
        assert lowest in kept and highest in kept
    # Every spike of +5 survives: the curve's envelope is the run's.
    assert sum(1 for point in points if point["loss"] and point["loss"] > 3) == steps // 997


def test_max_points_bounds_the_curve_and_keys_the_etag(
    api: TestClient, long_run: Callable[[int], str]
) -> None:
    run_id = long_run(1500)
    url = f"/api/runs/{run_id}/metrics"
    full = api.get(url)
    assert full.json()["downsampled"] is False and len(full.json()["batches"]) == 1500
    few = api.get(url, params={"max_points": 100})
    assert few.json()["downsampled"] is True and len(few.json()["batches"]) <= 100
    assert few.headers["etag"] != full.headers["etag"]
    again = api.get(url, params={"max_points": 100}, headers={"If-None-Match": few.headers["etag"]})
    assert again.status_code == 304
    other = api.get(url, headers={"If-None-Match": few.headers["etag"]})
    assert other.status_code == 200  # another bound, another body
    for bad in (5, MAX_POINTS_LIMIT + 1):
        refused = api.get(url, params={"max_points": bad})
        assert refused.status_code == 422 and "max_points" in refused.json()["detail"]


CHUNK_ROWS = 2000


def peak_bytes(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_rows(
    database: Database, long_run: Callable[[int], str]
) -> None:
    # Chunks of 2000 rows: both runs span several (the memory is about two).
    short, long = long_run(10_000), long_run(100_000)

    def metrics(run_id: str) -> Callable[[], object]:
        def work() -> object:
            with database.session() as session:
                return metrics_reply.encode(session, run_id, chunk=CHUNK_ROWS)

        return work

    def download(run_id: str) -> Callable[[], object]:
        parts = metrics_csv.batch_csv(database, run_id, chunk=CHUNK_ROWS)
        return lambda: sum(len(part) for part in parts)

    for work in (metrics, download):
        small, large = peak_bytes(work(short)), peak_bytes(work(long))
        # Ten times the rows, the same peak: a chunk of rows and the points
        # (a body of every row, as before, grew with the rows).
        assert large < 1.5 * small, (work.__name__, small, large)


def test_the_csv_has_every_row_in_order(api: TestClient, long_run: Callable[[int], str]) -> None:
    steps = 12_345  # past a chunk's worth, and "lr" only from step 7001 on
    run_id = long_run(steps)
    reply = api.get(f"/api/runs/{run_id}/metrics/batches.csv")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert f'filename="run-{run_id}-batches.csv"' in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    assert list(rows[0]) == ["step", "epoch", "loss", "accuracy", "lr"]
    assert [int(row["step"]) for row in rows] == list(range(1, steps + 1))
    for row in rows:
        step = int(row["step"])
        loss = loss_at(step)
        assert float(row["epoch"]) == step / 1000
        assert (row["loss"] == "") if loss is None else float(row["loss"]) == loss
        assert row["lr"] == ("0.001" if step > 7000 else "")

    epochs = list(
        csv.DictReader(io.StringIO(api.get(f"/api/runs/{run_id}/metrics/epochs.csv").text))
    )
    assert [int(row["epoch"]) for row in epochs] == list(range(1, 14))
    assert epochs[1] == {"epoch": "2", "loss": "0.5", "val_loss": "2.0"}
    missing = api.get(f"/api/runs/{'f' * 32}/metrics/batches.csv")
    assert (missing.status_code, missing.json()["detail"]) == (404, "run not found")


# -- caches bounded in bytes -------------------------------------------------


def test_the_body_cache_stays_under_its_byte_budget(
    database: Database, long_run: Callable[[int], str]
) -> None:
    run_ids = [long_run(3000) for _ in range(6)]
    with database.session() as session:
        size = len(metrics_reply.encode(session, run_ids[0]))
        cache = metrics_reply.BodyCache(max_bytes=3 * size)
        for run_id in run_ids:
            for max_points in (DEFAULT_MAX_POINTS, 100):
                run = session.get(Run, run_id)
                assert run is not None
                body = cache.body(session, run, max_points)
                assert json.loads(body)["batches_total"] == 3000
                assert cache.size <= cache.max_bytes
        assert 0 < len(cache) < 12
        # A body larger than the whole budget is answered, not kept.
        tiny = metrics_reply.BodyCache(max_bytes=100)
        run = session.get(Run, run_ids[0])
        assert run is not None
        assert tiny.body(session, run) == metrics_reply.encode(session, run_ids[0])
        assert len(tiny) == 0 and tiny.size == 0


def test_the_app_cache_follows_its_setting(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics_cache_mb": 3}))
    seen: list[metrics_reply.BodyCache] = []

    def spy(request: Request) -> metrics_reply.BodyCache:
        seen.append(metrics_bodies(request))
        return seen[-1]

    app.dependency_overrides[metrics_bodies] = spy
    with TestClient(app) as api:
        api.get(f"/api/runs/{'f' * 32}/metrics")  # a 404, once the cache is resolved
    assert [cache.max_bytes for cache in seen] == [3 * MiB]


# -- predict holds no thread while it waits ----------------------------------


def test_waiting_predictions_do_not_block_health(
    settings: Settings, finished_run: str, redis_client: Redis
) -> None:
    """No predict worker: every prediction waits its whole timeout. With the
    server's thread pool cut to 4 threads, 12 waiting predictions would hold
    them all if they waited in threads, and health (a sync route) would wait
    for them; it answers while all 12 still wait."""
    waiting = 12
    slow = settings.model_copy(update={"predict_timeout_s": 15.0})
    png = hostile_corpus.image((8, 8))
    with TestClient(create_app(slow)) as api:
        assert api.portal is not None

        async def fewer_threads() -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = 4

        api.portal.call(fewer_threads)
        replies: list[int] = []

        def predict() -> None:
            reply = api.post(f"/api/runs/{finished_run}/predict", files={"file": ("a.png", png)})
            replies.append(reply.status_code)

        threads = [threading.Thread(target=predict) for _ in range(waiting)]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: len(list(redis_client.scan_iter("curvelab:predict:*:image"))) == waiting,
            timeout=12,  # well inside the predictions' wait
            what="every prediction waiting",
        )
        health = api.get("/api/health")
        assert health.status_code == 200
        assert replies == []  # every prediction still waits
        for thread in threads:
            thread.join(timeout=60)
        assert replies == [504] * waiting


def test_the_picker_keeps_real_rows_within_the_bound() -> None:
    """min/max per bucket on hand-made rows: a diverged (null) stretch keeps
    one row, a bool or a NaN is no loss, and the bound holds for any feed."""
    losses: list[Any] = [float(s % 7) for s in range(1, 101)]
    losses[50:75] = [None] * 25  # steps 51–75, the third bucket: wholly diverged
    losses[10] = True  # bool, not a loss
    losses[11] = float("nan")
    rows = [(s, s / 10, {"loss": losses[s - 1]}) for s in range(1, 101)]
    picker = BucketPicker(1, 100, len(rows), 10)  # 4 buckets of 25 steps, and the ends
    for start in range(0, 100, 7):  # chunks of any size
        picker.add(rows[start : start + 7])
    points = picker.points()
    steps = [point["step"] for point in points]
    assert len(points) <= 10 and steps == sorted(set(steps))
    assert steps[0] == 1 and steps[-1] == 100
    assert 11 not in steps and 12 not in steps  # never a min or a max
    assert all(
        point == {"step": s, "epoch": s / 10, "loss": losses[s - 1]}
        for s, point in zip(steps, points, strict=True)
    )
    for low, high in ((1, 25), (26, 50), (76, 100)):
        kept = [losses[s - 1] for s in steps if low <= s <= high]
        finite = [v for v in losses[low - 1 : high] if type(v) is float and v == v]
        assert min(finite) in kept and max(finite) in kept
    assert [s for s in steps if 51 <= s <= 75] == [51]  # its first row: the gap shows
    short = BucketPicker(1, 5, 5, 10)
    short.add(rows[:5])
    assert [point["step"] for point in short.points()] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="at least 10"):
        BucketPicker(1, 5, 5, 9)
