"""run_training: one run from queued (or interrupted) to a final status.

The plain function behind the Celery task, and what tests call directly.
It re-reads the run from SQL, so a task delivered twice is harmless: a final
or cancelled run is left alone, and an interrupted one resumes from its
newest checkpoint (its last recorded epoch, or the one before if the worker
died before that epoch's file was written) instead of training it again.

Every write is fenced (worker/training/fence.py): once the run is another
delivery's (or final), the trainer stops and writes nothing more, not even
its final model, evaluation, history or status, and returns "lost".
"""

from __future__ import annotations

import logging
import re
import threading

import keras
import numpy as np
from redis import Redis

from backend import artifacts as names
from backend import runs
from backend.datasets.layout import MANIFEST, Manifest, dataset_dir
from backend.datasets.split import stratified_split
from backend.db import Database, Run
from backend.settings import Settings
from backend.train_config import TrainConfig, read_stored_config
from worker.lease import RunLease, owner_name
from worker.training import artifacts, pruning
from worker.training.best import BestWeights
from worker.training.evaluation import evaluate_run
from worker.training.fence import Fence
from worker.training.model import compile_model, make_model
from worker.training.pipeline import build_pipelines
from worker.training.probes import build_gap_probes
from worker.training.recorder import RunRecorder
from worker.training.sidechannel import SideChannel

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 300
# "Error in user-defined function passed to ParallelMapDatasetV2:1 transformation
# with iterator: Iterator::Root::...::ParallelMapV2: <the message>"
_TF_DATA_PREFIX = re.compile(r"^Error in user-defined function .*? with iterator: \S+: ")


def run_training(
    run_id: str,
    settings: Settings,
    db: Database,
    redis: Redis | None,
    pause: threading.Event | None = None,
    lease: RunLease | None = None,
) -> str:
    """Train the run and return its final status ("missing" if there is no
    such run). Failures are recorded on the run, not raised.

    ``pause`` set (the worker is shutting down) stops training at the next
    batch and returns "interrupted": the run stays resumable from its last
    checkpointed epoch, and the caller queues it again. ``lease``: the run's
    lease, held by the caller (worker/tasks.py); its token is this attempt's
    holder in SQL and the side channel publishes under it. The run going to
    another (the lease taken, or a later delivery's start seen in SQL) stops
    training and returns "lost", leaving the run to the other worker."""
    artifacts.run_dir(settings, run_id)  # refuses a malformed id before any I/O
    lost = lease.lost if lease is not None else threading.Event()
    if lost.is_set():
        return "lost"  # another took the lease before this delivery started
    with db.session() as session:
        holder = lease.token if lease is not None else owner_name()
        run = runs.mark_running(session, redis, run_id, holder=holder)
        if run is None:
            current = session.get(Run, run_id)
            return current.status if current is not None else "missing"
        stored_config, dataset_id, epochs_done = run.config, run.dataset_id, run.epochs_done
        attempt = run.attempt
        epochs = read_stored_config(stored_config).config.epochs
        pruner = pruning.for_run(session, settings, run, epochs)
    fence = Fence(db, run_id, attempt, lost)
    if lease is not None:
        lease.guard(fence.current)  # a vanished lease comes back only while SQL agrees
    try:
        config = read_stored_config(stored_config).config
        outcome = _train(
            run_id,
            fence,
            config,
            dataset_id,
            epochs_done,
            settings,
            db,
            redis,
            pause,
            lease,
            pruner,
        )
        if lost.is_set():
            return "lost"
        if outcome == "interrupted":
            # Queued again by the caller: only while the run is still this one's.
            return outcome if fence.holds() else "lost"
        if outcome == "succeeded":
            with db.session() as session:
                rows = runs.epoch_rows(session, run_id)
            folder = artifacts.run_dir(settings, run_id)
            if not artifacts.write_history(folder / names.HISTORY_FILE, rows, fence=fence.holds):
                return "lost"
    except Exception as exc:
        log.exception("run %s failed", run_id)
        if lost.is_set():
            return "lost"  # the run is another worker's now
        with db.session() as session:
            marked = runs.finish(
                session, redis, run_id, "failed", error=describe_error(exc), attempt=attempt
            )
        # Not marked: a later delivery trains the run (or it was deleted).
        return "failed" if marked else "lost"
    # A cancelled or pruned run keeps the epochs it recorded: its curves stay.
    error = pruner.reason if outcome == "pruned" and pruner is not None else None
    with db.session() as session:
        marked = runs.finish(session, redis, run_id, outcome, error=error, attempt=attempt)
    return outcome if marked else "lost"


