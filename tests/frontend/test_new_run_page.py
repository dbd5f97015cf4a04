"""The New-run page through AppTest against a live API: presets, the form's
values reaching the API, a 422 beside the field it names, deep links that
preselect a dataset or clone a run."""

from __future__ import annotations

from typing import Any

import httpx
from streamlit.testing.v1 import AppTest

from backend.train_config import CONV_BN_ONLY, PRESETS, TrainConfig
from frontend.config_form import FIELDS, build_config, widget_keys, widget_values
from tests.frontend.conftest import LiveApi, open_app_page

SMALL = {"image_size": [16, 16], "filters": [4, 8], "dense_units": 8, "epochs": 3}


def runs_of(live_api: LiveApi) -> list[dict[str, Any]]:
    return list(httpx.get(f"{live_api.url}/api/runs").json()["items"])


def form_value(page: AppTest, key: str) -> Any:
    return page.session_state[key]


def form_values(page: AppTest) -> dict[str, Any]:
    return {key: page.session_state[key] for f in FIELDS.values() for key in widget_keys(f)}


def message_under(page: AppTest, key: str) -> str | None:
    """The error drawn right after the widget with ``key``, or after the row of
    columns that holds it (the image size's two inputs), if any."""
    Trail = list[tuple[list[Any], int]]

    def walk(node: Any, trail: Trail) -> Trail | None:
        children = list(getattr(node, "children", {}).values())
        for index, child in enumerate(children):
            here = [*trail, (children, index)]
            if getattr(child, "key", None) == key:
                return here
            if (found := walk(child, here)) is not None:
                return found
        return None

    # The widget, its column, the columns' row: no higher, where other fields' are.
    for children, index in reversed((walk(page.main, []) or [])[-3:]):
        after = children[index + 1] if index + 1 < len(children) else None
        if after is not None and type(after).__name__ == "Error":
            return str(after.value)
    return None


def drawn_keys(page: AppTest) -> set[str]:
    kinds = ("number_input", "text_input", "checkbox", "selectbox", "radio")
    return {str(w.key) for kind in kinds for w in page.get(kind)}


def test_the_questions_network_is_the_default_preset(live_api: LiveApi) -> None:
    live_api.upload_dataset()
    page = open_app_page("new_run")
    assert not page.exception
    presets = page.selectbox(key="nr.preset")
    assert presets.value == "seed-cnn" and set(presets.options) == set(PRESETS)
    assert any(c.value == PRESETS["seed-cnn"][0] for c in page.caption)
    assert form_value(page, "cfg.filters") == "64, 128, 256, 512"
    assert form_value(page, "cfg.batch_size") == 128


