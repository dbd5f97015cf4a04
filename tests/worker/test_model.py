"""make_model builds the configured network; compile_model its optimizer."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from backend.train_config import Augment, TrainConfig
from worker.training.model import compile_model, make_model

SMALL = TrainConfig(image_size=(16, 12), filters=[4, 8], convs_per_block=2, dense_units=8)


def layer_types(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_output_shape_names_and_layer_count() -> None:
    model = make_model(SMALL, num_classes=5)
    assert model.input_shape == (None, 16, 12, 3)
    assert model.output_shape == (None, 5)
    # input + 2 blocks × (2 × (conv + bn) + pool) + flatten, dense, predictions
    assert len(model.layers) == 1 + 2 * (2 * 2 + 1) + 3
    assert model.get_layer("block2_conv2").filters == 8
    assert model.get_layer("block1_bn1").momentum == pytest.approx(0.99)
    probabilities = model.predict(np.zeros((2, 16, 12, 3), "float32"), verbose=0)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_without_batch_norm_with_dropout_grayscale_augmented() -> None:
    config = SMALL.model_copy(
        update={
            "batch_norm": False,
            "dropout": 0.25,
            "color_mode": "grayscale",
            "augment": Augment(flip=True, rotate=0.1, zoom=0.1),
        }
    )
    model = make_model(config, num_classes=3)
    types = layer_types(model)
    assert model.input_shape == (None, 16, 12, 1)
    assert "BatchNormalization" not in types
    assert types.count("Dropout") == 3  # after each block and after the dense layer
    assert {"RandomFlip", "RandomRotation", "RandomZoom"} <= set(types)
    assert "BatchNormalization" in layer_types(make_model(SMALL, num_classes=3))
    assert "Dropout" not in layer_types(make_model(SMALL, num_classes=3))


def test_same_seed_same_weights() -> None:
    first = make_model(SMALL, 3).get_layer("block1_conv1").get_weights()[0]
    again = make_model(SMALL, 3).get_layer("block1_conv1").get_weights()[0]
    assert np.array_equal(first, again)


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_model(SMALL, num_classes=1)
    # Bypasses TrainConfig's own validation, as a stale stored config could.
    too_deep = SMALL.model_copy(update={"filters": [4, 4, 4, 4, 4]})
    with pytest.raises(ValueError, match="below 1×1"):
        make_model(too_deep, num_classes=3)


@pytest.mark.parametrize(
    ("name", "kind"), [("adam", "Adam"), ("sgd", "SGD"), ("rmsprop", "RMSprop")]
)
def test_compile_uses_the_configured_optimizer(name: str, kind: str) -> None:
    config = SMALL.model_copy(update={"optimizer": name, "learning_rate": 0.02, "momentum": 0.5})
    model = compile_model(make_model(config, 3), config)
    assert type(model.optimizer).__name__ == kind
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    if name == "sgd":
        assert model.optimizer.momentum == pytest.approx(0.5)
    assert model.loss == "sparse_categorical_crossentropy"


def test_mixed_precision_computes_in_float16_and_answers_in_float32() -> None:
    config = SMALL.model_copy(update={"mixed_precision": True, "dropout": 0.2})
    model = compile_model(make_model(config, 3), config)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers[1:]}
    assert policies.pop("predictions") == "float32"  # a float16 softmax saturates
    assert set(policies.values()) == {"mixed_float16"}
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    # Loss scaling keeps float16 gradients from underflowing.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.default_rng(0).random((8, 16, 12, 3), dtype=np.float32)
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).dtype == np.float32
    # Set layer by layer: the next run in this worker process builds in float32.
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert make_model(SMALL, 3).get_layer("block1_conv1").dtype_policy.name == "float32"


def test_jit_compile_as_configured() -> None:
    assert compile_model(make_model(SMALL, 3), SMALL).jit_compile is False
    config = SMALL.model_copy(update={"jit_compile": True})
    model = compile_model(make_model(config, 3), config)
    assert model.jit_compile is True
    x = np.zeros((4, 16, 12, 3), dtype=np.float32)
    model.fit(x, np.arange(4) % 3, epochs=1, verbose=0)  # XLA compiles it (on CPU too)
