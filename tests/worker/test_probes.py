"""Gap probes: they measure without changing the model, their precise-BN
statistics are what BatchNorm's inputs really are, and a real run records
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
from tests.worker.conftest import STEPS, TINY, MakeRun
from worker.training import probes
from worker.training.model import compile_model, make_model
from worker.training.pipeline import build_pipelines
from worker.training.probes import GapProbes, build_gap_probes, precise_statistics
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

    def broken(model: keras.Model, _batches: object) -> None:
        for layer in probes.batchnorm_layers(model):  # half-way through, then a failure
            layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, dtype="float32") + 7)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(probes, "precise_statistics", broken)
    with caplog.at_level(logging.WARNING, logger=probes.__name__):
        values = probe(model, 2)
    assert set(values) == {
        "train_eval_loss",
        "train_eval_accuracy",
        "bn_init_weight",
        "probe_seconds",
    }
    assert "gap probes failed at epoch 2" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(model), strict=True))


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
