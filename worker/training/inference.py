"""A finished run's model on one image, for the predict worker.

The image takes the training images' own path: written to a file and read by
``pipeline.image_dataset`` with the run's TrainConfig, so decoding, colour
mode, resizing and scaling cannot differ from what the model was trained and
validated on. An external run (a user's own model.fit) has no TrainConfig:
its image is fed the same way, at its model's input size and channels.
Models stay loaded in a small LRU cache: a user trying several images waits
for the load once. Always with ``safe_mode``: an external run's model is an
uploaded file, and a .keras file may carry a lambda's bytecode.
"""

from __future__ import annotations

import logging
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import keras

from backend import evaluations, runs
from backend.datasets.layout import ImageEntry
from backend.db import Database, Run
from backend.settings import Settings
from backend.train_config import TrainConfig, read_stored_config
from worker.training.pipeline import image_dataset

log = logging.getLogger(__name__)

MODELS_CACHED = 3


class ModelCache:
    """The last few models used, by file and modification time: a model
    saved again (a redelivered run) is loaded afresh."""

    def __init__(self, size: int = MODELS_CACHED) -> None:
        if size < 1:
            raise ValueError(f"a cache needs room for a model, got size {size}")
        self.size = size
        self._models: OrderedDict[tuple[str, int], keras.Model] = OrderedDict()

    def get(self, path: Path) -> keras.Model:
        key = (str(path), path.stat().st_mtime_ns)
        model = self._models.pop(key, None)
        if model is None:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
            log.info("loaded %s", path)
        self._models[key] = model
        while len(self._models) > self.size:
            self._models.popitem(last=False)
        return model

    def __len__(self) -> int:
        return len(self._models)


def probabilities(model: keras.Model, image: bytes, config: TrainConfig) -> list[float]:
    """The model's class probabilities for one image file's bytes."""
    with tempfile.TemporaryDirectory(prefix="curvelab-predict-") as folder:
        # No extension: tf.io.decode_image reads the format from the bytes.
        (Path(folder) / "image").write_bytes(image)
        entry = ImageEntry(path="image", label=0, sha1="", width=0, height=0, mode="")
        output = model.predict(image_dataset(Path(folder), [entry], config), verbose=0)
    return [float(p) for p in output[0]]


def config_for_model(model: keras.Model) -> TrainConfig | str:
    """The preprocessing of an external run's model: the defaults at its
    input's height, width and channels (1: grayscale, 3: RGB); or why its
    input is no image this can feed."""
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    if len(shape) != 4 or shape[3] not in (1, 3) or None in shape[1:3]:
        return f"the model's input {list(shape) or 'list'} is not one image (height, width, 1 or 3)"
    color = "grayscale" if shape[3] == 1 else "rgb"
    # model_copy, not validation: the network knobs' bounds are no concern here.
    return TrainConfig().model_copy(
        update={"image_size": (int(shape[1]), int(shape[2])), "color_mode": color}
    )


def predict_reply(
    run_id: str,
    weights: evaluations.Weights,
    image: bytes,
    settings: Settings,
    db: Database,
    models: ModelCache,
) -> dict[str, Any]:
    """The reply to one request: ``{"status": 200, "probabilities": [...]}``,
    or the status and detail the API answers with."""
    with db.session() as session:
        run = session.get(Run, run_id)
        stored = None if run is None else run.config
        external = run is not None and run.source == runs.EXTERNAL
    if stored is None:
        return {"status": 404, "detail": "run not found"}
    path = evaluations.model_path(settings.runs_dir, run_id, weights)
    if not path.is_file():
        return {"status": 409, "detail": f"the run has no {weights} model"}
    if not external:
        model = models.get(path)
        config: TrainConfig | str = read_stored_config(stored).config
    else:
        try:
            model = models.get(path)
        except Exception as exc:  # the user's file: a custom layer, a lambda (safe_mode)
            return {"status": 409, "detail": f"the run's uploaded model does not load here: {exc}"}
        config = config_for_model(model)
    if isinstance(config, str):
        return {"status": 409, "detail": config}
    # The API stored the image as ingest would: a decoder error here is the
    # worker's fault, answered as such by the task.
    found = probabilities(model, image, config)
    return {"status": 200, "probabilities": found}
