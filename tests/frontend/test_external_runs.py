"""External runs (a user's own ``model.fit`` with ``curvelab.Callback``) in the
UI, through AppTest against the live API: sent over the real external-run
routes, as the client sends them. The run page shows the model and fit
settings where a config would be, each finding's fix as code and no action
that needs a stored dataset; the Runs list marks the run with its host;
Compare diffs the settings that mean the same thing in a worker's run."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import Any

import httpx
from streamlit.testing.v1 import AppTest

from backend.db import Run
from backend.fit_summary import FitSummary
from frontend.api_client import ApiClient
from frontend.fit_summary_view import finding_change, shape_text, shared_settings
from tests.frontend.conftest import LiveApi, open_app_page, page_path

HOST = "laptop-7"
MISSING = "No validation data reached the probes: val_loss_recalibrated is not measured."


def layer(name: str, kind: str, shape: list[int | None], params: int, **more: Any) -> dict:
    return {"name": name, "type": kind, "output_shape": shape, "params": params, **more}


# As the callback describes the question's network: Conv+BN blocks, Dropout, softmax.
SUMMARY: dict[str, Any] = {
    "model": {
        "name": "functional",
        "params": 5_130,
        "trainable_params": 5_066,
        "layers": [
            layer("input_layer", "InputLayer", [None, 16, 16, 1], 0),
            layer("conv1", "Conv2D", [None, 16, 16, 8], 80, filters=8, activation="relu"),
            layer("bn1", "BatchNormalization", [None, 16, 16, 8], 32, momentum=0.99),
            layer("drop1", "Dropout", [None, 16, 16, 8], 0, rate=0.25),
            layer("flatten", "Flatten", [None, 2048], 0),
            layer("head", "Dense", [None, 3], 6_147, units=3, activation="softmax"),
        ],
    },
    "optimizer": {
        "name": "SGD",
        "learning_rate": 0.01,
        "momentum": 0.9,
        "config": {"name": "SGD", "learning_rate": 0.01, "momentum": 0.9, "nesterov": False},
    },
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "batch_size": 64,
    "epochs": 6,
    "steps_per_epoch": 7,
    "train_images": 448,
    "val_images": 128,
    "input_shape": [None, 16, 16, 1],
    "num_classes": 3,
    "keras_version": "3.10.0",
    "backend": "jax",
    "client_version": "0.1.0",
    "probes": {"train_images": 256, "bn_images": 256, "val_images": None, "missing": [MISSING]},
}
# A BatchNorm-lag history (as tests/frontend/test_diagnosis_panel.py's): the
# reported loss falls, val_loss stays far above it, and re-estimating
# BatchNorm's statistics brings validation back to it.
LOSS = [1.8, 1.1, 0.7, 0.45, 0.3, 0.2]
VAL_LOSS = [4.0, 3.6, 3.0, 2.2, 1.2, 0.6]


def lagging_epochs(count: int) -> list[dict[str, Any]]:
    return [
        {
            "epoch": epoch,
            "values": {
                "loss": loss,
                "accuracy": 1 - loss / 2,
                "val_loss": val_loss,
                "val_accuracy": 0.1 * epoch,
                "train_eval_loss": val_loss - 0.1,
                "train_eval_loss_recalibrated": loss + 0.02,
                "val_loss_recalibrated": loss + 0.1,
                "bn_init_weight": 0.99 ** (7 * epoch),
                "seconds": 1.5,
            },
        }
        for epoch, (loss, val_loss) in enumerate(zip(LOSS, VAL_LOSS, strict=True), start=1)
    ][:count]


def external_run(
    live_api: LiveApi,
    *,
    name: str = "my script",
    epochs: int = 6,
    final: str | None = "succeeded",
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A run sent as curvelab.Callback sends it: create, epochs, batch points, finish."""
    run_id = uuid.uuid4().hex
    body = {"id": run_id, "name": name, "host": HOST, "summary": summary or SUMMARY}
    body["class_names"] = ["a", "b", "c"]
    with httpx.Client(base_url=f"{live_api.url}/api/runs", headers=live_api.headers) as api:
        api.post("/external", json=body).raise_for_status()
        api.post(f"/{run_id}/epochs", json={"epochs": lagging_epochs(epochs)}).raise_for_status()
        batches = [
            {"step": s, "epoch": s / 7, "values": {"loss": 2.0 - s / 50}}
            for s in range(1, 7 * epochs + 1)
        ]
        api.post(f"/{run_id}/batches", json={"batches": batches}).raise_for_status()
        if final:
            api.post(f"/{run_id}/finish", json={"status": final}).raise_for_status()
        return dict(api.get(f"/{run_id}").json())


