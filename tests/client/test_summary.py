"""The FitSummary the callback builds from the user's own Keras objects."""

from __future__ import annotations

import keras
import numpy as np

from curvelab import summary

PARAMS = {"epochs": 3, "steps": 4, "verbose": 0}


def _nested_model(optimizer: object = "adam") -> keras.Model:
    block = keras.Sequential(
        [
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.SpatialDropout2D(0.1),
        ],
        name="block",
    )
    inputs = keras.Input(shape=(16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.99)(x)
    x = block(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    outputs = keras.layers.Dense(5, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="outer")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _by_name(layers: list[dict]) -> dict[str, dict]:
    return {layer["name"]: layer for layer in layers}


def test_layers_of_a_functional_model_with_a_nested_sequential() -> None:
    model = _nested_model()
    body = summary.fit_summary(
        model, PARAMS, batch_size=8, train_images=32, val_images=None, probes={"missing": []}
    )
    layers = body["model"]["layers"]
    named = _by_name(layers)
    types = [layer["type"] for layer in layers]
    assert types.count("BatchNormalization") == 2
    # The nested model is listed, then its layers with it as parent.
    assert named["block"]["type"] == "Sequential" and named["block"]["parent"] is None
    inner = [layer for layer in layers if layer["parent"] == "block"]
    assert [layer["type"] for layer in inner] == [
        "Conv2D",
        "BatchNormalization",
        "SpatialDropout2D",
    ]
    assert [layer["momentum"] for layer in layers if layer["type"] == "BatchNormalization"] == [
        0.99,
        0.9,
    ]
    dropout = [layer for layer in layers if "rate" in layer]
    assert sorted(layer["rate"] for layer in dropout) == [0.1, 0.3]
    assert inner[0]["filters"] == 8 and inner[0]["activation"] == "relu"
    dense = next(layer for layer in layers if layer["type"] == "Dense")
    assert dense["units"] == 5 and dense["activation"] == "softmax"
    assert dense["output_shape"] == [None, 5]
    assert named["block"]["output_shape"] == [None, 16, 16, 8]
    # Parameters: the top-level layers add up to the model's (BN's moving stats untrainable).
    top = sum(layer["params"] for layer in layers if layer["parent"] is None)
    assert top == body["model"]["params"] == model.count_params()
    bn = next(layer for layer in layers if layer["type"] == "BatchNormalization")
    assert bn["params"] == 16 and bn["trainable_params"] == 8
    assert body["num_classes"] == 5
    assert body["input_shape"] == [None, 16, 16, 1]
    assert body["loss"] == "sparse_categorical_crossentropy"
    assert body["metrics"] == ["accuracy"]
    assert body["steps_per_epoch"] == 4 and body["epochs"] == 3 and body["batch_size"] == 8
    assert body["backend"] == keras.backend.backend()
    assert body["keras_version"] == keras.__version__


def test_optimizer_with_a_schedule_sends_its_config_and_no_learning_rate() -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    model = _nested_model(keras.optimizers.SGD(learning_rate=schedule, momentum=0.8))
    optimizer = summary.optimizer_summary(model.optimizer)
    assert optimizer is not None
    assert optimizer["name"] == "SGD"
    assert optimizer["learning_rate"] is None
    assert optimizer["momentum"] == 0.8
    assert optimizer["config"]["learning_rate"]["class_name"] == "ExponentialDecay"
    assert optimizer["config"]["learning_rate"]["config"]["decay_steps"] == 10


def test_optimizer_with_a_constant_learning_rate() -> None:
    model = _nested_model(keras.optimizers.Adam(learning_rate=3e-4))
    optimizer = summary.optimizer_summary(model.optimizer)
    assert optimizer is not None
    assert optimizer["name"] == "Adam"
    assert np.isclose(optimizer["learning_rate"], 3e-4)
    assert optimizer["momentum"] is None


def test_class_names_give_the_class_count_and_json_holds_anything() -> None:
    model = _nested_model()
    assert summary.num_classes(model, ["a", "b"]) == 2
    assert summary.jsonable({"a": np.float32(1.5), "b": float("nan"), "c": object()})["a"] == 1.5
    assert summary.jsonable({"b": float("inf")}) == {"b": None}
