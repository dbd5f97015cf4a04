"""Datasets: upload a ZIP of class folders, list, read, delete (with its runs:
backend.run_deletion), sample."""

from __future__ import annotations

import re
import shutil
import unicodedata
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse
from sqlalchemy import select

from backend import run_deletion
from backend.api.deps import ResourcesDep, SessionDep
from backend.api.schemas import ClassSamples, DatasetInUse, DatasetPublic, PlainText, RunRef
from backend.datasets.ingest import IngestError, sample_thumbnails, store_dataset
from backend.db import Dataset, new_id

router = APIRouter(prefix="/datasets", tags=["datasets"])

NOT_FOUND = "dataset not found"


@router.post("", response_model=DatasetPublic, status_code=status.HTTP_201_CREATED)
def upload_dataset(
    session: SessionDep,
    resources: ResourcesDep,
    file: Annotated[UploadFile, File(description="A .zip with one folder of images per class.")],
    name: Annotated[PlainText | None, Form(max_length=200)] = None,
) -> Dataset:
    """Upload a ZIP (one folder per class, one wrapping folder allowed)."""
    settings = resources.settings
    settings.ensure_dirs()
    archive = settings.tmp_dir / f"upload-{new_id()}.zip"
    try:
        # Starlette has spooled the part to a temp file; copy it in chunks
        # next to the datasets so nothing is ever held whole in memory.
        with archive.open("wb") as out:
            shutil.copyfileobj(file.file, out, length=1024 * 1024)
        name = (name or "").strip() or _name_from_file(file.filename)
        return store_dataset(session, archive, name, settings)
    except IngestError as exc:
        raise HTTPException(status_code=exc.status_code, detail=str(exc)) from exc
    finally:
        archive.unlink(missing_ok=True)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(session: SessionDep) -> list[Dataset]:
    """All datasets, newest first."""
    return list(session.scalars(select(Dataset).order_by(Dataset.created_at.desc())))


@router.get("/{dataset_id}", response_model=DatasetPublic)
def read_dataset(dataset_id: str, session: SessionDep) -> Dataset:
    """One dataset's summary."""
    return _get(session, dataset_id)


@router.get("/{dataset_id}/samples", response_model=list[ClassSamples])
def dataset_samples(
    dataset_id: str, session: SessionDep, resources: ResourcesDep, per_class: int = 4
) -> list[dict[str, object]]:
    """A few thumbnails per class, as PNG data URLs."""
    _get(session, dataset_id)
    if not 1 <= per_class <= 32:
        raise HTTPException(422, "per_class must be between 1 and 32")
    try:
        return sample_thumbnails(dataset_id, resources.settings, per_class=per_class)
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "dataset files are missing") from exc


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        409: {
            "model": DatasetInUse,
            "description": "The dataset has runs (listed, newest first, up to 100); "
            "?delete_runs=true deletes them with it.",
        },
        503: {"description": "The database refused the delete: nothing was deleted."},
    },
)
def delete_dataset(
    dataset_id: str,
    session: SessionDep,
    resources: ResourcesDep,
    delete_runs: Annotated[
        bool,
        Query(description="Also delete its runs (queued or running ones cancelled first)."),
    ] = False,
) -> Response:
    """Delete a dataset; one that has runs only with ?delete_runs=true, which deletes them too."""
    _get(session, dataset_id)
    if not delete_runs:
        count, newest = run_deletion.dataset_runs(session, dataset_id)
        if count:
            conflict = DatasetInUse(
                detail=f"dataset has {count} run(s); delete them first, or send "
                f"DELETE /api/datasets/{dataset_id}?delete_runs=true to delete them with it",
                total=count,
                runs=[RunRef.model_validate(run) for run in newest],
            )
            return JSONResponse(conflict.model_dump(mode="json"), status.HTTP_409_CONFLICT)
    try:
        run_deletion.delete_dataset(session, resources.redis, resources.settings, dataset_id)
    except run_deletion.DeletionFailed as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _name_from_file(filename: str | None) -> str:
    """``letters.zip`` names a dataset sent without a name; any folder part and
    control character (a NUL would make PostgreSQL refuse it) are dropped."""
    base = re.split(r"[/\\]", filename or "")[-1].removesuffix(".zip")
    base = base.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    printable = "".join(char for char in base if unicodedata.category(char) != "Cc").strip()
    return printable[:200] or "dataset"


def _get(session: SessionDep, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return dataset
