"""Tidying a run up from its page, through AppTest against a live API: name,
tags and notes saved with one PATCH; delete asked first, then back to Runs;
"Try every suggestion" opens the sweep it started."""

from __future__ import annotations

import httpx
from streamlit.testing.v1 import AppTest

from frontend.run_edit import changes
from tests.frontend.conftest import LiveApi, open_app_page, page_path
from tests.frontend.test_diagnosis_panel import lagging_run

CONFIG = {"image_size": [16, 16], "filters": [4], "epochs": 3}


def open_run(run_id: str) -> AppTest:
    page = AppTest.from_file(page_path("run"), default_timeout=30)
    page.query_params["id"] = run_id
    return page.run()


def run_of(live_api: LiveApi, run_id: str) -> httpx.Response:
    return httpx.get(f"{live_api.url}/api/runs/{run_id}", timeout=10)


def test_only_what_changed_is_sent() -> None:
    run = {"name": "a", "tags": ["x"], "notes": ""}
    assert changes(run, "a", "x", "") == {}
    assert changes(run, " b ", "x, y, x", "why") == {
        "name": "b",
        "tags": ["x", "y"],
        "notes": "why",
    }
    assert changes(run, "", "", "") == {"tags": []}  # a blank name is not a rename


def test_name_tags_and_notes_are_saved(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()["id"]
    run_id = live_api.add_run(dataset, "first try", CONFIG, val_losses=[1.0])
    page = open_run(run_id)
    inputs = {t.label: t for t in page.text_input}
    inputs["Name"].input("baseline")
    inputs["Tags"].input("baseline, small")
    page.text_area[0].input("the one to beat")
    next(b for b in page.button if b.label == "Save").click().run()
    assert not page.exception
    stored = run_of(live_api, run_id).json()
    assert (stored["name"], stored["tags"], stored["notes"]) == (
        "baseline",
        ["baseline", "small"],
        "the one to beat",
    )
    assert page.subheader[0].value == "baseline"
    assert page.success[0].value == "Saved."
    assert any("baseline" in m.value and "badge" in m.value for m in page.markdown)
    assert "the one to beat" in [c.value for c in page.caption]


def test_a_refused_edit_is_said(live_api: LiveApi) -> None:
    run_id = live_api.add_run(None, "r", CONFIG)
    page = open_run(run_id)
    {t.label: t for t in page.text_input}["Tags"].input("x" * 65)  # over the API's 64
    next(b for b in page.button if b.label == "Save").click().run()
    assert not page.exception
    assert page.error[0].value.startswith("Not saved:")
    assert run_of(live_api, run_id).json()["tags"] == []


def test_delete_asks_then_goes_back_to_runs(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()["id"]
    run_id = live_api.add_run(dataset, "doomed", CONFIG, val_losses=[1.0])
    live_api.add_run(dataset, "kept", CONFIG)
    app = open_app_page("run", id=run_id)
    app.button(key="run-delete").click().run()
    assert any("Delete **doomed**" in m.value for m in app.markdown)
    app.button(key="run-delete-keep").click().run()
    assert run_of(live_api, run_id).status_code == 200
    app.button(key="run-delete").click().run()
    app.button(key="run-delete-confirm").click().run()
    assert not app.exception
    assert run_of(live_api, run_id).status_code == 404
    assert app.success[0].value == "Deleted “doomed”."
    assert list(app.dataframe[0].value["run"]) == ["kept"]


def test_try_every_suggestion_opens_the_sweep(live_api: LiveApi) -> None:
    run = lagging_run(live_api)
    app = open_app_page("run", id=run["id"])
    button = app.button(key=f"try-all-{run['id']}")
    assert not button.disabled
    button.click().run()
    assert not app.exception
    sweep = httpx.get(f"{live_api.url}/api/sweeps/{app.query_params['id']}", timeout=10).json()
    assert sweep["source_run_id"] == run["id"]
    assert app.subheader[0].value == sweep["name"]
