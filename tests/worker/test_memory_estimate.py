"""The memory estimate counts the parameters of the very network the worker
builds (worker/training/model.py): equal to Keras's own count."""

from __future__ import annotations

import pytest

from backend.memory_estimate import parameter_count
from backend.train_config import TrainConfig
from worker.training.model import make_model


@pytest.mark.parametrize(
    "fields",
    [
        {
            "image_size": [8, 6],
            "color_mode": "grayscale",
            "filters": [2, 3],
            "convs_per_block": 1,
            "dense_units": 4,
        },
        {
            "image_size": [33, 47],
            "filters": [3, 5, 7],
            "convs_per_block": 3,
            "kernel_size": 5,
            "batch_norm": False,
            "dropout": 0.2,
            "augment": {"flip": True, "rotate": 0.1},
        },
        {},  # the question's network
    ],
)
def test_parameter_count_is_keras_count_params(fields: dict[str, object]) -> None:
    config = TrainConfig(**fields)
    assert parameter_count(config, 5) == make_model(config, 5).count_params()