def worker_run(live_api: LiveApi, epochs: int = 3, **config: Any) -> dict[str, Any]:
    dataset = live_api.upload_dataset()
    base = {"image_size": [16, 16], "filters": [4], "epochs": 5, "bn_momentum": 0.9}
    run = live_api.create_run(dataset["id"], {**base, **config}, name="worker run")
    live_api.train_fake_epochs(run["id"], epochs)
    return run


def open_run(run_id: str) -> AppTest:
    page = AppTest.from_file(page_path("run"), default_timeout=30)
    page.query_params["id"] = run_id
    return page.run()


def download_labels(page: AppTest) -> list[str]:
    return [str(getattr(b, "label", "")) for b in page.get("download_button")]


def markdown_of(page: AppTest) -> str:
    return "\n".join(str(m.value) for m in page.markdown)


def test_the_summary_matches_the_servers_contract() -> None:
    # The fixture is what the client sends: if the contract moves, this says so first.
    assert FitSummary.model_validate(SUMMARY).probes.missing == [MISSING]


def test_run_page_shows_the_model_the_fit_and_the_code_to_change(live_api: LiveApi) -> None:
    run = external_run(live_api)
    assert run["source"] == "keras" and run["config"] is None  # what the API serves
    page = open_run(run["id"])
    assert not page.exception
    fit = markdown_of(page)
    for field, value in (
        ("optimizer", "SGD"),
        ("learning_rate", "0.01"),
        ("loss", "sparse_categorical_crossentropy"),
        ("batch_size", "64"),
        ("steps_per_epoch", "7"),
        ("input_shape", "(None, 16, 16, 1)"),
        ("bn_momentum", "0.99"),
        ("dropout", "0.25"),
        ("nesterov", "off"),  # the optimizer's config
        ("keras", "3.10.0"),
        ("backend", "jax"),
        ("probe train images", "256"),
        ("source", f"keras · {HOST}"),
    ):
        assert f">{field}<" in fit and f">{value}<" in fit, field
    assert MISSING in " ".join(str(c.value) for c in page.caption)
    layers = page.dataframe[0].value.set_index("layer")
    assert layers.loc["bn1", "type"] == "BatchNormalization"
    assert layers.loc["bn1", "settings"] == "momentum 0.99"
    assert layers.loc["drop1", "settings"] == "rate 0.25"
    assert layers.loc["head", "output shape"] == "(None, 3)"
    assert layers.loc["head", "params"] == 6_147
    subheaders = [s.value for s in page.subheader]
    assert "The model" in subheaders and "Why the curves look like this" in subheaders
    assert "What the model learned" not in subheaders  # no stored dataset to evaluate on
    # The same curves as a worker's run: 6 epochs, 7 batch points each.
    loss = json.loads(page.get("plotly_chart")[0].proto.spec)
    traces = {t["name"]: t for t in loss["data"]}
    assert traces["loss"]["x"] == [1, 2, 3, 4, 5, 6] and len(traces["batch loss"]["x"]) == 42
    assert "6 of 6" in page.get("progress")[0].proto.text
    # The fix is the user's to make: code to paste, never a button that re-runs.
    code = "\n".join(str(c.value) for c in page.code)
    assert "BatchNormalization(momentum=" in code
    assert "The change to make in your script:" in [c.value for c in page.caption]
    buttons = [b.label for b in page.button]
    assert "Clone" not in buttons and "Try this fix" not in buttons
    assert "Cancel run" not in buttons
    # No model uploaded: the API would answer 409, so no download is offered.
    assert download_labels(page) == ["Metrics CSV"]