def test_submitting_creates_the_run_with_the_forms_values(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    page = open_app_page("new_run")
    page.selectbox(key="nr.preset").select("tiny").run()
    assert form_value(page, "cfg.filters") == "8, 16"
    page.text_input(key="nr.name").input("from the form")
    page.number_input(key="cfg.image_size.0").set_value(16)
    page.number_input(key="cfg.image_size.1").set_value(16)
    page.number_input(key="cfg.epochs").set_value(2)
    page.selectbox(key="cfg.optimizer").select("sgd")
    page.number_input(key="cfg.learning_rate").set_value(0.05)
    page.checkbox(key="cfg.augment.flip").check()
    page.button[0].click().run()  # the form's submit button

    (run,) = runs_of(live_api)
    expected = build_config(widget_values(PRESETS["tiny"][1].model_dump(mode="json")))
    expected |= {"image_size": [16, 16], "epochs": 2, "optimizer": "sgd", "learning_rate": 0.05}
    expected["augment"]["flip"] = True
    assert run["config"] == expected
    assert (run["name"], run["dataset_id"]) == ("from the form", dataset["id"])
    assert page.query_params["id"] == run["id"]  # now on the run's page


def test_a_refused_config_is_shown_beside_the_field_it_names(live_api: LiveApi) -> None:
    live_api.upload_dataset()
    page = open_app_page("new_run")
    page.number_input(key="cfg.image_size.0").set_value(16)
    page.number_input(key="cfg.image_size.1").set_value(16)
    page.text_input(key="cfg.filters").input("8, 8, 8, 8, 8, 8")
    page.button[0].click().run()

    assert not page.exception
    assert runs_of(live_api) == []
    beside = message_under(page, "cfg.filters")
    assert beside and "6 pooling blocks shrink a 16-pixel side" in beside
    assert page.error[0].value.startswith("**The run was not started.**")
    assert form_value(page, "cfg.filters") == "8, 8, 8, 8, 8, 8"  # kept for fixing
    page.text_input(key="cfg.filters").input("8, 8")
    page.button[0].click().run()
    assert len(runs_of(live_api)) == 1


def test_filters_that_are_not_numbers_never_reach_the_api(live_api: LiveApi) -> None:
    live_api.upload_dataset()
    page = open_app_page("new_run")
    page.text_input(key="cfg.filters").input("8, lots")
    page.button[0].click().run()
    assert "whole numbers" in (message_under(page, "cfg.filters") or "")
    assert runs_of(live_api) == []


def test_the_url_preselects_a_dataset(live_api: LiveApi) -> None:
    first = live_api.upload_dataset("first")
    live_api.upload_dataset("second")
    page = open_app_page("new_run", dataset=first["id"])
    assert page.selectbox(key="nr.dataset").value == first["id"]


def test_clone_from_the_url_prefills_form_and_dataset(live_api: LiveApi) -> None:
    older = live_api.upload_dataset("older")
    live_api.upload_dataset("newer")
    config = SMALL | {"optimizer": "sgd", "learning_rate": 0.02, "bn_momentum": 0.9}
    source = live_api.create_run(older["id"], config, name="source")
    page = open_app_page("new_run", clone=source["id"])

    assert not page.exception
    assert page.selectbox(key="nr.dataset").value == older["id"]
    assert page.selectbox(key="nr.clone").value == source["id"]
    assert build_config(form_values(page)) == source["config"]
    assert any("Pre-filled from run **source**" in c.value for c in page.caption)


def test_clone_from_the_selector_then_back_to_a_preset(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    source = live_api.create_run(dataset["id"], SMALL, name="source")
    page = open_app_page("new_run")
    page.selectbox(key="nr.clone").select(source["id"]).run()
    assert form_value(page, "cfg.filters") == "4, 8"
    assert page.query_params["clone"] == source["id"]

    page.selectbox(key="nr.preset").select("tiny").run()
    assert page.selectbox(key="nr.clone").value is None
    assert form_value(page, "cfg.filters") == "8, 16"
    assert "clone" not in page.query_params


def test_an_unknown_run_to_clone_falls_back_to_a_preset(live_api: LiveApi) -> None:
    live_api.upload_dataset()
    page = open_app_page("new_run", clone="nope")
    assert not page.exception
    assert any("no run `nope`" in w.value for w in page.warning)
    assert form_value(page, "cfg.filters") == "64, 128, 256, 512"


def test_without_a_dataset_it_points_to_the_datasets_page(live_api: LiveApi) -> None:
    page = open_app_page("new_run")
    assert not page.exception
    assert "upload one first" in page.info[0].value
    assert not page.get("form")


def test_coming_back_with_another_run_to_clone_loads_that_one(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    first = live_api.create_run(dataset["id"], SMALL, name="first")
    second = live_api.create_run(dataset["id"], SMALL | {"filters": [2, 4, 6]}, name="second")
    page = open_app_page("new_run", clone=first["id"])
    assert form_value(page, "cfg.filters") == "4, 8"
    page.switch_page("app_pages/datasets.py").run()  # away: Streamlit drops the widgets
    page.switch_page("app_pages/new_run.py")
    page.query_params["clone"] = second["id"]
    page.run()
    assert page.selectbox(key="nr.clone").value == second["id"]
    assert form_value(page, "cfg.filters") == "2, 4, 6"


def test_an_application_hides_the_conv_bn_knobs_and_sends_them_unchanged(
    live_api: LiveApi,
) -> None:
    live_api.upload_dataset()
    page = open_app_page("new_run")
    page.selectbox(key="nr.preset").select("tiny").run()
    page.selectbox(key="cfg.architecture").select("mobilenet_v3_small").run()
    assert not page.exception
    hidden = {f"cfg.{name}" for name in CONV_BN_ONLY}
    assert not hidden & drawn_keys(page)
    assert {"cfg.bn_momentum", "cfg.dropout"} <= drawn_keys(page)
    assert any("apply to conv_bn only" in c.value for c in page.caption)
    assert any("every BatchNormalization layer" in c.value for c in page.caption)
    assert any(c.value.startswith("Keras MobileNetV3Small with random") for c in page.caption)

    # Back to conv_bn: the preset's knobs are still there.
    page.selectbox(key="cfg.architecture").select("conv_bn").run()
    assert hidden <= drawn_keys(page)
    assert form_value(page, "cfg.filters") == "8, 16"
    page.selectbox(key="cfg.architecture").select("mobilenet_v3_small").run()
    page.button[0].click().run()

    assert not page.exception
    (run,) = runs_of(live_api)
    defaults = TrainConfig().model_dump(mode="json")
    tiny = PRESETS["tiny"][1].model_dump(mode="json")
    expected = tiny | {name: defaults[name] for name in CONV_BN_ONLY}
    assert run["config"] == expected | {"architecture": "mobilenet_v3_small"}
    assert page.query_params["id"] == run["id"]


def test_an_image_too_small_for_an_application_is_said_at_the_image_size(
    live_api: LiveApi,
) -> None:
    live_api.upload_dataset()
    page = open_app_page("new_run")
    page.selectbox(key="cfg.architecture").select("resnet50").run()
    page.number_input(key="cfg.image_size.0").set_value(16)
    page.number_input(key="cfg.image_size.1").set_value(16)
    page.button[0].click().run()

    assert not page.exception
    assert runs_of(live_api) == []
    beside = message_under(page, "cfg.image_size.0")
    assert beside and "resnet50 needs at least 32×32 pixels, got 16×16" in beside
    page.number_input(key="cfg.image_size.0").set_value(32)
    page.number_input(key="cfg.image_size.1").set_value(32)
    page.button[0].click().run()
    (run,) = runs_of(live_api)
    assert (run["config"]["architecture"], run["config"]["image_size"]) == ("resnet50", [32, 32])
