"""Gap probes: what ``val_loss − loss`` is made of, measured at each epoch end.

The one home for what is measured inside Keras: the worker's runs and a
user's own ``model.fit`` (``curvelab.Callback``) call the same code.

Keras's ``loss`` is a running mean over the epoch in training mode (batch
statistics, dropout on); ``val_loss`` is one evaluation at the epoch's end
in inference mode (BatchNorm's moving averages, dropout off). So, without
changing the trained model, each epoch also records:

- ``train_eval_loss``/``train_eval_accuracy``: a fixed sample of training
  images evaluated exactly as validation is (the model's compiled loss);
- ``val_loss_recalibrated``/``val_accuracy_recalibrated``: validation with
  every BatchNorm layer's moving statistics replaced by statistics
  re-estimated from training images ("precise BN"), then restored;
- ``train_eval_loss_recalibrated``/``train_eval_accuracy_recalibrated``: the
  training sample with those same statistics: with it, the train-mode effect
  is measured apart from the lag, which ``train_eval_loss`` shares with
  validation;
- ``bn_init_weight``: ``momentum ** steps`` of the most lagging BatchNorm
  layer, the share of its moving averages still made of their initial value
  (mean 0, variance 1);
- ``probe_seconds``: what all of this cost.

How the statistics are estimated: one forward pass in inference mode (dropout
and augmentation off) in which each BatchNorm normalises by the batch's own
moments, which are recorded, while its moving averages are left alone.

- A model whose layers form a chain (as the worker's ``make_model`` builds
  them) gets a compiled pass: a functional model sharing its layers, each
  BatchNorm swapped for ``_BatchStatistics``. Fast enough for every epoch.
- Any other model (residual adds, nested models, subclassed ``Model``) gets
  the general pass: each BatchNorm instance's ``call`` is replaced for the
  duration by one that normalises by the batch's moments and records them,
  and the model is called eagerly with ``training=False``. Slower, but it
  runs wherever Keras runs, on every backend; ``call`` is restored in a
  ``finally``.

When the BatchNorm sample is a single batch, the statistics are exactly the
precise ones and the pass's predictions are exactly the recalibrated
inference of that sample: when it is the training sample,
``train_eval_*_recalibrated`` cost no second pass. A validation set larger
than its sample (``val_sample``) is not evaluated again in full: the
BatchNorm lag is measured on the sample (the same images with the moving and
with the re-estimated statistics) and subtracted from the epoch's own
``val_loss``/``val_accuracy``.

A BatchNorm layer that is frozen (``trainable=False``) normalises by its
moving statistics in training too: it has no lag, and it is left as it is. A
model without (trainable) BatchNorm gets neither recalibrated values nor
``bn_init_weight``: there is nothing to re-estimate, and absent (rather than
a copy of ``val_loss``) says so. A probe that fails warns and records what it
has: it never stops training.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np

from curvelab.samples import as_numpy, count_images

log = logging.getLogger(__name__)

BatchNorm = keras.layers.BatchNormalization
Statistics = list[tuple[np.ndarray, np.ndarray]]
# (inputs, labels) batches, numpy arrays or tensors of any backend; fixed:
# the same images every epoch.
Batches = Sequence[tuple[Any, Any]]
Scores = dict[str, float]

# Keys of the epoch logs that hold validation accuracy, as Keras names the
# metric the user compiled ("accuracy", "acc", or its class's name).
_VAL_ACCURACY_KEYS = (
    "val_accuracy",
    "val_acc",
    "val_sparse_categorical_accuracy",
    "val_categorical_accuracy",
    "val_binary_accuracy",
)


class GapProbes:
    """Call it with the model, the epoch (1-based) and the epoch's logs; it
    gives the probe values (those that apply) and never raises.

    ``train``: training images evaluated as validation is. ``bn``: training
    images the BatchNorm statistics are re-estimated from (None: ``train``).
    ``val``: the validation data, evaluated whole (None: not available to the
    probes). ``val_sample``: a fixed sample of a larger validation set, on
    which the BatchNorm lag is measured and taken off the epoch's own
    ``val_loss``; without ``val`` and without the epoch's numbers, its own
    recalibrated values stand for validation's.
    """

    def __init__(
        self,
        *,
        train: Batches,
        bn: Batches | None = None,
        val: Iterable[tuple[Any, Any]] | None = None,
        val_sample: Batches | None = None,
    ) -> None:
        if not len(train):
            raise ValueError("the gap probes need at least one batch of training images")
        self.train = train
        self.bn = train if bn is None else bn
        self.val = val
        self.val_sample = val_sample
        self.train_images = _images(self.train)
        self.bn_images = _images(self.bn)
        val_images = val_sample if val_sample is not None else val
        self.val_images = _images(val_images) if isinstance(val_images, Sequence) else None
        # Sentences: what is not measured, and why (the run's summary shows them).
        self.missing: list[str] = []
        if val is None and val_sample is None:
            # Keras hands no callback fit's validation data: the epoch's own
            # val_loss, less the lag the training sample shows, stands in.
            self.missing.append(
                "val_loss_recalibrated and val_accuracy_recalibrated are estimates: no "
                "validation data was given to the probes, so the BatchNorm lag measured on "
                "the training sample is taken off the epoch's val_loss (pass "
                "validation_data= to measure it on validation images)"
            )
        self._passes: dict[int, StatisticsPass] = {}

    def __call__(
        self, model: keras.Model, epoch: int, logs: Mapping[str, Any] | None = None
    ) -> dict[str, float | None]:
        started = time.perf_counter()
        values: dict[str, float | None] = {}
        try:
            train_scores = _scores(model, self.train)
            values.update(_prefixed("train_eval", train_scores))
            weight = bn_init_weight(model)
            if weight is None:
                self._note_missing(
                    "recalibrated values and bn_init_weight: the model has no trainable "
                    "BatchNormalization layer (nothing to re-estimate)"
                )
            else:
                values["bn_init_weight"] = weight
                values.update(self._recalibrated(model, logs or {}, train_scores))
        except Exception:
            # A measurement must not cost the run; the epoch keeps what was measured.
            log.warning("gap probes failed at epoch %d", epoch, exc_info=True)
        values["probe_seconds"] = time.perf_counter() - started
        return values

    def _note_missing(self, sentence: str) -> None:
        if sentence not in self.missing:
            self.missing.append(sentence)

    def _recalibrated(
        self, model: keras.Model, logs: Mapping[str, Any], train_scores: Scores
    ) -> dict[str, float]:
        pass_ = self._passes.get(id(model))
        if pass_ is None or pass_.model is not model:
            pass_ = self._passes[id(model)] = StatisticsPass(model)
        # The epoch's own validation numbers, when the lag is to come off them.
        epoch_val = _epoch_val(logs)
        lagging: Scores | None = None
        val_data: Iterable[tuple[Any, Any]] | None
        if self.val_sample is not None and (epoch_val is not None or self.val is None):
            val_data = self.val_sample
            if epoch_val is not None:  # the sample as the epoch saw it: moving statistics
                lagging = _scores(model, self.val_sample)
        else:
            val_data = self.val
        statistics, train_recalibrated = pass_.run(self.bn)
        if self.bn is not self.train:
            train_recalibrated = None
        val: Scores | None = None
        with replaced_statistics(model, statistics):
            if val_data is not None:
                val = _scores(model, val_data)
            if train_recalibrated is None:
                train_recalibrated = _scores(model, self.train)
        result = _prefixed("train_eval", train_recalibrated, "_recalibrated")
        if val is None and self.val is None and epoch_val is not None:
            # No validation images: the lag the training sample shows (moving
            # against re-estimated statistics) taken off the epoch's numbers.
            val, lagging = train_recalibrated, train_scores
        if val is not None:
            if lagging is not None and epoch_val is not None:
                val = _lag_taken_off(epoch_val, lagging, val)
            result.update(_prefixed("val", val, "_recalibrated"))
        return result


def _epoch_val(logs: Mapping[str, Any]) -> Scores | None:
    """The epoch's val_loss (and val accuracy where there is one), or None."""
    loss = _finite(logs.get("val_loss"))
    if loss is None:
        return None
    found: Scores = {"loss": loss}
    for key in _VAL_ACCURACY_KEYS:
        accuracy = _finite(logs.get(key))
        if accuracy is not None:
            found["accuracy"] = accuracy
            break
    return found