def test_a_running_external_run_cannot_be_cancelled_from_here(live_api: LiveApi) -> None:
    run = external_run(live_api, epochs=2, final=None)
    page = open_run(run["id"])
    assert not page.exception
    assert "running" in page.get("progress")[0].proto.text
    assert "2 of 6" in page.get("progress")[0].proto.text
    assert not [b for b in page.button if b.label in ("Cancel run", "Clone")]


def test_an_uploaded_model_can_be_downloaded(live_api: LiveApi) -> None:
    run = external_run(live_api, epochs=2)
    keras_file = io.BytesIO()
    with zipfile.ZipFile(keras_file, "w") as archive:  # what a .keras file holds, at least
        archive.writestr("config.json", json.dumps({"class_name": "Functional"}))
        archive.writestr("metadata.json", "{}")
    reply = httpx.put(
        f"{live_api.url}/api/runs/{run['id']}/model",
        files={"file": ("model.keras", keras_file.getvalue())},
        headers=live_api.headers,
        timeout=10,
    )
    assert reply.status_code == 201, reply.text
    page = open_run(run["id"])
    assert not page.exception
    assert download_labels(page) == ["Download model", "Metrics CSV"]


def test_interrupted_is_a_final_status_with_its_own_mark(live_api: LiveApi) -> None:
    run = external_run(live_api, epochs=2, final="interrupted")
    page = open_run(run["id"])
    assert not page.exception
    assert ":material/stop_circle: interrupted" in page.get("progress")[0].proto.text
    assert "Interrupted after 2 epochs" in page.info[0].value


def test_runs_list_marks_external_runs_and_shows_their_settings(live_api: LiveApi) -> None:
    worker = worker_run(live_api)
    external = external_run(live_api, epochs=3, final="interrupted")
    page = AppTest.from_file(page_path("runs"), default_timeout=30).run()
    assert not page.exception
    rows = page.dataframe[0].value.set_index("run")
    assert rows.loc["my script", "source"] == f"keras · {HOST}"
    assert rows.loc["worker run", "source"] == "worker"
    # The summary's settings, under the names a worker run's config gives them.
    assert rows.loc["my script", "optimizer"] == "sgd"
    assert rows.loc["worker run", "optimizer"] == "adam"
    assert rows.loc["my script", "learning_rate"] == "0.01"
    assert rows.loc["my script", "batch_size"] == "64"
    assert rows.loc["worker run", "batch_size"] == "128"
    assert rows.loc["my script", "epochs"] == "3 / 6"
    assert rows.loc["my script", "status"] == "interrupted"
    assert rows.loc["my script", "dataset"] == "—"
    assert rows.loc["my script", "open"] == f"run?id={external['id']}"
    assert rows.loc["worker run", "open"] == f"run?id={worker['id']}"
    # Fields only a TrainConfig has are not columns between the two kinds.
    assert "image_size" not in rows.columns and "filters" not in rows.columns


