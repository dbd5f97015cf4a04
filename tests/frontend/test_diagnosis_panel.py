"""The run page's diagnosis through AppTest against a live API: a run whose
gap is BatchNorm lag gets that finding, its gap in parts, and a "Try this
fix" that starts the patched run and opens Compare with both."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from backend import runs
from backend.db import Run
from frontend.api_client import ApiClient
from frontend.run_view import fix_run_name, patch_changes, patch_text
from tests.frontend.conftest import LiveApi, open_app_page, page_path

CONFIG = {"image_size": [16, 16], "filters": [4], "epochs": 6, "bn_momentum": 0.99}
# A BatchNorm-lag history: the reported loss falls, val_loss stays far above
# it, and re-estimating BatchNorm's statistics brings validation back to it.
LOSS = [1.8, 1.1, 0.7, 0.45, 0.3, 0.2]
VAL_LOSS = [4.0, 3.6, 3.0, 2.2, 1.2, 0.6]
BN_LAG_TITLE = "BatchNorm's moving averages lag behind the model"


def record_lagging_epochs(live_api: LiveApi, run_id: str) -> None:
    """Six epochs with probes, as the worker records them, then success."""
    with live_api.database.session() as session:
        runs.mark_running(session, None, run_id)
        for epoch, (loss, val_loss) in enumerate(zip(LOSS, VAL_LOSS, strict=True), start=1):
            values = {
                "loss": loss,
                "accuracy": 1 - loss / 2,
                "val_loss": val_loss,
                "val_accuracy": 0.1 * epoch,
                "train_eval_loss": val_loss - 0.1,
                "train_eval_loss_recalibrated": loss + 0.02,
                "val_loss_recalibrated": loss + 0.1,
                "bn_init_weight": 0.99 ** (40 * epoch),
                "probe_seconds": 0.1,
                "seconds": 1.5,
            }
            runs.record_epoch(session, run_id, epoch, values, [])
        runs.finish(session, None, run_id, "succeeded")


def lagging_run(live_api: LiveApi) -> dict[str, Any]:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], {**CONFIG, "batch_norm": True}, name="lagging")
    record_lagging_epochs(live_api, run["id"])
    return run


def open_run(run_id: str) -> AppTest:
    page = AppTest.from_file(page_path("run"), default_timeout=30)
    page.query_params["id"] = run_id
    return page.run()


def figures(page: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in page.get("plotly_chart")]


def gap_chart(page: AppTest) -> dict[str, Any] | None:
    found = [f for f in figures(page) if any(t["name"] == "BatchNorm lag" for t in f["data"])]
    return found[0] if found else None


def suggestion_of(live_api: LiveApi, run_id: str, code: str) -> dict[str, Any]:
    diagnosis = httpx.get(f"{live_api.url}/api/runs/{run_id}/diagnosis", timeout=10).json()
    return next(f["suggestion"] for f in diagnosis["findings"] if f["code"] == code)


def test_batchnorm_lag_is_shown_with_its_evidence(live_api: LiveApi) -> None:
    run = lagging_run(live_api)
    page = open_run(run["id"])
    assert not page.exception
    assert "Why the curves look like this" in [s.value for s in page.subheader]
    alerts = [a.value for a in (*page.error, *page.warning)]
    shown = next(a for a in alerts if BN_LAG_TITLE in a)
    assert f"**{BN_LAG_TITLE}**" in shown
    assert "disappears when BatchNorm statistics are re-estimated" in shown
    assert shown.rstrip().endswith(".") and "\nAt epoch 2," in shown
    patch = suggestion_of(live_api, run["id"], "batchnorm_lag")
    new = patch["bn_momentum"]
    assert f"Suggested: `bn_momentum: 0.99 → {new:g}`" in [m.value for m in page.markdown]


def test_the_gap_chart_stacks_the_three_parts(live_api: LiveApi) -> None:
    run = lagging_run(live_api)
    figure = gap_chart(open_run(run["id"]))
    assert figure is not None
    assert figure["layout"]["barmode"] == "relative"
    traces = {t["name"]: t for t in figure["data"]}
    assert set(traces) == {"train-mode effect", "BatchNorm lag", "generalisation", "gap"}
    assert traces["BatchNorm lag"]["x"] == [1, 2, 3, 4, 5, 6]
    # Epoch 1: gap 4.0 − 1.8; train-mode 0.02; lag 4.0 − 1.9; the rest 0.08.
    assert traces["train-mode effect"]["y"][0] == pytest.approx(0.02)
    assert traces["BatchNorm lag"]["y"][0] == pytest.approx(2.1)
    assert traces["generalisation"]["y"][0] == pytest.approx(0.08)
    assert traces["gap"]["y"][0] == pytest.approx(2.2)
    assert "moving averages" in traces["BatchNorm lag"]["hovertemplate"]


def test_try_this_fix_starts_the_patched_run_and_compares(live_api: LiveApi) -> None:
    run = lagging_run(live_api)
    patch = suggestion_of(live_api, run["id"], "batchnorm_lag")
    app = open_app_page("run", id=run["id"])
    button = app.button(key=f"fix-{run['id']}-batchnorm_lag")
    assert not button.disabled
    button.click().run()
    assert not app.exception
    first, second = app.query_params["ids"].split(",")
    assert first == run["id"]
    new = httpx.get(f"{live_api.url}/api/runs/{second}", timeout=10).json()
    assert new["config"] == {**run["config"], **patch}
    assert new["dataset_id"] == run["dataset_id"]
    assert new["name"] == f"lagging · bn_momentum {patch['bn_momentum']:g}"
    assert "Compare runs" in [s.value for s in app.subheader]


def test_a_refused_fix_is_said_plainly(live_api: LiveApi, monkeypatch: pytest.MonkeyPatch) -> None:
    run = lagging_run(live_api)
    real = ApiClient.create_run

    def to_a_gone_dataset(
        self: ApiClient, dataset_id: str, config: dict[str, Any], name: str | None = None
    ) -> dict[str, Any]:
        return real(self, "gone", config, name)  # the real API's 404

    monkeypatch.setattr(ApiClient, "create_run", to_a_gone_dataset)
    page = open_run(run["id"])
    page.button(key=f"fix-{run['id']}-batchnorm_lag").click().run()
    assert not page.exception
    assert "Could not start the fix: dataset gone not found" in [e.value for e in page.error]
    assert httpx.get(f"{live_api.url}/api/runs", timeout=10).json()["total"] == 1


def test_a_deleted_dataset_disables_the_fix(live_api: LiveApi) -> None:
    run = lagging_run(live_api)
    # Deleting a dataset now deletes its runs; an earlier version kept them
    # (dataset_id NULL): such a run is what this page must still handle.
    with live_api.database.session() as session:
        session.execute(update(Run).where(Run.id == run["id"]).values(dataset_id=None))
        session.commit()
    page = open_run(run["id"])
    button = page.button(key=f"fix-{run['id']}-batchnorm_lag")
    assert button.disabled
    assert "dataset was deleted" in (button.help or "")


def test_the_centred_toggle_shifts_the_loss_by_half_an_epoch(live_api: LiveApi) -> None:
    run = lagging_run(live_api)
    page = open_run(run["id"])
    page.toggle(key="centre_loss").set_value(True).run()
    loss = next(f for f in figures(page) if f["layout"]["title"]["text"] == "Loss")
    traces = {t["name"]: t for t in loss["data"]}
    assert traces["loss (at epoch − 0.5)"]["x"] == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert traces["val_loss"]["x"] == [1, 2, 3, 4, 5, 6]


def test_a_run_without_probes_has_no_gap_chart(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], CONFIG, name="plain")
    live_api.train_fake_epochs(run["id"], 3)
    page = open_run(run["id"])
    assert not page.exception
    assert "Why the curves look like this" in [s.value for s in page.subheader]
    assert gap_chart(page) is None


def test_before_the_first_epoch_there_is_nothing_to_explain(live_api: LiveApi) -> None:
    dataset = live_api.upload_dataset()
    run = live_api.create_run(dataset["id"], CONFIG, name="queued")
    page = open_run(run["id"])
    assert not page.exception
    assert "Why the curves look like this" not in [s.value for s in page.subheader]


def test_a_patch_reads_as_its_changes() -> None:
    config = {"bn_momentum": 0.99, "augment": {"flip": True, "rotate": 0.0, "zoom": 0.0}}
    patch = {"bn_momentum": 0.9, "augment": {"flip": True, "rotate": 0.03, "zoom": 0.1}}
    changes = patch_changes(config, patch)
    assert changes == [
        ("bn_momentum", "0.99", "0.9"),
        ("augment.rotate", "0", "0.03"),
        ("augment.zoom", "0", "0.1"),
    ]
    assert patch_text(changes[:1]) == "bn_momentum: 0.99 → 0.9"
    assert patch_changes(config, {"bn_momentum": 0.99}) == []
    assert fix_run_name("run", changes[:1]) == "run · bn_momentum 0.9"
    assert len(fix_run_name("x" * 300, changes)) == 200
