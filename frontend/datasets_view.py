"""What the Datasets page draws: the upload with its progress, the table, a
dataset's summary (class counts, sample thumbnails, warnings).

Plain functions over the API client, so tests call them directly (AppTest
cannot drive a real file upload).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from frontend.api_client import ApiClient, ApiError

SAMPLES_PER_CLASS = 4
SAMPLE_COLUMNS = 3  # classes side by side in the thumbnail grid


class ProgressReader(io.BytesIO):
    """The ZIP's bytes, reporting how much httpx has read (= sent) so far."""

    def __init__(self, data: bytes, on_read: Callable[[int, int], None]) -> None:
        super().__init__(data)
        self._total = len(data)
        self._on_read = on_read

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._on_read(self.tell(), self._total)
        return chunk


def upload_limit_mb() -> int:
    """The largest ZIP the file picker takes, in MB (of 2**20 bytes): Streamlit's
    ``server.maxUploadSize``, which ``curvelab ui`` and ``curvelab up`` set to the
    API's own cap, ``CURVELAB_MAX_UPLOAD_MB``. The one source of the number:
    what the page says is what the picker enforces."""
    return int(st.get_option("server.maxUploadSize"))


def upload(
    client: ApiClient, filename: str, data: bytes, name: str | None
) -> dict[str, Any] | None:
    """Send a ZIP and show each step in a status box; the dataset, or None after
    showing the API's reason plainly."""
    size = _size(len(data))
    with st.status(f"Uploading {filename} ({size})…", expanded=True) as status:
        bar = st.progress(0.0, text="Uploading…")
        shown = [-1]  # percent last drawn: httpx reads 64 KiB at a time

        def sent(done: int, total: int) -> None:
            percent = 100 * done // max(total, 1)
            if percent > shown[0]:
                shown[0] = percent
                bar.progress(percent / 100, text=f"Uploading… {_size(done)} of {size}")
            if done >= total:
                # The API answers only once it has opened every image.
                status.update(label="Checking images…")

        try:
            dataset = client.upload_dataset(filename, ProgressReader(data, sent), name or None)
        except ApiError as exc:
            bar.empty()
            status.update(label=f"Upload of {filename} failed", state="error", expanded=True)
            st.error(exc.detail)
            return None
        bar.empty()
        status.update(label=f"Added “{dataset['name']}”: {_counts(dataset)}", state="complete")
    return dataset


def dataset_rows(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": d.get("name"),
            "images": d.get("num_images"),
            "classes": len(d.get("classes") or []),
            "warnings": len(d.get("warnings") or []),
            "created": _when(d.get("created_at")),
        }
        for d in datasets
    ]


def draw_summary(dataset: dict[str, Any]) -> None:
    """One line of counts, then each warning as the server wrote it."""
    shapes = dataset.get("image_shapes") or []
    parts = [f"{dataset['num_images']} images", f"{len(dataset['classes'])} classes"]
    if shapes:
        common = f"{shapes[0]['height']}×{shapes[0]['width']} {shapes[0]['mode']}"
        parts.append(f"mostly {common} ({len(shapes)} sizes)" if len(shapes) > 1 else common)
    parts.append(f"uploaded {_when(dataset.get('created_at'))}")
    st.caption(" · ".join(parts))
    for warning in dataset["warnings"]:
        st.warning(warning[:1].upper() + warning[1:])


def class_chart(dataset: dict[str, Any]) -> go.Figure:
    """Horizontal bars, first class on top: long class names stay readable."""
    classes = dataset["classes"][::-1]
    figure = go.Figure(
        go.Bar(x=[c["count"] for c in classes], y=[c["name"] for c in classes], orientation="h")
    )
    figure.update_layout(
        height=min(80 + 24 * len(classes), 900),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"title": "images"},
        yaxis={"type": "category", "automargin": True},
    )
    return figure


def draw_samples(samples: list[dict[str, Any]]) -> None:
    """A few thumbnails of every class, several classes to a row."""
    for start in range(0, len(samples), SAMPLE_COLUMNS):
        row = samples[start : start + SAMPLE_COLUMNS]
        for column, group in zip(st.columns(SAMPLE_COLUMNS), row, strict=False):
            column.caption(f"**{group['name']}** · {group['count']} images")
            if group["images"]:
                # The API sends PNG data: URLs, which st.image shows as they are.
                column.image(group["images"], width=56)


def _counts(dataset: dict[str, Any]) -> str:
    warnings = len(dataset.get("warnings") or [])
    found = f"{dataset['num_images']} images in {len(dataset['classes'])} classes"
    return found + (f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else "")


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _when(stamp: str | None) -> str:
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp
