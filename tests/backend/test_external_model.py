"""An external run's model over the real app: uploaded (capped, checked to be
a .keras file), downloaded back byte for byte, and predicted with by a real
predict worker process at the model's own input size; a model that does not
load safely is refused, not run. And the server's `curvelab sync`."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from backend.api.main import create_app
from backend.cli import main as cli_main
from backend.settings import Settings
from tests.backend.test_external_runs import SUMMARY
from tests.worker.test_predict import api_waiting, predict_worker  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_cap_api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"max_model_mb": 1}))) as client:
        yield client


def external_run(api: TestClient) -> str:
    run_id = uuid.uuid4().hex
    reply = api.post("/api/runs/external", json={"id": run_id, "summary": SUMMARY})
    assert reply.status_code == 201, reply.text
    return run_id


def tiny_model(tmp_path: Path, *, lam: bool = False) -> Path:
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", activation="relu")(inputs)
    if lam:
        x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / ("lambda.keras" if lam else "model.keras")
    model.save(path)
    return path


def test_an_uploaded_model_downloads_back_and_bad_files_are_refused(
    api: TestClient, tmp_path: Path
) -> None:
    run_id = external_run(api)
    path = tiny_model(tmp_path)
    data = path.read_bytes()
    reply = api.put(f"/api/runs/{run_id}/model", files={"file": ("model.keras", data)})
    assert reply.status_code == 201, reply.text
    assert reply.json() == {"bytes": len(data)}
    download = api.get(f"/api/runs/{run_id}/model")
    assert download.status_code == 200 and download.content == data
    assert download.headers["X-Curvelab-Weights"] == "final"  # the only weights it has
    assert api.get(f"/api/runs/{run_id}/model", params={"weights": "best"}).status_code == 404

    for content, why in ((b"not a zip", "not a zip"), (b"", "empty")):
        refused = api.put(f"/api/runs/{run_id}/model", files={"file": ("m.keras", content)})
        assert refused.status_code == 422 and why in refused.json()["detail"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights.h5", b"0" * 10)
    refused = api.put(f"/api/runs/{run_id}/model", files={"file": ("m.keras", buffer.getvalue())})
    assert refused.status_code == 422 and "no config.json" in refused.json()["detail"]
    # A refused upload leaves the stored model as it was.
    assert api.get(f"/api/runs/{run_id}/model").content == data


def test_a_model_over_the_cap_is_a_413(small_cap_api: TestClient, settings: Settings) -> None:
    run_id = external_run(small_cap_api)
    big = np.random.default_rng(0).bytes(1024 * 1024 + 100 * 1024)
    reply = small_cap_api.put(f"/api/runs/{run_id}/model", files={"file": ("m.keras", big)})
    assert reply.status_code == 413
    assert reply.json()["detail"] == "model is larger than the 1 MiB limit (CURVELAB_MAX_MODEL_MB)"
    assert small_cap_api.get(f"/api/runs/{run_id}/model").status_code == 409
    assert list(settings.tmp_dir.iterdir()) == []  # nothing staged is left


def test_predict_runs_the_uploaded_model_at_its_input_size_and_refuses_unsafe_ones(
    settings: Settings,
    tmp_path: Path,
    predict_worker: Path,  # noqa: F811
) -> None:
    # Long enough for the worker process to start (it imports TensorFlow).
    with api_waiting(settings, 120) as api:
        _predict_and_refuse(api, tmp_path)


def _predict_and_refuse(api: TestClient, tmp_path: Path) -> None:
    run_id = external_run(api)
    path = tiny_model(tmp_path)
    api.put(f"/api/runs/{run_id}/model", files={"file": ("model.keras", path.read_bytes())})
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 8), dtype=np.uint8)
    image = io.BytesIO()
    Image.fromarray(pixels).save(image, format="PNG")
    reply = api.post(f"/api/runs/{run_id}/predict", files={"file": ("a.png", image.getvalue())})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["weights"] == "final"
    # The model's own answer for the image fed as a worker's run is: scaled to 0–1.
    expected = keras.models.load_model(path).predict(
        (pixels / 255.0).reshape(1, 8, 8, 1).astype("float32"), verbose=0
    )[0]
    got = {entry["index"]: entry["probability"] for entry in answer["top"]}
    assert sorted(got) == [0, 1, 2]
    assert np.allclose([got[i] for i in range(3)], expected, atol=1e-5)

    unsafe = external_run(api)
    lam = tiny_model(tmp_path, lam=True)
    api.put(f"/api/runs/{unsafe}/model", files={"file": ("model.keras", lam.read_bytes())})
    refused = api.post(f"/api/runs/{unsafe}/predict", files={"file": ("a.png", image.getvalue())})
    assert refused.status_code == 409, refused.text
    assert "does not load here" in refused.json()["detail"]


def test_curvelab_sync_hands_its_arguments_to_the_clients_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "client"))
    from curvelab import cli

    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setattr(cli, "main", fake_main)
    assert cli_main.main(["sync", "--url", "http://h:1", "a.jsonl", "b.jsonl"]) == 3
    assert seen == [["sync", "--url", "http://h:1", "a.jsonl", "b.jsonl"]]
    assert "sync" in cli_main.build_parser().format_help()