def _train(
    run_id: str,
    fence: Fence,
    config: TrainConfig,
    dataset_id: str | None,
    epochs_done: int,
    settings: Settings,
    db: Database,
    redis: Redis | None,
    pause: threading.Event | None,
    lease: RunLease | None,
    pruner: pruning.SweepPruning | None = None,
) -> str:
    """Fit from the last recorded epoch on: "succeeded", or "cancelled",
    "pruned" (its sweep's pruner) or "interrupted" when stopped early, or
    "lost" when fenced."""
    if dataset_id is None:
        raise FileNotFoundError("the run's dataset was deleted")
    folder = dataset_dir(settings.datasets_dir, dataset_id)
    if not (folder / MANIFEST).is_file():
        # The path stays in the log: the error is shown to API clients.
        log.error("run %s: no %s in %s", run_id, MANIFEST, folder)
        raise FileNotFoundError(f"dataset {dataset_id} is missing from the data dir")
    manifest = Manifest.read(folder)
    labels = np.array([image.label for image in manifest.images], dtype=np.int64)
    train_idx, val_idx = stratified_split(labels, config.validation_split, config.seed)

    model, initial_epoch = _model(run_id, config, len(manifest.classes), epochs_done, settings)
    if initial_epoch < epochs_done:
        # The curves go back to the model's epoch (the start, without a checkpoint).
        with db.session() as session:
            rewound = runs.rewind(session, redis, run_id, initial_epoch, attempt=fence.attempt)
        if not rewound:
            fence.give_up("its rewind was refused")
            return "lost"
    # A resumed fit restarts the shuffle's iteration count; a shifted seed
    # keeps its epochs from replaying the first epochs' orders.
    shuffle_seed = config.seed + initial_epoch
    data = build_pipelines(
        folder, manifest.images, train_idx.tolist(), val_idx.tolist(), config, shuffle_seed
    )
    probes = []
    if config.gap_probes:
        probes.append(
            build_gap_probes(
                folder, manifest.images, train_idx.tolist(), data.val, config, settings
            )
        )
    side_channel = SideChannel(
        redis, run_id, maxlen=settings.stream_maxlen, lease=lease, lost=fence.lost
    )
    with side_channel as side:
        recorder = RunRecorder(
            run_id=run_id,
            attempt=fence.attempt,
            settings=settings,
            db=db,
            publish=side.publish,
            cancel=side.cancelled,
            pause=pause,
            steps_per_epoch=data.train_steps,
            batch_size=config.batch_size,
            train_images=data.train_images,
            batch_metrics_every=config.batch_metrics_every,
            probes=probes,
            best=BestWeights(
                artifacts.run_dir(settings, run_id) / names.BEST_WEIGHTS_FILE,
                initial_epoch=initial_epoch,
            ),
            fence=fence,
            epoch_hooks=[pruner.after_epoch] if pruner is not None else [],
        )
        callbacks: list[keras.callbacks.Callback] = [recorder]
        if pruner is not None:
            callbacks.append(pruner)  # Keras hands it the model it stops
        if config.early_stopping_patience is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=config.early_stopping_patience
                )
            )
        try:
            model.fit(
                data.train,
                validation_data=data.val,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                shuffle=False,  # the training dataset shuffles itself, seeded
                verbose=0,
            )
        finally:
            # Keras skips on_train_end when fit raises: the queued checkpoint,
            # SQL row and event must still land before the run is marked.
            recorder.close()
    if recorder.fenced or fence.lost.is_set():
        return "lost"
    if recorder.cancelled or side.cancelled.is_set():
        return "cancelled"
    if pruner is not None and pruner.reason is not None:
        return "pruned"  # no model file, no evaluation: as a cancelled run
    if recorder.paused:
        return "interrupted"
    model_file = artifacts.run_dir(settings, run_id) / names.MODEL_FILE
    if not artifacts.save_model(model, model_file, fence=fence.holds):
        return "lost"
    # Before the run is marked succeeded: a client that sees it final finds its evaluation.
    evaluate_run(run_id, model, data.val, manifest.images, val_idx.tolist(), settings, db, fence)
    return "lost" if fence.lost.is_set() else "succeeded"


def _model(
    run_id: str, config: TrainConfig, num_classes: int, epochs_done: int, settings: Settings
) -> tuple[keras.Model, int]:
    """The model to fit and the epoch (0-based) to start from."""
    if epochs_done > 0:
        # One short of epochs_done where the worker died between an epoch's
        # record and its checkpoint (the record comes first).
        epoch = artifacts.latest_checkpoint(settings, run_id, upto=epochs_done)
        if epoch:
            checkpoint = artifacts.checkpoint_path(settings, run_id, epoch)
            log.info("run %s: resuming after epoch %d from %s", run_id, epoch, checkpoint)
            # Weights, BatchNorm statistics and optimizer state, as they were.
            return keras.models.load_model(checkpoint), epoch
        log.warning(
            "run %s: %d epochs recorded but no checkpoint in %s; starting over from epoch 0",
            run_id,
            epochs_done,
            artifacts.checkpoint_path(settings, run_id, epochs_done).parent,
        )
    model = compile_model(make_model(config, num_classes), config)
    return model, 0


def describe_error(exc: BaseException) -> str:
    """``Type: message`` in one short line. TensorFlow's op errors wrap the
    message in a graph trace and tf.data's iterator path; keep what went wrong."""
    text = str(getattr(exc, "message", None) or exc)
    noise = ("Graph execution error", "Detected at node", "[[", "File ")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line[:1].isspace() and not line.startswith(noise)
    ]
    message = " ".join(lines) or text.strip()
    message = message.replace("<stack traces unavailable>", "").strip()
    message = _TF_DATA_PREFIX.sub("", message)
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
