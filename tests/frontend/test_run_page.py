"""The run page through AppTest against a live API: the config beside the
stored curves, a failure's reason, and a cancel that reaches the API."""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from streamlit.testing.v1 import AppTest

from backend import events
from tests.frontend.conftest import FRONTEND, LiveApi, page_path

CONFIG = {
    "image_size": [16, 16],
    "filters": [4],
    "epochs": 5,
    "optimizer": "sgd",
    "learning_rate": 0.05,
}


def open_run(run_id: str | None) -> AppTest:
    page = AppTest.from_file(page_path("run"), default_timeout=30)
    if run_id:
        page.query_params["id"] = run_id
    return page.run()


def figures(page: AppTest) -> dict[str, dict[str, Any]]:
    """Each plotly chart's figure, by its title."""
    found = {}
    for chart in page.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        found[spec["layout"]["title"]["text"]] = spec
    return found


def text_of(page: AppTest) -> str:
    return "\n".join(str(m.value) for m in page.markdown)


def seeded_run(live_api: LiveApi, epochs: int, final: str | None, **config: Any) -> dict:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], {**CONFIG, **config}, name="sgd run")
    if epochs or final:
        live_api.train_fake_epochs(run["id"], epochs, final=final)
    return run


def test_config_beside_the_stored_curves(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 3, "succeeded")
    page = open_run(run["id"])
    assert not page.exception
    assert page.subheader[0].value == "sgd run"
    config = text_of(page)
    assert ">optimizer<" in config and ">sgd<" in config
    assert ">learning_rate<" in config and ">0.05<" in config
    assert ">letters<" in config  # the dataset's name, not its id
    loss = figures(page)["Loss"]
    by_name = {trace["name"]: trace for trace in loss["data"]}
    assert by_name["loss"]["x"] == [1, 2, 3]
    assert by_name["val_loss"]["line"]["dash"] == "dash"
    assert len(by_name["batch loss"]["x"]) == 12  # 4 batch points per epoch
    accuracy = figures(page)["Accuracy"]
    assert [t["name"] for t in accuracy["data"]] == ["accuracy", "val_accuracy"]
    assert "3 of 5" in page.get("progress")[0].proto.text
    labels = [b.label for b in page.get("download_button")]
    assert labels == ["Download model", "Metrics CSV"]
    assert not [b for b in page.button if b.label == "Cancel run"]


def test_toggles_redraw_the_loss_chart(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 2, "succeeded")
    page = open_run(run["id"])
    page.toggle(key="log_y").set_value(True)
    page.slider(key="smoothing").set_value(0.0)
    page.run()
    loss = figures(page)["Loss"]
    assert loss["layout"]["yaxis"]["type"] == "log"
    assert "batch loss, smoothed" not in {t["name"] for t in loss["data"]}
    page.toggle(key="show_batches").set_value(False).run()
    assert {t["name"] for t in figures(page)["Loss"]["data"]} == {"loss", "val_loss"}


def test_a_failed_run_says_why(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 0, None)
    with live_api.database.session() as session:
        from backend import runs

        runs.finish(session, None, run["id"], "failed", error="out of memory in block 3")
    page = open_run(run["id"])
    assert not page.exception
    assert "out of memory in block 3" in page.error[0].value
    assert "Waiting for the first epoch".lower() in json.dumps(figures(page)).lower()


def test_cancel_on_a_running_run_reaches_the_api(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 2, None)
    page = open_run(run["id"])
    assert "running" in page.get("progress")[0].proto.text
    page.button(key="cancel").click().run()
    assert not page.exception
    flag = Redis.from_url(live_api.settings.redis_url).exists(events.cancel_key(run["id"]))
    assert flag
    assert "Cancel requested" in page.warning[0].value


def test_without_an_id_pick_a_run(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 1, "succeeded")
    page = open_run(None)
    assert not page.exception
    page.selectbox[0].select(run["id"]).run()
    assert page.query_params["id"] == run["id"]
    assert page.subheader[0].value == "sgd run"


def test_an_unknown_id_is_said_plainly(live_api: LiveApi) -> None:
    page = open_run("nope")
    assert not page.exception
    assert "No run with id" in page.error[0].value


def test_clone_opens_new_run_with_the_run_id(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 1, "succeeded")
    # The whole app, since switch_page needs st.navigation's pages.
    app = AppTest.from_file(str(FRONTEND / "streamlit_app.py"), default_timeout=30)
    app.switch_page("app_pages/run.py")
    app.query_params["id"] = run["id"]
    app.run()
    next(b for b in app.button if b.label == "Clone").click().run()
    assert not app.exception
    assert app.query_params == {"clone": run["id"]}


def test_a_queued_run_waits_and_cancels_at_once(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 0, None)
    page = open_run(run["id"])
    assert "waiting for a worker" in page.get("progress")[0].proto.text
    assert "waiting for the first epoch" in json.dumps(figures(page))
    page.button(key="cancel").click().run()
    assert not page.exception
    assert "Cancelled after 0 epochs." in page.info[0].value
    assert not [b for b in page.button if b.key == "cancel"]


def test_compare_with_opens_the_compare_page(live_api: LiveApi) -> None:
    run = seeded_run(live_api, 1, "succeeded")
    other = live_api.create_run(run["dataset_id"], CONFIG, name="other")
    app = AppTest.from_file(str(FRONTEND / "streamlit_app.py"), default_timeout=30)
    app.switch_page("app_pages/run.py")
    app.query_params["id"] = run["id"]
    app.run()
    app.multiselect(key="compare_with").select(other["id"]).run()
    next(b for b in app.button if b.label == "Compare").click().run()
    assert not app.exception
    assert app.query_params["ids"] == f"{run['id']},{other['id']}"


def test_an_application_runs_config_shows_its_architecture_not_conv_bn_knobs(
    live_api: LiveApi,
) -> None:
    run = seeded_run(live_api, 2, "succeeded", architecture="resnet50", image_size=[32, 32])
    assert run["config"]["filters"] == CONFIG["filters"]  # stored, trains nothing
    page = open_run(run["id"])
    assert not page.exception
    config = text_of(page)
    assert ">architecture<" in config and ">resnet50<" in config
    assert ">bn_momentum<" in config and ">learning_rate<" in config
    assert ">filters<" not in config and ">dense_units<" not in config
