"""Predict end to end: the real app hands an image to a real predict worker
process (the command line `curvelab up` starts), which answers with the run's
own model and preprocessing; and what the API says when it cannot."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from backend import artifacts, evaluations, runs
from backend.api.main import create_app
from backend.cli.predictor import predict_worker_argv
from backend.datasets.layout import Manifest, dataset_dir
from backend.datasets.split import stratified_split
from backend.db import Database
from backend.settings import Settings
from backend.train_config import TrainConfig
from tests.conftest import stop_process
from tests.worker.conftest import CLASSES, TINY, MakeRun, get_run
from worker.training.inference import ModelCache, probabilities
from worker.training.runner import run_training

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def api_waiting(settings: Settings, seconds: float) -> Iterator[TestClient]:
    """The real app, waiting ``seconds`` for a predict worker's answer."""
    app = create_app(settings.model_copy(update={"predict_timeout_s": seconds}))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def predict_worker(settings: Settings, tmp_path: Path) -> Iterator[Path]:
    env = {
        **os.environ,
        "CURVELAB_DATA_DIR": str(settings.data_dir),
        "CURVELAB_REDIS_URL": settings.redis_url,
        "CURVELAB_DATABASE_URL": settings.sqlalchemy_url,
    }
    log = tmp_path / "predictor.log"
    quiet = ["--without-gossip", "--without-mingle"]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*predict_worker_argv(), "--hostname", "predict-test@localhost", *quiet],
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    yield log
    stop_process(process)


def test_a_validation_image_gets_the_answer_the_evaluation_gave(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_run: MakeRun,
    predict_worker: Path,
) -> None:
    run_id = make_run()  # the worker starts meanwhile
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    folder = dataset_dir(settings.datasets_dir, get_run(database, run_id).dataset_id or "")
    manifest = Manifest.read(folder)
    labels = [image.label for image in manifest.images]
    _, val_idx = stratified_split(labels, 0.2, int(TINY["seed"]))
    with database.session() as session:
        best = evaluations.stored(session, run_id)["best"]
    wrong = {mistake["index"] for mistake in best.body["mistakes"]}
    # Every mistake is listed (fewer than the 12 kept).
    assert len(wrong) == best.body["images"] - np.trace(best.body["confusion"])
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.BEST_MODEL_FILE)
    config = TrainConfig(**TINY)

    with api_waiting(settings, 120) as api:
        for index in val_idx.tolist():
            image = manifest.images[index]
            reply = api.post(
                f"/api/runs/{run_id}/predict",
                files={"file": (Path(image.path).name, (folder / image.path).read_bytes())},
                params={"top_k": 3},
            )
            assert reply.status_code == 200, f"{reply.text}\n{predict_worker.read_text()[-3000:]}"
            answer = reply.json()
            assert (answer["weights"], answer["epoch"]) == ("best", best.epoch)
            top = answer["top"]
            assert [t["probability"] for t in top] == sorted(
                (t["probability"] for t in top), reverse=True
            )
            assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
            assert (top[0]["name"] == CLASSES[image.label]) == (index not in wrong), answer
            # The training pipeline's own preprocessing, in this process.
            expected = probabilities(model, (folder / image.path).read_bytes(), config)
            for entry in top:
                assert entry["probability"] == pytest.approx(expected[entry["index"]], abs=1e-5)

        final = api.post(
            f"/api/runs/{run_id}/predict",
            files={"file": ("x.png", (folder / manifest.images[val_idx[0]].path).read_bytes())},
            params={"weights": "final", "top_k": 1},
        ).json()
        assert (final["weights"], final["epoch"], len(final["top"])) == ("final", 3, 1)


def test_a_file_that_is_not_an_image_is_refused_before_queueing(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    _pretend_trained(settings, database, run_id)
    with api_waiting(settings, 30) as api:
        reply = api.post(
            f"/api/runs/{run_id}/predict", files={"file": ("notes.png", b"hello, world")}
        )
    assert reply.status_code == 415
    assert reply.json()["detail"].startswith("not an image: ")
    assert not redis_client.exists("predict")  # nothing was queued


def test_a_run_without_a_model_cannot_predict(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    queued, gone = make_run(), make_run()
    with database.session() as session:
        runs.finish(session, None, gone, "succeeded")  # but no model file
    png = _png()
    with api_waiting(settings, 30) as api:
        reply = api.post(f"/api/runs/{queued}/predict", files={"file": ("a.png", png)})
        assert reply.status_code == 409
        assert (
            reply.json()["detail"] == "run is queued: predict needs a run that trained to the end"
        )
        reply = api.post(f"/api/runs/{gone}/predict", files={"file": ("a.png", png)})
        assert reply.status_code == 409
        assert reply.json()["detail"] == "run has no trained model to predict with"
        reply = api.post("/api/runs/abc/predict", files={"file": ("a.png", png)})
        assert reply.status_code == 404


def test_no_predict_worker_is_a_quick_504(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    run_id = make_run()
    _pretend_trained(settings, database, run_id)
    with api_waiting(settings, 0.5) as api:
        started = time.monotonic()
        reply = api.post(f"/api/runs/{run_id}/predict", files={"file": ("a.png", _png())})
        took = time.monotonic() - started
    assert reply.status_code == 504
    assert reply.json()["detail"].startswith("no predict worker answered within 0.5s; is one")
    assert took < 5


def test_the_model_cache_keeps_the_last_few(tmp_path: Path) -> None:
    paths = []
    for name in ("a", "b"):
        inputs = keras.Input((2,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        paths.append(tmp_path / f"{name}.keras")
        model.save(paths[-1])
    cache = ModelCache(size=1)
    first = cache.get(paths[0])
    assert cache.get(paths[0]) is first and len(cache) == 1
    cache.get(paths[1])
    assert cache.get(paths[0]) is not first  # evicted, loaded again
    os.utime(paths[0], ns=(0, 10**9))  # saved again: not the cached model any more
    assert cache.get(paths[0]) is not first


def _pretend_trained(settings: Settings, database: Database, run_id: str) -> None:
    folder = settings.runs_dir / run_id
    folder.mkdir(parents=True)
    (folder / artifacts.MODEL_FILE).write_bytes(b"not read before the worker")
    with database.session() as session:
        runs.finish(session, None, run_id, "succeeded")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
