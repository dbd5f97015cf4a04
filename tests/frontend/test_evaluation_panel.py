"""The run page's "What the model learned" through AppTest against a live API,
with evaluations stored directly as the worker stores them: the confusion
heatmap (counts and row-normalised), the per-class table, the mistakes'
gallery, the weights switch, and "Try an image"."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from backend import artifacts, evaluations
from backend.datasets.layout import Manifest, dataset_dir
from backend.settings import Settings
from frontend.api_client import ApiClient
from frontend.evaluation_view import confusion_figure, per_class_rows, row_normalised
from tests.frontend.conftest import LiveApi, page_path

CONFUSION = {"best": [[5, 1, 0], [0, 6, 0], [2, 0, 4]], "final": [[4, 2, 0], [1, 5, 0], [2, 1, 3]]}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # No predict worker runs here: the API's 504 must come quickly.
    return settings.model_copy(update={"predict_timeout_s": 0.5})


def evaluation_body(classes: list[str], manifest: Manifest, weights: str) -> dict[str, Any]:
    confusion = CONFUSION[weights]
    hits = np.diag(confusion)
    mistakes = [
        {
            "index": index,
            "path": manifest.images[index].path,
            "true": classes[manifest.images[index].label],
            "predicted": classes[(manifest.images[index].label + 1) % 3],
            "confidence": confidence,
            "true_probability": 0.1,
        }
        for index, confidence in ((1, 0.93), (9, 0.81), (17, 0.64))
    ]
    return {
        "images": 18,
        "accuracy": float(hits.sum() / 18),
        "loss": 0.42,
        "macro_f1": 0.8,
        "classes": classes,
        "per_class": [
            {"name": name, "precision": 0.8, "recall": hits[i] / 6, "f1": 0.8, "support": 6}
            for i, name in enumerate(classes)
        ],
        "confusion": confusion,
        "mistakes": mistakes if weights == "best" else mistakes[:1],
    }


def trained_run(live_api: LiveApi, stored: tuple[str, ...] = ("best", "final")) -> dict:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], {"image_size": [16, 16], "filters": [4]}, "evaluated")
    live_api.train_fake_epochs(run["id"], 4)
    manifest = Manifest.read(dataset_dir(live_api.settings.datasets_dir, dataset["id"]))
    classes = [c["name"] for c in dataset["classes"]]
    folder = live_api.settings.runs_dir / run["id"]
    folder.mkdir(parents=True)
    with live_api.database.session() as session:
        for weights in stored:
            body = evaluation_body(classes, manifest, weights)
            evaluations.store(session, run["id"], weights, 2 if weights == "best" else 4, body)
            (folder / artifacts.MODEL_FILES[weights]).write_bytes(b"keras")
    return {**run, "classes": classes}


def open_run(run_id: str) -> AppTest:
    page = AppTest.from_file(page_path("run"), default_timeout=30)
    page.query_params["id"] = run_id
    return page.run()


def heatmap(page: AppTest) -> dict[str, Any]:
    figures = [json.loads(chart.proto.spec) for chart in page.get("plotly_chart")]
    return next(f for f in figures if f["data"] and f["data"][0]["type"] == "heatmap")


def test_the_confusion_matrix_has_class_names_on_both_axes(live_api: LiveApi) -> None:
    run = trained_run(live_api)
    page = open_run(run["id"])
    assert not page.exception
    assert "What the model learned" in [s.value for s in page.subheader]
    trace = heatmap(page)["data"][0]
    assert trace["x"] == trace["y"] == run["classes"]
    assert trace["z"] == CONFUSION["best"]
    assert trace["texttemplate"] == "%{z}"

    page.toggle(key=f"normalised-{run['id']}").set_value(True).run()
    trace = heatmap(page)["data"][0]
    assert [sum(row) for row in trace["z"]] == pytest.approx([1, 1, 1])
    assert trace["z"][2] == pytest.approx([2 / 6, 0, 4 / 6])
    assert trace["customdata"] == CONFUSION["best"]  # the hover still counts images
    assert trace["zmax"] == 1


def test_the_summary_table_and_mistakes_follow_the_weights(live_api: LiveApi) -> None:
    run = trained_run(live_api)
    page = open_run(run["id"])
    summary = next(m.value for m in page.markdown if "Validation accuracy" in m.value)
    assert "**83.3%** on 18 images" in summary and "epoch 2 (lowest val_loss)" in summary
    (table,) = [frame.value for frame in page.dataframe]
    assert list(table["class"]) == run["classes"]
    assert list(table["support"]) == [6, 6, 6]
    assert table["most often taken for"][0] == f"{run['classes'][1]} (1)"
    captions = [c for image in page.image for c in image.captions]
    first = f"{run['classes'][0]} → {run['classes'][1]} · 93%"
    assert captions[:3] == [
        first,
        f"{run['classes'][1]} → {run['classes'][2]} · 81%",
        f"{run['classes'][2]} → {run['classes'][0]} · 64%",
    ], captions

    page.segmented_control(key=f"weights-{run['id']}").set_value("final").run()
    assert not page.exception
    summary = next(m.value for m in page.markdown if "Validation accuracy" in m.value)
    assert "**66.7%**" in summary and "epoch 4 (last epoch)" in summary
    assert heatmap(page)["data"][0]["z"] == CONFUSION["final"]
    assert [c for image in page.image for c in image.captions] == [first]


def test_a_run_with_only_final_weights_has_no_switch(live_api: LiveApi) -> None:
    run = trained_run(live_api, stored=("final",))
    page = open_run(run["id"])
    control = page.segmented_control(key=f"weights-{run['id']}")
    assert control.options == ["Final epoch (4)"]


def test_a_run_still_training_shows_no_evaluation(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], {"image_size": [16, 16], "filters": [4]})
    live_api.train_fake_epochs(run["id"], 2, final=None)
    page = open_run(run["id"])
    assert not page.exception
    assert "What the model learned" not in [s.value for s in page.subheader]


def test_a_succeeded_run_without_an_evaluation_says_so(live_api: LiveApi) -> None:
    run = trained_run(live_api, stored=())
    page = open_run(run["id"])
    assert any(c.value.startswith("No evaluation: run has no evaluation") for c in page.caption)
    assert page.file_uploader(key=f"try-{run['id']}")  # the model may still answer


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_try_an_image_shows_the_top_classes(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = trained_run(live_api)
    asked: list[tuple[str, str | None]] = []

    def answer(self: ApiClient, run_id: str, filename: str, content: bytes, **options: Any):
        asked.append((filename, options.get("weights")))
        names = run["classes"]
        return {
            "run_id": run_id,
            "weights": "best",
            "epoch": 2,
            "top": [
                {"name": names[2], "index": 2, "probability": 0.7},
                {"name": names[0], "index": 0, "probability": 0.2},
                {"name": names[1], "index": 1, "probability": 0.1},
            ],
        }

    monkeypatch.setattr(ApiClient, "predict", answer)
    page = open_run(run["id"])
    page.file_uploader(key=f"try-{run['id']}").set_value(("mine.png", _png(), "image/png")).run()
    assert not page.exception
    assert asked == [("mine.png", "best")]
    assert any(
        m.value.startswith(f"**{run['classes'][2]}** (70.0%), with the best epoch (2)")
        for m in page.markdown
    )
    figures = [json.loads(chart.proto.spec) for chart in page.get("plotly_chart")]
    bars = next(f for f in figures if f["data"][0]["type"] == "bar")["data"][0]
    assert bars["y"] == [run["classes"][2], run["classes"][0], run["classes"][1]]
    page.toggle(key=f"normalised-{run['id']}").set_value(True).run()
    assert len(asked) == 1  # a rerun does not ask again


def test_try_an_image_without_a_predict_worker_says_so(live_api: LiveApi) -> None:
    run = trained_run(live_api)
    page = open_run(run["id"])
    page.file_uploader(key=f"try-{run['id']}").set_value(("mine.png", _png(), "image/png")).run()
    assert not page.exception
    errors = [e.value for e in page.error]
    assert any(
        e.startswith("Could not predict: no predict worker answered within 0.5s") for e in errors
    ), errors
    assert "Try again" in [b.label for b in page.button]


def test_the_figures_without_streamlit() -> None:
    assert row_normalised([[2, 2], [0, 0]]) == [[0.5, 0.5], [0.0, 0.0]]
    many = [f"c{i}" for i in range(40)]
    figure = confusion_figure(many, np.eye(40, dtype=int).tolist())
    assert figure.layout.height <= 820
    assert figure.data[0].texttemplate is None  # too many cells to print numbers in
    assert figure.layout.xaxis.type == figure.layout.yaxis.type == "category"
    rows = per_class_rows(
        {
            "classes": ["a", "b"],
            "confusion": [[3, 0], [1, 1]],
            "per_class": [{"name": "a", "support": 3}, {"name": "b", "support": 2}],
        }
    )
    assert [r["most often taken for"] for r in rows] == ["", "a (1)"]
