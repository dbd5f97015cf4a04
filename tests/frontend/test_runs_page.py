"""The Runs list through AppTest against a live API: only the differing
settings as columns, each row's own summary (no metrics read), pages and
filters in the URL, selection to compare (up to 20) or delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from frontend.api_client import ApiClient
from tests.frontend.conftest import FRONTEND, LiveApi, page_path

BASE = {"image_size": [16, 16], "filters": [4], "epochs": 4}
START = datetime(2025, 3, 1, tzinfo=UTC)


def open_runs(**query: str) -> AppTest:
    page = AppTest.from_file(page_path("runs"), default_timeout=30)
    for key, value in query.items():
        page.query_params[key] = value
    return page.run()


def names(page: AppTest) -> list[str]:
    return list(page.dataframe[0].value["run"])


def select(page: AppTest, rows: list[int]) -> AppTest:
    key = page.dataframe[0].key
    assert key is not None
    page.session_state[key] = {"selection": {"rows": rows, "columns": []}}
    return page.run()


def many_runs(live_api: LiveApi) -> str:
    """80 "lr" runs (20 failed) and 40 "bn" ones, a minute apart; run lr #i's
    best val_loss is 1 + i/100, so sorting by it orders them by i."""
    dataset = live_api.upload_dataset()["id"]
    for i in range(80):
        live_api.add_run(
            dataset,
            f"lr #{i}",
            BASE,
            val_losses=[2.0, 1 + i / 100],
            status="succeeded" if i < 60 else "failed",
            created_at=START + timedelta(minutes=i),
        )
    for i in range(40):
        live_api.add_run(
            dataset,
            f"bn #{i}",
            BASE,
            val_losses=[0.5],
            created_at=START + timedelta(hours=3, minutes=i),
        )
    return dataset


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
        "duration",
        "created",
        "open",
    }
    assert config_columns == {"optimizer", "learning_rate"}
    rows = table.set_index("run")
    assert rows.loc["adam", "optimizer"] == "adam" and rows.loc["sgd", "learning_rate"] == "0.01"
    assert rows.loc["sgd", "status"].endswith("running")
    assert rows.loc["adam", "dataset"] == "letters"
    assert rows.loc["adam", "epochs"] == "3 / 4"
    assert rows.loc["adam", "duration"] == "4.5 s"  # 3 epochs of 1.5 s
    # train_fake_epochs' val_loss falls every epoch: the best is the last one.
    assert rows.loc["adam", "best val_loss"] < rows.loc["sgd", "best val_loss"]
    assert rows.loc["adam", "open"] == f"run?id={adam['id']}"
    assert "optimizer, learning_rate" in page.caption[0].value


def test_a_deep_link_reproduces_the_view_in_one_request(
    live_api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    many_runs(live_api)
    reads: list[dict] = []
    list_runs = ApiClient.list_runs

    def counted(self: ApiClient, **filters: object) -> dict:
        reads.append(filters)
        return list_runs(self, **filters)

    def no_metrics(self: ApiClient, *args: object, **kwargs: object) -> dict:
        raise AssertionError("the Runs page read a run's metrics")

    monkeypatch.setattr(ApiClient, "list_runs", counted)
    monkeypatch.setattr(ApiClient, "run_metrics", no_metrics)
    page = open_runs(status="succeeded", sort="-best_val_loss", page="2", q="lr")
    assert not page.exception
    # 60 succeeded "lr" runs, highest best val_loss first: page 2 holds the last 10.
    assert names(page) == [f"lr #{i}" for i in range(9, -1, -1)]
    assert "**60 runs** · page 2 of 2" in [m.value for m in page.markdown]
    assert len(reads) == 1
    assert page.multiselect(key="rf.status").value == ["succeeded"]
    assert page.text_input(key="rf.q").value == "lr"
    assert page.selectbox(key="rf.sort").value == "-best_val_loss"
    assert page.button(key="runs.next").disabled and not page.button(key="runs.prev").disabled


def test_pages_and_filters_write_the_url(live_api: LiveApi) -> None:
    many_runs(live_api)
    page = open_runs()
    assert len(names(page)) == 50 and names(page)[0] == "bn #39"  # newest first
    assert "**120 runs** · page 1 of 3" in [m.value for m in page.markdown]
    page.button(key="runs.next").click().run()
    assert page.query_params["page"] == "2"
    assert names(page)[:2] == ["lr #69", "lr #68"]
    # A new filter starts again at page 1, and says so in the URL.
    page.multiselect(key="rf.status").select("failed").run()
    assert dict(page.query_params) == {"status": "failed"}
    assert names(page) == [f"lr #{i}" for i in range(79, 59, -1)]
    page.text_input(key="rf.q").input("#7").run()
    assert page.query_params["q"] == "#7"
    assert names(page) == [f"lr #{i}" for i in range(79, 69, -1)]


def test_a_page_past_the_last_and_unknown_values_are_said_not_failed(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()["id"]
    live_api.add_run(dataset, "only", BASE, val_losses=[1.0])
    page = open_runs(page="9", status="nope", sort="sideways", to="yesterday")
    assert not page.exception
    assert names(page) == ["only"]
    assert page.query_params.get("page") is None  # back on the last page, 1
    warnings = " ".join(w.value for w in page.warning)
    assert "Unknown status nope" in warnings and "Unknown sort sideways" in warnings
    assert "`to=yesterday` is not a date" in warnings


def test_tags_and_created_range_filter(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()["id"]
    live_api.add_run(dataset, "old", BASE, tags=["baseline"], created_at=START)
    live_api.add_run(
        dataset, "new", BASE, tags=["baseline", "bn"], created_at=START + timedelta(days=2)
    )
    live_api.add_run(dataset, "other", BASE, created_at=START + timedelta(days=2))
    page = open_runs(tag="baseline")
    assert sorted(names(page)) == ["new", "old"]
    assert set(page.dataframe[0].value["tags"]) == {"baseline", "baseline, bn"}
    page = open_runs(**{"from": "2025-03-02", "to": "2025-03-03"})
    assert sorted(names(page)) == ["new", "other"]
    page = open_runs(to="2025-03-01")  # "to" includes its day
    assert names(page) == ["old"]
    page = open_runs(q="nothing like it")
    assert "No run matches these filters." in page.info[0].value


def test_selecting_two_runs_enables_compare(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    for lr in (0.001, 0.01):
        run = live_api.create_run(dataset["id"], {**BASE, "learning_rate": lr})
        live_api.train_fake_epochs(run["id"], 1)
    page = open_runs()
    assert page.button(key="compare").disabled and page.button(key="open").disabled
    select(page, [0, 1])
    assert not page.button(key="compare").disabled
    assert page.button(key="compare").label == "Compare 2 runs"
    assert page.button(key="open").disabled


def test_compare_takes_up_to_20(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()["id"]
    for i in range(21):
        live_api.add_run(dataset, f"r{i}", BASE, created_at=START + timedelta(minutes=i))
    page = select(open_runs(), list(range(20)))
    assert not page.button(key="compare").disabled
    select(page, list(range(21)))
    assert page.button(key="compare").disabled
    assert "Compare takes up to 20 runs: 21 are selected." in [c.value for c in page.caption]


def test_delete_selected_asks_then_deletes(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()["id"]
    for i in range(3):
        live_api.add_run(dataset, f"r{i}", BASE, created_at=START + timedelta(minutes=i))
    page = select(open_runs(), [0, 1])  # r2 and r1: newest first
    page.button(key="delete").click().run()
    assert any("Delete **2 runs**" in m.value for m in page.markdown)
    page.button(key="delete-keep").click().run()
    assert len(httpx.get(f"{live_api.url}/api/runs").json()["items"]) == 3
    select(page, [0, 1]).button(key="delete").click().run()
    page.button(key="delete-confirm").click().run()
    assert not page.exception
    assert page.success[0].value == "Deleted 2 runs."
    assert names(page) == ["r0"]
    left = httpx.get(f"{live_api.url}/api/runs").json()
    assert [r["name"] for r in left["items"]] == ["r0"]


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
    select(app, [0, 1])
    app.button(key="compare").click().run()
    assert not app.exception
    assert app.subheader[0].value == "Compare runs"
    assert sorted(app.query_params["ids"].split(",")) == sorted(ids)
