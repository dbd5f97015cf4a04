"""``curvelab.Callback``: one line in ``model.fit`` streams the fit to curvelab.

    cb = curvelab.Callback(name="my run", probe_data=(x_train[:512], y_train[:512]))
    model.fit(x_train, y_train, validation_data=(x_val, y_val), callbacks=[cb])
    print(cb.run_id, cb.url)

At train begin it makes the run's id, describes the model and the fit
(summary.py) and queues the run's creation; each ``batch_every`` steps a
batch point (window means, curvelab.windows, hooked as the worker's recorder
hooks them); each epoch every Keras log value, its seconds, images/s and
learning rate, and the gap probes (curvelab.probes) measured here, in the
user's process. At the end: succeeded, failed (the exception's type and
message) or interrupted (KeyboardInterrupt).

On the training thread it only measures and appends to the run's spool; the
network is the transport's thread's (transport.py). Nothing the side channel
does raises into ``fit``: a failure is a logged warning.

How the end is seen. Keras calls ``on_train_end`` only when ``fit`` returns
(TensorFlow's trainer calls nothing on an exception; JAX's and PyTorch's skip
it in their ``finally``). So at train begin the callback wraps the model's
``train_function`` (each backend's ``fit`` looks it up at every step, and
nearly all of a fit's time, and so nearly every exception and Ctrl-C, is
spent in it): an exception out of a step other than the end of the data
finishes the run as failed (interrupted for KeyboardInterrupt) and is
re-raised untouched. What escapes elsewhere (a data generator on JAX or
PyTorch, another callback) is caught by ``sys.excepthook`` when the script
dies of it, by ``atexit`` otherwise, or at the same callback's next fit.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from curvelab import env, fitframe, summary
from curvelab.probes import GapProbes, batchnorm_layers, bn_init_weight
from curvelab.samples import fixed_batches
from curvelab.spool import Spool, leftovers
from curvelab.transport import Transport
from curvelab.windows import BatchWindow

log = logging.getLogger("curvelab")

# As the worker's TrainConfig.batch_metrics_every (backend/train_config.py).
BATCH_EVERY = 10
# As the worker's probe sample sizes (backend/settings.py probe_*_images): up
# to 512 a sample is one batch, which makes the BatchNorm statistics exact.
PROBE_IMAGES = 256
PROBE_BATCH = 512
# Keras raises these at the end of data whose size it does not know, and
# catches them itself: not a failure of the fit.
END_OF_DATA = ("StopIteration", "OutOfRangeError")


class Callback(keras.callbacks.Callback):
    """Streams a ``model.fit`` to a curvelab server as an external run.

    name: the run's name (default: the model's). probe_data: training images
    for the gap probes, as (x, y) arrays, a tf.data.Dataset, a PyDataset or an
    iterable of batches; the first ``probe_images`` are used. validation_data:
    what fit validates on, when the callback cannot read it from fit itself
    (it can for arrays, a dataset or validation_split). url, token, ui_url:
    the API, its token and the UI (CURVELAB_API_URL, CURVELAB_API_TOKEN,
    CURVELAB_UI_URL). batch_every: a batch point every this many steps.
    probe_every: the gap probes every this many epochs (and at the last one).
    upload_model: after a fit that succeeded, upload the model (.keras) when it
    is at most max_model_mb. spool_dir: where unsent records are kept
    (CURVELAB_SPOOL_DIR, default ~/.cache/curvelab/spool). flush_timeout: how
    long the end of fit waits for the network, at most.
    """

    def __init__(
        self,
        name: str | None = None,
        probe_data: Any = None,
        *,
        url: str | None = None,
        token: str | None = None,
        ui_url: str | None = None,
        validation_data: Any = None,
        batch_every: int = BATCH_EVERY,
        probe_every: int = 1,
        probe_images: int = PROBE_IMAGES,
        probe_val_images: int = PROBE_IMAGES,
        probes: bool = True,
        upload_model: bool = False,
        max_model_mb: float = 100,
        spool_dir: str | os.PathLike[str] | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int | None = None,
        flush_timeout: float = 10.0,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if batch_every < 1 or probe_every < 1 or probe_images < 1 or probe_val_images < 1:
            raise ValueError("batch_every, probe_every and the probe sizes must be at least 1")
        self.name = name
        self.probe_data = probe_data
        self.validation_data = validation_data
        self.api_url = env.api_url(url)
        self.token = env.api_token(token)
        self.ui_url = env.ui_url(self.api_url, ui_url)
        self.batch_every = batch_every
        self.probe_every = probe_every
        self.probe_images = probe_images
        self.probe_val_images = probe_val_images
        self.probes_on = probes
        self.upload_model = upload_model
        self.max_model_mb = max_model_mb
        self.spool_dir = env.spool_dir(spool_dir)
        self.class_names = [str(name) for name in class_names or []]
        self.batch_size = batch_size
        self.flush_timeout = flush_timeout
        self.verbose = verbose
        self.run_id: str | None = None
        self.status: str | None = None  # the run's end, once it is known
        self.spool_path: Path | None = None
        self.missing: list[str] = []
        self._transport: Transport | None = None
        self._probes: GapProbes | None = None
        self._window: BatchWindow | None = None
        self._end_lock = threading.Lock()
        self._guarded: Callable[..., Any] | None = None
        self._original: Callable[..., Any] | None = None
        self._reset_fit_state()

    @property
    def url(self) -> str | None:
        """The run's page in the UI (None before the fit began)."""
        return f"{self.ui_url}/run?id={self.run_id}" if self.run_id else None

    # --- train begin ---------------------------------------------------------

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._transport is not None and self.status is None:
            # The previous fit with this callback ended without on_train_end.
            self._end("failed", _last_error() or "the fit ended without finishing (an exception?)")
        self._reset_fit_state()
        try:
            self._begin()
        except Exception:
            log.warning("curvelab: could not start streaming this fit", exc_info=True)
            self._active = False

    def _reset_fit_state(self) -> None:
        self._active = False
        self.status = None
        self._epoch = 0
        self._steps = 0  # steps per epoch: Keras's, or counted in the first epoch
        self._steps_started = 0
        self._started = 0.0
        self._train_ended: float | None = None
        self._train_images: int | None = None

    def _begin(self) -> None:
        self.run_id = uuid.uuid4().hex
        context = fitframe.find(self.model)
        batch_size = self.batch_size or context.batch_size
        self._steps = int(self.params.get("steps") or 0)
        train_images = context.train_images
        if train_images is None and batch_size and self._steps:
            train_images = batch_size * self._steps  # an estimate: a last batch may be smaller
        self._train_images = train_images
        self.missing = []
        val_images = _count_images(self.validation_data or context.validation_data)
        self._probes = self._build_probes(batch_size, context)
        probe_summary: dict[str, Any] = {"missing": self.missing}
        if self._probes is not None:
            probe_summary.update(
                train_images=self._probes.train_images,
                bn_images=self._probes.bn_images,
                val_images=self._probes.val_images,
            )
        body = summary.create_body(
            self.run_id,
            self.name or str(self.model.name),
            _host(),
            self.class_names,
            summary.fit_summary(
                self.model,
                self.params,
                batch_size=batch_size,
                train_images=train_images,
                val_images=val_images,
                class_names=self.class_names,
                probes=probe_summary,
            ),
        )
        self._window = BatchWindow(batch_size or 1, train_images)
        spool = Spool.create(self.spool_dir, self.api_url, self.run_id)
        self.spool_path = spool.path
        earlier = leftovers(self.spool_dir, self.api_url, skip=self.run_id)
        self._transport = Transport(spool, self.token, leftovers=earlier)
        self._transport.submit("create", body)
        self._guard_train_function()
        _LIVE.add(self)
        _install_hooks()
        self._active = True
        if self.verbose:
            print(f"curvelab: streaming this fit to {self.url}", file=sys.stderr)

    def _build_probes(
        self, batch_size: int | None, context: fitframe.FitContext
    ) -> GapProbes | None:
        if not self.probes_on:
            self.missing.append("gap probes: off (curvelab.Callback(probes=False))")
            return self._without_probes()
        if self.probe_data is None:
            self.missing.append(
                "train_eval_* and *_recalibrated: no probe_data was given; "
                "curvelab.Callback(probe_data=(x_train[:512], y_train[:512])) measures them"
            )
            log.warning(
                "curvelab: no probe_data, so the gap probes (train_eval_*, *_recalibrated) are "
                "not measured; curves and bn_init_weight still are. Add "
                "probe_data=(x_train[:512], y_train[:512]) (or a dataset) to curvelab.Callback."
            )
            return self._without_probes()
        size = max(min(self.probe_images, PROBE_BATCH), batch_size or 1)
        try:
            train = fixed_batches(self.probe_data, images=self.probe_images, batch_size=size)
        except Exception as exc:
            self.missing.append(f"gap probes: the probe_data could not be read ({exc})")
            log.warning("curvelab: probe_data cannot be read, no gap probes: %s", exc)
            return self._without_probes()
        val, val_sample = self._validation(context, size)
        probes = GapProbes(train=train, val=val, val_sample=val_sample)
        if val is None and val_sample is None:
            self.missing.append(
                "val_loss_recalibrated and val_accuracy_recalibrated: the callback could not "
                "read fit's validation data; pass it as curvelab.Callback(validation_data=...)"
            )
        else:
            self.missing.extend(probes.missing)
        if not batchnorm_layers(self.model):
            self.missing.append(
                "*_recalibrated and bn_init_weight: the model has no BatchNormalization layer"
            )
        if self.probe_every > 1:
            self.missing.append(
                f"gap probes: measured every {self.probe_every} epochs and at the last "
                f"(probe_every={self.probe_every})"
            )
        return probes

    def _without_probes(self) -> GapProbes | None:
        if not batchnorm_layers(self.model):
            self.missing.append("bn_init_weight: the model has no BatchNormalization layer")
        return None

    def _validation(self, context: fitframe.FitContext, size: int) -> tuple[Any, Any]:
        """(val, val_sample) for the probes: a set up to ``probe_val_images``
        whole, a larger one as a sample of that many (its lag is taken off the
        epoch's own val_loss)."""
        data = self.validation_data if self.validation_data is not None else context.validation_data
        if data is None or not _rereadable(data):
            return None, None  # a generator would be fit's, not ours to read
        try:
            batches = fixed_batches(data, images=self.probe_val_images + 1, batch_size=size)
        except Exception as exc:
            log.warning("curvelab: the validation data cannot be read for the probes: %s", exc)
            return None, None
        count = sum(len(labels) for _, labels in batches)
        if count <= self.probe_val_images:
            return batches, None
        sample = fixed_batches(data, images=self.probe_val_images, batch_size=size)
        return None, sample

    # --- batches and epochs --------------------------------------------------

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._steps_started = 0
        self._train_ended = None
        self._started = time.perf_counter()
        if self._window is not None:
            self._window.start_epoch(epoch)

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        # `batch` steps of this epoch are done; this hook runs before the next
        # (on_train_batch_end would make Keras dispatch batch logs synchronously).
        self._steps_started = batch + 1
        step = self._epoch * self._steps + batch
        if batch and self._active and self._steps and step % self.batch_every == 0:
            self._point(batch, self.model.get_metrics_result())

    def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        # fit validates after the epoch's last step: the training part ends here.
        if self._train_ended is None:
            self._train_ended = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if not self._active or self._transport is None:
            return
        try:
            self._epoch_end(epoch, dict(logs or {}))
        except Exception:
            log.warning("curvelab: epoch %d was not recorded", epoch + 1, exc_info=True)
        except BaseException as exc:  # Ctrl-C in the probes: the fit ends here
            self._fit_raised(exc)
            raise

    def _epoch_end(self, epoch: int, logs: dict[str, Any]) -> None:
        ended = time.perf_counter()
        if not self._steps:  # unknown until now (a dataset of unknown size)
            self._steps = self._steps_started
        if self._steps and ((epoch + 1) * self._steps) % self.batch_every == 0:
            training = {k: v for k, v in logs.items() if not k.startswith("val_")}
            self._point(self._steps_started, training)
        train_seconds = (self._train_ended or ended) - self._started
        values = _floats(logs)
        values["seconds"] = ended - self._started
        images = self._train_images
        values["images_per_sec"] = images / train_seconds if images and train_seconds > 0 else None
        values["lr"] = _learning_rate(self.model)
        if self._probes is not None and self._probe_due(epoch):
            values.update(_floats(self._probes(self.model, epoch + 1, logs)))
        elif "bn_init_weight" not in values:
            weight = bn_init_weight(self.model)
            if weight is not None:
                values["bn_init_weight"] = weight
        assert self._transport is not None
        self._transport.submit("epochs", {"epochs": [{"epoch": epoch + 1, "values": values}]})

    def _probe_due(self, epoch: int) -> bool:
        last = self.params.get("epochs")
        return (epoch + 1) % self.probe_every == 0 or (last is not None and epoch + 1 >= last)

    def _point(self, steps_done: int, running: Mapping[str, Any]) -> None:
        if self._window is None or self._transport is None or not self._steps:
            return
        try:
            point = self._window.point(steps_done, self._steps, running)
        except Exception:
            log.debug("curvelab: no batch point", exc_info=True)
            return
        if point is None:
            return
        step, at, values = point
        self._transport.submit(
            "batches", {"batches": [{"step": step, "epoch": at, "values": values}]}
        )

    # --- the end -------------------------------------------------------------

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._active:
            self._end("succeeded")

    def _guard_train_function(self) -> None:
        original = getattr(self.model, "train_function", None)
        if original is None or not callable(original):
            return
        callback = weakref.ref(self)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except BaseException as exc:
                owner = callback()
                if owner is not None:
                    owner._fit_raised(exc)
                raise

        self._original, self._guarded = original, guarded
        self.model.train_function = guarded

    def _unguard(self) -> None:
        model: Any = getattr(self, "_model", None)
        if self._guarded is not None and getattr(model, "train_function", None) is self._guarded:
            model.train_function = self._original
        self._guarded = self._original = None

    def _fit_raised(self, exc: BaseException) -> None:
        """An exception is on its way out of fit (Keras catches none but the end of data)."""
        if type(exc).__name__ in END_OF_DATA:
            # Data of unknown size ran out: the step begun last did not happen.
            self._steps_started = max(self._steps_started - 1, 0)
            return
        if self.status is not None:
            return
        if isinstance(exc, KeyboardInterrupt):
            self._end("interrupted")
        else:
            self._end("failed", _describe(exc))

    def _end(self, status: str, error: str | None = None) -> None:
        """Finish the run once: the model (opted in), the end, a bounded flush."""
        with self._end_lock:
            if self.status is not None or self._transport is None:
                return
            self.status = status
            transport, self._transport = self._transport, None
        self._active = False
        try:
            self._unguard()
            if status == "succeeded" and self.upload_model:
                self._queue_model(transport)
            body: dict[str, Any] = {"status": status}
            if error:
                body["error"] = error[:20_000]
            transport.submit("finish", body)
            sent = transport.close(self.flush_timeout)
            if self.verbose:
                state = "sent" if sent else "not all sent (kept in the spool)"
                print(f"curvelab: run {status}, {state}: {self.url}", file=sys.stderr)
        except Exception:
            log.warning("curvelab: could not finish the run", exc_info=True)
        finally:
            _LIVE.discard(self)

    def _queue_model(self, transport: Transport) -> None:
        assert self.run_id is not None
        path = self.spool_dir / f"{self.run_id}.keras"
        try:
            self.model.save(path)
        except Exception as exc:
            log.warning("curvelab: the model could not be saved for upload: %s", exc)
            return
        megabytes = path.stat().st_size / 2**20
        if megabytes > self.max_model_mb:
            path.unlink(missing_ok=True)
            log.warning(
                "curvelab: the model is %.1f MB, over max_model_mb=%s: not uploaded",
                megabytes,
                self.max_model_mb,
            )
            return
        transport.submit("model", file=path.name)


