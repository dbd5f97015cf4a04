"""Bring your own fit: a user's own Keras script, with ``curvelab.Callback``
added, against the whole stack as ``curvelab up`` starts it.

The script is written here the way the question's author wrote theirs
(functional API, Conv+BatchNorm blocks, ``Input(shape=…)``, ``Model(…)``,
pixels scaled to 0–1, Keras's default BatchNorm momentum) and runs in its own
process with only the client's environment variables. A gate file lets the
test hold the script between epochs, so that it can look at the run while it
trains, and stop the server in the middle of the fit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_for
from tests.e2e.conftest import Stack, start_stack, stop_stack
from tests.e2e.test_service_loop import read_sse

pytestmark = pytest.mark.e2e

EPOCHS = 6
HOLD_AFTER = 2  # the script waits for the gate after this epoch

USER_SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    import keras
    import numpy as np
    from keras import layers

    import curvelab

    gate = Path(sys.argv[1])
    epochs = int(sys.argv[2])
    hold_after = int(sys.argv[3])

    # Three classes of 16x16 patterns: stripes across, stripes down, a square.
    rng = np.random.default_rng(0)

    def pattern(label):
        grid = np.zeros((16, 16))
        shift = int(rng.integers(0, 4))
        if label == 0:
            grid[(np.arange(16) + shift) % 4 < 2, :] = 1.0
        elif label == 1:
            grid[:, (np.arange(16) + shift) % 4 < 2] = 1.0
        else:
            grid[4 + shift // 2 : 12 - shift // 2, 4 + shift // 2 : 12 - shift // 2] = 1.0
        return np.clip(40 + 170 * grid + rng.normal(0, 12, grid.shape), 0, 255)

    keras.utils.set_random_seed(1)
    labels = np.arange(240) % 3
    images = np.stack([pattern(label) for label in labels])[..., None].astype("float32") / 255.0
    order = rng.permutation(len(labels))
    x_train, y_train = images[order[:192]], labels[order[:192]]
    x_val, y_val = images[order[192:]], labels[order[192:]]

    inputs = keras.Input(shape=(16, 16, 1))
    x = inputs
    for filters in (8, 16):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.003),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    class Gate(keras.callbacks.Callback):
        # The test's hold: after epoch `hold_after`, wait until the gate file exists.
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == hold_after:
                print("HELD", flush=True)
                deadline = time.monotonic() + 300
                while not gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)

    cb = curvelab.Callback(name="my run", probe_data=(x_train[:64], y_train[:64]))
    model.fit(
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        batch_size=16,
        epochs=epochs,
        callbacks=[cb, Gate()],
        verbose=0,
    )
    print("RUN", cb.run_id, cb.url, flush=True)
    """
)


def _start_script(tmp_path: Path, api_url: str, log: Path) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "train.py"
    script.write_text(USER_SCRIPT)
    gate = tmp_path / "gate"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURVELAB_")}
    env.update(
        CURVELAB_API_URL=api_url,
        CURVELAB_SPOOL_DIR=str(tmp_path / "spool"),
        KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(script), str(gate), str(EPOCHS), str(HOLD_AFTER)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # the user's folder: nothing of the repository on sys.path
        )
    return process, gate


def _the_run(client: httpx.Client) -> dict[str, Any] | None:
    runs = client.get("/api/runs").json()["items"]
    external = [run for run in runs if run.get("source") == "keras"]
    return external[0] if external else None


