"""Ingest: a ZIP of 50×55 PNGs from upload to a ready dataset, through the API.

The archive is POSTed (streamed from disk by httpx) to the real app under
uvicorn; the time is the request's, upload included. Memory is the API
process's: its peak resident set (VmHWM, reset before the upload) above what
it held just before. Each size gets a fresh server. Two sizes, 1600 and 6400
images: the peak must not grow with the archive's bytes (it is read entry by
entry, never whole). It does grow with the number of images, by what each
one needs in memory as a name: zipfile's central directory, the plan, the
manifest (about 1.5 KiB an image); buffering the upload would grow it by the
archive's size or more.

The baseline for time is the least any ingest does, by hand: extract the
archive and decode every image with Pillow.
"""

from __future__ import annotations

import tempfile
import time
import zipfile
from pathlib import Path

import httpx
from PIL import Image

from benchmarks.fixtures import Server, Workspace, api_server, character_zip
from benchmarks.report import Row, at_most, median

CLASSES = 32  # 32 × 200 = 6400 and 32 × 50 = 1600
MIB = 1024 * 1024
SIZES = {"small": 50, "large": 200}


def measure(space: Workspace, repeats: int) -> list[Row]:
    archives = {
        name: character_zip(space.root / f"{name}.zip", per_class, num_classes=CLASSES)
        for name, per_class in SIZES.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in SIZES}
    peaks: dict[str, list[float]] = {name: [] for name in SIZES}
    by_hand: list[float] = []
    for _ in range(repeats):
        for name, archive in archives.items():
            with api_server(space) as server:
                took, peak = _upload(server, archive)
            seconds[name].append(took)
            peaks[name].append(peak)
        by_hand.append(_by_hand(archives["large"]))
    images = CLASSES * SIZES["large"]
    small_peak, large_peak = median(peaks["small"]), median(peaks["large"])
    archive_growth = (archives["large"].stat().st_size - archives["small"].stat().st_size) / MIB
    return [
        Row(
            f"ingest {images} images via API (images/s)",
            images / median(by_hand),
            images / median(seconds["large"]),
            goal="info (baseline: unzip + decode by hand)",
        ),
        Row(
            f"ingest peak memory, {CLASSES * SIZES['small']} → {images} images (MiB)",
            small_peak,
            large_peak,
            goal="info",
        ),
        Row(
            "  its growth against the archive's growth (MiB)",
            archive_growth,
            large_peak - small_peak,
            goal="≤ 0.5× (buffered: ≥ 1×)",
            check=at_most(0.5),
        ),
    ]


def _upload(server: Server, archive: Path) -> tuple[float, float]:
    """Seconds for the upload, and the API process's peak memory above its
    resident set before it (MiB)."""
    status = Path(f"/proc/{server.pid}/status")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
    before = _kib(status, "VmRSS")
    started = time.perf_counter()
    with archive.open("rb") as handle:
        reply = httpx.post(
            f"{server.url}/api/datasets",
            files={"file": (archive.name, handle, "application/zip")},
            timeout=600,
        )
    took = time.perf_counter() - started
    if reply.status_code != 201:
        raise RuntimeError(f"upload refused: {reply.status_code} {reply.text[:200]}")
    return took, (_kib(status, "VmHWM") - before) * 1024 / MIB


def _kib(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in {status}")


def _by_hand(archive: Path) -> float:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
        for path in Path(folder).rglob("*.png"):
            with Image.open(path) as image:
                image.load()
    return time.perf_counter() - started