def _lag_taken_off(epoch_val: Scores, lagging: Scores, recalibrated: Scores) -> Scores:
    """The lag measured on the sample (moving minus re-estimated statistics),
    taken off the epoch's own numbers; what the epoch lacks is the sample's."""
    val = dict(recalibrated)
    val["loss"] = max(epoch_val["loss"] - lagging["loss"] + recalibrated["loss"], 0.0)
    if "accuracy" in recalibrated and "accuracy" in epoch_val:
        shifted = epoch_val["accuracy"] - lagging["accuracy"] + recalibrated["accuracy"]
        val["accuracy"] = min(max(shifted, 0.0), 1.0)
    return val


def bn_init_weight(model: keras.Model) -> float | None:
    """The largest ``momentum ** steps`` over the trainable BatchNorm layers
    (the most lagging one's share of its initial statistics), steps being
    the optimizer's iterations; None without BatchNorm or optimizer."""
    layers = batchnorm_layers(model)
    optimizer = getattr(model, "optimizer", None)
    if not layers or optimizer is None:
        return None
    steps = int(keras.ops.convert_to_numpy(optimizer.iterations))
    return max(float(layer.momentum) ** steps for layer in layers)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNorm layer whose moving statistics training moves, inside
    nested models too, each once, in a fixed order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, BatchNorm) and layer.trainable
    ]


