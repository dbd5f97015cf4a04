"""RunRecorder: the one Keras callback that turns a fit into a run's record.

Per batch it does the least it can: a counter, a modulo and an Event read
(the cancel flag, polled from Redis by the side channel's thread). It hooks
``on_train_batch_begin``, not ``_end``: overriding ``on_train_batch_end``
would make Keras dispatch batch logs synchronously on backends where a bare
fit dispatches them to a thread; every ``batch_metrics_every`` steps it reads
the metrics once instead. Redis is never touched from here: events go to
the side channel's queue.

At each epoch end, on the training thread, it times the epoch, collects
every Keras log value plus ``seconds``, ``images_per_sec`` and ``lr`` (and
the values of any probes), decides whether the epoch is the best so far and
snapshots the model (a device-side copy). The writing happens on the
recorder's own writer thread while the next epoch trains, in this order: the
SQL row (``epochs_done`` moves to the epoch: the fence against a stale
trainer), then the epoch event (a client that reads the metrics when the
event arrives finds the epoch), then the checkpoint file and the best
weights. The live view so waits for one SQL commit, not for a model file; a
worker that dies between the row and the checkpoint leaves SQL one epoch
ahead of its newest checkpoint, and the resumed run trains that epoch again
(``runner`` rewinds to the checkpoint). Batch events take the same thread,
so an epoch's event still comes before the next epoch's batch events. A
write that fails stops training at the next epoch boundary with its error;
``close`` (or the end of fit) waits for every write.

The recorder is fenced (worker/training/fence.py): when SQL refuses an epoch
because a later delivery trains the run (or it is final), or any part of
the trainer saw the run go (``Fence.lost``), it stops training at the next
batch and drops every job still queued: a stale trainer writes no row,
event, checkpoint or best weights after its first refused write. Files are
asked for the fence once more just before they are renamed into place.

A batch point's ``loss`` and ``accuracy`` are means over the steps since the
previous point of the same epoch, recovered from Keras's running means
(weighted by images, as Keras weighs them): the loss at that moment of
training, where Keras's own number is a mean since the epoch began. The
maths is ``curvelab.windows.BatchWindow``, which a user's own fit uses too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import keras

from backend import events, runs
from backend.db import Database
from backend.settings import Settings
from curvelab.windows import BatchPoint, BatchWindow
from worker.training import artifacts
from worker.training.best import Best, BestWeights
from worker.training.fence import Fence

log = logging.getLogger(__name__)

# A probe measures the model at an epoch's end (1-based; the epoch's Keras logs
# beside it) without changing it; its values join the epoch's record like any
# Keras metric.
EpochProbe = Callable[[keras.Model, int, Mapping[str, Any]], Mapping[str, float | None]]
# Told each epoch (1-based) and its values once SQL took it, on the writer
# thread (a sweep's pruner: worker/training/pruning.py). It must not raise.
EpochHook = Callable[[int, Mapping[str, Any]], None]


def _floats(values: Mapping[str, Any]) -> dict[str, float | None]:
    result: dict[str, float | None] = {}
    for key, value in values.items():
        try:
            result[key] = events.finite_or_none(value)
        except (TypeError, ValueError):
            continue  # not a number: nothing to plot
    return result


class RunRecorder(keras.callbacks.Callback):
    def __init__(
        self,
        *,
        run_id: str,
        attempt: int | None,
        settings: Settings,
        db: Database,
        publish: Callable[[dict[str, Any]], None],
        cancel: threading.Event,
        pause: threading.Event | None = None,
        steps_per_epoch: int,
        batch_size: int,
        train_images: int,
        batch_metrics_every: int,
        probes: Sequence[EpochProbe] = (),
        best: BestWeights | None = None,
        fence: Fence | None = None,
        epoch_hooks: Sequence[EpochHook] = (),
    ) -> None:
        super().__init__()
        if steps_per_epoch < 1 or batch_metrics_every < 1:
            raise ValueError("steps_per_epoch and batch_metrics_every must be at least 1")
        self.run_id = run_id
        # The delivery this fit belongs to (Run.attempt): SQL takes its epochs
        # only while no later delivery started training the run.
        self.attempt = attempt
        self.fence = fence if fence is not None else Fence(db, run_id, attempt)
        self.settings = settings
        self.db = db
        self.publish = publish
        self.cancel = cancel
        # Set when the worker is asked to shut down: stop at the next batch,
        # and the run is queued again to resume from its last checkpoint.
        self.pause = pause or threading.Event()
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.train_images = train_images
        self.every = batch_metrics_every
        self.probes = list(probes)
        self.epoch_hooks = list(epoch_hooks)
        self.best = best
        self.cancelled = False  # True once training was stopped for a cancel
        self.paused = False  # True once training was stopped for a worker shutdown
        self.fenced = False  # True once training was stopped: the run is another's
        self._epoch = 0  # 0-based, as Keras counts
        self._steps_started = 0
        self._started = 0.0
        self._train_ended: float | None = None
        self._points: list[BatchPoint] = []
        self._window = BatchWindow(batch_size, train_images)
        self._writer: _Writer | None = None
        self._snapshot: artifacts.Snapshot | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._writer = _Writer(f"curvelab-recorder-{self.run_id[:8]}", halt=self.fence.lost)
        self._snapshot = artifacts.Snapshot(self.model)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        try:
            self.flush()
        finally:
            self.close()

    def flush(self) -> None:
        """Wait until every queued checkpoint, SQL row and event is written;
        raise the error of a write that failed."""
        if self._writer is not None:
            self._writer.wait()
            if self._writer.error is not None:
                raise self._writer.error

    def close(self) -> None:
        """Write what is queued, then stop the writer thread. Never raises: a
        failed write was logged, and ``flush`` is the way to see it."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._raise_failed_write()
        self._epoch = epoch
        self._steps_started = 0
        self._points = []
        self._window.start_epoch(epoch)
        self._train_ended = None
        self._started = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # `batch` steps of this epoch are done; this hook runs before the next.
        self._steps_started = batch + 1
        if self.fence.lost.is_set():
            self.fenced = True
            self.model.stop_training = True
            return  # nothing more of this fit is recorded
        if self.cancel.is_set():
            self.cancelled = True
            self.model.stop_training = True
        elif self.pause.is_set():
            self.paused = True
            self.model.stop_training = True
        if batch and (self._epoch * self.steps_per_epoch + batch) % self.every == 0:
            self._point(batch, self.model.get_metrics_result())

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        # fit validates after the epoch's last step: the training part ends here.
        if self._train_ended is None:
            self._train_ended = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        ended = time.perf_counter()
        if self._steps_started < self.steps_per_epoch or self.fence.lost.is_set():
            log.info("run %s: epoch %d cut short; not recorded", self.run_id, epoch + 1)
            return
        if ((epoch + 1) * self.steps_per_epoch) % self.every == 0:
            training = {k: v for k, v in logs.items() if not k.startswith("val_")}
            self._point(self.steps_per_epoch, training)
        train_seconds = (self._train_ended or ended) - self._started
        values: dict[str, Any] = _floats(logs)
        values["seconds"] = ended - self._started
        values["images_per_sec"] = self.train_images / train_seconds if train_seconds > 0 else None
        values["lr"] = events.finite_or_none(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        for probe in self.probes:
            values.update(_floats(probe(self.model, epoch + 1, logs)))
        best = self.best.offer(epoch + 1, values.get("val_loss")) if self.best else None
        self._raise_failed_write()
        writer, snapshot = self._started_writer()
        snapshot.take()
        job = partial(self._commit, snapshot, epoch + 1, values, self._points, best)
        writer.submit(job, on_drop=snapshot.release)

    def _commit(
        self,
        snapshot: artifacts.Snapshot,
        epoch: int,
        values: dict[str, Any],
        points: list[BatchPoint],
        best: Best | None,
    ) -> None:
        """On the writer thread: SQL, then the event, then the files."""
        with snapshot.held() as model:
            with self.db.session() as session:
                stored = runs.record_epoch(
                    session, self.run_id, epoch, values, points, attempt=self.attempt
                )
            if not stored:
                if self.fence.holds():  # still this trainer's run: the record is ahead of it
                    raise RuntimeError(f"epoch {epoch} is behind the run's record")
                # A stale trainer (frozen past its lease, say): not one more write.
                self._stop_fenced()
                return
            self.publish(events.epoch_event(epoch, values))
            checkpoint = artifacts.checkpoint_path(self.settings, self.run_id, epoch)
            if not artifacts.save_model(model, checkpoint, fence=self.fence.holds):
                self._stop_fenced()
                return
            artifacts.prune_checkpoints(self.settings, self.run_id, epoch)
            if best is not None and self.best is not None:
                self.best.save(model, best, fence=self.fence.holds)
        for hook in self.epoch_hooks:
            hook(epoch, values)

    def _stop_fenced(self) -> None:
        """The run is another's: stop at the next batch (the writer drops the rest)."""
        self.fence.give_up("SQL refused its write")
        self.fenced = True
        self.model.stop_training = True

    def _started_writer(self) -> tuple[_Writer, artifacts.Snapshot]:
        if self._writer is None or self._snapshot is None:
            raise RuntimeError("the recorder records inside fit only (on_train_begin not called)")
        return self._writer, self._snapshot

    def _raise_failed_write(self) -> None:
        if self._writer is not None and self._writer.error is not None:
            raise self._writer.error

    def _point(self, steps_done: int, running: Mapping[str, Any]) -> None:
        """Record and queue the batch point after ``steps_done`` steps."""
        point = self._window.point(steps_done, self.steps_per_epoch, running)
        if point is None:
            return
        step, at, values = point
        self._points.append(point)
        writer, _ = self._started_writer()
        writer.submit(partial(self.publish, events.batch_event(step, at, values)))


Job = Callable[[], None]


class _Writer:
    """One thread that runs jobs in order. After a job fails it keeps the
    error and drops every later job (calling its ``on_drop``): nothing is
    written out of order. Once ``halt`` is set it drops every job too, with
    no error: the trainer is fenced."""

    def __init__(self, name: str, halt: threading.Event | None = None) -> None:
        self.error: BaseException | None = None
        self._halt = halt or threading.Event()
        self._queue: queue.Queue[tuple[Job, Job | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job, on_drop: Job | None = None) -> None:
        self._queue.put((job, on_drop))

    def wait(self) -> None:
        self._queue.join()

    def stop(self, timeout: float = 60.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: writes still pending after %.0fs", self._thread.name, timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                job, on_drop = item
                if self.error is None and not self._halt.is_set():
                    job()
                elif on_drop is not None:
                    on_drop()
            except BaseException as exc:
                log.error("%s: write failed", self._thread.name, exc_info=True)
                self.error = exc
            finally:
                self._queue.task_done()
