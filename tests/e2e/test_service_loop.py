"""The spine over real parts: upload → queue → train → stream → store.

``curvelab up --no-ui`` starts a real Celery worker and the API on the suite's
Redis; a generated dataset is uploaded through the API, a tiny network
trains, its epoch events arrive over SSE in order, a resume from an event id
gives only the later ones, and the stored metrics and model are served.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest

from backend.synthetic import write_character_zip
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

EPOCHS = 5
CONFIG = {
    "image_size": [16, 16],
    "color_mode": "grayscale",
    "filters": [8, 16],
    "convs_per_block": 1,
    "dense_units": 32,
    "batch_size": 16,
    "epochs": EPOCHS,
    "learning_rate": 0.003,
    "batch_metrics_every": 2,
    # Few steps per epoch: with Keras's 0.99 BatchNorm's moving averages would
    # still be mostly their initial values (the lag curvelab explains).
    "bn_momentum": 0.9,
}


def read_sse(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[dict]:
    """Read a whole SSE response (it ends after the run's final status)."""
    received: list[dict] = []
    with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(30, read=120)) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in reply.iter_lines():
            if not line:
                if "data" in fields:
                    received.append(
                        {
                            "id": fields.get("id"),
                            "event": fields.get("event"),
                            "data": json.loads(fields["data"]),
                        }
                    )
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = value
    return received


def test_upload_train_stream_store(stack: Stack, tmp_path: Path) -> None:
    archive = write_character_zip(
        tmp_path / "chars.zip", num_classes=4, per_class=100, image_size=(16, 16), mode="L", seed=3
    )
    with stack.client() as client:
        with archive.open("rb") as handle:
            reply = client.post(
                "/api/datasets",
                files={"file": ("chars.zip", handle, "application/zip")},
                data={"name": "characters"},
            )
        assert reply.status_code == 201, reply.text
        dataset = reply.json()
        assert dataset["num_images"] == 400
        assert [c["count"] for c in dataset["classes"]] == [100] * 4

        bad = client.post(
            "/api/runs", json={"dataset_id": dataset["id"], "config": {"batch_size": 0}}
        )
        assert bad.status_code == 422 and "config.batch_size" in bad.json()["detail"]

        reply = client.post("/api/runs", json={"dataset_id": dataset["id"], "config": CONFIG})
        assert reply.status_code == 201, reply.text
        run_id = reply.json()["id"]

        # Live: the stream is followed until the final status arrives.
        received = read_sse(client, f"/api/runs/{run_id}/events")
        statuses = [e["data"]["status"] for e in received if e["event"] == "status"]
        assert statuses == ["running", "succeeded"], (statuses, stack.log.read_text()[-3000:])
        epochs = [e for e in received if e["event"] == "epoch"]
        assert [e["data"]["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
        for event in epochs:
            for key in (
                "loss",
                "val_loss",
                "accuracy",
                "val_accuracy",
                "seconds",
                "images_per_sec",
                "lr",
            ):
                assert isinstance(event["data"][key], float), key
        assert any(e["event"] == "batch" for e in received)

        # Resume after epoch 1: only what came later.
        later = read_sse(
            client, f"/api/runs/{run_id}/events", headers={"Last-Event-ID": epochs[0]["id"]}
        )
        assert later == received[received.index(epochs[0]) + 1 :]

        metrics = client.get(f"/api/runs/{run_id}/metrics").json()
        assert [row["epoch"] for row in metrics["epochs"]] == list(range(1, EPOCHS + 1))
        assert metrics["epochs"][-1]["val_loss"] == epochs[-1]["data"]["val_loss"]
        # It learned: well above the 25% of chance on 4 classes.
        assert metrics["epochs"][-1]["val_accuracy"] > 0.5, metrics["epochs"]

        run = client.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "succeeded" and run["epochs_done"] == EPOCHS

        model = client.get(f"/api/runs/{run_id}/model")
        assert model.status_code == 200
        assert zipfile.is_zipfile(io.BytesIO(model.content))  # a .keras file is a zip