@contextmanager
def replaced_statistics(model: keras.Model, statistics: Statistics) -> Iterator[None]:
    """BatchNorm's moving statistics replaced for the block; every moving mean
    and variance is put back, bit for bit, after it."""
    layers = batchnorm_layers(model)
    saved = [_moving(layer) for layer in layers]
    try:
        for layer, (mean, variance) in zip(layers, statistics, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        yield
    finally:
        for layer, (mean, variance) in zip(layers, saved, strict=True):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def precise_statistics(model: keras.Model, batches: Iterable[tuple[Any, Any]]) -> Statistics:
    """Each BatchNorm layer's input mean and variance, averaged over the batches.

    The forward pass is the training one for BatchNorm only (batch statistics,
    so each layer sees what it saw in training) and the inference one for
    every other layer: dropout and augmentation stay off, so neither distorts
    the statistics. Averaging batch variances (weighted by batch size) is the
    usual precise-BN estimate, as in Wu & Johnson, "Rethinking Batch in
    BatchNorm" (2021); from a single batch it is exact.
    """
    return StatisticsPass(model).run(batches)[0]


class StatisticsPass:
    """The forward pass that estimates BatchNorm statistics: compiled for a
    chain of layers (a model sharing the model's layers, so its weights,
    never a copy), general otherwise. ``general=True`` forces the general
    pass (tests compare the two)."""

    def __init__(self, model: keras.Model, *, general: bool = False) -> None:
        self.model = model
        self.layers = batchnorm_layers(model)
        self.forward: keras.Model | None = None if general else _chain_forward(model, self.layers)

    @property
    def compiled(self) -> bool:
        return self.forward is not None

    def run(self, batches: Iterable[tuple[Any, Any]]) -> tuple[Statistics, Scores | None]:
        """The statistics (in ``batchnorm_layers`` order), and the loss and
        accuracy of the recalibrated model on ``batches`` when they are a
        single batch (None otherwise)."""
        sums: list[np.ndarray] = []
        seen = 0
        first: tuple[Any, Any, Any] | None = None
        for count, (inputs, labels) in enumerate(batches, start=1):
            predictions, moments = self._forward(inputs)
            size = count_images(inputs)
            weighted = [np.asarray(moment, dtype=np.float64) * size for moment in moments]
            sums = weighted if not sums else [a + b for a, b in zip(sums, weighted, strict=True)]
            seen += size
            first = (inputs, labels, predictions) if count == 1 else None
        if not seen:
            raise ValueError("no images to re-estimate BatchNorm statistics from")
        means = [(total / seen).astype(np.float32) for total in sums]
        statistics = list(zip(means[0::2], means[1::2], strict=True))
        scores = None if first is None else _score(self.model, [first])
        return statistics, scores

    def _forward(self, inputs: Any) -> tuple[Any, list[Any]]:
        """Predictions and [mean, variance, mean, variance, ...] of one batch."""
        if self.forward is not None:
            outputs = self.forward.predict_on_batch(inputs)
            return outputs[0], list(outputs[1:])
        recorded: dict[int, list[Any]] = {}
        with _batch_statistics_calls(self.layers, recorded):
            predictions = self.model(inputs, training=False)
        predictions = keras.tree.map_structure(as_numpy, predictions)
        moments: list[Any] = []
        for layer in self.layers:
            calls = recorded.get(id(layer))
            if not calls:
                raise ValueError(f"BatchNorm layer {layer.name} was not called by the model")
            # A layer called more than once (shared) gets the mean of its calls.
            moments += [np.mean([m for m, _ in calls], axis=0), np.mean([v for _, v in calls], 0)]
        return predictions, moments


@contextmanager
def _batch_statistics_calls(
    layers: Sequence[keras.layers.BatchNormalization], recorded: dict[int, list[Any]]
) -> Iterator[None]:
    """Each layer's ``call`` replaced by its normalisation by the batch's own
    moments (recorded in ``recorded``), its moving averages untouched; the
    instance's own ``call`` is put back afterwards, whatever happens."""
    missing = object()
    saved = [layer.__dict__.get("call", missing) for layer in layers]
    try:
        for layer in layers:
            # object.__setattr__: past Keras's attribute tracking (and torch's).
            object.__setattr__(layer, "call", _recording_call(layer, recorded))
        yield
    finally:
        for layer, call in zip(layers, saved, strict=True):
            if call is missing:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", call)


def _recording_call(
    bn: keras.layers.BatchNormalization, recorded: dict[int, list[Any]]
) -> Callable[..., Any]:
    def call(inputs: Any, training: Any = None, mask: Any = None) -> Any:
        outputs, mean, variance = _normalised_by_batch(bn, inputs, mask)
        recorded.setdefault(id(bn), []).append((as_numpy(mean), as_numpy(variance)))
        return outputs

    return call


def _normalised_by_batch(
    bn: keras.layers.BatchNormalization, inputs: Any, mask: Any = None
) -> tuple[Any, Any, Any]:
    """BatchNorm's training-mode normalisation, by the batch's own mean and
    variance, which it also returns; computed in float32 as BatchNorm does,
    whatever the policy."""
    x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
    if mask is not None and hasattr(bn, "_moments"):
        mean, variance = bn._moments(x, mask)
    else:
        axis = bn.axis % len(x.shape)
        axes = [i for i in range(len(x.shape)) if i != axis]
        mean, variance = keras.ops.moments(x, axes)
    gamma = keras.ops.cast(bn.gamma, x.dtype) if bn.scale else None
    beta = keras.ops.cast(bn.beta, x.dtype) if bn.center else None
    outputs = keras.ops.batch_normalization(
        x, mean, variance, axis=bn.axis, offset=beta, scale=gamma, epsilon=bn.epsilon
    )
    return keras.ops.cast(outputs, bn.compute_dtype), mean, variance


class _BatchStatistics(keras.layers.Layer):
    """A BatchNorm layer in the compiled pass: ``_normalised_by_batch``, as a
    layer with three outputs."""

    def __init__(self, batchnorm: keras.layers.BatchNormalization) -> None:
        super().__init__(name=f"{batchnorm.name}_statistics", dtype=batchnorm.dtype_policy)
        self.batchnorm = batchnorm

    def call(self, inputs: Any) -> tuple[Any, Any, Any]:
        return _normalised_by_batch(self.batchnorm, inputs)


def _chain_forward(
    model: keras.Model, layers: Sequence[keras.layers.BatchNormalization]
) -> keras.Model | None:
    """The compiled pass, when the model is a chain of layers after one
    Input (as ``make_model`` builds them) with every BatchNorm of
    ``layers`` in it; None for any other model."""
    chain = _chain(model)
    if chain is None or {id(layer) for layer in layers} - {id(layer) for layer in chain}:
        return None  # not a chain, or a BatchNorm inside a nested model
    wanted = {id(layer) for layer in layers}
    inputs = keras.Input(shape=model.input_shape[1:], dtype=model.inputs[0].dtype)
    x = inputs
    moments: dict[int, list[Any]] = {}
    for layer in chain:
        if id(layer) in wanted:
            x, mean, variance = _BatchStatistics(layer)(x)
            moments[id(layer)] = [mean, variance]
        else:
            x = layer(x)
    ordered = [moment for layer in layers for moment in moments[id(layer)]]
    forward = keras.Model(inputs, [x, *ordered], name=f"{model.name}_bn_statistics")
    forward.jit_compile = model.jit_compile
    return forward


def _chain(model: keras.Model) -> list[keras.layers.Layer] | None:
    """The model's layers after its input, when each feeds the next; None for
    anything else (a branching graph, a subclassed model)."""
    layers = getattr(model, "layers", None)
    if isinstance(model, keras.Sequential) and layers and model.built:
        # A chain by construction; its InputLayer is not among its layers.
        return list(layers) if len(model.inputs) == 1 else None
    if not layers or not isinstance(layers[0], keras.layers.InputLayer):
        return None
    if len(getattr(model, "inputs", None) or []) != 1 or len(model.outputs) != 1:
        return None
    try:
        # The model's own graph is each layer's first node (a layer also
        # called elsewhere later, e.g. by an earlier pass, keeps it first).
        for previous, layer in itertools.pairwise(layers):
            if layer.input is not previous.output:
                return None
    except (AttributeError, ValueError):  # a layer with no node of its own
        return None
    if layers[-1].output is not model.outputs[0]:
        return None
    return layers[1:]


def _scores(model: keras.Model, batches: Iterable[tuple[Any, Any]]) -> Scores:
    """Loss and accuracy as ``model.evaluate`` reports them, from predictions
    of ``predict_on_batch``: ``evaluate`` builds an iterator and callbacks at
    every call, which costs more than the forward pass of a small sample."""
    return _score(model, [(x, y, model.predict_on_batch(x)) for x, y in batches])


def _score(model: keras.Model, batches: Sequence[tuple[Any, Any, Any]]) -> Scores:
    """The compiled loss (what ``evaluate`` gives: the mean of the batches'
    losses weighted by their sizes, regularisation included) and, for a
    classifier, the accuracy, from (inputs, labels, predictions)."""
    if not batches:
        raise ValueError("no images to score")
    task = _task(model)
    loss_sum, correct, seen = 0.0, 0.0, 0
    accuracy: bool = True
    with _metrics_kept(model):
        for inputs, labels, predictions in batches:
            size = count_images(inputs)
            loss = model._compute_loss(
                x=inputs, y=labels, y_pred=predictions, sample_weight=None, training=False
            )
            loss_sum += float(keras.ops.convert_to_numpy(loss)) * size
            hits = _correct(task, _numpy_tree(labels), _numpy_tree(predictions))
            accuracy = accuracy and hits is not None
            correct += (hits or 0.0) * size
            seen += size
    scores = {"loss": loss_sum / seen}
    if accuracy:
        scores["accuracy"] = correct / seen
    return scores


@contextmanager
def _metrics_kept(model: keras.Model) -> Iterator[None]:
    """The compiled loss updates its per-output loss trackers (and a
    ``compute_loss`` override may update its own): the probes put every
    metric's state back, so what callbacks read of the epoch is unchanged."""
    variables = [v for metric in getattr(model, "metrics", []) for v in metric.variables]
    saved = [keras.ops.convert_to_numpy(v) for v in variables]
    try:
        yield
    finally:
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(value)


# What the accuracy is, from the compiled loss: integer or one-hot labels
# (argmax), a threshold (binary: 0.5 on probabilities, 0 on logits), or none.
Task = tuple[str, float] | None
_BINARY = ("binarycrossentropy", "binaryfocalcrossentropy", "bce")
_CATEGORICAL = (
    "categoricalcrossentropy",
    "sparsecategoricalcrossentropy",
    "categoricalfocalcrossentropy",
    "sparsecategoricalfocalcrossentropy",
    "cce",
    "scce",
)
_REGRESSION = (
    "mse",
    "mae",
    "mape",
    "msle",
    "meansquarederror",
    "meanabsoluteerror",
    "meanabsolutepercentageerror",
    "meansquaredlogarithmicerror",
    "huber",
    "huberloss",
    "logcosh",
    "cosinesimilarity",
    "poisson",
    "kldivergence",
    "kld",
    "kullbackleiblerdivergence",
    "hinge",
    "squaredhinge",
    "categoricalhinge",
    "ctc",
    "dice",
    "tversky",
    "circle",
)


def _task(model: keras.Model) -> Task:
    loss = getattr(model, "loss", None)
    if isinstance(loss, Mapping) and len(loss) == 1:
        loss = next(iter(loss.values()))
    if isinstance(loss, list | tuple) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, str):
        name, from_logits = loss, False
    elif isinstance(loss, keras.losses.Loss):
        config = _loss_config(loss)
        fn = getattr(loss, "fn", None)
        name = getattr(fn, "__name__", None) or type(loss).__name__
        from_logits = bool(config.get("from_logits", getattr(loss, "from_logits", False)))
    elif callable(loss):
        name, from_logits = getattr(loss, "__name__", ""), False
    else:
        return None  # several outputs, or no loss
    key = name.lower().replace("_", "")
    if key in _BINARY:
        return ("binary", 0.0 if from_logits else 0.5)
    if key in _CATEGORICAL:
        return ("categorical", 0.0)
    if key in _REGRESSION:
        return ("none", 0.0)
    return ("guess", 0.0)  # a custom loss: the labels' shapes tell


