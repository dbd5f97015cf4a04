"""Evaluation at the end of a run: numbers that agree with Keras's own, the
best epoch's weights kept beside the final ones, and the mistakes named by
their manifest images."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from redis import Redis

from backend import artifacts, evaluations, runs
from backend.datasets.layout import Manifest, dataset_dir
from backend.datasets.split import stratified_split
from backend.db import Database
from backend.settings import Settings
from backend.train_config import TrainConfig
from tests.worker.conftest import CLASSES, TINY, MakeDataset, MakeRun, get_run
from worker.training.best import Best, BestWeights, best_model, read_best, save_best
from worker.training.evaluation import summarize
from worker.training.model import compile_model, make_model
from worker.training.runner import run_training


def test_summarize_counts_scores_and_ranks_mistakes() -> None:
    probabilities = np.array(
        [
            [0.9, 0.05, 0.05],  # a, right
            [0.2, 0.7, 0.1],  # a, taken for b
            [0.1, 0.8, 0.1],  # b, right
            [0.6, 0.3, 0.1],  # b, taken for a
            [0.1, 0.85, 0.05],  # c, taken for b (most confident mistake)
        ]
    )
    labels = np.array([0, 0, 1, 1, 2])
    images = [(10 + i, f"00{label}/0000{i}.png") for i, label in enumerate(labels)]
    body = summarize(probabilities, labels, ["a", "b", "c"], images)

    assert body["confusion"] == [[1, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert body["accuracy"] == pytest.approx(2 / 5)
    assert body["loss"] == pytest.approx(-np.log([0.9, 0.2, 0.8, 0.3, 0.05]).mean())
    a, b, c = body["per_class"]
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (0.5, 0.5, 0.5, 2)
    assert b["precision"] == pytest.approx(1 / 3) and b["recall"] == 0.5
    assert b["f1"] == pytest.approx(0.4)
    # Nothing was predicted as c: its precision is undefined, not 0.
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (None, 0.0, None, 1)
    assert body["macro_f1"] == pytest.approx((0.5 + 0.4) / 2)
    assert [(m["index"], m["true"], m["predicted"]) for m in body["mistakes"]] == [
        (14, "c", "b"),
        (11, "a", "b"),
        (13, "b", "a"),
    ]
    assert body["mistakes"][0]["confidence"] == pytest.approx(0.85)
    assert body["mistakes"][0]["true_probability"] == pytest.approx(0.05)
    assert body["mistakes"][0]["path"] == "002/00004.png"
    assert (
        len(summarize(probabilities, labels, ["a", "b", "c"], images, mistakes=1)["mistakes"]) == 1
    )


def test_summarize_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="3 classes"):
        summarize(np.ones((2, 2)) / 2, np.array([0, 1]), ["a", "b", "c"], [(0, "x"), (1, "y")])


def _val_labels(settings: Settings, dataset_id: str) -> tuple[Manifest, np.ndarray]:
    manifest = Manifest.read(dataset_dir(settings.datasets_dir, dataset_id))
    labels = np.array([image.label for image in manifest.images])
    _, val_idx = stratified_split(labels, 0.2, int(TINY["seed"]))
    return manifest, val_idx


def test_a_tiny_run_is_evaluated_as_keras_validated_it(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun
) -> None:
    run_id = make_run()
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    manifest, val_idx = _val_labels(settings, get_run(database, run_id).dataset_id or "")
    with database.session() as session:
        rows = {row["epoch"]: row for row in runs.epoch_rows(session, run_id)}
        stored = evaluations.stored(session, run_id)
    assert set(stored) == {"best", "final"}
    best_epoch = min(rows, key=lambda epoch: rows[epoch]["val_loss"])
    assert (stored["best"].epoch, stored["final"].epoch) == (best_epoch, 3)

    for weights, row in stored.items():
        body = row.body
        confusion = np.array(body["confusion"])
        assert body["classes"] == list(CLASSES)
        assert confusion.shape == (3, 3)
        support = [c["support"] for c in body["per_class"]]
        assert confusion.sum(axis=1).tolist() == support, weights
        assert (
            support
            == np.bincount([manifest.images[i].label for i in val_idx], minlength=3).tolist()
        )
        assert body["images"] == len(val_idx) == confusion.sum()
        accuracy = np.trace(confusion) / confusion.sum()
        assert body["accuracy"] == pytest.approx(accuracy)
        # Keras's own number for those weights, at the epoch they come from.
        assert body["accuracy"] == pytest.approx(rows[row.epoch]["val_accuracy"], abs=1e-6)
        assert body["loss"] == pytest.approx(rows[row.epoch]["val_loss"], rel=1e-4, abs=1e-6)

    folder = settings.runs_dir / run_id
    assert read_best(folder / artifacts.BEST_WEIGHTS_FILE) == Best(
        best_epoch, pytest.approx(rows[best_epoch]["val_loss"], rel=1e-6)
    )
    kept = keras.models.load_model(folder / artifacts.BEST_MODEL_FILE)
    assert kept.output_shape == (None, len(CLASSES))
    assert evaluations.default_weights(settings.runs_dir, run_id) == "best"


def test_mistakes_name_validation_images_most_confident_first(
    settings: Settings,
    database: Database,
    make_dataset: MakeDataset,
    make_run: MakeRun,
) -> None:
    # Noise with arbitrary labels: nothing generalises, so there are mistakes.
    dataset = make_dataset(random_labels=True)
    run_id = make_run(dataset=dataset, epochs=2, gap_probes=False)
    assert run_training(run_id, settings, database, None) == "succeeded"
    manifest, val_idx = _val_labels(settings, dataset)
    with database.session() as session:
        body = evaluations.stored(session, run_id)["final"].body
    wrong = len(val_idx) - np.trace(np.array(body["confusion"]))
    assert wrong > 0
    assert len(body["mistakes"]) == min(wrong, 12)
    confidences = [m["confidence"] for m in body["mistakes"]]
    assert confidences == sorted(confidences, reverse=True)
    for mistake in body["mistakes"]:
        image = manifest.images[mistake["index"]]
        assert mistake["index"] in val_idx
        assert mistake["path"] == image.path
        assert mistake["true"] == CLASSES[image.label] != mistake["predicted"]
        assert mistake["confidence"] >= max(mistake["true_probability"], 1 / 3)


def test_the_best_model_of_a_mixed_precision_run_is_rebuilt_alike(tmp_path: Path) -> None:
    # Its optimizer is a LossScaleOptimizer, which the copy must rebuild.
    config = TrainConfig(**{**TINY, "mixed_precision": True})
    model = compile_model(make_model(config, len(CLASSES)), config)
    images = np.random.default_rng(0).random((8, *TINY["image_size"], 3), dtype=np.float32)
    model.fit(images, np.arange(8) % 3, verbose=0)  # a trained optimizer, as at an epoch's end
    path = tmp_path / "best.weights.h5"
    save_best(model, path, Best(1, 1.0))
    with warnings.catch_warnings():
        # No optimizer left half loaded, here or below.
        warnings.simplefilter("error", UserWarning)
        kept = best_model(model, path)
        assert isinstance(kept.optimizer, keras.optimizers.LossScaleOptimizer)
        np.testing.assert_allclose(
            kept.predict(images, verbose=0), model.predict(images, verbose=0)
        )
        kept.save(tmp_path / "best.keras")
        loaded = keras.models.load_model(tmp_path / "best.keras")
    assert loaded.output_shape == (None, len(CLASSES))


def _tiny_model() -> keras.Model:
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(loss="sparse_categorical_crossentropy")
    return model


def _epoch(tracker: BestWeights, model: keras.Model, epoch: int, val_loss: float | None) -> None:
    """What the recorder does: offer on the training thread, save what it answers."""
    best = tracker.offer(epoch, val_loss)
    if best is not None:
        tracker.save(model, best)


def test_best_weights_follow_val_loss_and_survive_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "best.weights.h5"
    model = _tiny_model()
    tracker = BestWeights(path)
    _epoch(tracker, model, 1, 0.9)
    assert read_best(path) == Best(1, pytest.approx(0.9))
    _epoch(tracker, model, 2, 0.95)  # worse: kept
    _epoch(tracker, model, 3, float("nan"))
    _epoch(tracker, model, 4, None)  # no validation
    assert read_best(path) == Best(1, pytest.approx(0.9))
    _epoch(tracker, model, 5, 0.7)
    assert read_best(path) == Best(5, pytest.approx(0.7))
    assert [p.name for p in tmp_path.iterdir()] == ["best.weights.h5"]  # no partial left

    # Resumed after epoch 6: the best so far stands; started over: forgotten.
    assert BestWeights(path, initial_epoch=6).best == Best(5, pytest.approx(0.7))
    restarted = BestWeights(path, initial_epoch=0)
    assert restarted.best is None
    _epoch(restarted, model, 1, 3.0)
    assert read_best(path) == Best(1, 3.0)


def test_a_best_weights_file_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    tracker = BestWeights(blocked / "best.weights.h5")
    _epoch(tracker, _tiny_model(), 1, 0.5)
    assert "could not save the weights of epoch 1" in caplog.text


def test_best_weights_load_back_into_the_model(tmp_path: Path) -> None:
    model = _tiny_model()
    path = tmp_path / "best.weights.h5"
    save_best(model, path, Best(2, 0.25))
    saved = [w.copy() for w in model.get_weights()]
    model.set_weights([w + 1 for w in saved])
    model.load_weights(path)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved, strict=True))
