"""curvelab.probes on users' models: the compiled and the general statistics
passes agree, the general one gives what a hand computation gives on a
residual model, nested BatchNorm layers count, the loss is the compiled one
(as ``evaluate`` reports it), and the model is left bit for bit as it was.

Tiny models on random data: they run on two cores, on any Keras backend
(tests/client/test_backends.py runs this file again under JAX)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from curvelab import probes
from curvelab.probes import GapProbes, StatisticsPass, batchnorm_layers, bn_init_weight
from curvelab.samples import fixed_batches

RECALIBRATED = {
    "train_eval_loss_recalibrated",
    "train_eval_accuracy_recalibrated",
    "val_loss_recalibrated",
    "val_accuracy_recalibrated",
}
CLASSES = 3


def _data(count: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, count)
    x = rng.normal(0.0, 1.0, (count, 6)).astype("float32") + y[:, None].astype("float32")
    return x, y


def _fitted(model: keras.Model, loss: Any = "sparse_categorical_crossentropy", **kw: Any) -> Any:
    """Compiled and fitted for 3 steps: moved statistics, an optimizer state."""
    x, y = _data()
    labels = kw.pop("labels", y)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss, metrics=["accuracy"], **kw)
    model.fit(x, labels, batch_size=16, epochs=1, verbose=0)
    return model


def _chain(momentum: float = 0.9) -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape=(6,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum)(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(5, activation="relu")(x)
    x = keras.layers.BatchNormalization(momentum=0.99)(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def _residual() -> keras.Model:
    keras.utils.set_random_seed(2)
    inputs = keras.Input(shape=(6,))
    h = keras.layers.Dense(6, name="dense_a")(inputs)
    h = keras.layers.BatchNormalization(name="bn_a")(h)
    s = keras.layers.Add(name="add")([h, inputs])
    s = keras.layers.BatchNormalization(name="bn_b")(s)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="out")(s)
    return keras.Model(inputs, outputs)


def _nested() -> keras.Model:
    keras.utils.set_random_seed(3)
    block = keras.Sequential(
        [keras.Input(shape=(6,)), keras.layers.Dense(8), keras.layers.BatchNormalization()],
        name="block",
    )
    inputs = keras.Input(shape=(6,))
    x = keras.layers.Activation("relu")(block(inputs))
    x = keras.layers.BatchNormalization(name="outer_bn")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs)


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(8, activation="relu")
        self.bn = keras.layers.BatchNormalization()
        self.out = keras.layers.Dense(CLASSES, activation="softmax")

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.out(self.bn(self.dense(inputs), training=training))


def _state(model: keras.Model) -> list[np.ndarray]:
    variables = [*model.variables, *model.optimizer.variables]
    variables += [v for metric in model.metrics for v in metric.variables]
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _batches(count: int = 32, seed: int = 0, batch: int = 32) -> list[tuple[Any, Any]]:
    return fixed_batches(_data(count, seed), images=count, batch_size=batch)


def _recalibrated_evaluate(model: keras.Model, bn: list[Any], x: Any, y: Any) -> dict[str, Any]:
    statistics = StatisticsPass(model, general=True).run(bn)[0]
    with probes.replaced_statistics(model, statistics):
        return model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)


def _assert_statistics_close(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b) > 0
    for (mean_a, var_a), (mean_b, var_b) in zip(a, b, strict=True):
        np.testing.assert_allclose(mean_a, mean_b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var_a, var_b, rtol=1e-5, atol=1e-6)


def test_the_compiled_and_the_general_pass_agree_on_a_chain() -> None:
    model = _fitted(_chain())
    compiled, general = StatisticsPass(model), StatisticsPass(model, general=True)
    assert compiled.compiled and not general.compiled
    for batches in (_batches(), _batches(batch=10)):  # one batch, then four
        (stats_c, scores_c), (stats_g, scores_g) = compiled.run(batches), general.run(batches)
        _assert_statistics_close(stats_c, stats_g)
        assert (scores_c is None) == (scores_g is None) == (len(batches) > 1)
        if scores_c is not None and scores_g is not None:
            assert scores_c["loss"] == pytest.approx(scores_g["loss"], rel=1e-5)
            assert scores_c["accuracy"] == scores_g["accuracy"]


def test_the_general_pass_on_a_residual_model_is_the_hand_computation() -> None:
    model = _fitted(_residual())
    assert not StatisticsPass(model).compiled  # Add takes two inputs: not a chain
    x, _ = _data(32)
    (mean_a, var_a), (mean_b, var_b) = StatisticsPass(model).run(_batches())[0]
    # By hand, in numpy: bn_a normalised by its batch's moments, then the add.
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer("dense_a").weights)
    h = x.astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(mean_a, h.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var_a, h.var(0), rtol=1e-4, atol=1e-5)
    bn = model.get_layer("bn_a")
    gamma, beta = (keras.ops.convert_to_numpy(w) for w in (bn.gamma, bn.beta))
    s = gamma * (h - h.mean(0)) / np.sqrt(h.var(0) + bn.epsilon) + beta + x
    np.testing.assert_allclose(mean_b, s.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var_b, s.var(0), rtol=1e-4, atol=1e-5)
    # Neither moving average moved.
    moving = keras.ops.convert_to_numpy(bn.moving_mean)
    assert not np.allclose(moving, h.mean(0), atol=1e-3)


def test_batchnorm_inside_a_nested_model_counts_and_is_recalibrated() -> None:
    model = _fitted(_nested())
    layers = batchnorm_layers(model)
    assert [layer.name for layer in layers].count("outer_bn") == 1 and len(layers) == 2
    x, y = _data(32, seed=1)
    train = fixed_batches((x, y), images=32, batch_size=16)
    values = GapProbes(train=train)(model, 1, {})
    expected = _recalibrated_evaluate(model, train, x, y)
    assert values["train_eval_loss_recalibrated"] == pytest.approx(expected["loss"], rel=1e-5)
    assert values["train_eval_accuracy_recalibrated"] == pytest.approx(expected["accuracy"])


def test_a_subclassed_model_is_probed_by_the_general_pass() -> None:
    model = _fitted(Subclassed())
    x, y = _data(32, seed=2)
    train = fixed_batches((x, y), images=32, batch_size=32)
    values = GapProbes(train=train)(model, 1, {})
    expected = _recalibrated_evaluate(model, train, x, y)
    assert values["train_eval_loss_recalibrated"] == pytest.approx(expected["loss"], rel=1e-5)
    plain = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    assert values["train_eval_loss"] == pytest.approx(plain["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "loss",
    [
        "categorical_crossentropy",
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ],
    ids=["one-hot", "one-hot-object", "sparse-logits"],
)
def test_the_loss_is_the_compiled_one_as_evaluate_reports_it(loss: Any) -> None:
    keras.utils.set_random_seed(4)
    one_hot = "sparse" not in str(getattr(loss, "name", loss))
    activation = "softmax" if one_hot else None  # logits for from_logits=True
    regularizer = keras.regularizers.L2(0.01)  # evaluate adds it to the loss, so must we
    model = keras.Sequential(
        [
            keras.Input(shape=(6,)),
            keras.layers.Dense(8, activation="relu", kernel_regularizer=regularizer),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(CLASSES, activation=activation),
        ]
    )
    x, y = _data()
    labels = keras.ops.convert_to_numpy(keras.ops.one_hot(y, CLASSES)) if one_hot else y
    _fitted(model, loss=loss, labels=labels)
    sample = fixed_batches((x, labels), images=32, batch_size=16)
    values = GapProbes(train=sample, val=sample)(model, 1, {})
    evaluated = model.evaluate(x[:32], labels[:32], batch_size=16, return_dict=True, verbose=0)
    assert values["train_eval_loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert values["train_eval_accuracy"] == pytest.approx(evaluated["accuracy"])
    assert set(values) >= RECALIBRATED
    # A Sequential model is a chain: the compiled pass, which the general one confirms.
    assert StatisticsPass(model).compiled
    _assert_statistics_close(
        StatisticsPass(model).run(sample)[0], StatisticsPass(model, general=True).run(sample)[0]
    )


def test_a_single_sigmoid_unit_is_thresholded_and_a_regression_has_no_accuracy() -> None:
    x, y = _data()
    binary = (y > 0).astype("float32")
    for logits in (False, True):
        keras.utils.set_random_seed(5)
        model = keras.Sequential(
            [
                keras.Input(shape=(6,)),
                keras.layers.Dense(1, activation=None if logits else "sigmoid"),
            ]
        )
        loss = keras.losses.BinaryCrossentropy(from_logits=logits)
        model.compile(
            optimizer="sgd",
            loss=loss,
            metrics=[keras.metrics.BinaryAccuracy(threshold=0.0 if logits else 0.5)],
        )
        sample = fixed_batches((x, binary), images=48, batch_size=48)
        values = GapProbes(train=sample)(model, 1, {})
        evaluated = model.evaluate(x, binary, batch_size=48, return_dict=True, verbose=0)
        assert values["train_eval_loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
        assert values["train_eval_accuracy"] == pytest.approx(evaluated["binary_accuracy"])
    model = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    values = GapProbes(train=fixed_batches((x, y * 1.5), images=48, batch_size=48))(model, 1)
    assert set(values) == {"train_eval_loss", "probe_seconds"}


def test_probes_restore_the_model_bit_for_bit() -> None:
    model = _fitted(_residual())
    before = _state(model)
    sample = _batches(batch=10)
    probe = GapProbes(train=sample, val=_batches(seed=3), val_sample=_batches(16, seed=4))
    values = probe(model, 1, {"val_loss": 1.0, "val_accuracy": 0.5})
    assert RECALIBRATED | {"bn_init_weight"} <= set(values)
    after = _state(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    # The BatchNorm layers' own call is back: inference reads the moving statistics.
    assert all("call" not in layer.__dict__ for layer in batchnorm_layers(model))
    x, y = _data(32)
    again = model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0)
    assert again["loss"] == pytest.approx(values["train_eval_loss"], rel=1e-5)


def test_the_lag_on_a_validation_sample_comes_off_the_epoch_numbers() -> None:
    model = _fitted(_chain())
    sample = _batches(16, seed=5)
    probe = GapProbes(train=_batches(), val_sample=sample)
    logs = {"val_loss": 2.0, "val_accuracy": 0.25}
    values = probe(model, 1, logs)
    lagging = probes._scores(model, sample)
    statistics = StatisticsPass(model).run(_batches())[0]
    with probes.replaced_statistics(model, statistics):
        recalibrated = probes._scores(model, sample)
    expected = 2.0 - lagging["loss"] + recalibrated["loss"]
    assert values["val_loss_recalibrated"] == pytest.approx(max(expected, 0.0), rel=1e-5)
    accuracy = 0.25 - lagging["accuracy"] + recalibrated["accuracy"]
    assert values["val_accuracy_recalibrated"] == pytest.approx(min(max(accuracy, 0.0), 1.0))
    # Without the epoch's numbers and without the whole set: the sample's own.
    alone = probe(model, 1, {})
    assert alone["val_loss_recalibrated"] == pytest.approx(recalibrated["loss"], rel=1e-5)


def test_without_validation_data_the_lag_of_the_training_sample_comes_off_val_loss() -> None:
    model = _fitted(_chain())
    probe = GapProbes(train=_batches())
    values = probe(model, 1, {"val_loss": 1.0, "val_accuracy": 0.5})
    lag = values["train_eval_loss"] - values["train_eval_loss_recalibrated"]
    assert values["val_loss_recalibrated"] == pytest.approx(max(1.0 - lag, 0.0), rel=1e-5)
    shift = values["train_eval_accuracy"] - values["train_eval_accuracy_recalibrated"]
    assert values["val_accuracy_recalibrated"] == pytest.approx(min(max(0.5 - shift, 0), 1))
    assert any("no validation data" in sentence for sentence in probe.missing)
    assert (probe.train_images, probe.bn_images, probe.val_images) == (32, 32, None)
    # Without the epoch's validation numbers there is nothing to correct.
    assert "val_loss_recalibrated" not in probe(model, 1, {})


def test_a_model_without_batchnorm_gets_no_recalibrated_values() -> None:
    model = keras.Sequential([keras.Input(shape=(6,)), keras.layers.Dense(CLASSES, "softmax")])
    _fitted(model)
    probe = GapProbes(train=_batches(), val=_batches(seed=1))
    assert set(probe(model, 1)) == {"train_eval_loss", "train_eval_accuracy", "probe_seconds"}
    assert bn_init_weight(model) is None
    assert any("no trainable BatchNormalization" in sentence for sentence in probe.missing)


def test_bn_init_weight_is_the_most_lagging_layers_own() -> None:
    model = _fitted(_chain(momentum=0.5))  # layers at 0.5 and 0.99; 3 steps of fit
    assert bn_init_weight(model) == pytest.approx(0.99**3)
    frozen = batchnorm_layers(model)[1]
    frozen.trainable = False  # a frozen layer never lags: it is not counted
    assert bn_init_weight(model) == pytest.approx(0.5**3)


def test_a_failing_probe_warns_and_never_raises(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _fitted(_chain())
    before = _state(model)
    real_scores = probes._scores

    def fails_on_validation(model: keras.Model, batches: Any) -> dict[str, float]:
        if batches is validation:
            raise RuntimeError("out of memory")
        return real_scores(model, batches)

    validation = _batches(seed=1)
    monkeypatch.setattr(probes, "_scores", fails_on_validation)
    values = GapProbes(train=_batches(), val=validation)(model, 3)
    assert set(values) == {
        "train_eval_loss",
        "train_eval_accuracy",
        "bn_init_weight",
        "probe_seconds",
    }
    assert "gap probes failed at epoch 3" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(before, _state(model), strict=True))
