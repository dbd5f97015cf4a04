"""What the running ``fit`` was called with, read from its frame.

Keras tells a callback only ``epochs``, ``steps`` and ``verbose``
(``self.params``): not the batch size, the number of training images nor the
validation data, which the summary and the probes need. At train begin
``fit`` is on the stack (every backend's trainer calls ``on_train_begin``
from ``fit`` itself), so its locals are read once, best effort: anything not
found is None, and the summary says what it could not know.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 40


@dataclass(frozen=True)
class FitContext:
    batch_size: int | None = None
    train_images: int | None = None
    # fit's validation data after validation_split: arrays (x, y[, w]), a
    # dataset, ...; None when there is none (or it was not found).
    validation_data: Any = None


def find(model: Any) -> FitContext:
    try:
        frame = sys._getframe(1)
    except ValueError:
        return FitContext()
    depth = 0
    while frame is not None and depth < MAX_DEPTH:
        if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
            return _read(frame.f_locals)
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return FitContext()


def _read(local: dict[str, Any]) -> FitContext:
    batch_size = _positive(local.get("batch_size"))
    train_images = None
    adapter = getattr(local.get("epoch_iterator"), "data_adapter", None)
    if adapter is not None:
        try:
            size = _positive(adapter.batch_size)
            batches = _positive(adapter.num_batches)
            batch_size = batch_size or size
            if size and batches:
                partial = adapter.partial_batch_size if adapter.has_partial_batch else None
                train_images = (batches - 1) * size + (partial or size)
        except Exception:  # an adapter of a kind that does not know: fine
            pass
    return FitContext(batch_size, train_images, local.get("validation_data"))


def _positive(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None
