"""The Runs list through AppTest against a live API: only the differing
settings as columns, best validation numbers, links, selection to compare."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.frontend.conftest import FRONTEND, LiveApi, page_path

BASE = {"image_size": [16, 16], "filters": [4], "epochs": 4}


def open_runs() -> AppTest:
    return AppTest.from_file(page_path("runs"), default_timeout=30).run()


def test_the_table_shows_only_differing_settings(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    adam = live_api.create_run(dataset["id"], {**BASE, "learning_rate": 0.001}, name="adam")
    sgd = live_api.create_run(
        dataset["id"], {**BASE, "optimizer": "sgd", "learning_rate": 0.01}, name="sgd"
    )
    live_api.train_fake_epochs(adam["id"], 3)
    live_api.train_fake_epochs(sgd["id"], 2, final=None)
    page = open_runs()
    assert not page.exception
    table = page.dataframe[0].value
    config_columns = set(table.columns) - {
        "run",
        "status",
        "dataset",
        "epochs",
        "best val_loss",
        "best val_acc",
        "created",
        "open",
    }
    assert config_columns == {"optimizer", "learning_rate"}
    rows = table.set_index("run")
    assert rows.loc["adam", "optimizer"] == "adam" and rows.loc["sgd", "learning_rate"] == "0.01"
    assert rows.loc["sgd", "status"].endswith("running")
    assert rows.loc["adam", "dataset"] == "letters"
    assert rows.loc["adam", "epochs"] == "3 / 4"
    # train_fake_epochs' val_loss falls every epoch: the best is the last one.
    assert rows.loc["adam", "best val_loss"] < rows.loc["sgd", "best val_loss"]
    assert rows.loc["adam", "open"] == f"run?id={adam['id']}"
    assert "optimizer, learning_rate" in page.caption[0].value


def test_selecting_two_runs_enables_compare(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    for lr in (0.001, 0.01):
        run = live_api.create_run(dataset["id"], {**BASE, "learning_rate": lr})
        live_api.train_fake_epochs(run["id"], 1)
    page = open_runs()
    assert page.button(key="compare").disabled and page.button(key="open").disabled
    page.session_state[page.dataframe[0].key] = {"selection": {"rows": [0, 1], "columns": []}}
    page.run()
    assert not page.button(key="compare").disabled
    assert page.button(key="compare").label == "Compare 2 runs"
    assert page.button(key="open").disabled


def test_no_run_yet_says_how_to_start(live_api: LiveApi) -> None:
    page = open_runs()
    assert not page.exception
    assert "New run" in page.info[0].value and "curvelab demo" in page.info[0].value


def test_compare_opens_the_compare_page_with_both_ids(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    ids = []
    for lr in (0.001, 0.01):
        run = live_api.create_run(dataset["id"], {**BASE, "learning_rate": lr})
        live_api.train_fake_epochs(run["id"], 1)
        ids.append(run["id"])
    # The whole app, since switch_page needs st.navigation's pages.
    app = AppTest.from_file(str(FRONTEND / "streamlit_app.py"), default_timeout=30).run()
    app.session_state[app.dataframe[0].key] = {"selection": {"rows": [0, 1], "columns": []}}
    app.run()
    app.button(key="compare").click().run()
    assert not app.exception
    assert app.subheader[0].value == "Compare runs"
    assert sorted(app.query_params["ids"].split(",")) == sorted(ids)
