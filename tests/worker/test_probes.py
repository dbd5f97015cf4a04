"""Gap probes: they measure without changing the model, their precise-BN
statistics are what BatchNorm's inputs really are, their one-pass shortcuts
give what evaluating with those statistics gives, and a real run records
them every epoch, consistent with the saved model."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import pytest
from redis import Redis

from backend import artifacts, runs
from backend.datasets.layout import Manifest, dataset_dir
from backend.datasets.split import stratified_split
from backend.db import Database
from backend.settings import Settings
from backend.train_config import Augment, TrainConfig
from curvelab import probes as measured
from curvelab.probes import precise_statistics
from tests.worker.conftest import STEPS, TINY, MakeRun
from worker.training import probes
from worker.training.model import compile_model, make_model
from worker.training.pipeline import build_pipelines
from worker.training.probes import DatasetProbes as GapProbes
from worker.training.probes import build_gap_probes
from worker.training.runner import run_training

PROBE_KEYS = {
    "train_eval_loss",
    "train_eval_accuracy",
    "val_loss_recalibrated",
    "val_accuracy_recalibrated",
    "train_eval_loss_recalibrated",
    "train_eval_accuracy_recalibrated",
    "bn_init_weight",
    "probe_seconds",
}


def _trained(
    settings: Settings, dataset_id: str, **overrides: Any
) -> tuple[keras.Model, GapProbes]:
    """A model after one epoch of fit (moved BatchNorm statistics, optimizer
    state) and probes over the tiny dataset."""
    config = TrainConfig(**{**TINY, **overrides})
    folder = dataset_dir(settings.datasets_dir, dataset_id)
    images = Manifest.read(folder).images
    train, val = stratified_split([image.label for image in images], 0.2, config.seed)
    data = build_pipelines(folder, images, train.tolist(), val.tolist(), config, config.seed)
    model = compile_model(make_model(config, 3), config)
    model.fit(data.train, epochs=1, shuffle=False, verbose=0)
    return model, build_gap_probes(folder, images, train.tolist(), data.val, config, settings)


def _state(model: keras.Model) -> list[np.ndarray]:
    # Weights, BatchNorm statistics, dropout/augmentation seeds, optimizer slots.
    return [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]


def test_probes_leave_every_variable_bit_identical(settings: Settings, dataset_id: str) -> None:
    model, probe = _trained(settings, dataset_id, dropout=0.3, augment=Augment(flip=True, zoom=0.1))
    before = _state(model)
    val_before = model.evaluate(probe.val, return_dict=True, verbose=0)
    values = probe(model, 1)
    assert set(values) == PROBE_KEYS
    after = _state(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    # The compiled graph reads the restored statistics, not the re-estimated ones.
    assert model.evaluate(probe.val, return_dict=True, verbose=0) == val_before
    assert values["bn_init_weight"] == pytest.approx(0.9**STEPS)
    train_eval = model.evaluate(probe.train_sample, return_dict=True, verbose=0)
    assert values["train_eval_loss"] == pytest.approx(train_eval["loss"])
    assert values["val_loss_recalibrated"] != pytest.approx(val_before["loss"])
    assert values["probe_seconds"] > 0


def test_precise_statistics_are_the_inference_inputs_of_batchnorm(
    settings: Settings, dataset_id: str
) -> None:
    # Dropout and augmentation on: the estimate must see neither.
    model, probe = _trained(settings, dataset_id, dropout=0.5, augment=Augment(flip=True, zoom=0.2))
    first = precise_statistics(model, probe.bn_sample)
    again = precise_statistics(model, probe.bn_sample)
    for (mean, variance), (mean2, variance2) in zip(first, again, strict=True):
        assert np.array_equal(mean, mean2) and np.array_equal(variance, variance2)
    # The first BatchNorm's input needs no BatchNorm before it: its batch
    # moments, averaged by batch size, from the images as they are.
    conv = keras.Model(model.inputs, model.get_layer("block1_conv1").output)
    means, variances, counts = [], [], []
    for images, _ in probe.bn_sample:
        mean, variance = keras.ops.moments(conv(images, training=False), axes=[0, 1, 2])
        means.append(keras.ops.convert_to_numpy(mean))
        variances.append(keras.ops.convert_to_numpy(variance))
        counts.append(int(images.shape[0]))
    np.testing.assert_allclose(first[0][0], np.average(means, axis=0, weights=counts), rtol=1e-5)
    np.testing.assert_allclose(
        first[0][1], np.average(variances, axis=0, weights=counts), rtol=1e-5
    )


def _with_precise_statistics(model: keras.Model, probe: GapProbes, data: Any) -> dict[str, float]:
    """``data`` evaluated the long way: statistics re-estimated, assigned, evaluated."""
    with measured.replaced_statistics(model, precise_statistics(model, probe.bn_sample)):
        return model.evaluate(data, return_dict=True, verbose=0)


@pytest.mark.parametrize("max_batch", [probes.MAX_PROBE_BATCH, 16])
def test_the_statistics_pass_gives_the_recalibrated_numbers(
    settings: Settings, dataset_id: str, monkeypatch: pytest.MonkeyPatch, max_batch: int
) -> None:
    # One batch: the pass's own predictions are the recalibrated training
    # sample. Several (a sample larger than a probe batch): it is evaluated.
    monkeypatch.setattr(probes, "MAX_PROBE_BATCH", max_batch)
    model, probe = _trained(settings, dataset_id, dropout=0.3)
    batches = len(list(probe.bn_sample))
    assert batches == (1 if max_batch > 57 else 4)
    values = probe(model, 1)
    train = _with_precise_statistics(model, probe, probe.train_sample)
    val = _with_precise_statistics(model, probe, probe.val)
    assert values["train_eval_loss_recalibrated"] == pytest.approx(train["loss"], rel=1e-5)
    assert values["train_eval_accuracy_recalibrated"] == pytest.approx(train["accuracy"])
    assert values["val_loss_recalibrated"] == pytest.approx(val["loss"], rel=1e-5)
    assert values["val_accuracy_recalibrated"] == pytest.approx(val["accuracy"])


def test_a_large_validation_set_has_its_lag_measured_on_a_sample(
    settings: Settings, dataset_id: str
) -> None:
    settings.probe_val_images = 6  # of the 15 validation images
    model, probe = _trained(settings, dataset_id)
    assert probe.val_sample is not None and len(list(probe.val_sample.unbatch())) == 6
    epoch = model.evaluate(probe.val, return_dict=True, verbose=0)
    logs = {"val_loss": epoch["loss"], "val_accuracy": epoch["accuracy"]}
    values = probe(model, 1, logs)
    # The lag on the sample (moving statistics minus re-estimated ones), off
    # the epoch's own validation numbers.
    lagging = model.evaluate(probe.val_sample, return_dict=True, verbose=0)
    recalibrated = _with_precise_statistics(model, probe, probe.val_sample)
    expected = epoch["loss"] - lagging["loss"] + recalibrated["loss"]
    assert values["val_loss_recalibrated"] == pytest.approx(max(expected, 0.0), rel=1e-5)
    accuracy = epoch["accuracy"] - lagging["accuracy"] + recalibrated["accuracy"]
    assert values["val_accuracy_recalibrated"] == pytest.approx(min(max(accuracy, 0.0), 1.0))
    # Without the epoch's numbers (a probe called on its own), the whole set.
    whole = _with_precise_statistics(model, probe, probe.val)
    assert probe(model, 1)["val_loss_recalibrated"] == pytest.approx(whole["loss"], rel=1e-5)


def test_probes_measure_a_mixed_precision_model_and_leave_it_alone(
    settings: Settings, dataset_id: str
) -> None:
    model, probe = _trained(settings, dataset_id, mixed_precision=True)
    before = _state(model)
    values = probe(model, 1)
    assert set(values) == PROBE_KEYS
    assert all(np.isfinite(value) for value in values.values() if value is not None)
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(model), strict=True))
    train = _with_precise_statistics(model, probe, probe.train_sample)
    assert values["train_eval_loss_recalibrated"] == pytest.approx(train["loss"], rel=1e-3)


def test_a_model_without_batchnorm_gets_only_the_training_sample(
    settings: Settings, dataset_id: str
) -> None:
    model, probe = _trained(settings, dataset_id, batch_norm=False)
    assert set(probe(model, 1)) == {"train_eval_loss", "train_eval_accuracy", "probe_seconds"}


def test_a_failing_probe_warns_restores_and_keeps_what_it_measured(
    settings: Settings,
    dataset_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, probe = _trained(settings, dataset_id)
    before = _state(model)
    real_scores = measured._scores

    def scores_once(model: keras.Model, data: Any) -> dict[str, float]:
        # The training sample goes through; validation, with the statistics
        # replaced, runs out of memory.
        if any(np.any(layer.moving_mean.numpy() != m) for layer, m in zip_means(model, before)):
            raise RuntimeError("out of memory")
        return real_scores(model, data)

    monkeypatch.setattr(measured, "_scores", scores_once)
    with caplog.at_level(logging.WARNING, logger=measured.__name__):
        values = probe(model, 2)
    assert set(values) == {
        "train_eval_loss",
        "train_eval_accuracy",
        "bn_init_weight",
        "probe_seconds",
    }
    assert "gap probes failed at epoch 2" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(model), strict=True))


def zip_means(model: keras.Model, state: list[np.ndarray]) -> list[tuple[Any, np.ndarray]]:
    """Each BatchNorm layer with its moving mean as ``state`` (from ``_state``) holds it."""
    by_path = dict(zip([v.path for v in model.variables], state, strict=False))
    return [(layer, by_path[layer.moving_mean.path]) for layer in measured.batchnorm_layers(model)]


def test_a_real_run_records_probes_that_agree_with_its_saved_model(
    settings: Settings, database: Database, redis_client: Redis, make_run: MakeRun, dataset_id: str
) -> None:
    run_id = make_run(epochs=2)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    with database.session() as session:
        rows = runs.epoch_rows(session, run_id)
    for row in rows:
        assert set(row) >= PROBE_KEYS, row
        assert row["bn_init_weight"] == pytest.approx(0.9 ** (STEPS * row["epoch"]))
        assert row["probe_seconds"] > 0
    # Probing the saved model again reproduces the last epoch's numbers.
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    _, probe = _trained(settings, dataset_id)
    values = probe(model, 2)
    for key in PROBE_KEYS - {"probe_seconds"}:
        assert values[key] == pytest.approx(rows[-1][key], rel=1e-5), key
    assert model.evaluate(probe.val, return_dict=True, verbose=0)["loss"] == pytest.approx(
        rows[-1]["val_loss"], rel=1e-5
    )


def test_recalibration_does_not_depend_on_the_moving_averages(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    # BatchNorm's momentum changes only its moving averages: the same training,
    # a different val_loss, the same validation once statistics are re-estimated.
    histories = []
    for momentum in (0.9, 0.99):
        run_id = make_run(epochs=2, bn_momentum=momentum)
        assert run_training(run_id, settings, database, None) == "succeeded"
        with database.session() as session:
            histories.append(runs.epoch_rows(session, run_id))
    fast, slow = histories
    for a, b in zip(fast, slow, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss_recalibrated"] == pytest.approx(b["val_loss_recalibrated"], rel=1e-3)
        assert (
            b["val_loss"] - b["val_loss_recalibrated"] > a["val_loss"] - a["val_loss_recalibrated"]
        )


def test_gap_probes_off_records_none_of_them(
    settings: Settings, database: Database, make_run: MakeRun
) -> None:
    run_id = make_run(epochs=1, gap_probes=False)
    assert run_training(run_id, settings, database, None) == "succeeded"
    with database.session() as session:
        (row,) = runs.epoch_rows(session, run_id)
    assert not PROBE_KEYS & set(row)
