"""The memory estimate's arithmetic (backend/memory_estimate.py), and
POST /api/runs refusing a run that does not fit what the workers have."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from backend import events, memory_estimate, workers
from backend.api.main import create_app
from backend.db import Database, Run
from backend.memory_estimate import MIB, estimate, parameter_count, too_big
from backend.settings import Settings
from backend.train_config import TrainConfig

SMALL = {
    "image_size": [8, 6],
    "color_mode": "grayscale",
    "filters": [2, 3],
    "convs_per_block": 1,
    "kernel_size": 3,
    "dense_units": 4,
    "batch_size": 5,
    "optimizer": "adam",
}
# Far past any worker: 1024² images, 2 × 512 filters, batch 256.
HUGE = {"image_size": [1024, 1024], "filters": [512, 512], "batch_size": 256, "epochs": 1}
TINY = {"image_size": [16, 16], "filters": [4, 8], "epochs": 2, "batch_size": 8}


def test_the_parts_of_a_small_config_by_hand() -> None:
    config = TrainConfig(**SMALL)
    # conv1 3·3·1·2+2 = 20, bn1 4·2 = 8; conv2 3·3·2·3+3 = 57, bn2 12;
    # 8×6 → 4×3 → 2×1, flat 2·1·3 = 6: dense 6·4+4 = 28; predictions 4·3+3 = 15.
    assert parameter_count(config, 3) == 20 + 8 + 57 + 12 + 28 + 15 == 140
    parts = estimate(config, num_images=100, num_classes=3).parts
    trainable = 140 - 2 * (2 + 3)  # moving mean and variance are not trained
    assert parts["weights"] == pytest.approx(140 * 4 / MIB)
    assert parts["gradients"] == pytest.approx(trainable * 4 / MIB)
    assert parts["optimizer"] == pytest.approx(2 * trainable * 4 / MIB)  # Adam: m and v
    # Per image: input 48; block 1: conv 96 + bn 96, pool 4·3·2 = 24; block 2
    # (4×3): conv 36 + bn 36, pool 2·1·3 = 6; dense 4 + predictions 3 = 347;
    # plus two of the largest (96) in flight.
    kept = 48 + 96 + 96 + 24 + 36 + 36 + 6 + 4 + 3
    activations = 5 * (kept + 2 * 96) * 4 * memory_estimate.ACTIVATION_OVERHEAD
    assert parts["activations"] == pytest.approx(activations / MIB)
    pipeline = 100 * 48 + memory_estimate.PIPELINE_BATCHES * 5 * 48 * 4
    pipeline += memory_estimate.PARALLEL_DECODES * 48 * 5
    assert parts["pipeline"] == pytest.approx(pipeline / MIB)
    assert parts["base"] == memory_estimate.BASE_MB


def test_optimizer_state_and_mixed_precision() -> None:
    def parts(**changes: object) -> dict[str, float]:
        return estimate(TrainConfig(**{**SMALL, **changes}), 100, 3).parts

    assert parts(optimizer="sgd", momentum=0.0)["optimizer"] == 0
    assert parts(optimizer="sgd", momentum=0.9)["optimizer"] == parts()["optimizer"] / 2
    assert parts(optimizer="rmsprop")["optimizer"] == parts()["optimizer"] / 2
    assert parts(mixed_precision=True)["activations"] == parts()["activations"] / 2
    assert parts(batch_size=10)["activations"] == parts()["activations"] * 2


def test_the_refusal_names_the_fields_and_both_numbers() -> None:
    needed = estimate(TrainConfig(**HUGE), 6400, 30)
    detail = too_big(needed, 4000)
    assert detail is not None
    assert f"{needed.total_mb:,.0f} MiB" in detail and "4,000 MiB" in detail
    assert "batch_size" in detail and "image_size" in detail and "filters" in detail
    assert too_big(needed, needed.total_mb + 1) is None


def test_largest_stored_image_reads_both_shapes() -> None:
    shapes = [{"height": 50, "width": 55, "count": 9}, {"height": 400, "width": 300}]
    assert memory_estimate.largest_stored_image(shapes) == (400, 300)
    assert memory_estimate.largest_stored_image([[16, 16], [20, 10]]) == (16, 16)
    assert memory_estimate.largest_stored_image([]) is None


def _beat(redis: Redis, name: str, memory_mb: float) -> None:
    value = workers.beat_value(f"host:{len(name)}", memory_mb, 500.0, None, 1)
    redis.set(events.worker_key(name), json.dumps(value), ex=30)


def test_a_run_too_big_for_every_live_worker_is_refused(
    api: TestClient, make_dataset_row, redis_client: Redis, database: Database
) -> None:
    dataset_id = make_dataset_row()
    _beat(redis_client, "small@a", 2000)
    _beat(redis_client, "big@b", 6000)
    reply = api.post("/api/runs", json={"dataset_id": dataset_id, "config": HUGE})
    assert reply.status_code == 422, reply.text
    detail = reply.json()["detail"]
    assert "6,000 MiB a worker has" in detail  # the largest live worker's budget
    assert "batch_size" in detail and "image_size" in detail
    with database.session() as session:
        assert session.query(Run).count() == 0  # nothing queued
    # A run that fits goes through.
    ok = api.post("/api/runs", json={"dataset_id": dataset_id, "config": TINY})
    assert ok.status_code == 201, ok.text


def test_without_live_workers_the_setting_decides(
    settings: Settings, api: TestClient, make_dataset_row, redis_client: Redis
) -> None:
    dataset_id = make_dataset_row()
    body = {"dataset_id": dataset_id, "config": HUGE}
    assert api.post("/api/runs", json=body).status_code == 201  # nothing known: not refused
    configured = settings.model_copy(update={"worker_memory_mb": 3000})
    with TestClient(create_app(configured)) as client:
        reply = client.post("/api/runs", json=body)
        assert reply.status_code == 422
        assert "3,000 MiB a worker has" in reply.json()["detail"]
        assert client.post("/api/runs", json={**body, "config": TINY}).status_code == 201
