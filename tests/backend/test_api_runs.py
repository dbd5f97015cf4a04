"""Runs over the real app, Redis and SQL: create, validate, cancel, metrics, events."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from redis import Redis

from backend import events, runs
from backend.db import Database
from backend.queue import QUEUE
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
    assert [r["id"] for r in api.get("/api/runs").json()] == [run["id"]]


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
