"""GPU: the full seed network's training speed, curvelab against bare Keras.

The question's network (4 blocks of Conv+BN ×2, filters 64–512, Dense 512,
50×55×3, batch 128) trains on synthetic images in memory, on whatever
accelerator Keras finds, in fp32 and in mixed precision, two ways:

- ``keras``: the network written out with plain Keras layers, ``model.fit``
  (mixed precision the usual way: the global ``mixed_float16`` policy);
- ``curvelab``: ``make_model``/``compile_model`` from a TrainConfig
  (``mixed_precision``, ``jit_compile``) with the RunRecorder attached, as the
  worker trains it: batch points, a checkpoint, a SQL row and an event per
  epoch (SQLite in a temporary folder; events go nowhere).

Images/s is the training images over the median epoch time, epochs 2..N.
Self-contained and short (a few minutes on a GPU); the Keras backend is
``KERAS_BACKEND`` (``jax`` where no GPU build of TensorFlow is at hand: the
data are numpy arrays, no tf.data). From the repository root:

    KERAS_BACKEND=jax .venv/bin/python -m benchmarks.gpu
    .venv/bin/python -m benchmarks.gpu --tiny      # a CPU smoke run: small and quick

Needs keras, numpy, pydantic(-settings), sqlalchemy and redis (imported,
never connected to), and the backend's accelerator build (jax[cuda12], or
tensorflow[and-cuda]).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from backend import runs
from backend.db import Database, Dataset
from backend.settings import Settings
from backend.train_config import TrainConfig
from benchmarks.bare_keras import Network, build_model
from worker.training.model import compile_model, make_model
from worker.training.recorder import RunRecorder

NUM_CLASSES = 30


@dataclass(frozen=True)
class Size:
    images: int
    epochs: int
    filters: tuple[int, ...]
    dense: int


FULL = Size(images=6400, epochs=4, filters=(64, 128, 256, 512), dense=512)
TINY = Size(images=512, epochs=3, filters=(8, 16, 32, 64), dense=64)


@dataclass(frozen=True)
class Variant:
    name: str
    mixed: bool
    curvelab: bool
    xla: bool = False


VARIANTS = (
    Variant("keras fp32", mixed=False, curvelab=False),
    Variant("curvelab fp32", mixed=False, curvelab=True),
    Variant("keras mixed", mixed=True, curvelab=False),
    Variant("curvelab mixed", mixed=True, curvelab=True),
    Variant("curvelab mixed + XLA", mixed=True, curvelab=True, xla=True),
)


def device() -> str:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return f"jax: {', '.join(str(d) for d in jax.devices())}"
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [
            tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus
        ]
        return f"tensorflow: {', '.join(names) or 'CPU only'}"
    return backend


def bare_model(config: TrainConfig, mixed: bool) -> keras.Model:
    """The seed network in plain Keras (``bare_keras``), mixed precision the
    usual way: the global policy while the layers are made."""
    net = Network(
        filters=tuple(config.filters),
        convs_per_block=config.convs_per_block,
        dense_units=config.dense_units,
        bn_momentum=config.bn_momentum,
        learning_rate=config.learning_rate,
    )
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        return build_model((*config.image_size, 3), NUM_CLASSES, net)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


class EpochClock(keras.callbacks.Callback):
    """Epoch times from one epoch's start to the next's (or the end of fit),
    so that whatever a callback does at an epoch's end counts."""

    def __init__(self, before_end: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.before_end = before_end
        self.seconds: list[float] = []
        self._started: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        if self._started is not None:
            self.seconds.append(now - self._started)
        self._started = now

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.before_end()
        if self._started is not None:
            self.seconds.append(time.perf_counter() - self._started)


def train(
    variant: Variant, config: TrainConfig, x: np.ndarray, y: np.ndarray, scratch: Path
) -> float:
    """Images/s of ``variant``: the median epoch after the first."""
    keras.backend.clear_session()
    if not variant.curvelab:
        model = bare_model(config, variant.mixed)
        clock = EpochClock()
        callbacks: list[keras.callbacks.Callback] = [clock]
    else:
        run_config = config.model_copy(
            update={"mixed_precision": variant.mixed, "jit_compile": variant.xla}
        )
        model = compile_model(make_model(run_config, NUM_CLASSES), run_config)
        recorder = _recorder(run_config, len(x), scratch / variant.name.replace(" ", "-"))
        # Last, so that the recorder's epoch-end work falls inside the epoch timed.
        clock = EpochClock(before_end=recorder.flush)
        callbacks = [recorder, clock]
    model.fit(
        x,
        y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    return len(x) / statistics.median(clock.seconds[1:])


def _recorder(config: TrainConfig, images: int, folder: Path) -> RunRecorder:
    settings = Settings(data_dir=folder, redis_url="redis://127.0.0.1:1/0")
    settings.ensure_dirs()
    db = Database(settings.sqlalchemy_url)
    with db.session() as session:
        dataset = Dataset(
            name="synthetic",
            num_images=images,
            classes=[{"name": str(i), "count": 1} for i in range(NUM_CLASSES)],
            image_shapes=[list(config.image_size)],
            warnings=[],
        )
        session.add(dataset)
        session.commit()
        run_id = runs.create_run(session, dataset, config, "gpu benchmark").id
        run = runs.mark_running(session, None, run_id)  # as the worker starts it
        assert run is not None
        attempt = run.attempt
    return RunRecorder(
        run_id=run_id,
        attempt=attempt,
        settings=settings,
        db=db,
        publish=lambda _event: None,
        cancel=threading.Event(),
        steps_per_epoch=-(-images // config.batch_size),
        batch_size=config.batch_size,
        train_images=images,
        batch_metrics_every=config.batch_metrics_every,
    )


def measure(tiny: bool) -> dict[str, Any]:
    size = TINY if tiny else FULL
    config = TrainConfig(
        filters=list(size.filters), dense_units=size.dense, epochs=size.epochs, gap_probes=False
    )
    rng = np.random.default_rng(0)
    x = rng.random((size.images, *config.image_size, 3), dtype=np.float32)
    y = rng.integers(0, NUM_CLASSES, size.images).astype(np.int32)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="curvelab-gpu-") as scratch:
        for variant in VARIANTS:
            rates[variant.name] = train(variant, config, x, y, Path(scratch))
    return {
        "device": device(),
        "backend": keras.backend.backend(),
        "tiny": tiny,
        "images": size.images,
        "epochs": size.epochs,
        "filters": list(size.filters),
        "images_per_sec": rates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="filters 8–64, 512 images: for a CPU")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.tiny)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    rates = result["images_per_sec"]
    print(f"device: {result['device']}; filters {result['filters']}, {result['images']} images")
    base = rates["keras fp32"]
    for name, rate in rates.items():
        print(f"{name:<22} {rate:>10,.0f} images/s   {rate / base:>6.2f}× keras fp32")


if __name__ == "__main__":
    main()
