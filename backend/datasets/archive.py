"""Reading an uploaded ZIP without trusting it.

Everything a hostile archive can use is checked here, before or while an entry
is read: the entry count (from the end record, before zipfile builds one
object per entry), names that climb out (``..``, absolute paths, drive
letters), links, encryption, compression methods whose output cannot be
bounded per read, and the bytes decompression really produces (declared sizes
can lie). No filesystem path is ever built from an entry name.
"""

from __future__ import annotations

import hashlib
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

from backend.datasets.errors import IngestError, show
from backend.settings import Settings

MIB = 1024 * 1024
CHUNK = MIB
# A real image seldom compresses beyond 10:1; 200:1 on more than a MiB is a bomb.
RATIO_LIMIT = 200
RATIO_MIN_BYTES = MIB
# Every central-directory record is 46 bytes plus its name; past this many bytes
# per allowed entry the directory itself is the attack.
DIRECTORY_BYTES_PER_ENTRY = 1024
# bzip2 and LZMA decompress a whole input read at once, so one read of a few
# KiB can yield gigabytes before any counter sees it; deflate is bounded.
SAFE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}

LOCAL_HEADER_SIZE = 30  # the fixed part of a local file header

_SEPARATORS = re.compile(r"[/\\]")  # Windows tools sometimes write backslashes
_DRIVE = re.compile(r"^[A-Za-z]:")
_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


@dataclass(frozen=True)
class Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # folders then file name; empty and "." parts dropped

    @property
    def name(self) -> str:
        return self.info.filename


def open_archive(zip_path: Path, settings: Settings) -> zipfile.ZipFile:
    """Open the upload as a ZIP, refusing empty files, non-ZIPs and too many entries."""
    if zip_path.stat().st_size == 0:
        raise IngestError("the upload is empty; send a .zip with one folder of images per class")
    limit = settings.max_zip_entries
    declared = declared_directory(zip_path)
    if declared is not None:
        count, directory_bytes = declared
        if count > limit:
            raise _too_many(count, limit)
        if directory_bytes > limit * DIRECTORY_BYTES_PER_ENTRY:
            raise IngestError(
                f"the archive's list of entries takes {_size(directory_bytes)}, more than "
                f"{limit:,} entries can (CURVELAB_MAX_ZIP_ENTRIES)",
                status_code=413,
            )
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error, NotImplementedError) as exc:
        raise IngestError(
            f"the upload is not a readable ZIP archive ({exc}); send a .zip with one folder "
            "of images per class"
        ) from exc
    count = len(archive.infolist())
    if count > limit:
        archive.close()
        raise _too_many(count, limit)
    return archive


def _size(count: int) -> str:
    return f"{count / MIB:,.1f} MiB" if count >= MIB else f"{count / 1024:,.1f} KiB"


def _too_many(count: int, limit: int) -> IngestError:
    return IngestError(
        f"the archive has {count:,} entries, over the limit of {limit:,} "
        "(CURVELAB_MAX_ZIP_ENTRIES)",
        status_code=413,
    )


def declared_directory(zip_path: Path) -> tuple[int, int] | None:
    """(entries, central-directory bytes) as the end record declares them; None if absent."""
    with zip_path.open("rb") as fh:
        size = fh.seek(0, 2)
        start = max(0, size - _EOCD.size - 0xFFFF)  # the record ends with a <64 KiB comment
        fh.seek(start)
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            return None  # zipfile will say what is wrong
        record = _EOCD.unpack_from(tail, at)
        count, directory_bytes = record[4], record[5]
        if count != 0xFFFF and directory_bytes != 0xFFFFFFFF:
            return count, directory_bytes
        locator_at = start + at - _ZIP64_LOCATOR.size
        if locator_at < 0:
            return None
        fh.seek(locator_at)
        locator = _ZIP64_LOCATOR.unpack(fh.read(_ZIP64_LOCATOR.size))
        if locator[0] != b"PK\x06\x07" or locator[2] >= size:
            return None
        fh.seek(locator[2])
        raw = fh.read(_ZIP64_EOCD.size)
        if len(raw) < _ZIP64_EOCD.size or raw[:4] != b"PK\x06\x06":
            return None
        zip64 = _ZIP64_EOCD.unpack(raw)
        return zip64[7], zip64[8]


