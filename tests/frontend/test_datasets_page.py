"""The Datasets page through AppTest against a live API: the table, a
dataset's class counts, thumbnails and warnings, delete with confirmation,
and the upload path after a file has arrived (AppTest cannot pick a file;
the browser test does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from backend.synthetic import write_character_zip
from tests.frontend.conftest import LiveApi, open_app_page


def datasets_of(live_api: LiveApi) -> list[dict]:
    return list(httpx.get(f"{live_api.url}/api/datasets").json())


def upload_page(filename: str, data: bytes, name: str | None) -> AppTest:
    def script(filename, data, name) -> None:  # runs as its own script: no outside names
        import streamlit as st

        from frontend.api_client import get_client
        from frontend.datasets_view import upload

        dataset = upload(get_client(), filename, data, name)
        st.text(f"result: {dataset and dataset['id']}")

    return AppTest.from_function(script, args=(filename, data, name), default_timeout=60).run()


def test_the_table_and_the_summary_of_an_uploaded_dataset(live_api: LiveApi) -> None:
    live_api.upload_dataset("letters", num_classes=3, per_class=8)
    page = open_app_page("datasets")
    assert not page.exception
    table = page.dataframe[0].value
    assert table.iloc[0].to_dict() | {"created": None} == {
        "name": "letters",
        "images": 24,
        "classes": 3,
        "warnings": 1,
        "created": None,
    }
    assert "24 images · 3 classes · 16×16 L" in page.caption[0].value
    # The server's warning, shown as it wrote it (8 < 10 images per class).
    assert any("fewer than 10 images" in w.value for w in page.warning)
    bars = page.get("plotly_chart")[0].proto.spec
    assert '"y":["digit_2","digit_1","digit_0"]' in bars.replace(" ", "")  # first on top
    thumbnails = page.get("image")
    assert len(thumbnails) == 3  # one row of samples per class
    assert all(i.proto.imgs[0].url.startswith("data:image/png") for i in thumbnails)
    link = page.get("page_link")[0].proto
    assert link.label == "Start a run on this dataset"
    assert link.query_string == f"dataset={datasets_of(live_api)[0]['id']}"


def test_the_selector_and_the_deep_link_pick_a_dataset(live_api: LiveApi) -> None:
    first = live_api.upload_dataset("first", num_classes=2, per_class=12)
    second = live_api.upload_dataset("second", num_classes=3, per_class=12)
    page = open_app_page("datasets", id=first["id"])
    assert page.subheader[-1].value == "first"
    # 12 images a class: nothing to warn about (the other warning: no worker)
    assert [w.value for w in page.warning if "worker" not in w.value] == []
    page.selectbox(key="ds.selected").select(second["id"]).run()
    assert page.subheader[-1].value == "second"
    assert page.query_params["id"] == second["id"]


def test_datasets_with_the_same_name_are_told_apart(live_api: LiveApi) -> None:
    # Streamlit maps a chosen label back to its option, the last one winning.
    older = live_api.upload_dataset("letters", num_classes=2, per_class=12)
    live_api.upload_dataset("letters", num_classes=3, per_class=12)
    page = open_app_page("datasets")
    picker = page.selectbox(key="ds.selected")
    assert len(set(picker.options)) == 2
    picker.select(older["id"]).run()
    assert "24 images · 2 classes" in page.caption[0].value
    page.button(key="ds.delete").click().run()  # any rerun keeps the choice
    assert "24 images · 2 classes" in page.caption[0].value


def test_delete_asks_first_then_deletes(live_api: LiveApi) -> None:
    live_api.upload_dataset("doomed")
    page = open_app_page("datasets")
    page.button(key="ds.delete").click().run()
    assert any("Delete **doomed**" in m.value for m in page.markdown)
    page.button(key="ds.keep").click().run()
    assert datasets_of(live_api)
    page.button(key="ds.delete").click().run()
    page.button(key="ds.delete-confirm").click().run()
    assert not page.exception
    assert datasets_of(live_api) == []
    assert page.success[0].value == "Deleted “doomed”."
    assert "No dataset yet" in page.info[0].value


def test_a_dataset_with_runs_lists_them_and_deletes_them_only_when_asked(
    live_api: LiveApi,
) -> None:
    dataset = live_api.upload_dataset("busy")
    live_api.create_run(dataset["id"], {"image_size": [16, 16], "filters": [4]}, name="queued one")
    live_api.add_run(dataset["id"], "finished one", val_losses=[1.0])
    page = open_app_page("datasets")
    page.button(key="ds.delete").click().run()
    page.button(key="ds.delete-confirm").click().run()
    assert not page.exception
    assert any("**busy** has 2 runs" in m.value for m in page.markdown)
    listed = page.dataframe[-1].value
    assert sorted(listed["run"]) == ["finished one", "queued one"]
    assert len(datasets_of(live_api)) == 1  # nothing deleted yet
    confirm = page.button(key="ds.delete-confirm")
    assert confirm.label == "Delete the dataset and its 2 runs"
    confirm.click().run()
    assert not page.exception
    assert datasets_of(live_api) == []
    assert httpx.get(f"{live_api.url}/api/runs").json()["total"] == 0
    assert page.success[0].value == "Deleted “busy” and its 2 runs."


def test_an_upload_reports_its_steps_and_the_new_dataset(live_api: LiveApi, tmp_path: Path) -> None:
    archive = write_character_zip(tmp_path / "abc.zip", num_classes=2, per_class=12)
    page = upload_page("abc.zip", archive.read_bytes(), "my letters")
    assert not page.exception and not page.error
    (stored,) = datasets_of(live_api)
    assert page.text[0].value == f"result: {stored['id']}"
    assert stored["name"] == "my letters" and stored["num_images"] == 24
    status = page.status[0]
    assert status.state == "complete"
    assert status.label == "Added “my letters”: 24 images in 2 classes"


def test_a_refused_upload_shows_the_apis_reason(live_api: LiveApi) -> None:
    page = upload_page("broken.zip", b"this is not a zip", None)
    assert not page.exception
    assert page.status[0].state == "error"
    assert "zip" in page.error[0].value.lower()
    assert page.text[0].value == "result: None"
    assert datasets_of(live_api) == []


@pytest.fixture
def upload_cap_64() -> Iterator[None]:
    """What `curvelab ui`/`up` do with CURVELAB_MAX_UPLOAD_MB=64:
    ``--server.maxUploadSize 64``."""
    from streamlit import config

    before = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 64)
    yield
    config.set_option("server.maxUploadSize", before)


def test_the_page_says_the_upload_limit_the_file_picker_enforces(
    live_api: LiveApi, upload_cap_64: None
) -> None:
    page = open_app_page("datasets")
    assert not page.exception
    assert any("up to 64 MB" in m.value for m in page.markdown)
    assert page.get("file_uploader")[0].proto.max_upload_size_mb == 64