def _loss_config(loss: keras.losses.Loss) -> dict[str, Any]:
    try:
        config = loss.get_config()
    except Exception:  # a custom Loss without a config
        return {}
    return config if isinstance(config, dict) else {}


def _correct(task: Task, labels: Any, predictions: Any) -> float | None:
    """The share of correct predictions in a batch; None when the model is
    not a (single-output) classifier."""
    if task is None or task[0] == "none":
        return None
    if not isinstance(labels, np.ndarray) or not isinstance(predictions, np.ndarray):
        return None
    kind, threshold = task
    if predictions.ndim == 0 or labels.size == 0:
        return None
    if kind == "guess":
        guessed = _guessed(labels, predictions)
        if guessed is None:
            return None
        kind = guessed
    if kind == "binary" or (kind == "categorical" and predictions.shape[-1] == 1):
        if labels.size != predictions.size:
            return None
        hits = (predictions.reshape(labels.shape) > threshold) == (labels > 0.5)
        return float(np.mean(hits))
    if labels.shape == predictions.shape:  # one-hot (or soft) labels
        hits = np.argmax(labels, axis=-1) == np.argmax(predictions, axis=-1)
    elif labels.size * predictions.shape[-1] == predictions.size:  # integer labels
        hits = labels.reshape(predictions.shape[:-1]) == np.argmax(predictions, axis=-1)
    else:
        return None
    return float(np.mean(hits))


