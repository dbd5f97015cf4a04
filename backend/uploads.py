"""Copying an uploaded file to disk under a byte cap: one loop for every
route that stores a file part (predict's image, an external run's model).

The cap is checked while copying, so nothing past it is ever written; the
body-size middleware (backend/api/body_limit.py) has usually refused the
request before, this is the file's own limit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


def copy_capped(
    upload: BinaryIO, path: Path, limit: int, too_large: Callable[[int], Exception]
) -> int:
    """Copy ``upload`` to ``path``; raise ``too_large(limit)`` as soon as more
    than ``limit`` bytes came. Returns the bytes written."""
    written = 0
    with path.open("wb") as out:
        while chunk := upload.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise too_large(limit)
            out.write(chunk)
    return written
