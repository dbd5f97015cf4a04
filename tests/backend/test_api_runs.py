"""Runs over the real app, Redis and SQL: create, validate, cancel, metrics, events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from redis import Redis
from sqlalchemy import select

from backend import events, runs
from backend.api import metrics_reply
from backend.api.routes.runs import metrics_bodies
from backend.api.schemas import Metrics
from backend.db import BatchMetrics, Database, Dataset, EpochMetrics, Run
from backend.queue import QUEUE
from backend.settings import Settings
from backend.train_config import TrainConfig
from tests.conftest import BOTH_DATABASES

pytestmark = BOTH_DATABASES

TINY = {"image_size": [16, 16], "filters": [4, 8], "epochs": 2, "batch_size": 8}


def test_health_reports_redis_database_and_workers(api: TestClient, redis_client: Redis) -> None:
    assert api.get("/api/health").json() == {
        "status": "ok",
        "redis": True,
        "database": True,
        "workers": 0,
    }
    redis_client.set(events.worker_key("w1@host"), "1", ex=30)
    assert api.get("/api/health").json()["workers"] == 1


def test_presets_include_the_seed_network(api: TestClient) -> None:
    presets = {p["name"]: p for p in api.get("/api/presets").json()}
    assert presets["seed-cnn"]["config"]["filters"] == [64, 128, 256, 512]
    assert presets["seed-cnn"]["config"]["image_size"] == [50, 55]


def test_create_run_queues_a_task_named_by_the_run(
    api: TestClient, make_dataset_row, redis_client: Redis
) -> None:
    dataset_id = make_dataset_row()
    reply = api.post("/api/runs", json={"dataset_id": dataset_id, "config": TINY, "name": "first"})
    assert reply.status_code == 201, reply.text
    run = reply.json()
    assert run["status"] == "queued" and run["name"] == "first"
    assert run["config"]["filters"] == [4, 8] and run["class_names"] == ["a", "b"]
    # The Celery message waits on the broker with task id = run id.
    message = json.loads(redis_client.lindex(QUEUE, 0))
    assert message["headers"]["id"] == run["id"]
    assert api.get(f"/api/runs/{run['id']}").json()["id"] == run["id"]
    assert [r["id"] for r in api.get("/api/runs").json()["items"]] == [run["id"]]


def test_config_that_cannot_work_is_a_422_naming_the_field(
    api: TestClient, make_dataset_row
) -> None:
    dataset_id = make_dataset_row()
    cases = {
        "config.batch_size": {"batch_size": 0},
        "config.optimizer": {"optimizer": "adagrad"},
        "config: filters: 5 pooling blocks": {"image_size": [16, 16], "filters": [4] * 5},
    }
    for field, patch in cases.items():
        reply = api.post("/api/runs", json={"dataset_id": dataset_id, "config": patch})
        assert reply.status_code == 422
        assert field in reply.json()["detail"], reply.json()


def test_a_body_that_is_not_json_is_a_422_saying_so(api: TestClient) -> None:
    reply = api.post("/api/runs", content=b"not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("the request body is not valid JSON")


def test_unknown_dataset_is_a_404(api: TestClient) -> None:
    reply = api.post("/api/runs", json={"dataset_id": "f" * 32, "config": TINY})
    assert reply.status_code == 404
    assert reply.json()["detail"] == f"dataset {'f' * 32} not found"
    assert api.get("/api/runs/nope").status_code == 404


def test_cancel_a_queued_run_is_immediate_and_published(
    api: TestClient, make_dataset_row, redis_client: Redis
) -> None:
    run_id = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY}).json()[
        "id"
    ]
    reply = api.post(f"/api/runs/{run_id}/cancel")
    assert reply.json()["status"] == "cancelled"
    entries = redis_client.xrange(events.stream_key(run_id))
    assert [events.decode(f)["status"] for _, f in entries] == ["cancelled"]


def test_cancel_a_running_run_raises_the_flag(
    api: TestClient, make_dataset_row, database: Database, redis_client: Redis
) -> None:
    run_id = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY}).json()[
        "id"
    ]
    with database.session() as session:
        runs.mark_running(session, redis_client, run_id)
    assert api.post(f"/api/runs/{run_id}/cancel").json()["status"] == "running"
    assert runs.cancel_requested(redis_client, run_id)


def _sse(text: str) -> list[dict[str, str]]:
    blocks = [b for b in text.split("\n\n") if b.strip() and not b.startswith(":")]
    parsed = []
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        parsed.append(fields)
    return parsed


def test_events_replay_then_resume_after_an_id(
    api: TestClient, make_dataset_row, database: Database, redis_client: Redis
) -> None:
    run_id = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY}).json()[
        "id"
    ]
    with database.session() as session:
        runs.mark_running(session, redis_client, run_id)
        for epoch in (1, 2):
            values = {"loss": 1.0 / epoch, "val_loss": 1.5 / epoch}
            runs.record_epoch(session, run_id, epoch, values, [])
            events.publish(redis_client, run_id, events.epoch_event(epoch, values))
        runs.finish(session, redis_client, run_id, "succeeded")

    sent = _sse(api.get(f"/api/runs/{run_id}/events").text)
    assert [e["event"] for e in sent] == ["status", "epoch", "epoch", "status"]
    assert [json.loads(e["data"]).get("epoch") for e in sent] == [None, 1, 2, None]
    assert json.loads(sent[-1]["data"])["status"] == "succeeded"

    later = _sse(
        api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": sent[1]["id"]}).text
    )
    assert [e["id"] for e in later] == [e["id"] for e in sent[2:]]
    assert api.get(f"/api/runs/{run_id}/events?after=bogus").status_code == 400

    metrics = api.get(f"/api/runs/{run_id}/metrics").json()
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][1]["val_loss"] == 0.75


def test_model_download_before_training_is_a_404(api: TestClient, make_dataset_row) -> None:
    run_id = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY}).json()[
        "id"
    ]
    reply = api.get(f"/api/runs/{run_id}/model")
    assert reply.status_code == 404
    assert reply.json()["detail"] == "run has no model yet (status: queued)"


def test_the_schema_documents_the_422_the_api_sends(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()["components"]["schemas"]["HTTPValidationError"]
    reply = api.post("/api/runs", json={"dataset_id": "a", "config": {"batch_size": 0}}).json()
    assert schema["properties"]["detail"]["type"] == "string"
    assert isinstance(reply["detail"], str) and isinstance(reply["errors"], list)
    assert set(schema["required"]) <= set(reply)


# GET /api/runs/{id}/metrics: the rows as stored, an ETag, 304s, a body cache.

STEPS = 4


def _values(epoch: int, scale: float = 1.0) -> dict[str, Any]:
    return {
        "loss": scale / (epoch + 2),  # long reprs: 0.3333333333333333
        "val_loss": None,  # a diverged loss is stored as null
        "lr": 1e-05,
        "images_per_sec": 400,
        "λ_probe": [scale, epoch],
    }


def _points(epoch: int, scale: float = 1.0) -> list[tuple[int, float, dict[str, Any]]]:
    return [
        ((epoch - 1) * STEPS + s, epoch - 1 + s / STEPS, {"loss": scale * s / 7, "accuracy": 0.5})
        for s in range(1, STEPS + 1)
    ]


@pytest.fixture
def recorded_run(api: TestClient, make_dataset_row, database: Database):
    """A run created through the API with ``epochs`` epochs recorded as the worker does."""

    def make(epochs: int = 3) -> str:
        reply = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY})
        run_id = str(reply.json()["id"])
        record(database, run_id, range(1, epochs + 1))
        return run_id

    return make


def record(database: Database, run_id: str, epochs: range, scale: float = 1.0) -> None:
    with database.session() as session:
        for epoch in epochs:
            assert runs.record_epoch(
                session, run_id, epoch, _values(epoch, scale), _points(epoch, scale)
            )


def rewind(database: Database, run_id: str, to_epoch: int) -> None:
    """What a resumed run does to the rows past its checkpoint."""
    with database.session() as session:
        runs.rewind(session, None, run_id, to_epoch)


def old_reply(database: Database, run_id: str) -> bytes:
    """What the route answered before it sent bytes: ORM entities, then pydantic."""
    with database.session() as session:
        epochs = session.scalars(
            select(EpochMetrics).where(EpochMetrics.run_id == run_id).order_by(EpochMetrics.epoch)
        )
        batches = session.scalars(
            select(BatchMetrics).where(BatchMetrics.run_id == run_id).order_by(BatchMetrics.step)
        )
        points = [{"step": row.step, "epoch": row.epoch, **row.values} for row in batches]
        model = Metrics(
            epochs=[{"epoch": row.epoch, **row.values} for row in epochs],
            batches=points,
            batches_total=len(points),  # fewer than max_points: none left out
            downsampled=False,
        )
    return TypeAdapter(Metrics).dump_json(model)


def test_metrics_are_the_rows_as_the_old_route_answered(
    api: TestClient, recorded_run, database: Database
) -> None:
    run_id = recorded_run(epochs=3)
    reply = api.get(f"/api/runs/{run_id}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.content == old_reply(database, run_id)
    assert [row["epoch"] for row in reply.json()["epochs"]] == [1, 2, 3]
    assert reply.json()["batches"][1] == {"step": 2, "epoch": 0.5, "loss": 2 / 7, "accuracy": 0.5}
    assert reply.json()["epochs"][0]["λ_probe"] == [1.0, 1]

    empty = recorded_run(epochs=0)
    assert api.get(f"/api/runs/{empty}/metrics").json() == {
        "epochs": [],
        "batches": [],
        "batches_total": 0,
        "downsampled": False,
    }
    missing = api.get(f"/api/runs/{'f' * 32}/metrics")
    assert (missing.status_code, missing.json()["detail"]) == (404, "run not found")


def test_a_nan_that_slipped_into_sql_is_answered_as_null(
    api: TestClient, recorded_run, database: Database
) -> None:
    if database.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's json type refuses NaN: it cannot be stored there")
    run_id = recorded_run(epochs=0)
    with database.session() as session:
        runs.record_epoch(session, run_id, 1, {"loss": float("nan"), "acc": [float("inf")]}, [])
    reply = api.get(f"/api/runs/{run_id}/metrics")
    assert reply.status_code == 200
    assert reply.json()["epochs"] == [{"epoch": 1, "loss": None, "acc": [None]}]
    assert reply.content == old_reply(database, run_id)


def test_metrics_etag_is_stable_and_a_matching_if_none_match_is_a_304(
    api: TestClient, recorded_run
) -> None:
    url = f"/api/runs/{recorded_run(epochs=2)}/metrics"
    first, second = api.get(url), api.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert second.headers["etag"] == etag and second.content == first.content
    assert first.headers["cache-control"] == "no-cache"

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        unchanged = api.get(url, headers={"If-None-Match": header})
        assert unchanged.status_code == 304, header
        assert unchanged.content == b""
        assert unchanged.headers["etag"] == etag
        assert unchanged.headers["cache-control"] == "no-cache"
    for header in ('"other"', etag.strip('"'), ""):
        assert api.get(url, headers={"If-None-Match": header}).status_code == 200, header


def test_a_recorded_epoch_changes_the_etag(
    api: TestClient, recorded_run, database: Database
) -> None:
    run_id = recorded_run(epochs=2)
    url = f"/api/runs/{run_id}/metrics"
    etag = api.get(url).headers["etag"]
    record(database, run_id, range(3, 4))
    reply = api.get(url, headers={"If-None-Match": etag})
    assert reply.status_code == 200
    assert reply.headers["etag"] != etag
    assert [row["epoch"] for row in reply.json()["epochs"]] == [1, 2, 3]
    assert reply.content == old_reply(database, run_id)


def test_a_rewound_run_rerecorded_with_other_values_gets_a_new_etag(
    api: TestClient, recorded_run, database: Database
) -> None:
    run_id = recorded_run(epochs=3)
    url = f"/api/runs/{run_id}/metrics"

    def rerecord(epoch: int, values: dict[str, Any], points: list[Any]) -> None:
        rewind(database, run_id, to_epoch=epoch - 1)
        with database.session() as session:
            assert runs.record_epoch(session, run_id, epoch, values, points)

    before = api.get(url)
    # Same epoch numbers, steps and row counts; only an epoch's values differ.
    rerecord(3, _values(3, scale=2.0), _points(3))
    after = api.get(url, headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert len(after.json()["batches"]) == len(before.json()["batches"])
    assert after.json()["epochs"][2]["loss"] == 2.0 / 5
    assert after.content == old_reply(database, run_id)

    # Only a batch point differs.
    points = [(step, at, {**vals, "accuracy": 0.25}) for step, at, vals in _points(3)]
    rerecord(3, _values(3, scale=2.0), points)
    last = api.get(url, headers={"If-None-Match": after.headers["etag"]})
    assert last.status_code == 200
    assert last.json()["batches"][-1]["accuracy"] == 0.25
    assert last.content == old_reply(database, run_id)

    # The same rows again: another version all the same (nothing reads the rows to tell).
    rerecord(3, _values(3, scale=2.0), points)
    again = api.get(url, headers={"If-None-Match": last.headers["etag"]})
    assert again.status_code == 200 and again.content == last.content


def test_an_unchanged_run_is_encoded_once(
    api: TestClient, recorded_run, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = []
    encode = metrics_reply.encode

    def counted(session: Any, run_id: str, max_points: int) -> bytes:
        body = encode(session, run_id, max_points)
        built.append(len(json.loads(body)["epochs"]))
        return body

    monkeypatch.setattr(metrics_reply, "encode", counted)
    run_id = recorded_run(epochs=2)
    url = f"/api/runs/{run_id}/metrics"
    bodies = {api.get(url).content for _ in range(3)}
    assert built == [2] and len(bodies) == 1
    record(database, run_id, range(3, 4))
    assert len(api.get(url).json()["epochs"]) == 3
    assert built == [2, 3]
    assert api.get(url, headers={"If-None-Match": api.get(url).headers["etag"]}).status_code == 304
    assert built == [2, 3]


def test_the_body_cache_keeps_the_runs_read_last(api: TestClient, recorded_run) -> None:
    first, second, third = (recorded_run(epochs=1) for _ in range(3))
    size = len(api.get(f"/api/runs/{first}/metrics").content)
    # Room for two bodies (and their ETags), not three.
    cache = metrics_reply.BodyCache(max_bytes=2 * size + 200)
    api.app.dependency_overrides[metrics_bodies] = lambda: cache
    for run_id in (first, second, first, third):  # ``second`` is the least recent
        api.get(f"/api/runs/{run_id}/metrics")
    assert len(cache) == 2
    assert {run_id for run_id, _ in cache.keys()} == {first, third}  # noqa: SIM118
    assert cache.size <= cache.max_bytes


def test_the_schema_still_documents_metrics_and_the_304(api: TestClient) -> None:
    operation = api.get("/openapi.json").json()["paths"]["/api/runs/{run_id}/metrics"]["get"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Metrics"}
    assert "304" in operation["responses"]


def test_a_database_of_an_earlier_version_gains_the_new_columns(
    settings: Settings, make_dataset_row, database: Database
) -> None:
    with database.session() as session:
        dataset = session.get(Dataset, make_dataset_row())
        assert dataset is not None
        run_id = runs.create_run(session, dataset, TrainConfig(**TINY), None).id
    # As a database made before migrations (create_all, no alembic_version) and
    # before these two columns: backend.schema recognises it and adds them.
    with database.engine.begin() as connection:
        for column in ("metrics_version", "attempt"):
            connection.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {column}")
        connection.exec_driver_sql("DROP TABLE alembic_version")
    reopened = Database(settings.sqlalchemy_url)  # as the API or a worker starting up
    try:
        with reopened.session() as session:
            run = session.get(Run, run_id)
            assert run is not None and (run.metrics_version, run.attempt) == (0, 0)
            assert runs.record_epoch(session, run_id, 1, {"loss": 1.0}, [])
            session.refresh(run)
            assert run.metrics_version == 1
        Database(settings.sqlalchemy_url).dispose()  # already there: nothing to add
    finally:
        reopened.dispose()
