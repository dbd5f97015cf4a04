"""The diagnosis of external runs (a user's own model.fit with curvelab.Callback):
the same rules read the same facts from the FitSummary the client sent, and
every suggestion is also the code to change in the script."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.diagnosis.gap_rules import batchnorm_lag
from backend.diagnosis.keras_code import patch_code
from backend.diagnosis.rules import diagnose
from backend.diagnosis.run_facts import RunFacts, read_summary
from backend.fit_summary import FitSummary
from backend.train_config import TrainConfig
from tests.backend.histories import facts, history

STEPS = 7  # 224 training images, batch 32


def layer(name: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "output_shape": None, "params": 0, **fields}


def client_summary(**changes: Any) -> dict[str, Any]:
    """A FitSummary as curvelab.Callback builds it for the question's kind of
    network: functional, Conv+BN blocks, Adam, 3 classes."""
    summary: dict[str, Any] = {
        "model": {
            "name": "functional",
            "params": 30_000,
            "trainable_params": 29_800,
            "layers": [
                layer("input_layer", "InputLayer"),
                layer("conv1", "Conv2D", filters=16, activation="linear"),
                layer("bn1", "BatchNormalization", momentum=0.99),
                layer("relu1", "ReLU"),
                layer("pool1", "MaxPooling2D"),
                layer("conv2", "Conv2D", filters=32, activation="linear"),
                layer("bn2", "BatchNormalization", momentum=0.99),
                layer("relu2", "ReLU"),
                layer("gap", "GlobalAveragePooling2D"),
                layer("hidden", "Dense", units=64, activation="relu"),
                layer("drop", "Dropout", rate=0.25),
                layer("out", "Dense", units=3, activation="softmax"),
            ],
        },
        "optimizer": {
            "name": "Adam",
            "learning_rate": 0.001,
            "momentum": None,
            "config": {"name": "adam", "learning_rate": 0.001},
        },
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "batch_size": 32,
        "epochs": 6,
        "steps_per_epoch": STEPS,
        "train_images": 224,
        "val_images": 64,
        "input_shape": [None, 16, 16, 3],
        "num_classes": 3,
        "keras_version": "3.15.0",
        "backend": "tensorflow",
        "client_version": "0.1.0",
        "probes": {"train_images": 128, "bn_images": 128, "val_images": 64, "missing": []},
    }
    summary.update(changes)
    return summary


def external(summary: dict[str, Any] | None = None) -> RunFacts:
    parsed = read_summary(client_summary() if summary is None else summary)
    return RunFacts.from_summary(parsed, [])


def with_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    summary = client_summary()
    summary["model"]["layers"] = list(layers)
    return summary


# The question's curves at 7 steps an epoch and momentum 0.99: validation as
# bad as guessing until BatchNorm statistics are re-estimated.
LAGGING = history(
    loss=[1.0, 0.7, 0.5, 0.4, 0.32, 0.27],
    val_loss=[2.9, 3.4, 3.1, 2.6, 1.9, 1.2],
    train_eval_loss=[2.8, 3.3, 3.0, 2.5, 1.7, 1.0],
    train_eval_loss_recalibrated=[0.9, 0.6, 0.45, 0.36, 0.3, 0.26],
    val_loss_recalibrated=[0.95, 0.66, 0.5, 0.42, 0.36, 0.33],
    val_accuracy=[0.33, 0.34, 0.35, 0.4, 0.5, 0.6],
    val_accuracy_recalibrated=[0.6, 0.75, 0.82, 0.86, 0.88, 0.89],
    bn_init_weight=[0.99 ** (STEPS * epoch) for epoch in range(1, 7)],
)
# Converged, validation a little above training, the probes agree: nothing to say.
HEALTHY = history(
    loss=[1.0, 0.7, 0.55, 0.5, 0.48, 0.47],
    accuracy=[0.5, 0.7, 0.78, 0.8, 0.81, 0.82],
    val_loss=[1.02, 0.76, 0.62, 0.57, 0.56, 0.558],
    train_eval_loss=[0.97, 0.68, 0.53, 0.49, 0.47, 0.46],
    train_eval_loss_recalibrated=[0.96, 0.67, 0.53, 0.49, 0.47, 0.46],
    val_loss_recalibrated=[1.0, 0.75, 0.61, 0.56, 0.55, 0.55],
    val_accuracy=[0.5, 0.68, 0.75, 0.77, 0.78, 0.78],
    bn_init_weight=[0.99 ** (STEPS * epoch) for epoch in range(1, 7)],
)


def test_the_summary_gives_the_facts_a_config_would() -> None:
    run = external()
    assert run.external and run.batch_norm
    assert run.bn_layers == (("bn1", 0.99), ("bn2", 0.99)) and run.bn_momentum == 0.99
    assert run.dropout_rates == (0.25,) and run.dropout == 0.25
    assert (run.optimizer, run.optimizer_class, run.learning_rate) == ("Adam", "Adam", 0.001)
    assert (run.batch_size, run.epochs, run.steps_per_epoch) == (32, 6, STEPS)
    assert run.num_classes == 3
    assert run.filters == (16, 32) and run.dense_units == 64  # not the classifier's 3
    assert run.dataset is None and run.validation_split is None
    # Without steps_per_epoch (a generator of unknown length): from the images.
    assert external(client_summary(steps_per_epoch=None, train_images=200)).steps_per_epoch == 7
    # The class names the client sent count the classes too.
    assert RunFacts.from_summary(None, ["cat", "dog"]).num_classes == 2


def test_batchnorm_lag_on_an_external_run_says_it_as_keras_code() -> None:
    findings = diagnose(LAGGING, external())
    assert findings[0].code == "batchnorm_lag" and findings[0].severity == "critical"
    lag = findings[0]
    # 0.99 ** 7 keeps 93% after an epoch; of the offered momenta 0.6 is the
    # largest to leave at most 5% (0.6 ** 7 = 0.028; 0.7 ** 7 = 0.082).
    assert lag.suggestion == {"bn_momentum": 0.6}
    assert lag.keras_code == "keras.layers.BatchNormalization(momentum=0.6)"
    assert lag.evidence.startswith("at epoch 2, all of the gap between val_loss 3.40 and loss 0.70")
    assert lag.evidence.endswith(
        "still carry 87% of their initial values (your BatchNormalization layers, momentum 0.99)"
    )
    # Nothing a user's script does not have: no TrainConfig names.
    for finding in findings:
        assert "bn_momentum" not in finding.evidence and "TrainConfig" not in finding.evidence
        assert finding.keras_code is None or "bn_momentum" not in finding.keras_code


def test_layers_of_different_momenta_are_named_and_the_slowest_sets_the_maths() -> None:
    summary = with_layers(
        layer("conv1", "Conv2D", filters=8),
        layer("bn_fast", "BatchNormalization", momentum=0.9),
        layer("conv2", "Conv2D", filters=16),
        layer("bn_slow", "BatchNormalization", momentum=0.99),
        layer("frozen_bn", "BatchNormalization", momentum=0.999, trainable=False),
        layer("out", "Dense", units=3),
    )
    run = external(summary)
    # A frozen layer's averages never move: not a lag to fix.
    assert run.bn_layers == (("bn_fast", 0.9), ("bn_slow", 0.99)) and run.bn_momentum == 0.99
    finding = batchnorm_lag(LAGGING, run)
    assert finding is not None and finding.suggestion == {"bn_momentum": 0.6}
    assert (
        "(your BatchNormalization layers: momentum 0.99 in bn_slow; momentum 0.9 in bn_fast; "
        "the slowest, 0.99, lags most)" in finding.evidence
    )
    # Every layer is slower than 0.6: the change is for all of them.
    assert patch_code(finding.suggestion, run) == ("keras.layers.BatchNormalization(momentum=0.6)")
    # bn_fast forgets fast enough at 0.9 already: the change is bn_slow's.
    assert patch_code({"bn_momentum": 0.95}, run) == (
        "keras.layers.BatchNormalization(momentum=0.95)  # for bn_slow"
    )


def test_a_healthy_external_run_is_quiet() -> None:
    assert diagnose(HEALTHY, external()) == []


def test_a_high_learning_rate_on_sgd_names_the_runs_own_optimizer() -> None:
    sgd = {"name": "SGD", "learning_rate": 0.5, "momentum": 0.9, "config": {}}
    run = external(client_summary(optimizer=sgd))
    (finding,) = diagnose(history(loss=[1.1, 0.9, None]), run)
    assert (finding.code, finding.severity) == ("lr_too_high", "critical")
    assert finding.evidence.endswith("at epoch 3 (learning rate 0.5, SGD)")
    assert finding.suggestion == {"learning_rate": 0.05}
    assert finding.keras_code == "keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)"
    # A schedule has no one rate to cut: the finding stands, with no number.
    schedule: dict[str, Any] = {"name": "Adam", "learning_rate": None, "config": {}}
    (scheduled,) = diagnose(history(loss=[1.1, None]), external(client_summary(optimizer=schedule)))
    assert scheduled.evidence.endswith("(a learning-rate schedule, Adam)")
    assert (scheduled.suggestion, scheduled.keras_code) == ({}, None)


def test_without_batchnorm_layers_there_is_no_batchnorm_finding() -> None:
    plain = with_layers(
        layer("conv1", "Conv2D", filters=8),
        layer("flat", "Flatten"),
        layer("out", "Dense", units=3),
    )
    run = external(plain)
    assert not run.batch_norm and run.bn_momentum is None
    assert batchnorm_lag(LAGGING, run) is None
    assert "batchnorm_lag" not in {finding.code for finding in diagnose(LAGGING, run)}


def test_a_regression_has_no_class_count_to_compare_losses_with() -> None:
    # An MSE of 40 is not "40× the loss of guessing": there are no classes.
    run = external(client_summary(loss="mean_squared_error", num_classes=1))
    assert run.num_classes is None
    assert diagnose(history(loss=[40.0, 30.0, 25.0]), run) == []
    binary = external(client_summary(loss="binary_crossentropy", num_classes=1))
    assert binary.num_classes == 2


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "a summary",
        [1, 2],
        {},
        {"model": 5},
        {"model": {"layers": "many"}, "batch_size": -3, "optimizer": {"name": None}},
        {"model": {"layers": [{"type": 3}, None, {"name": "x"}]}, "epochs": "six"},
        {"model": {"layers": [layer("bn", "BatchNormalization", momentum="fast")] * 3}},
    ],
)
def test_a_bad_summary_gives_facts_with_gaps_never_an_error(garbage: Any) -> None:
    run = RunFacts.from_summary(read_summary(garbage), [])
    assert run.external and run.bn_momentum is None and run.batch_size is None
    for finding in diagnose(LAGGING, run):
        assert finding.keras_code is None or "momentum=None" not in finding.keras_code


def test_a_partly_bad_summary_keeps_what_is_good() -> None:
    summary = copy.deepcopy(
        client_summary(epochs=0, loss=["not", "a", "string"], input_shape=[None, "x", 3])
    )
    layers = summary["model"]["layers"]
    layers[2]["momentum"] = "fast"  # bn1: still a BatchNormalization, momentum unknown
    layers[3]["type"] = None  # relu1: not a layer any more
    del layers[4]["name"]  # pool1 neither
    parsed = read_summary(summary)
    assert isinstance(parsed, FitSummary)
    assert [item.name for item in parsed.model.layers][:4] == [
        "input_layer",
        "conv1",
        "bn1",
        "conv2",
    ]
    assert parsed.epochs is None and parsed.loss is None and parsed.batch_size == 32
    assert parsed.input_shape is None  # not [None, 3]: a shape without a dimension lies
    run = RunFacts.from_summary(parsed, ["a", "b", "c"])
    assert run.bn_layers == (("bn2", 0.99),) and run.steps_per_epoch == STEPS


def test_a_worker_run_gets_the_same_code_for_its_patch() -> None:
    config = TrainConfig(filters=[8, 16, 32, 64], dense_units=64, epochs=6)
    run = RunFacts.from_config(config, facts(counts=(214,) * 30, val_images=1290))
    assert run.steps_per_epoch == 41 and run.bn_layers == () and run.bn_momentum == 0.99
    lag = next(f for f in diagnose(LAGGING, run) if f.code == "batchnorm_lag")
    assert lag.suggestion == {"bn_momentum": 0.9}
    assert lag.keras_code == "keras.layers.BatchNormalization(momentum=0.9)"
    assert lag.evidence.endswith("of their initial values (momentum 0.99)")


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({}, None),
        ({"bn_momentum": 0.9}, "keras.layers.BatchNormalization(momentum=0.9)"),
        ({"learning_rate": 0.0001}, "keras.optimizers.Adam(learning_rate=0.0001)"),
        ({"learning_rate": 1e-05}, "keras.optimizers.Adam(learning_rate=1e-05)"),
        ({"batch_size": 64}, "model.fit(..., batch_size=64)"),
        ({"epochs": 9, "validation_split": 0.3}, "model.fit(..., epochs=9, validation_split=0.3)"),
        ({"dropout": 0.3}, "keras.layers.Dropout(0.3)"),
        ({"dropout": 0.0}, "Remove the keras.layers.Dropout layers (or set their rate to 0)"),
        (
            {"dropout": 0.25, "early_stopping_patience": 3},
            "keras.layers.Dropout(0.25)\ncallbacks=[keras.callbacks.EarlyStopping(patience=3, "
            "restore_best_weights=True)]",
        ),
        (
            {"filters": [32, 64], "dense_units": 128},
            "Double the filters of the convolutions: 16, 32 → 32, 64\n"
            "A wider hidden Dense layer: keras.layers.Dense(128) (now 64)",
        ),
        (
            {"augment": {"flip": False, "rotate": 0.03, "zoom": 0.1}},
            "Augment the training images, right after keras.Input: "
            "keras.layers.RandomRotation(0.03), keras.layers.RandomZoom(0.1)",
        ),
    ],
)
def test_a_patch_renders_as_the_keras_change(patch: dict[str, Any], code: str | None) -> None:
    assert patch_code(patch, external()) == code


def test_the_optimizer_class_is_the_runs_own() -> None:
    assert (
        patch_code({"learning_rate": 0.01}, RunFacts.from_config(TrainConfig(optimizer="rmsprop")))
        == "keras.optimizers.RMSprop(learning_rate=0.01)"
    )
    worker_sgd = RunFacts.from_config(TrainConfig(optimizer="sgd", momentum=0.8))
    assert patch_code({"learning_rate": 0.01}, worker_sgd) == (
        "keras.optimizers.SGD(learning_rate=0.01, momentum=0.8)"
    )
    own = external(client_summary(optimizer={"name": "MyOptimizer", "learning_rate": 0.1}))
    assert patch_code({"learning_rate": 0.01}, own) == "MyOptimizer(learning_rate=0.01)"


def test_the_api_diagnoses_an_external_run_from_what_its_client_sent(api: TestClient) -> None:
    run_id = "ab" * 16
    created = api.post(
        "/api/runs/external",
        json={"id": run_id, "name": "my run", "host": "laptop", "summary": client_summary()},
    )
    assert created.status_code == 201, created.text
    epochs = [
        {"epoch": row["epoch"], "values": {k: v for k, v in row.items() if k != "epoch"}}
        for row in LAGGING[:3]
    ]
    assert api.post(f"/api/runs/{run_id}/epochs", json={"epochs": epochs}).status_code == 200
    body = api.get(f"/api/runs/{run_id}/diagnosis").json()
    assert (body["status"], body["epochs"]) == ("running", 3)
    lag = body["findings"][0]
    assert (lag["code"], lag["suggestion"]) == ("batchnorm_lag", {"bn_momentum": 0.6})
    assert lag["keras_code"] == "keras.layers.BatchNormalization(momentum=0.6)"
    assert body["decomposition"][1]["bn_lag"] == pytest.approx(3.4 - 0.66)
