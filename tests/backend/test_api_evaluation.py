"""The evaluation routes over the real app: a run's evaluation of its best and
final weights, its mistakes' images, and the download of either model.
Evaluations are stored directly, as the worker stores them."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import delete

from backend import artifacts, evaluations, runs
from backend.datasets.ingest import delete_dataset_files
from backend.datasets.layout import Manifest, dataset_dir
from backend.db import Database, Dataset
from backend.settings import Settings

CLASSES = ["cat", "dog", "owl"]
CONFIG = {"image_size": [16, 16], "filters": [4], "epochs": 3}

Finish = Callable[..., dict[str, Any]]


def body(manifest: Manifest, accuracy: float = 0.5) -> dict[str, Any]:
    """An evaluation body as the worker writes it, with two mistakes."""
    first, second = manifest.images[0], manifest.images[5]
    return {
        "images": 6,
        "accuracy": accuracy,
        "loss": 0.9,
        "macro_f1": 0.48,
        "classes": CLASSES,
        "per_class": [
            {"name": name, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
            for name in CLASSES
        ],
        "confusion": [[1, 1, 0], [0, 1, 1], [1, 0, 1]],
        "mistakes": [
            {
                "index": index,
                "path": image.path,
                "true": CLASSES[image.label],
                "predicted": CLASSES[(image.label + 1) % 3],
                "confidence": confidence,
                "true_probability": 0.05,
            }
            for index, image, confidence in ((0, first, 0.9), (5, second, 0.7))
        ],
    }


@pytest.fixture
def dataset(api: TestClient, class_entries, make_zip) -> dict[str, Any]:
    archive = make_zip(class_entries({name: 4 for name in CLASSES}, height=40, width=30))
    reply = api.post("/api/datasets", files={"file": ("pets.zip", archive.read_bytes())})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


@pytest.fixture
def finish(api: TestClient, database: Database, settings: Settings, dataset: dict) -> Finish:
    """A run trained to ``status``, with the evaluations and model files asked for."""
    manifest = Manifest.read(dataset_dir(settings.datasets_dir, dataset["id"]))

    def make(
        status: str = "succeeded", stored: tuple[str, ...] = ("best", "final")
    ) -> dict[str, Any]:
        run = api.post("/api/runs", json={"dataset_id": dataset["id"], "config": CONFIG}).json()
        with database.session() as session:
            runs.mark_running(session, None, run["id"])
            for epoch in (1, 2, 3):
                runs.record_epoch(session, run["id"], epoch, {"val_loss": 1.0 / epoch}, [])
            if status != "running":
                runs.finish(session, None, run["id"], status)
            for weights in stored:
                epoch = 2 if weights == "best" else 3
                accuracy = 0.5 if weights == "best" else 0.4
                evaluations.store(session, run["id"], weights, epoch, body(manifest, accuracy))
        folder = settings.runs_dir / run["id"]
        folder.mkdir(parents=True, exist_ok=True)
        for weights in stored:
            (folder / artifacts.MODEL_FILES[weights]).write_bytes(weights.encode())
        return dict(run)

    return make


def test_the_default_evaluation_is_the_best_epochs(api: TestClient, finish: Finish) -> None:
    run = finish()
    reply = api.get(f"/api/runs/{run['id']}/evaluation")
    assert reply.status_code == 200, reply.text
    shown = reply.json()
    assert (shown["weights"], shown["epoch"], shown["accuracy"]) == ("best", 2, 0.5)
    assert shown["available"] == ["best", "final"]
    assert shown["classes"] == CLASSES and shown["confusion"][0] == [1, 1, 0]
    assert shown["per_class"][0] == {
        "name": "cat",
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
    }
    assert [m["index"] for m in shown["mistakes"]] == [0, 5]
    final = api.get(f"/api/runs/{run['id']}/evaluation", params={"weights": "final"}).json()
    assert (final["weights"], final["epoch"], final["accuracy"]) == ("final", 3, 0.4)


def test_without_a_best_model_the_final_one_is_the_default(api: TestClient, finish: Finish) -> None:
    run = finish(stored=("final",))
    shown = api.get(f"/api/runs/{run['id']}/evaluation").json()
    assert (shown["weights"], shown["available"]) == ("final", ["final"])
    reply = api.get(f"/api/runs/{run['id']}/evaluation", params={"weights": "best"})
    assert reply.status_code == 404
    assert reply.json()["detail"] == "run has no evaluation of its best weights"


@pytest.mark.parametrize("status", ["running", "failed", "cancelled"])
def test_a_run_that_did_not_train_to_the_end_has_none_yet(
    api: TestClient, finish: Finish, status: str
) -> None:
    run = finish(status=status, stored=())
    reply = api.get(f"/api/runs/{run['id']}/evaluation")
    assert reply.status_code == 409
    assert reply.json()["detail"] == (
        f"run is {status}: only a run that trained to the end has an evaluation"
    )


def test_a_succeeded_run_without_an_evaluation_says_why(api: TestClient, finish: Finish) -> None:
    run = finish(stored=())
    reply = api.get(f"/api/runs/{run['id']}/evaluation")
    assert reply.status_code == 404
    assert reply.json()["detail"].startswith("run has no evaluation: it finished before")


def test_unknown_runs_and_weights(api: TestClient, finish: Finish) -> None:
    assert api.get("/api/runs/abc123/evaluation").json()["detail"] == "run not found"
    assert api.get("/api/runs/..%2F..%2Fetc/evaluation").status_code == 404
    run = finish()
    reply = api.get(f"/api/runs/{run['id']}/evaluation", params={"weights": "worst"})
    assert reply.status_code == 422
    assert "weights" in reply.json()["detail"]


def test_a_mistakes_image_is_a_png_thumbnail(api: TestClient, finish: Finish) -> None:
    run = finish()
    reply = api.get(f"/api/runs/{run['id']}/evaluation/mistakes/1/image", params={"size": 32})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(reply.content)) as image:
        assert image.format == "PNG" and max(image.size) == 32  # 40×30 shrunk to fit
    missing = api.get(f"/api/runs/{run['id']}/evaluation/mistakes/2/image")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "the evaluation lists 2 mistakes; no mistake 2"
    assert api.get(f"/api/runs/{run['id']}/evaluation/mistakes/0/image?size=4").status_code == 422


def test_a_deleted_dataset_leaves_no_mistake_images(
    api: TestClient, finish: Finish, dataset: dict[str, Any], database: Database, settings: Settings
) -> None:
    run = finish()
    # As a release before DELETE ?delete_runs deleted one: its finished runs stayed.
    with database.session() as session:
        session.execute(delete(Dataset).where(Dataset.id == dataset["id"]))
        session.commit()
    assert delete_dataset_files(dataset["id"], settings)
    reply = api.get(f"/api/runs/{run['id']}/evaluation/mistakes/0/image")
    assert reply.status_code == 404
    assert reply.json()["detail"] == "the run's dataset was deleted"
    assert api.get(f"/api/runs/{run['id']}/evaluation").status_code == 200  # still there


def test_either_model_downloads(api: TestClient, finish: Finish) -> None:
    run = finish()
    default = api.get(f"/api/runs/{run['id']}/model")
    assert (default.status_code, default.content) == (200, b"best")
    assert default.headers["x-curvelab-weights"] == "best"
    assert f"curvelab-{run['id']}-best.keras" in default.headers["content-disposition"]
    final = api.get(f"/api/runs/{run['id']}/model", params={"weights": "final"})
    assert final.content == b"final"

    only_final = finish(stored=("final",))
    assert api.get(f"/api/runs/{only_final['id']}/model").content == b"final"
    reply = api.get(f"/api/runs/{only_final['id']}/model", params={"weights": "best"})
    assert reply.status_code == 404
    assert reply.json()["detail"] == "run has no best model (status: succeeded)"
