"""Hand-written run histories and dataset facts for the diagnosis tests."""

from __future__ import annotations

from typing import Any

from backend.diagnosis.facts import DatasetFacts
from backend.diagnosis.history import History


def history(**columns: list[float | None]) -> History:
    """Epoch rows from columns: ``history(loss=[1.0, 0.5], val_loss=[1.1, 0.6])``."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    rows: list[dict[str, Any]] = [{"epoch": epoch} for epoch in range(1, lengths.pop() + 1)]
    for key, values in columns.items():
        for row, value in zip(rows, values, strict=True):
            row[key] = value  # None as stored for a NaN
    return rows


def facts(
    counts: tuple[int, ...] = (400, 400, 400), val_images: int = 240, leaked: int = 0
) -> DatasetFacts:
    return DatasetFacts(
        class_names=[f"class{i}" for i in range(len(counts))],
        class_counts=list(counts),
        train_images=sum(counts) - val_images,
        val_images=val_images,
        leaked=leaked,
    )
