"""The local copy of everything a run sends: one JSON-lines file per run.

Every record is appended here before it is queued for the network, so a
server that is down, slow or gone for the rest of the fit loses nothing:
``curvelab sync FILE`` (or the next fit's callback) uploads what is left.

The file is append-only, which a crash cannot corrupt beyond its last line
(ignored when it is cut short):

- a header: ``{"type": "header", "format": 1, "api_url": ..., "run_id": ...}``;
- records: ``{"seq": 3, "op": "epochs", "body": {...}}``; ``op`` is one of
  create, epochs, batches, model (``file``: a .keras beside the spool) and finish;
- acknowledgements: ``{"ack": [3, 4]}``, once the server has a record (or has
  refused it for good: it is not sent again).

A spool whose records are all acknowledged is deleted, with its model file.
While a fit writes its spool it holds an exclusive ``flock`` on it, so that
another process (``curvelab sync``, the next fit) leaves a live spool alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; sync trusts the user
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT = 1
SUFFIX = ".jsonl"
OPS = ("create", "epochs", "batches", "model", "finish")


@dataclass(frozen=True)
class Record:
    seq: int
    op: str
    body: dict[str, Any] | None = None
    file: str | None = None  # op "model": the file's name, beside the spool


@dataclass
class Spool:
    """One run's spool file. ``append`` (the training thread) and ``ack``
    (the transport's thread) may be called from different threads."""

    path: Path
    api_url: str
    run_id: str
    records: list[Record] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    _handle: IO[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- making and reading -------------------------------------------------

    @classmethod
    def create(cls, folder: Path, api_url: str, run_id: str) -> Spool:
        """A new spool for a run, opened for appending and locked."""
        folder.mkdir(parents=True, exist_ok=True)
        spool = cls(folder / f"{run_id}{SUFFIX}", api_url, run_id)
        spool._handle = spool.path.open("a", encoding="utf-8")
        spool._try_lock()
        header = {
            "type": "header",
            "format": FORMAT,
            "api_url": api_url,
            "run_id": run_id,
            "created": time.time(),
        }
        spool._write(header)
        return spool

    @classmethod
    def read(cls, path: Path) -> Spool:
        """A spool as its file holds it (not opened for writing). Raises
        ValueError for a file that is not a curvelab spool."""
        header: dict[str, Any] | None = None
        records: dict[int, Record] = {}
        acked: set[int] = set()
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s: line %d is cut short or not JSON; skipped", path, number)
                    continue
                if not isinstance(item, dict):
                    continue
                if item.get("type") == "header":
                    header = item
                elif "ack" in item:
                    acked.update(int(seq) for seq in item["ack"])
                elif item.get("op") in OPS and isinstance(item.get("seq"), int):
                    records[item["seq"]] = Record(
                        item["seq"], item["op"], item.get("body"), item.get("file")
                    )
        if header is None or not header.get("api_url") or not header.get("run_id"):
            raise ValueError(f"{path} is not a curvelab spool (no header line)")
        return cls(
            path,
            str(header["api_url"]),
            str(header["run_id"]),
            sorted(records.values(), key=lambda record: record.seq),
            acked,
        )

    # --- writing ------------------------------------------------------------

    def append(
        self, op: str, body: dict[str, Any] | None = None, file: str | None = None
    ) -> Record:
        if op not in OPS:
            raise ValueError(f"unknown spool op {op!r}")
        with self._lock:
            seq = len(self.records) + 1
            record = Record(seq, op, body, file)
            self.records.append(record)
            item: dict[str, Any] = {"seq": seq, "op": op, "body": body}
            if file is not None:
                item["file"] = file
            self._write_locked(item)
            return record

    def ack(self, seqs: Iterable[int]) -> None:
        """The server has these records (or refused them for good)."""
        new = [seq for seq in seqs if seq not in self.acked]
        if not new:
            return
        with self._lock:
            self.acked.update(new)
            self._write_locked({"ack": new})

    def pending(self) -> list[Record]:
        with self._lock:
            return [record for record in self.records if record.seq not in self.acked]

    @property
    def done(self) -> bool:
        return not self.pending()

    def file_path(self, record: Record) -> Path | None:
        return self.path.parent / record.file if record.file else None

    def close(self) -> bool:
        """Stop writing; delete the spool (and its model file) when every
        record is acknowledged. True: it was deleted."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()  # closing releases the flock too
                self._handle = None
        if not self.done:
            return False
        self.delete()
        return True

    def delete(self) -> None:
        for record in self.records:
            path = self.file_path(record)
            if path is not None:
                path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)

    def open_for_ack(self) -> bool:
        """Open this (read) spool to append acknowledgements, locked against
        any other writer. False: a live fit (or a sync) holds it; leave it."""
        self._handle = self.path.open("a", encoding="utf-8")
        if self._try_lock(required=True):
            return True
        self._handle.close()
        self._handle = None
        return False

    @contextlib.contextmanager
    def opened(self) -> Iterator[Spool]:
        """``open_for_ack`` for a block; raises BlockingIOError when in use."""
        if not self.open_for_ack():
            raise BlockingIOError(f"{self.path} is in use by a fit or another sync")
        try:
            yield self
        finally:
            self.close()

    def _try_lock(self, required: bool = False) -> bool:
        if fcntl is None or self._handle is None:
            return True
        try:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if not required:
                log.warning("%s: could not lock the spool", self.path)
            return False
        return True

    def _write(self, item: dict[str, Any]) -> None:
        with self._lock:
            self._write_locked(item)

    def _write_locked(self, item: dict[str, Any]) -> None:
        if self._handle is None:
            raise ValueError(f"{self.path} is not open for writing")
        # One line per write, flushed: a crash leaves at most the last line cut short.
        self._handle.write(json.dumps(item, separators=(",", ":"), allow_nan=False) + "\n")
        self._handle.flush()


def spool_files(folder: Path) -> list[Path]:
    """The spool files in a folder, oldest first."""
    if not folder.is_dir():
        return []
    files = [path for path in folder.glob(f"*{SUFFIX}") if path.is_file()]
    return sorted(files, key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def leftovers(folder: Path, api_url: str, skip: str | None = None) -> list[Path]:
    """Spools of the given API left by earlier fits (``skip``: a run id)."""
    found = []
    for path in spool_files(folder):
        if path.stem == skip:
            continue
        try:
            spool = Spool.read(path)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if spool.api_url == api_url:
            found.append(path)
    return found
