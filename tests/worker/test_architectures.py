"""Keras Applications in the worker: each builds at the smallest size it
takes, in RGB and grayscale, with every BatchNorm at the config's momentum;
each trains through run_training; one resumes from its checkpoint; the gap
probes measure one; the memory estimate counts what Keras counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from redis import Redis

from backend import artifacts, memory_estimate, runs
from backend.db import Database
from backend.diagnosis.run_facts import RunFacts
from backend.settings import Settings
from backend.train_config import APPLICATIONS, TrainConfig
from curvelab.probes import GapProbes, StatisticsPass
from tests.worker.conftest import CLASSES, MakeDataset, MakeRun, get_run, redelivered
from worker.training.architectures import apply_bn_momentum, batch_norm_layers
from worker.training.model import compile_model, make_model
from worker.training.runner import run_training

SIDE = 32  # the smallest an application takes
# Far from Keras's default (0.99), so a momentum left unset shows.
MOMENTUM = 0.8
# A few steps per epoch: 8 images a class, 80% of them in batches of 8.
PER_CLASS = 8
APP = {"image_size": (SIDE, SIDE), "bn_momentum": MOMENTUM, "batch_size": 8, "epochs": 1}


def config_for(architecture: str, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{**APP, "architecture": architecture, **overrides})


def momenta(model: keras.Model) -> list[float]:
    return [float(layer.momentum) for layer in batch_norm_layers(model)]


@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
@pytest.mark.parametrize("architecture", APPLICATIONS)
def test_each_application_builds_with_every_batchnorm_at_the_configs_momentum(
    architecture: str, color_mode: str
) -> None:
    config = config_for(architecture, color_mode=color_mode, dropout=0.2)
    model = make_model(config, num_classes=5)
    assert model.input_shape == (None, SIDE, SIDE, config.channels)
    assert model.output_shape == (None, 5)
    # The backbone is nested: its BatchNorms are not among the top layers.
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    found = momenta(model)
    assert len(found) > 10 and set(found) == {MOMENTUM}
    assert apply_bn_momentum(model, MOMENTUM) == len(found)
    images = np.random.default_rng(0).random((2, SIDE, SIDE, config.channels), "float32")
    probabilities = model.predict(images, verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The memory estimate's parameters are Keras's own, grayscale or not.
    assert memory_estimate.parameter_count(config, 5) == model.count_params()
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    parts = memory_estimate.estimate(config, num_images=100, num_classes=5).parts
    assert parts["gradients"] * memory_estimate.MIB / 4 == pytest.approx(trainable)


@pytest.mark.parametrize("architecture", APPLICATIONS)
def test_the_memory_estimates_activations_are_the_backbones_outputs(architecture: str) -> None:
    """BACKBONES' per-pixel figures: every layer's output in the backbone, at 224×224."""
    backbone = memory_estimate.BACKBONES[architecture]
    model = make_model(config_for(architecture, image_size=(224, 224)), 3)
    (nested,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    sizes = [
        math.prod(output.shape[1:])
        for layer in nested._flatten_layers(include_self=False)
        if not isinstance(layer, keras.Model | keras.layers.InputLayer)
        for output in keras.tree.flatten(layer.output)
    ]
    assert sum(sizes) / 224**2 == pytest.approx(backbone.kept_per_pixel, rel=0.01)
    assert max(sizes) / 224**2 == pytest.approx(backbone.largest_per_pixel, rel=0.01)


def test_an_application_in_mixed_precision_leaves_keras_policy_alone() -> None:
    model = make_model(config_for("mobilenet_v3_small", mixed_precision=True), 3)
    backbone = model.get_layer("MobileNetV3Small")
    assert {layer.dtype_policy.name for layer in backbone.layers[1:]} == {"mixed_float16"}
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the next run's default


def test_the_diagnosis_reads_an_application_as_batchnorm_throughout() -> None:
    # batch_norm and filters are conv_bn's knobs: no rule reads them here.
    facts = RunFacts.from_config(config_for("resnet50", batch_norm=False, filters=[4]))
    assert (facts.batch_norm, facts.bn_momentum) == (True, MOMENTUM)
    assert (facts.filters, facts.dense_units) == ((), None)
    conv_bn = RunFacts.from_config(TrainConfig(batch_norm=False, filters=[4]))
    assert (conv_bn.batch_norm, conv_bn.bn_momentum, conv_bn.filters) == (False, None, (4,))


def test_bn_momentum_survives_save_and_load(tmp_path: Path) -> None:
    model = make_model(config_for("mobilenet_v3_small"), 3)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert momenta(loaded) == momenta(model) and set(momenta(loaded)) == {MOMENTUM}


def test_the_gap_probes_measure_an_application() -> None:
    """Nested BatchNorms and branches (squeeze-and-excite, residual adds):
    the general pass, with finite values that leave the model as it was."""
    config = config_for("mobilenet_v3_small")
    model = compile_model(make_model(config, 3), config)
    rng = np.random.default_rng(1)
    images = rng.random((16, SIDE, SIDE, 3), "float32")
    labels = rng.integers(0, 3, 16)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert not StatisticsPass(model).compiled
    before = [np.array(v.numpy()) for v in model.variables]
    batches = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    values = GapProbes(train=batches[:1], val=batches[1:])(model, 1, {})
    measured = {key: value for key, value in values.items() if key != "probe_seconds"}
    assert {
        "train_eval_loss",
        "val_loss_recalibrated",
        "train_eval_loss_recalibrated",
        "bn_init_weight",
    } <= set(measured)
    assert all(value is not None and math.isfinite(value) for value in measured.values())
    assert values["bn_init_weight"] == pytest.approx(MOMENTUM**2)  # two steps
    after = [np.array(v.numpy()) for v in model.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("architecture", APPLICATIONS)
def test_each_application_trains_through_the_worker(
    architecture: str,
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_dataset: MakeDataset,
    make_run: MakeRun,
) -> None:
    dataset = make_dataset(per_class=(PER_CLASS,) * len(CLASSES))
    run_id = make_run(dataset, architecture=architecture, **APP)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"

    run = get_run(database, run_id)
    assert (run.status, run.epochs_done, run.error) == ("succeeded", 1, None)
    with database.session() as session:
        (row,) = runs.epoch_rows(session, run_id)
    for key in ("loss", "val_loss", "accuracy", "train_eval_loss", "val_loss_recalibrated"):
        assert math.isfinite(row[key]), (key, row)
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    assert model.output_shape == (None, len(CLASSES))
    assert set(momenta(model)) == {MOMENTUM}


def test_an_application_resumes_from_its_checkpoint(
    settings: Settings,
    database: Database,
    redis_client: Redis,
    make_dataset: MakeDataset,
    make_run: MakeRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = make_dataset(per_class=(PER_CLASS,) * len(CLASSES))
    run_id = make_run(dataset, architecture="mobilenet_v3_small", **APP)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"
    first = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    steps = int(first.optimizer.iterations)
    # As if the worker died after epoch 1 of 2 and the broker redelivered the task.
    redelivered(database, run_id, 2, monkeypatch)
    assert run_training(run_id, settings, database, redis_client) == "succeeded"

    run = get_run(database, run_id)
    assert (run.status, run.epochs_done, run.resumed_at_epoch) == ("succeeded", 2, 2)
    model = keras.models.load_model(settings.runs_dir / run_id / artifacts.MODEL_FILE)
    assert int(model.optimizer.iterations) == 2 * steps  # its optimizer state went on
    assert set(momenta(model)) == {MOMENTUM}  # the checkpoint kept the override
