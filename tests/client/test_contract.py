"""The server's contract test for the client: every body the callback builds
(read back from a real fit's spool) validates with backend.fit_summary.

This test may import the server; the client package never does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from pydantic import BaseModel

import curvelab
from backend.fit_summary import BatchesAppend, EpochsAppend, ExternalRunCreate, RunFinish
from curvelab.spool import Spool
from tests.client import models
from tests.conftest import free_port

MODELS: dict[str, type[BaseModel]] = {
    "create": ExternalRunCreate,
    "epochs": EpochsAppend,
    "batches": BatchesAppend,
}


@pytest.mark.parametrize("probes", [True, False])
def test_every_body_of_a_fit_validates(tmp_path: Path, probes: bool) -> None:
    x, y = models.images(48)
    callback = curvelab.Callback(
        "contract",
        (x[:16], y[:16]) if probes else None,
        url=f"http://127.0.0.1:{free_port()}",  # nothing there: all of it stays spooled
        spool_dir=tmp_path,
        batch_every=2,
        class_names=["a", "b", "c"],
        flush_timeout=0,
    )
    models.conv_bn().fit(
        x, y, validation_split=0.25, batch_size=8, epochs=2, callbacks=[callback], verbose=0
    )
    assert callback.spool_path is not None
    records = Spool.read(callback.spool_path).pending()
    assert {r.op for r in records} == {"create", "epochs", "batches", "finish"}
    for record in records:
        if record.op == "finish":
            assert RunFinish.model_validate(record.body).status == "succeeded"
        else:
            MODELS[record.op].model_validate(record.body)
    create = ExternalRunCreate.model_validate(records[0].body)
    fit = create.summary
    assert create.id == callback.run_id and create.source == "keras" and create.host
    assert create.class_names == ["a", "b", "c"] and fit.num_classes == 3
    assert fit.batch_size == 8 and fit.epochs == 2 and fit.steps_per_epoch == 5
    assert fit.train_images == 36 and fit.val_images == 12  # validation_split read from fit
    assert fit.optimizer is not None and fit.optimizer.name == "Adam"
    assert [layer.momentum for layer in fit.model.layers if layer.momentum] == [0.99]
    epochs = [
        e for r in records if r.op == "epochs" for e in EpochsAppend.model_validate(r.body).epochs
    ]
    assert [e.epoch for e in epochs] == [1, 2]
    values = epochs[-1].values
    assert {"loss", "accuracy", "val_loss", "seconds", "images_per_sec", "lr"} <= set(values)
    assert values["bn_init_weight"] == pytest.approx(0.99**10)
    if probes:
        assert fit.probes.train_images == 16 and fit.probes.val_images == 12
        assert {"train_eval_loss", "val_loss_recalibrated", "probe_seconds"} <= set(values)
        assert fit.probes.missing == []
    else:
        assert "train_eval_loss" not in values
        assert any("probe_data" in sentence for sentence in fit.probes.missing)


def test_a_dataset_of_unknown_size_and_a_generator_of_probe_batches(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data into fit: the TensorFlow backend's case")
    x, y = models.images(48)
    # filter(): a dataset whose size Keras cannot know (no steps in self.params).
    train = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).filter(lambda a, b: True)
    val = tf.data.Dataset.from_tensor_slices((x[32:], y[32:])).batch(8)

    def probe_batches():
        for start in range(0, 16, 8):
            yield x[start : start + 8], y[start : start + 8]

    callback = curvelab.Callback(
        "datasets",
        probe_batches(),
        url=f"http://127.0.0.1:{free_port()}",
        spool_dir=tmp_path,
        batch_every=2,
        flush_timeout=0,
    )
    models.conv_bn().fit(train.batch(8), validation_data=val, epochs=2, callbacks=[callback])
    records = Spool.read(callback.spool_path).pending()  # type: ignore[arg-type]
    create = ExternalRunCreate.model_validate(records[0].body)
    assert create.summary.steps_per_epoch is None and create.summary.probes.train_images == 16
    assert create.summary.probes.val_images == 16  # the validation dataset, read whole
    epochs = [
        e for r in records if r.op == "epochs" for e in EpochsAppend.model_validate(r.body).epochs
    ]
    assert [e.epoch for e in epochs] == [1, 2]
    assert "val_loss_recalibrated" in epochs[1].values
    steps = [
        b.step
        for r in records
        if r.op == "batches"
        for b in BatchesAppend.model_validate(r.body).batches
    ]
    # Steps per epoch are learnt in the first epoch: points from then on.
    assert steps == [4, 6, 8]  # 4 steps an epoch: its end, then every 2nd


def test_the_package_never_imports_the_server_stack() -> None:
    forbidden = ("backend", "worker", "frontend", "fastapi", "celery", "sqlalchemy", "streamlit")
    code = (
        "import sys, curvelab, curvelab.callback, curvelab.sync, curvelab.cli; "
        f"print([m for m in sys.modules if m.split('.')[0] in {forbidden!r}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(curvelab.__file__).parent.parent,  # not the repository root
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