def test_compare_overlays_both_kinds_and_diffs_what_they_share(live_api: LiveApi) -> None:
    worker = worker_run(live_api)
    external = external_run(live_api)
    page = AppTest.from_file(page_path("compare"), default_timeout=30)
    page.query_params["ids"] = f"{worker['id']},{external['id']}"
    page.run()
    assert not page.exception
    loss = json.loads(page.get("plotly_chart")[0].proto.spec)
    traces = {t["name"]: t for t in loss["data"]}
    assert traces["worker run"]["x"] == [1, 2, 3]
    assert traces["my script"]["x"] == [1, 2, 3, 4, 5, 6]
    table = page.dataframe[0].value.set_index("")
    assert list(table.columns) == ["worker run", "my script"]
    assert table.loc["source"].tolist() == ["worker", f"keras · {HOST}"]
    assert table.loc["optimizer"].tolist() == ["adam", "sgd"]
    assert table.loc["learning_rate"].tolist() == ["0.001", "0.01"]
    assert table.loc["batch_size"].tolist() == ["128", "64"]
    assert table.loc["bn_momentum"].tolist() == ["0.9", "0.99"]
    assert table.loc["dropout"].tolist() == ["0", "0.25"]
    assert table.loc["epochs"].tolist() == ["3 / 5", "6 / 6"]
    assert "classes" not in table.index  # both have 3: not a difference
    assert "image_size" not in table.index and "augment.flip" not in table.index


def test_no_config_never_breaks_a_page(live_api: LiveApi) -> None:
    worker = worker_run(live_api, epochs=1)
    odd = external_run(live_api, name="odd summary", epochs=1)
    # A summary stored by a later client that this server no longer reads: None.
    with live_api.database.session() as session:
        row = session.get(Run, odd["id"])
        assert row is not None
        row.summary = {"model": "not a model"}
        session.commit()
    assert httpx.get(f"{live_api.url}/api/runs/{odd['id']}", timeout=10).json()["summary"] is None
    page = open_run(odd["id"])
    assert not page.exception
    assert "The script sent no layers." in markdown_of(page)
    for name, query in (
        ("runs", {}),
        ("compare", {"ids": f"{worker['id']},{odd['id']}"}),
        ("new_run", {"clone": odd["id"]}),
    ):
        app = open_app_page(name, **query)
        assert not app.exception, name
    # New run: an external run is no clone source; asked for, it says why.
    warnings = " ".join(w.value for w in app.warning)
    assert "an external run's settings live in its script" in warnings


def test_shared_settings_read_both_kinds_alike() -> None:
    config = {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 64, "epochs": 6}
    config |= {"batch_norm": True, "bn_momentum": 0.99, "dropout": 0.25}
    worker: dict[str, Any] = {"source": "worker", "config": config, "class_names": ["a", "b", "c"]}
    external: dict[str, Any] = {"source": "keras", "config": None, "summary": SUMMARY}
    assert shared_settings(worker) == shared_settings(external)
    without_bn = {**worker, "config": {**config, "batch_norm": False}}
    assert shared_settings(without_bn)["bn_momentum"] is None
    two = json.loads(json.dumps(SUMMARY))
    two["model"]["layers"].append(layer("bn2", "BatchNormalization", [None, 3], 12, momentum=0.9))
    two["optimizer"]["learning_rate"] = None  # a schedule
    settings = shared_settings({"source": "keras", "summary": two})
    assert settings["bn_momentum"] == [0.9, 0.99] and settings["learning_rate"] == "schedule"
    assert shared_settings({"source": "keras", "summary": None})["dropout"] == 0.0


def test_a_findings_change_is_code_never_a_rule_id() -> None:
    change = "keras.layers.BatchNormalization(momentum=0.9)"
    assert finding_change({"code": "batchnorm_lag", "keras_code": change}) == change
    assert finding_change({"code": "batchnorm_lag"}) is None
    assert finding_change({"code": change}) == change
    assert shape_text([[None, 3], [None, 1]]) == "(None, 3), (None, 1)"


def test_has_model_reads_the_status_only() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/uploaded/model"):
            return httpx.Response(200, content=b"PK...")
        if request.url.path.endswith("/gone/model"):
            raise httpx.ConnectError("refused")
        return httpx.Response(409, json={"detail": "external run: it uploaded no model"})

    client = ApiClient("http://api.test", transport=httpx.MockTransport(answer))
    assert client.has_model("uploaded")
    assert not client.has_model("none") and not client.has_model("gone")