def _finished(process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> str:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        stop_process(process)
        raise AssertionError(f"the script did not finish:\n{log.read_text()[-4000:]}") from None
    output = log.read_text()
    assert process.returncode == 0, output[-4000:]
    return output


def test_a_users_own_fit_streams_live_and_is_diagnosed(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "script.log"
    process, gate = _start_script(tmp_path, stack.api_url, log)
    try:
        with stack.client() as client:
            # While the script is held after epoch 2, the run is there, running.
            run = wait_for(
                lambda: (r := _the_run(client)) and r["epochs_done"] >= HOLD_AFTER and r,
                timeout=240,
                interval=0.5,
                what=f"the external run with {HOLD_AFTER} epochs, while the script trains",
            )
            assert run["status"] == "running"
            assert run["name"] == "my run"
            assert run["config"] is None
            assert run["host"]
            summary = run["summary"]
            types = [layer["type"] for layer in summary["model"]["layers"]]
            assert types.count("BatchNormalization") == 2
            momenta = {
                layer["momentum"]
                for layer in summary["model"]["layers"]
                if layer["type"] == "BatchNormalization"
            }
            assert momenta == {0.99}
            assert summary["batch_size"] == 16
            assert summary["steps_per_epoch"] == 12
            assert summary["optimizer"]["name"] == "Adam"
            gate.touch()
            output = _finished(process, log)
            run_id = run["id"]
            assert f"RUN {run_id}" in output
            assert f"/run?id={run_id}" in output

            final = wait_for(
                lambda: (
                    (r := client.get(f"/api/runs/{run_id}").json())["status"] == "succeeded" and r
                ),
                timeout=60,
                what="the run to be succeeded",
            )
            assert final["epochs_done"] == EPOCHS

            # The stream replays every epoch in order, then the final status.
            received = read_sse(client, f"/api/runs/{run_id}/events")
            epochs = [e["data"]["epoch"] for e in received if e["event"] == "epoch"]
            assert epochs == list(range(1, EPOCHS + 1))
            assert received[-1]["data"] == {**received[-1]["data"], "status": "succeeded"}

            metrics = client.get(f"/api/runs/{run_id}/metrics").json()
            rows = metrics["epochs"]
            assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
            for key in ("loss", "val_loss", "train_eval_loss", "bn_init_weight"):
                assert all(row.get(key) is not None for row in rows), key
            steps = [point["step"] for point in metrics["batches"]]
            assert steps == sorted(set(steps)) and steps

            # Momentum 0.99 and 12 steps an epoch: the moving averages lag
            # (val_loss near 0.9 against near 0 recalibrated, whatever the
            # seed), and the diagnosis says so in the script's terms.
            diagnosis = client.get(f"/api/runs/{run_id}/diagnosis").json()
            found = {finding["code"]: finding for finding in diagnosis["findings"]}
            assert "batchnorm_lag" in found, diagnosis["findings"]
            assert "BatchNormalization(momentum=" in (found["batchnorm_lag"]["keras_code"] or "")

            # What needs a stored dataset or model says so.
            assert client.get(f"/api/runs/{run_id}/evaluation").status_code == 409
            assert client.get(f"/api/runs/{run_id}/model").status_code == 409
    finally:
        stop_process(process)


def test_a_fit_outlives_the_server_and_syncs_what_it_buffered(
    tmp_path: Path, redis_url: str
) -> None:
    port = free_port()
    stack = start_stack(tmp_path, redis_url, api_port=port)
    log = tmp_path / "script.log"
    process, gate = _start_script(tmp_path, stack.api_url, log)
    try:
        with stack.client() as client:
            run = wait_for(
                lambda: (r := _the_run(client)) and r["epochs_done"] >= HOLD_AFTER and r,
                timeout=240,
                interval=0.5,
                what="the external run's first epochs",
            )
        run_id = run["id"]
        stop_stack(stack.process)  # the server goes away in the middle of the fit
        gate.touch()
        output = _finished(process, log)  # the fit finishes normally without it
        assert f"RUN {run_id}" in output
        assert "curvelab sync" in output  # it says how to send the rest
        spooled = list((tmp_path / "spool").rglob("*"))
        assert any(path.is_file() for path in spooled), "nothing buffered on disk"

        stack = start_stack(tmp_path, redis_url, api_port=port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CURVELAB_")}
        env.update(CURVELAB_API_URL=stack.api_url, CURVELAB_SPOOL_DIR=str(tmp_path / "spool"))
        curvelab = Path(sys.executable).with_name("curvelab")
        synced = subprocess.run(
            [str(curvelab), "sync", "--all"], env=env, capture_output=True, text=True, timeout=120
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
        with stack.client() as client:
            final = client.get(f"/api/runs/{run_id}").json()
            assert final["status"] == "succeeded"
            assert final["epochs_done"] == EPOCHS
            rows = client.get(f"/api/runs/{run_id}/metrics").json()["epochs"]
            assert [row["epoch"] for row in rows] == list(range(1, EPOCHS + 1))
            # A second sync has nothing left to send and changes nothing.
            again = subprocess.run(
                [str(curvelab), "sync", "--all"], env=env, capture_output=True, text=True
            )
            assert again.returncode == 0, again.stdout + again.stderr
            assert client.get(f"/api/runs/{run_id}/metrics").json()["epochs"] == rows
    finally:
        stop_process(process)
        stop_stack(stack.process)