# --- ends that Keras does not report ------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LIVE: weakref.WeakSet[Callback] = weakref.WeakSet()
_HOOKS = threading.Lock()
_installed = False


def _install_hooks() -> None:
    global _installed
    with _HOOKS:
        if _installed:
            return
        _installed = True
        previous = sys.excepthook

        def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            # The script dies of an exception that left fit elsewhere than a step.
            for callback in list(_LIVE):
                callback._fit_raised(value)
            previous(kind, value, tb)

        sys.excepthook = excepthook
        atexit.register(_at_exit)


def _at_exit() -> None:
    for callback in list(_LIVE):
        callback._end("failed", _last_error() or "the process exited while fit was running")


def _last_error() -> str | None:
    value = getattr(sys, "last_value", None)  # set by the interpreter (and IPython)
    return _describe(value) if isinstance(value, BaseException) else None


def _describe(exc: BaseException) -> str:
    # Keras styles a layer's error for a terminal (ANSI bold): plain text for the UI.
    message = _ANSI.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _host() -> str | None:
    try:
        return socket.gethostname() or None
    except OSError:
        return None


def _floats(values: Mapping[str, Any]) -> dict[str, float | None]:
    """Every number as a finite float; NaN and infinity (a diverged loss) as None."""
    result: dict[str, float | None] = {}
    for key, value in values.items():
        try:
            number = float(keras.ops.convert_to_numpy(value))
        except (TypeError, ValueError):
            continue  # not a number: nothing to plot
        result[str(key)] = number if math.isfinite(number) else None
    return result


def _learning_rate(model: keras.Model) -> float | None:
    try:
        value = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except Exception:
        return None
    return value if math.isfinite(value) else None


def _rereadable(data: Any) -> bool:
    """Data the probes may read without taking it from fit: arrays, a
    tf.data.Dataset, a PyDataset (not a generator, which fit consumes)."""
    if isinstance(data, tuple | list):
        return True
    if isinstance(data, keras.utils.PyDataset):
        return True
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def _count_images(data: Any) -> int | None:
    if isinstance(data, tuple | list) and data:
        try:
            return len(data[1] if len(data) > 1 else data[0])
        except TypeError:
            return None
    return None
