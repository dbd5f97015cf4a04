"""A run's full metric series as CSV, streamed: every batch point, every epoch.

``GET /metrics`` downsamples the batch points for the curve; these are the
rows themselves, for a notebook or a spreadsheet. The batch points are read
in chunks by step, each in a session of its own (a slow download holds no
SQL connection or transaction between chunks) and written out as they come:
memory stays flat whatever the run's length. A first pass over the same
chunks finds the columns, so a value that only some rows carry still has
one.

Cells: numbers as Python writes them (the shortest form that reads back the
same), an empty cell for null, NaN or infinity, lists and objects as JSON.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic_core import to_json

from backend.api.metrics_reply import CHUNK_ROWS, batch_chunk, batch_chunks, epoch_rows
from backend.db import Database


def batch_csv(db: Database, run_id: str, chunk: int = CHUNK_ROWS) -> Iterator[str]:
    """``step,epoch,<value keys>``, then one line per batch point, in step order."""
    keys: dict[str, None] = {}
    with db.session() as session:
        for rows in batch_chunks(session, run_id, chunk=chunk):
            for _, _, values in rows:
                keys.update(dict.fromkeys(values))
    columns = ["step", "epoch", *keys]
    yield _lines([columns])
    after: int | None = None
    while True:
        with db.session() as session:
            rows = batch_chunk(session, run_id, after, None, chunk)
        if not rows:
            return
        yield _lines([step, at, *(values.get(key) for key in keys)] for step, at, values in rows)
        if len(rows) < chunk:
            return
        after = rows[-1][0]


def epoch_csv(db: Database, run_id: str) -> Iterator[str]:
    """``epoch,<value keys>``, then one line per epoch (at most 1000: read at once)."""
    with db.session() as session:
        rows = epoch_rows(session, run_id)
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    columns = list(keys)  # "epoch" first: every row starts with it
    yield _lines([columns or ["epoch"]])
    if rows:
        yield _lines([row.get(key) for key in columns] for row in rows)


def _lines(rows: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    # The csv module writes None as an empty cell and a float as repr() does.
    writer.writerows(
        [
            v if type(v) in _AS_IS or (type(v) is float and math.isfinite(v)) else _cell(v)
            for v in row
        ]
        for row in rows
    )
    return out.getvalue()


_AS_IS = frozenset({int, str, type(None)})


def _cell(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else None
    if isinstance(value, bool):
        return str(value).lower()
    return to_json(value, inf_nan_mode="null").decode()