def checked_entries(archive: zipfile.ZipFile) -> list[Entry]:
    """Every file entry, after refusing the whole archive if any name or type is unsafe,
    or if entries share bytes."""
    _no_overlaps(archive.infolist())
    entries = []
    for info in archive.infolist():
        parts = _safe_parts(info)
        kind = stat.S_IFMT(info.external_attr >> 16)
        # Not info.is_dir(): it fails on an empty name (a name that starts with NUL).
        if not parts or kind == stat.S_IFDIR or info.filename.endswith(("/", "\\")):
            continue
        entries.append(Entry(info, parts))
    return entries


def _no_overlaps(infos: list[zipfile.ZipInfo]) -> None:
    # Entries that point into each other's bytes make an archive expand many
    # times its size with no high ratio anywhere (the "non-recursive" bomb);
    # no tool writes them. Each entry's local record is at least its fixed
    # header plus its compressed bytes.
    spans = sorted(infos, key=lambda info: info.header_offset)
    for before, after in pairwise(spans):
        if after.header_offset < before.header_offset + LOCAL_HEADER_SIZE + before.compress_size:
            raise IngestError(
                f"entries {show(before.filename)} and {show(after.filename)} overlap in the "
                "archive, which only a ZIP built to expand far beyond its size does; "
                "zip the class folders again"
            )


def _safe_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    name = info.filename
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise IngestError(
            f"entry {show(name)} has an absolute path; an archive may hold only relative paths"
        )
    parts = tuple(part for part in _SEPARATORS.split(name) if part not in ("", "."))
    if ".." in parts:
        raise IngestError(
            f"entry {show(name)} climbs out of the archive with '..'; "
            "remove it and zip the class folders again"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise IngestError(
            f"entry {show(name)} is a symbolic link; zip the files themselves, not links to them"
        )
    return parts


def _chunks(archive: zipfile.ZipFile, entry: Entry) -> Iterator[bytes]:
    """The entry's bytes; a broken archive becomes an IngestError naming the entry.

    Only reading is guarded: an error raised by the consumer (a full disk while
    writing, say) is ours, not the upload's, and passes through unchanged.
    """
    try:
        with archive.open(entry.info) as src:
            while chunk := src.read(CHUNK):
                yield chunk
    # OSError: a forged header offset makes zipfile seek before the file's start.
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise IngestError(
            f"entry {show(entry.name)} is damaged in the archive ({exc}); "
            "zip the class folders again"
        ) from exc


class ByteBudget:
    """Counts the bytes decompression really produces, entry by entry and in total."""

    def __init__(self, settings: Settings) -> None:
        self.limit_mb = settings.max_uncompressed_mb
        self.left = settings.max_uncompressed_mb * MIB

    def check_declared(self, entries: list[Entry]) -> None:
        """Fail fast on an archive that admits it is too big (a liar is caught in copy)."""
        declared = sum(entry.info.file_size for entry in entries)
        if declared > self.left:
            raise self._over(declared)

    def copy(self, archive: zipfile.ZipFile, entry: Entry, out: BinaryIO) -> str:
        """Write the entry's bytes to ``out`` in chunks; return their sha1."""
        info = entry.info
        if info.compress_type not in SAFE_METHODS:
            method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise IngestError(
                f"entry {show(entry.name)} is compressed with {method}, which "
                "curvelab does not read; zip it again with standard (deflate) "
                "compression"
            )
        if info.flag_bits & 0x1:
            raise IngestError(
                f"entry {show(entry.name)} is encrypted; upload an archive without a password"
            )
        digest = hashlib.sha1()
        produced = 0
        for chunk in _chunks(archive, entry):
            produced += len(chunk)
            self.left -= len(chunk)
            if self.left < 0:
                raise self._over(None)
            if produced > RATIO_MIN_BYTES and produced > RATIO_LIMIT * max(info.compress_size, 1):
                raise IngestError(
                    f"entry {show(entry.name)} expands more than {RATIO_LIMIT}:1 "
                    "(a ZIP bomb?); no image compresses like that",
                    status_code=413,
                )
            digest.update(chunk)
            out.write(chunk)
        return digest.hexdigest()

    def _over(self, declared: int | None) -> IngestError:
        if declared is None:
            size = f"more than {self.limit_mb:,} MiB, the limit"
        else:
            size = f"{_size(declared)}, over the limit of {self.limit_mb:,} MiB"
        return IngestError(
            f"the archive expands to {size} (CURVELAB_MAX_UNCOMPRESSED_MB)", status_code=413
        )
