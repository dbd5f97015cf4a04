"""Datasets over the real app: upload, list, read, samples, delete, and the
refusals a user meets (bad archives, the size cap while streaming)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.settings import Settings
from backend.synthetic import write_character_zip
from tests.conftest import BOTH_DATABASES

pytestmark = BOTH_DATABASES


def upload(api: TestClient, path: Path, name: str | None = None) -> httpx.Response:
    with path.open("rb") as handle:
        data = {"name": name} if name else None
        return api.post(
            "/api/datasets", files={"file": (path.name, handle, "application/zip")}, data=data
        )


def leftovers(settings: Settings) -> list[Path]:
    return [*settings.datasets_dir.iterdir(), *settings.tmp_dir.iterdir()]


def test_upload_list_read_samples_delete(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    archive = write_character_zip(
        tmp_path / "letters.zip",
        num_classes=3,
        per_class=12,
        image_size=(20, 18),
        mode="RGB",
        top_folder="letters",
    )
    reply = upload(api, archive, name="my letters")
    assert reply.status_code == 201, reply.text
    dataset = reply.json()
    assert dataset["name"] == "my letters"
    assert dataset["num_images"] == 36
    assert [c["count"] for c in dataset["classes"]] == [12, 12, 12]
    assert dataset["image_shapes"] == [{"height": 20, "width": 18, "mode": "RGB", "count": 36}]
    assert [d["id"] for d in api.get("/api/datasets").json()] == [dataset["id"]]
    assert api.get(f"/api/datasets/{dataset['id']}").json() == dataset

    samples = api.get(f"/api/datasets/{dataset['id']}/samples?per_class=2").json()
    assert [s["name"] for s in samples] == [c["name"] for c in dataset["classes"]]
    assert all(len(s["images"]) == 2 for s in samples)
    assert samples[0]["images"][0].startswith("data:image/png;base64,")

    assert api.delete(f"/api/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/api/datasets/{dataset['id']}").status_code == 404
    assert leftovers(settings) == []


def test_the_file_name_names_a_dataset_without_a_name(api: TestClient, tmp_path: Path) -> None:
    archive = write_character_zip(tmp_path / "digits.zip", num_classes=2, per_class=3)
    assert upload(api, archive).json()["name"] == "digits"


@pytest.mark.parametrize(
    ("content", "status", "detail"),
    [
        (b"", 400, "empty"),
        (b"this is not a zip file at all", 400, "not a readable ZIP archive"),
    ],
)
def test_bad_archives_are_4xx_and_leave_nothing(
    api: TestClient, settings: Settings, tmp_path: Path, content: bytes, status: int, detail: str
) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(content)
    reply = upload(api, path)
    assert reply.status_code == status
    assert detail in reply.json()["detail"]
    assert leftovers(settings) == []
    assert api.get("/api/datasets").json() == []


def test_one_class_is_refused(api: TestClient, settings: Settings, tmp_path: Path) -> None:
    archive = write_character_zip(tmp_path / "one.zip", num_classes=1, per_class=5)
    reply = upload(api, archive)
    assert reply.status_code == 400
    assert "at least 2 classes" in reply.json()["detail"]
    assert leftovers(settings) == []


def test_upload_over_the_cap_is_refused_while_streaming(settings: Settings, tmp_path: Path) -> None:
    from backend.api.main import create_app

    small = settings.model_copy(update={"max_upload_mb": 1})
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK" + b"\0" * (3 * 1024 * 1024))
    sent = {"bytes": 0}

    def body():  # chunked: no Content-Length for the server to trust
        with big.open("rb") as handle:
            boundary = b"--x\r\n"
            yield (
                boundary
                + b'Content-Disposition: form-data; name="file"; filename="big.zip"\r\n\r\n'
            )
            while chunk := handle.read(64 * 1024):
                sent["bytes"] += len(chunk)
                yield chunk
            yield b"\r\n--x--\r\n"

    with TestClient(create_app(small)) as api:
        reply = api.post(
            "/api/datasets",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert reply.status_code == 413
        assert reply.json()["detail"] == (
            "upload is larger than the 1 MiB limit (CURVELAB_MAX_UPLOAD_MB)"
        )
        declared = api.post(
            "/api/datasets",
            content=b"x" * 10,
            headers={"content-length": str(5 * 1024 * 1024), "content-type": "application/zip"},
        )
        assert declared.status_code == 413
    assert leftovers(small) == []


def test_a_dataset_with_runs_is_deleted_only_with_them(
    api: TestClient, settings: Settings, tmp_path: Path
) -> None:
    archive = write_character_zip(tmp_path / "d.zip", num_classes=2, per_class=4)
    dataset_id = upload(api, archive).json()["id"]
    run = api.post(
        "/api/runs",
        json={"dataset_id": dataset_id, "config": {"image_size": [16, 16], "filters": [4]}},
    )
    assert run.status_code == 201
    run_id = run.json()["id"]
    api.post(f"/api/runs/{run_id}/cancel")  # finished: it still holds the dataset
    reply = api.delete(f"/api/datasets/{dataset_id}")
    assert reply.status_code == 409
    assert reply.json() == {
        "detail": f"dataset has 1 run(s); delete them first, or send "
        f"DELETE /api/datasets/{dataset_id}?delete_runs=true to delete them with it",
        "total": 1,
        "runs": [{"id": run_id, "name": run.json()["name"], "status": "cancelled"}],
    }
    assert api.get(f"/api/datasets/{dataset_id}").status_code == 200
    assert api.delete(f"/api/datasets/{dataset_id}?delete_runs=true").status_code == 204
    assert api.get(f"/api/datasets/{dataset_id}").status_code == 404
    assert api.get(f"/api/runs/{run_id}").status_code == 404
    assert leftovers(settings) == []
