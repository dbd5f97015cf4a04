"""Turning an uploaded ZIP into a stored dataset, all or nothing.

The archive is read entry by entry (never whole), each image is validated and
written to a staging folder under ``tmp_dir``, and only a complete dataset is
renamed into ``datasets/<id>/``; on any refusal or error the staging folder is
removed, so a reader sees a whole dataset or none. The rules live next door:
``archive`` (ZIP safety), ``plan`` (folders to classes), ``images`` (Pillow),
``summary`` (warnings), ``thumbnails`` (previews).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session

from backend.datasets import layout
from backend.datasets.archive import ByteBudget, Entry, checked_entries, open_archive
from backend.datasets.errors import IngestError, few, plural, show
from backend.datasets.images import UnreadableImage, store_image
from backend.datasets.plan import plan_dataset
from backend.datasets.summary import IngestSummary, summarize
from backend.datasets.thumbnails import sample_thumbnails
from backend.db import Dataset, new_id
from backend.settings import Settings

__all__ = [
    "IngestError",
    "IngestSummary",
    "delete_dataset_files",
    "ingest_archive",
    "sample_thumbnails",
    "store_dataset",
]

# A few damaged files are life; more than this share means a broken upload.
MAX_UNREADABLE_SHARE = 0.10


def store_dataset(session: Session, zip_path: Path, name: str, settings: Settings) -> Dataset:
    """Ingest the ZIP as a new dataset and record it: its files and its SQL
    row together, or neither (IngestError as ``ingest_archive`` raises it)."""
    dataset_id = new_id()
    summary = ingest_archive(zip_path, dataset_id, settings)
    dataset = Dataset(
        id=dataset_id,
        name=name,
        num_images=summary.num_images,
        classes=summary.classes,
        image_shapes=summary.image_shapes,
        warnings=summary.warnings,
    )
    try:
        session.add(dataset)
        session.commit()
    except Exception:
        delete_dataset_files(dataset_id, settings)  # no files without a record
        raise
    return dataset


def ingest_archive(zip_path: Path, dataset_id: str, settings: Settings) -> IngestSummary:
    """Validate the ZIP at ``zip_path`` and store it as dataset ``dataset_id``.

    Raises IngestError (with ``status_code``) when the upload is refused; then,
    as after any other error, nothing of it stays on disk.
    """
    final = layout.dataset_dir(settings.datasets_dir, dataset_id)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"ingest-{dataset_id}-", dir=settings.tmp_dir))
    try:
        summary = _ingest_into(staging, zip_path, settings)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)  # one filesystem (see Settings.tmp_dir): atomic
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def delete_dataset_files(dataset_id: str, settings: Settings) -> bool:
    """Remove a stored dataset's folder; False when there was none."""
    folder = layout.dataset_dir(settings.datasets_dir, dataset_id)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=f"delete-{dataset_id}-", dir=settings.tmp_dir))
    try:
        # Moved out in one rename, so no reader ever sees half a dataset.
        os.replace(folder, trash / dataset_id)
    except FileNotFoundError:
        return False
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return True


def _ingest_into(staging: Path, zip_path: Path, settings: Settings) -> IngestSummary:
    # Pillow's own guard, process-wide; store_image also checks each size itself.
    Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    with open_archive(zip_path, settings) as archive:
        plan = plan_dataset(checked_entries(archive))
        budget = ByteBudget(settings)
        budget.check_declared([entry for members in plan.members for entry in members])
        writer = _Writer(archive, budget, settings.max_image_pixels, staging)
        for label, (name, members) in enumerate(zip(plan.classes, plan.members, strict=True)):
            writer.store_class(label, name, members)
    candidates = sum(len(members) for members in plan.members)
    if len(writer.unreadable) > MAX_UNREADABLE_SHARE * candidates:
        listed = few([f"{show(name)} ({reason})" for name, reason in writer.unreadable])
        raise IngestError(
            f"{len(writer.unreadable)} of {candidates} images could not be read (more than "
            f"{MAX_UNREADABLE_SHARE:.0%}): {listed}; check that the archive is complete"
        )
    layout.Manifest(classes=plan.classes, images=writer.images).write(staging)
    return summarize(plan.classes, writer.images, writer.unreadable, plan.non_images, plan.repeated)


@dataclass
class _Writer:
    """Stores the images of one class after another into the staging folder."""

    archive: zipfile.ZipFile
    budget: ByteBudget
    max_pixels: int
    staging: Path
    images: list[layout.ImageEntry] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (entry name, reason)

    def store_class(self, label: int, name: str, members: list[Entry]) -> None:
        folder_name = layout.class_folder(label)
        folder = self.staging / folder_name
        folder.mkdir()
        raw = folder / "incoming"  # not an image name, so never mistaken for one
        stored = 0
        failed: list[tuple[str, str]] = []
        for entry in members:
            with raw.open("wb") as out:
                sha1 = self.budget.copy(self.archive, entry, out)
            try:
                image = store_image(raw, sha1, stored, entry.name, self.max_pixels)
            except UnreadableImage as exc:
                failed.append((entry.name, exc.reason))
                continue
            self.images.append(
                layout.ImageEntry(
                    path=f"{folder_name}/{image.filename}",
                    label=label,
                    sha1=image.sha1,
                    width=image.width,
                    height=image.height,
                    mode=image.mode,
                )
            )
            stored += 1
        if not stored:
            listed = few([f"{show(entry)} ({reason})" for entry, reason in failed])
            raise IngestError(
                f"none of the {plural(len(failed), 'image')} of class {show(name)} could be "
                f"read: {listed}"
            )
        self.unreadable.extend(failed)