def _guessed(labels: np.ndarray, predictions: np.ndarray) -> str | None:
    """For a loss curvelab does not know: a classifier when the labels look
    like classes of the predictions' last axis."""
    if predictions.shape[-1] < 2 or not np.all(np.isfinite(labels)):
        return None
    whole = bool(np.all(labels == np.round(labels)))
    if labels.shape == predictions.shape:
        one_hot = whole and np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(-1) == 1)
        return "categorical" if one_hot else None
    if whole and labels.size * predictions.shape[-1] == predictions.size:
        in_range = labels.min() >= 0 and labels.max() < predictions.shape[-1]
        return "categorical" if in_range else None
    return None


def _prefixed(prefix: str, result: Mapping[str, float], suffix: str = "") -> dict[str, float]:
    return {f"{prefix}_{key}{suffix}": value for key, value in result.items()}


def _moving(layer: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array(keras.ops.convert_to_numpy(layer.moving_mean)),
        np.array(keras.ops.convert_to_numpy(layer.moving_variance)),
    )


def _images(batches: Iterable[tuple[Any, Any]]) -> int:
    return sum(count_images(inputs) for inputs, _ in batches)


def _numpy_tree(value: Any) -> Any:
    return as_numpy(value) if not isinstance(value, list | tuple | dict) else value


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None
