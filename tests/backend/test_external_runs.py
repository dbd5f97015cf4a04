"""External runs over the real app, Redis and SQL: a client creates a run,
appends epochs and batch points (re-sent ones are duplicates, nothing is
doubled), the SSE stream and the metrics carry them, it finishes; what
cannot be done to an external run (or by one to a worker's) is a 409; the
workers' sweeper and reconciler leave external runs alone."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import update

from backend import events, runs
from backend.db import Database, Run, utcnow
from backend.queue import QUEUE, make_celery
from backend.settings import Settings
from tests.backend.test_api_runs import TINY, _sse
from tests.conftest import BOTH_DATABASES
from worker.lease import LeaseTiming
from worker.reconciler import QueueReconciler
from worker.sweeper import LeaseSweeper

pytestmark = BOTH_DATABASES

SUMMARY: dict[str, Any] = {
    "model": {
        "name": "convnet",
        "params": 1234,
        "layers": [
            {"name": "conv", "type": "Conv2D", "filters": 8, "params": 80},
            {"name": "bn", "type": "BatchNormalization", "momentum": 0.99, "params": 32},
        ],
    },
    "optimizer": {"name": "Adam", "learning_rate": 0.001},
    "loss": "sparse_categorical_crossentropy",
    "batch_size": 32,
    "epochs": 3,
    "steps_per_epoch": 4,
    "keras_version": "3.10.0",
    "backend": "jax",
    "a_later_clients_key": {"kept": True},
}


def new_id() -> str:
    return uuid.uuid4().hex


def create(api: TestClient, run_id: str, **extra: Any) -> Any:
    body = {"id": run_id, "host": "laptop", "class_names": ["cat", "dog"], "summary": SUMMARY}
    return api.post("/api/runs/external", json={**body, **extra})


def epoch(n: int, loss: float) -> dict[str, Any]:
    return {"epoch": n, "values": {"loss": loss, "val_loss": loss + 0.5, "accuracy": 0.5}}


def batch(step: int) -> dict[str, Any]:
    return {"step": step, "epoch": step / 4, "values": {"loss": 1.0 / step}}


def test_a_run_is_created_appended_streamed_and_finished(api: TestClient) -> None:
    run_id = new_id()
    made = create(api, run_id)
    assert made.status_code == 201, made.text
    run = made.json()
    assert (run["status"], run["source"], run["host"]) == ("running", "keras", "laptop")
    assert run["config"] is None and run["dataset_id"] is None
    assert run["summary"]["model"]["layers"][1]["momentum"] == 0.99
    assert run["summary"]["a_later_clients_key"] == {"kept": True}
    assert run["name"] == "convnet Adam lr=0.001 bs=32" and run["started_at"]
    again = create(api, run_id, name="another name")  # a re-sent create: the same run
    assert again.status_code == 200 and again.json()["name"] == run["name"]
    keras = api.get("/api/runs", params={"source": "keras"}).json()["items"]
    assert [r["id"] for r in keras] == [run_id]
    assert api.get("/api/runs", params={"source": "worker"}).json()["items"] == []

    sent = api.post(f"/api/runs/{run_id}/epochs", json={"epochs": [epoch(1, 2.0), epoch(2, 1.5)]})
    assert sent.json() == {"stored": 2, "duplicates": 0, "epochs_done": 2}
    tag = api.get(f"/api/runs/{run_id}/metrics").headers["ETag"]
    # Epoch 2 again (after a lost answer) with other values, and epoch 3.
    resent = api.post(f"/api/runs/{run_id}/epochs", json={"epochs": [epoch(2, 9.0), epoch(3, 1.0)]})
    assert resent.json() == {"stored": 1, "duplicates": 1, "epochs_done": 3}
    batches = api.post(
        f"/api/runs/{run_id}/batches", json={"batches": [batch(s) for s in range(1, 7)]}
    )
    assert batches.json() == {"stored": 6, "duplicates": 0, "epochs_done": 3}
    more = api.post(
        f"/api/runs/{run_id}/batches", json={"batches": [batch(s) for s in range(4, 9)]}
    )
    assert more.json() == {"stored": 2, "duplicates": 3, "epochs_done": 3}

    metrics = api.get(f"/api/runs/{run_id}/metrics")
    assert metrics.headers["ETag"] != tag
    body = metrics.json()
    assert [(row["epoch"], row["loss"]) for row in body["epochs"]] == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert [row["step"] for row in body["batches"]] == list(range(1, 9))
    assert body["batches_total"] == 8 and body["batches"][4]["epoch"] == 1.25
    # Only duplicates: nothing changed, the ETag stays.
    tag = metrics.headers["ETag"]
    assert (
        api.post(f"/api/runs/{run_id}/epochs", json={"epochs": [epoch(1, 0.1)]}).json()[
            "duplicates"
        ]
        == 1
    )
    assert api.get(f"/api/runs/{run_id}/metrics", headers={"If-None-Match": tag}).status_code == 304
    rows = list(csv.DictReader(io.StringIO(api.get(f"/api/runs/{run_id}/metrics/epochs.csv").text)))
    assert [(r["epoch"], r["loss"]) for r in rows] == [("1", "2.0"), ("2", "1.5"), ("3", "1.0")]
    steps = api.get(f"/api/runs/{run_id}/metrics/batches.csv").text.splitlines()
    assert len(steps) == 1 + 8

    done = api.post(f"/api/runs/{run_id}/finish", json={"status": "succeeded"})
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    assert done.json()["finished_at"] and done.json()["epochs_done"] == 3
    again = api.post(f"/api/runs/{run_id}/finish", json={"status": "succeeded"})
    assert again.status_code == 200 and again.json()["finished_at"] == done.json()["finished_at"]
    other = api.post(f"/api/runs/{run_id}/finish", json={"status": "failed", "error": "E: x"})
    assert other.status_code == 409
    assert other.json()["detail"] == "run is succeeded already; it cannot become failed"

    # The stream, as the run page follows it: each epoch once, in order, then the end.
    stream = _sse(api.get(f"/api/runs/{run_id}/events").text)
    kinds = [(e["event"], json.loads(e["data"])) for e in stream]
    assert kinds[0] == ("status", {"type": "status", "status": "running"})
    assert [d["epoch"] for kind, d in kinds if kind == "epoch"] == [1, 2, 3]
    assert [d["loss"] for kind, d in kinds if kind == "epoch"] == [2.0, 1.5, 1.0]
    assert [d["step"] for kind, d in kinds if kind == "batch"] == list(range(1, 9))
    assert kinds[-1][1]["status"] == "succeeded" and kinds[-1][1]["epochs_done"] == 3


def test_an_interrupted_run_is_final_everywhere(api: TestClient) -> None:
    run_id = new_id()
    create(api, run_id)
    api.post(f"/api/runs/{run_id}/epochs", json={"epochs": [epoch(1, 2.0)]})
    reply = api.post(
        f"/api/runs/{run_id}/finish",
        json={"status": "interrupted", "error": "KeyboardInterrupt: "},
    )
    assert reply.status_code == 200, reply.text
    assert (reply.json()["status"], reply.json()["error"]) == ("interrupted", "KeyboardInterrupt: ")
    listed = api.get("/api/runs", params={"status": "interrupted"}).json()["items"]
    assert [r["id"] for r in listed] == [run_id]
    assert api.get(f"/api/runs/{run_id}/diagnosis").json()["status"] == "interrupted"
    # The stream ends on it, as on any final status.
    stream = _sse(api.get(f"/api/runs/{run_id}/events").text)
    assert json.loads(stream[-1]["data"])["status"] == "interrupted"
    # What its callback still had buffered arrives after the end (curvelab sync).
    late = api.post(f"/api/runs/{run_id}/epochs", json={"epochs": [epoch(2, 1.0)]})
    assert late.json() == {"stored": 1, "duplicates": 0, "epochs_done": 2}


def test_values_that_are_not_numbers_are_stored_as_null(api: TestClient) -> None:
    run_id = new_id()
    create(api, run_id)
    body = b'{"epochs": [{"epoch": 1, "values": {"loss": NaN, "val_loss": Infinity, "lr": null}}]}'
    reply = api.post(
        f"/api/runs/{run_id}/epochs", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 200, reply.text
    row = api.get(f"/api/runs/{run_id}/metrics").json()["epochs"][0]
    assert row == {"epoch": 1, "loss": None, "val_loss": None, "lr": None}


def test_bodies_that_do_not_validate_are_a_422(api: TestClient) -> None:
    assert create(api, "not-hex").status_code == 422
    assert create(api, new_id(), source="worker").status_code == 422
    run_id = new_id()
    create(api, run_id)
    reply = api.post(f"/api/runs/{run_id}/epochs", json={"epochs": [{"epoch": 0, "values": {}}]})
    assert reply.status_code == 422 and "epochs.0.epoch" in reply.json()["detail"]
    reply = api.post(f"/api/runs/{run_id}/finish", json={"status": "cancelled"})
    assert reply.status_code == 422


def test_what_an_external_run_cannot_do_is_a_409(
    api: TestClient, make_dataset_row, redis_client: Redis
) -> None:
    worker_run = api.post("/api/runs", json={"dataset_id": make_dataset_row(), "config": TINY})
    worker_id = worker_run.json()["id"]
    # A worker's run takes nothing from a client.
    assert create(api, worker_id).status_code == 409
    for path, body in (
        ("epochs", {"epochs": [epoch(1, 1.0)]}),
        ("batches", {"batches": [batch(1)]}),
        ("finish", {"status": "succeeded"}),
    ):
        reply = api.post(f"/api/runs/{worker_id}/{path}", json=body)
        assert reply.status_code == 409, path
        assert "not an external run" in reply.json()["detail"]
    model = api.put(f"/api/runs/{worker_id}/model", files={"file": ("m.keras", b"x")})
    assert model.status_code == 409
    assert api.get(f"/api/runs/{worker_id}").json()["status"] == "queued"
    unknown = new_id()
    assert api.post(f"/api/runs/{unknown}/epochs", json={"epochs": []}).status_code == 404
    assert api.post(f"/api/runs/{unknown}/finish", json={"status": "failed"}).status_code == 404

    run_id = new_id()
    create(api, run_id)
    api.post(f"/api/runs/{run_id}/finish", json={"status": "succeeded"})
    evaluation = api.get(f"/api/runs/{run_id}/evaluation")
    assert evaluation.status_code == 409 and "external run" in evaluation.json()["detail"]
    assert api.get(f"/api/runs/{run_id}/evaluation/mistakes/0/image").status_code == 409
    download = api.get(f"/api/runs/{run_id}/model")
    assert download.status_code == 409 and "uploaded no model" in download.json()["detail"]
    predict = api.post(f"/api/runs/{run_id}/predict", files={"file": ("a.png", b"png")})
    assert predict.status_code == 409 and "uploaded no model" in predict.json()["detail"]
    cancel = api.post(f"/api/runs/{run_id}/cancel")
    assert cancel.status_code == 409
    assert not redis_client.exists(events.cancel_key(run_id))


def test_the_sweeper_and_the_reconciler_leave_external_runs_alone(
    api: TestClient,
    make_dataset_row,
    database: Database,
    redis_client: Redis,
    settings: Settings,
) -> None:
    external = new_id()
    create(api, external)  # running, and never with a lease
    dataset_id = make_dataset_row()
    orphan, stranded = (
        api.post("/api/runs", json={"dataset_id": dataset_id, "config": TINY}).json()["id"]
        for _ in range(2)
    )
    with database.session() as session:
        runs.mark_running(session, redis_client, orphan)  # its worker died: no lease
        assert runs.mark_running(session, redis_client, external) is None  # a stray message
    redis_client.delete(QUEUE)
    celery = make_celery(settings)
    timing = LeaseTiming(renew_s=0.1, ttl_s=0.3, sweep_s=0.1, grace_s=0.0)
    assert LeaseSweeper(database, redis_client, celery, timing).sweep() == [orphan]
    run = api.get(f"/api/runs/{external}").json()
    assert (run["status"], run["finished_at"]) == ("running", None)

    # Even one that something marked queued (it never is) is never sent to a worker.
    old = utcnow() - timedelta(hours=1)
    with database.session() as session:
        session.execute(
            update(Run)
            .where(Run.id.in_([external, stranded, orphan]))
            .values(status="queued", queued_at=old)
        )
        session.commit()
    redis_client.delete(QUEUE)
    sent = QueueReconciler(database, redis_client, celery, 60).reconcile()
    assert sorted(sent) == sorted([orphan, stranded])
    messages = [json.loads(m)["headers"]["id"] for m in redis_client.lrange(QUEUE, 0, -1)]
    assert external not in messages and len(messages) == 2
