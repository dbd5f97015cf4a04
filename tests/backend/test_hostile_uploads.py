"""Every case of the hostile corpus, uploaded through the real app: a 4xx that
says what is wrong, or acceptance with the warnings a person would expect.
Never a 5xx, never a file outside DATA_DIR, nothing left after a refusal.
Then random damage to a good archive: whatever the bytes, no 5xx."""

from __future__ import annotations

import os
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from backend.datasets import layout
from backend.settings import Settings
from tests.backend import hostile_corpus
from tests.backend.hostile_corpus import CASES, Case

CHUNK = 64 * 1024


def snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` but those under ``skip`` (DATA_DIR)."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != skip]
        found.update(str(here / name) for name in dirs + files)
    return found


def leftovers(settings: Settings) -> list[Path]:
    return [*settings.datasets_dir.iterdir(), *settings.tmp_dir.iterdir()]


def send(api: TestClient, path: Path, chunked: bool = False) -> httpx.Response:
    if not chunked:
        with path.open("rb") as handle:
            return api.post("/api/datasets", files={"file": (path.name, handle, "application/zip")})

    def body() -> Iterator[bytes]:  # a generator: no Content-Length for the server to trust
        yield (
            b'--x\r\nContent-Disposition: form-data; name="file"; '
            b'filename="' + path.name.encode() + b'"\r\n\r\n'
        )
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        yield b"\r\n--x--\r\n"

    return api.post(
        "/api/datasets",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )


@pytest.fixture
def app_for(settings: Settings) -> Iterator:
    """The real app, over the test's settings with a case's limits."""
    clients: list[TestClient] = []

    def make(limits: dict[str, int]) -> tuple[TestClient, Settings]:
        from backend.api.main import create_app

        config = settings.model_copy(update=limits)
        client = TestClient(create_app(config))
        client.__enter__()
        clients.append(client)
        return client, config

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def assert_stored_as_designed(settings: Settings, dataset_id: str) -> None:
    """Only the manifest and NNN/NNNNN.{png,jpg}: no name from the archive, no link."""
    folder = layout.dataset_dir(settings.datasets_dir, dataset_id)
    for path in folder.rglob("*"):
        assert not path.is_symlink(), path
        relative = path.relative_to(folder).as_posix()
        if path.is_dir():
            assert len(relative) == 3 and relative.isdigit(), relative
        else:
            assert relative == layout.MANIFEST or (
                relative[:3].isdigit()
                and relative[3] == "/"
                and relative[4:9].isdigit()
                and relative[9:] in {".png", ".jpg"}
            ), relative


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_case(name: str, app_for, settings: Settings, tmp_path: Path) -> None:
    case: Case = CASES[name]
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    upload = uploads / f"{name}.zip"
    case.write(upload)
    api, config = app_for(case.limits)
    around = tmp_path.parent
    before = snapshot(around, config.data_dir)

    reply = send(api, upload, chunked=case.chunked)

    assert reply.status_code < 500, reply.text
    assert reply.status_code == case.status, reply.text
    body = reply.json()
    if case.status != 201:
        detail = body["detail"]
        assert isinstance(detail, str) and len(detail) < 1000, detail
        for words in case.says:
            assert words in detail, detail
        assert leftovers(config) == []
        assert api.get("/api/datasets").json() == []
    else:
        warnings = body["warnings"]
        for words in case.says:
            assert any(words in warning for warning in warnings), warnings
        if case.warnings is not None:
            assert len(warnings) == case.warnings, warnings
        if case.classes:
            assert [c["name"] for c in body["classes"]] == list(case.classes)
        assert sum(c["count"] for c in body["classes"]) == body["num_images"] > 0
        assert_stored_as_designed(config, body["id"])
        assert list(config.tmp_dir.iterdir()) == []
        samples = api.get(f"/api/datasets/{body['id']}/samples?per_class=32")  # every image
        assert samples.status_code == 200, samples.text
        assert api.delete(f"/api/datasets/{body['id']}").status_code == 204
        assert leftovers(config) == []
    assert snapshot(around, config.data_dir) == before  # nothing written outside DATA_DIR


def test_the_corpus_writes_as_a_folder(tmp_path: Path) -> None:
    written = hostile_corpus.write_all(tmp_path / "corpus", ["dotdot", "empty_file"])
    assert [p.name for p in written] == ["dotdot.zip", "empty_file.zip"]
    assert written[1].read_bytes() == b""


# -- fuzzing ------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "good.zip"
    entries = [
        *hostile_corpus.two_classes(6),
        ("cats/photo.jpg", hostile_corpus.image((16, 12), fmt="JPEG", seed=3)),
        ("dogs/pic.gif", hostile_corpus.image(fmt="GIF", seed=4)),
    ]
    return hostile_corpus.write_zip(path, entries, zipfile.ZIP_DEFLATED)


def damaged(good: bytes, rng: random.Random) -> bytes:
    data = bytearray(good)
    kind = rng.choice(["flip", "flip", "cut", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "cut":
        del data[rng.randrange(len(data)) :]
    else:  # a run of bytes overwritten with random ones, often inside a header
        at = rng.randrange(len(data))
        data[at : at + 16] = rng.randbytes(16)
    return bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_damaged_archives_are_never_a_server_error(
    api: TestClient, settings: Settings, tmp_path: Path, good_archive: bytes, seed: int
) -> None:
    rng = random.Random(seed)
    upload = tmp_path / "fuzzed.zip"
    seen: set[int] = set()
    for _ in range(40):
        upload.write_bytes(damaged(good_archive, rng))
        reply = send(api, upload)
        assert reply.status_code < 500, reply.text
        seen.add(reply.status_code)
        if reply.status_code == 201:
            api.delete(f"/api/datasets/{reply.json()['id']}")
        else:
            assert isinstance(reply.json()["detail"], str)
        assert leftovers(settings) == []
    assert seen & {400, 413}  # the damage was noticed at least sometimes


NAME_PIECES = [
    "cats", "dogs", "..", ".", "", "/", "\\", "C:", "__MACOSX", ".DS_Store", "a.png", "b.jpg",
    "x.zip", "é", "e\u0301", "猫", "\u202e", "\t", "\x7f", " ", "~", "%2e%2e", "con", "x" * 300,
]  # fmt: skip


def random_name(rng: random.Random) -> str:
    name = "/".join(rng.choice(NAME_PIECES) for _ in range(rng.randint(1, 5)))
    return name + rng.choice(["", ".png", ".PNG", ".gif", "/"])


@pytest.mark.parametrize("seed", range(2))
def test_random_entry_names_are_never_a_server_error(
    api: TestClient, settings: Settings, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    upload = tmp_path / "names.zip"
    for _ in range(30):
        entries = [
            (zipfile.ZipInfo(random_name(rng)), hostile_corpus.image(seed=rng.randrange(10**6)))
            for _ in range(rng.randint(1, 8))
        ]
        hostile_corpus.write_zip(upload, entries)
        reply = send(api, upload)
        assert reply.status_code < 500, reply.text
        if reply.status_code == 201:
            assert_stored_as_designed(settings, reply.json()["id"])
            api.delete(f"/api/datasets/{reply.json()['id']}")
        assert leftovers(settings) == []


@pytest.mark.parametrize(
    ("request_kwargs", "status"),
    [
        ({"content": b"PK\x03\x04", "headers": {"content-type": "application/zip"}}, 422),
        ({"data": {"file": "not a file"}}, 422),
        ({"files": {"other": ("a.zip", b"PK")}}, 422),
        (
            {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            422,
        ),
        ({"files": {"file": ("a.zip", b"")}, "data": {"name": "bad\x00name"}}, 422),
        ({"files": {"file": ("a.zip", b"")}, "data": {"name": "n" * 201}}, 422),
    ],
)
def test_odd_upload_requests_are_4xx(
    api: TestClient, settings: Settings, request_kwargs: dict, status: int
) -> None:
    reply = api.post("/api/datasets", **request_kwargs)
    assert reply.status_code == status, reply.text
    assert leftovers(settings) == []


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("../../etc/passwd.zip", "passwd"),
        ("C:\\Users\\me\\letters.zip", "letters"),
        (".zip", "dataset"),
    ],
)
def test_the_file_name_sent_is_only_a_label(
    api: TestClient, settings: Settings, tmp_path: Path, filename: str, name: str
) -> None:
    upload = tmp_path / "good.zip"
    hostile_corpus.write_zip(upload, hostile_corpus.two_classes(3))
    with upload.open("rb") as handle:
        reply = api.post("/api/datasets", files={"file": (filename, handle, "x/y")})
    assert reply.status_code == 201, reply.text
    assert reply.json()["name"] == name
    assert_stored_as_designed(settings, reply.json()["id"])
