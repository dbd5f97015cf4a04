"""The run and compare pages over runs stored under an older config shape:
the fields this version no longer knows are shown apart (and marked in the
compare table), a value replaced by its default says so."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from backend.db import Run
from tests.frontend.conftest import LiveApi, page_path

BASE = {"image_size": [16, 16], "filters": [4], "epochs": 3}


def _store_old_shape(live_api: LiveApi, run_id: str, **extra: object) -> None:
    with live_api.database.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        config = {k: v for k, v in run.config.items() if k != "gap_probes"}
        run.config = {**config, **extra}
        session.commit()


def test_the_run_page_shows_unknown_fields_and_notes(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], BASE, name="old run")
    live_api.train_fake_epochs(run["id"], 2)
    _store_old_shape(live_api, run["id"], legacy_knob=3, dense_units=100_000)
    page = AppTest.from_file(page_path("run"), default_timeout=30)
    page.query_params["id"] = run["id"]
    page.run()
    assert not page.exception
    shown = "\n".join(str(m.value) for m in page.markdown)
    assert ">Stored, not used<" in shown and ">legacy_knob<" in shown
    assert ">gap_probes<" in shown  # missing from SQL: its default
    notes = " ".join(str(c.value) for c in page.caption)
    assert "dense_units: the stored value 100000 is no longer valid" in notes


def test_compare_marks_the_unknown_fields(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    old = live_api.create_run(dataset["id"], BASE, name="old")
    new = live_api.create_run(dataset["id"], BASE, name="new")
    for run in (old, new):
        live_api.train_fake_epochs(run["id"], 2)
    _store_old_shape(live_api, old["id"], legacy_knob=3)
    page = AppTest.from_file(page_path("compare"), default_timeout=30)
    page.query_params["ids"] = f"{old['id']},{new['id']}"
    page.run()
    assert not page.exception
    table = page.dataframe[0].value.set_index("")
    assert table.loc["legacy_knob (not used)"].tolist() == ["3", "—"]
