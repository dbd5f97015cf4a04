"""curvelab.Callback against the real API (uvicorn in a thread, the suite's
Redis, SQLite): a user's fit becomes an external run, with its ends
(succeeded, failed, interrupted) and, opted in, its model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
import uvicorn

import curvelab
from backend.api.main import create_app
from backend.settings import Settings
from tests.client import models
from tests.conftest import free_port, wait_for

TOKEN = "client-tests-token-0123456789"


@dataclass
class Api:
    url: str
    token: str

    def get(self, path: str) -> Any:
        reply = httpx.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )
        reply.raise_for_status()
        return reply.json() if "json" in reply.headers.get("content-type", "") else reply.content


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    """The real app under uvicorn, locked with a token (as every /api route is)."""
    locked = settings.model_copy(update={"api_token": TOKEN})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(locked), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="the API to start")
    yield Api(f"http://127.0.0.1:{port}", TOKEN)
    server.should_exit = True
    thread.join(10)


def _callback(api: Api, tmp_path: Path, **options: Any) -> curvelab.Callback:
    return curvelab.Callback(
        url=api.url, token=api.token, spool_dir=tmp_path / "spool", flush_timeout=20, **options
    )


class _Watch(keras.callbacks.Callback):
    """The user's own callback, after curvelab's: looks at the run mid-fit."""

    def __init__(self, api: Api, ours: curvelab.Callback) -> None:
        super().__init__()
        self.api, self.ours = api, ours
        self.seen: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if epoch == 0:
            run = wait_for(
                lambda: self._run_with_epoch(1), timeout=20, what="epoch 1 on the server"
            )
            self.seen.append(run)

    def _run_with_epoch(self, epoch: int) -> dict[str, Any] | None:
        try:
            run = self.api.get(f"/api/runs/{self.ours.run_id}")
        except httpx.HTTPStatusError:
            return None
        return run if run["epochs_done"] >= epoch else None


def test_a_fit_becomes_an_external_run(api: Api, tmp_path: Path) -> None:
    x, y = models.images(64)
    ours = _callback(
        api,
        tmp_path,
        name="my run",
        probe_data=(x[:32], y[:32]),
        batch_every=2,
        class_names=["a", "b", "c"],
    )
    watch = _Watch(api, ours)
    models.conv_bn().fit(
        x[:48],
        y[:48],
        validation_data=(x[48:], y[48:]),
        batch_size=8,
        epochs=3,
        callbacks=[ours, watch],
        verbose=0,
    )
    # While it trained, the run was there and running.
    assert watch.seen[0]["status"] == "running" and watch.seen[0]["source"] == "keras"
    run = api.get(f"/api/runs/{ours.run_id}")
    assert run["status"] == "succeeded" and run["name"] == "my run"
    assert run["host"] and run["config"] is None and run["class_names"] == ["a", "b", "c"]
    summary = run["summary"]
    assert summary["batch_size"] == 8 and summary["steps_per_epoch"] == 6
    assert summary["probes"]["train_images"] == 32 and summary["probes"]["val_images"] == 16
    metrics = api.get(f"/api/runs/{ours.run_id}/metrics")
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    last = metrics["epochs"][-1]
    assert {"val_loss", "train_eval_loss", "val_loss_recalibrated", "bn_init_weight"} <= set(last)
    steps = [point["step"] for point in metrics["batches"]]
    assert steps == list(range(2, 19, 2))
    assert ours.url == f"http://127.0.0.1:8501/run?id={ours.run_id}"
    assert not list((tmp_path / "spool").glob("*.jsonl"))


class _RaiseAtStep(keras.layers.Layer):
    """Raises ``error`` at the third training step (eager: inside the step,
    on every backend; out-of-range labels raise on TensorFlow only)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
        self.calls = 0

    def call(self, inputs: Any, training: bool = False) -> Any:
        if training:
            self.calls += 1
            if self.calls == 3:
                raise self.error
        return inputs


def _raising_model(error: BaseException) -> keras.Model:
    inputs = keras.Input(shape=(16, 16, 1))
    h = keras.layers.Flatten()(_RaiseAtStep(error)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    model.compile("sgd", "sparse_categorical_crossentropy", run_eagerly=True)
    return model


def test_an_exception_in_the_step_fails_the_run_with_its_message(api: Api, tmp_path: Path) -> None:
    x, y = models.images(32)
    ours = _callback(api, tmp_path)
    with pytest.raises(ValueError, match="the loss went wrong"):
        _raising_model(ValueError("the loss went wrong")).fit(
            x, y, batch_size=8, epochs=2, callbacks=[ours], verbose=0
        )
    run = api.get(f"/api/runs/{ours.run_id}")
    assert run["status"] == "failed"
    assert run["error"].startswith("ValueError: ") and "the loss went wrong" in run["error"]
    assert "\x1b[" not in run["error"]  # Keras's terminal styling is taken out


def test_ctrl_c_interrupts_the_run(api: Api, tmp_path: Path) -> None:
    x, y = models.images(32)
    model = _raising_model(KeyboardInterrupt())
    ours = _callback(api, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[ours], verbose=0)
    assert api.get(f"/api/runs/{ours.run_id}")["status"] == "interrupted"
    # The model is left as it was: no wrapper of curvelab's on its train_function.
    assert getattr(model.train_function, "__name__", "") != "guarded"


class _Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        raise RuntimeError("the user's callback broke")


def test_a_fit_that_died_outside_a_step_is_failed_at_the_next_fit(api: Api, tmp_path: Path) -> None:
    x, y = models.images(16)
    ours = _callback(api, tmp_path)
    model = models.conv_bn()
    with pytest.raises(RuntimeError):
        model.fit(x, y, batch_size=8, epochs=2, callbacks=[ours, _Boom()], verbose=0)
    first = ours.run_id
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[ours], verbose=0)
    assert ours.run_id != first
    assert api.get(f"/api/runs/{first}")["status"] == "failed"
    assert api.get(f"/api/runs/{ours.run_id}")["status"] == "succeeded"


def test_the_model_is_uploaded_when_asked(api: Api, tmp_path: Path) -> None:
    x, y = models.images(16)
    ours = _callback(api, tmp_path, upload_model=True)
    model = models.conv_bn()
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[ours], verbose=0)
    stored = api.get(f"/api/runs/{ours.run_id}/model")
    assert isinstance(stored, bytes) and stored[:2] == b"PK"  # a .keras is a zip
    path = tmp_path / "downloaded.keras"
    path.write_bytes(stored)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


SCRIPT_DYING_OUTSIDE_A_STEP = """
import keras
import curvelab
from tests.client import models


class Boom(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("the user's callback broke")


x, y = models.images(16)
cb = curvelab.Callback(flush_timeout=20)
try:
    models.conv_bn().fit(x, y, batch_size=8, epochs=2, callbacks=[cb, Boom()], verbose=0)
finally:
    print(cb.run_id, flush=True)
"""


def test_a_script_that_dies_outside_a_step_fails_its_run(api: Api, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CURVELAB_API_URL": api.url,
        "CURVELAB_API_TOKEN": api.token,
        "CURVELAB_SPOOL_DIR": str(tmp_path / "spool"),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT_DYING_OUTSIDE_A_STEP],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1 and "RuntimeError" in done.stderr
    run_id = done.stdout.split()[-1]
    run = api.get(f"/api/runs/{run_id}")
    # sys.excepthook saw the exception leave the script: the run did not stay running.
    assert run["status"] == "failed"
    assert run["error"] == "RuntimeError: the user's callback broke"
