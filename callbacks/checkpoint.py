"""Atomic training checkpoints: the last K, the best, and resuming from them.

A checkpoint is a directory, written under a temporary name and renamed into
place only when complete, so a crash, a full disk or a SIGKILL never leaves a
half-written checkpoint that looks valid:

    ckpt-e0004-s00000080/
        model-weights.h5            the model's weights, once, by layer name:
                                    resuming, fine-tuning and inference all
                                    read them
        state.index, state.data-*   the rest of the training state
                                    (tf.train.Checkpoint): the optimizer's
                                    iterations and slots (a gradient-lag
                                    buffer included) and the random
                                    generators of the model's random layers
                                    (dropout), so a resumed run draws the
                                    same masks as an uninterrupted one
        stats.h5                    the normalization statistics the model
                                    was trained with, if any (a checkpoint
                                    moved elsewhere still predicts)
        meta.json                   epoch, global step, model name, metrics;
                                    written last
    best/                           a copy of the best one so far

Nothing is executed when loading: both formats hold only tensors.
Checkpoints written before the weights were stored once (their `state`
holds the model too) still restore.
"""

import json
import math
import os
import re
import shutil
import time

import numpy as np
import tensorflow as tf

_NAME = re.compile(r"^ckpt-e(\d{4,})-s(\d{8,})$")
META = "meta.json"
STATE = "state"
WEIGHTS = "model-weights.h5"
STATS = "stats.h5"
BEST = "best"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the path."""


def list_checkpoints(directory):
    """Returns the complete checkpoints in `directory`, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for entry in os.listdir(directory):
        match = _NAME.match(entry)
        path = os.path.join(directory, entry)
        if match and os.path.isfile(os.path.join(path, META)):
            found.append((int(match.group(2)), int(match.group(1)), path))
    return [path for _, _, path in sorted(found)]


def latest_checkpoint(directory):
    """Returns the newest complete checkpoint in `directory`, or None."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def read_meta(path):
    """Returns the metadata dict of the checkpoint directory `path`."""
    meta_path = os.path.join(path, META)
    try:
        with open(meta_path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is not a climseg checkpoint: {META} is missing (an incomplete "
            "or foreign directory)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint metadata {meta_path}: {e}") from e


def resume_point(directory, resume="auto"):
    """The checkpoint a run resumes from, or None to start afresh.

    Args:
        directory: the run's checkpoint directory.
        resume: "auto" (the newest checkpoint in `directory`, if any),
            "never" (refuse a directory that holds checkpoints) or a
            checkpoint directory.

    Raises:
        CheckpointError: "never" with checkpoints there, or a path that is
            not a directory.
    """
    latest = latest_checkpoint(directory)
    if resume == "never":
        if latest:
            raise CheckpointError(f"--resume never: {directory} already holds checkpoints "
                                  f"({os.path.basename(latest)}); choose another --output-dir")
        return None
    if resume == "auto":
        return latest
    if not os.path.isdir(resume):
        raise CheckpointError(f"--resume {resume}: no such checkpoint directory")
    return resume


def resume_position(meta, steps_per_epoch):
    """Where a run resumes: `(epoch, batches of that epoch done, note or None)`.

    A checkpoint written at an epoch's end resumes at the next epoch's first
    batch; one written mid-epoch (`every_steps`) after the batches that epoch
    had done. A step that does not fall in the epoch at this many steps per
    epoch (another batch size) starts the epoch from its beginning, with a
    note saying so.
    """
    epoch = int(meta["epoch"])
    done = int(meta["step"]) - epoch * steps_per_epoch
    if 0 <= done < steps_per_epoch:
        return epoch, done, None
    return epoch, 0, (f"checkpoint step {meta['step']} does not fall in epoch {epoch + 1} at "
                      f"{steps_per_epoch} steps per epoch (other batch size?); starting that "
                      "epoch from its beginning")


def restore_checkpoint(path, model, optimizer=None, expect_model=None):
    """Restores model (and optimizer) state from the checkpoint directory `path`.

    The optimizer's variables are created first (`optimizer.build`) so that
    every slot, including a gradient-lag buffer, is restored now rather than
    lazily.

    Args:
        path: a checkpoint directory written by `Checkpointer`.
        model: the model, built with the same architecture.
        optimizer: its optimizer, or None to restore only the weights.
        expect_model: the model name the checkpoint must have been written
            for; a different one raises `CheckpointError` naming both.

    Returns:
        The checkpoint's metadata dict (`epoch`, `step`, ...).
    """
    meta = read_meta(path)
    if expect_model is not None and meta.get("model") not in (None, expect_model):
        raise CheckpointError(
            f"checkpoint {path} was written for model {meta.get('model')!r}, "
            f"not {expect_model!r}")
    state = os.path.join(path, STATE)
    try:
        saved = {key.split("/")[0] for key, _ in tf.train.list_variables(state)}
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint state {state}: "
                              f"{str(e).splitlines()[0]}") from e
    objects = {}
    if "model" in saved:  # written before the weights were stored once
        objects["model"] = model
    else:
        weights = os.path.join(path, WEIGHTS)
        try:
            model.load_weights(weights)
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"checkpoint {path} does not fit this model (model "
                f"{meta.get('model')!r}): {weights}: {str(e).splitlines()[0]}") from e
    if optimizer is not None:
        optimizer.build(model.trainable_variables)
        objects["optimizer"] = optimizer
    generators = random_generators(model)
    if generators and "random" in saved:
        objects["random"] = generators
    if not objects:
        return meta
    try:
        status = tf.train.Checkpoint(**objects).read(state)
        status.assert_existing_objects_matched()
        status.expect_partial()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model/optimizer "
            f"(model {meta.get('model')!r}): {str(e).splitlines()[0]}") from e
    return meta


def random_generators(model):
    """The `tf.random.Generator` of every random layer of `model` (e.g. Dropout), in order.

    These hold the state that a training run consumes for dropout masks;
    checkpoints save and restore them. A random layer that uses TensorFlow's
    legacy stateful ops instead (tf-keras' default unless the layer is made
    with `rng_type="stateful"`) has no state that can be saved: see
    `unsaved_random_layers`.
    """
    found = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            found.append(generator)
    return found


def unsaved_random_layers(model):
    """Names of `model`'s random layers whose state a checkpoint cannot hold.

    Such a layer (tf-keras' Dropout made without `rng_type="stateful"`) draws
    from TensorFlow's legacy stateful random ops: a run resumed from a
    checkpoint draws other masks than the uninterrupted run did.
    """
    names = []
    for layer in model.submodules:
        rng = getattr(layer, "_random_generator", None)
        if getattr(layer, "rate", None) == 0:  # e.g. tf-models-official's ASPP dropout 0
            continue  # draws nothing
        if rng is not None and getattr(rng, "_rng_type", None) == "legacy_stateful":
            names.append(layer.name)
    return names


def _fsync_tree(directory):
    for entry in os.listdir(directory):
        with open(os.path.join(directory, entry), "rb") as f:
            os.fsync(f.fileno())


def write_checkpoint(directory, model, optimizer, epoch, step, meta=None, files=None):
    """Writes one checkpoint atomically and returns its path.

    Args:
        directory: the checkpoints' directory (created if missing).
        model: the model; its weights go to `model-weights.h5`, once.
        optimizer: its optimizer (state), or None.
        epoch: completed epochs.
        step: the global step.
        meta: extra JSON-serializable metadata. Defaults to None.
        files: `{name: path}` of files copied into the checkpoint, e.g.
            `{"stats.h5": "/data/stats.h5"}`. Defaults to None.

    Raises:
        CheckpointError: the write failed (e.g. the disk is full); the partial
            files are removed and earlier checkpoints are untouched.
    """
    final = os.path.join(directory, f"ckpt-e{epoch:04d}-s{step:08d}")
    tmp = f"{final}.tmp-{os.getpid()}"
    try:
        os.makedirs(directory, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        model.save_weights(os.path.join(tmp, WEIGHTS))
        state = {"random": random_generators(model)}
        if optimizer is not None:
            state["optimizer"] = optimizer
        tf.train.Checkpoint(**state).write(os.path.join(tmp, STATE))
        for name, source in (files or {}).items():
            shutil.copyfile(source, os.path.join(tmp, name))
        info = dict(meta or {}, epoch=int(epoch), step=int(step), time=time.time())
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(info, f, indent=2, default=float)
        _fsync_tree(tmp)
        if os.path.exists(final):  # a re-run of the same step: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except (OSError, tf.errors.OpError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # One line: h5py's messages run over several.
        reason = os.strerror(e.errno) if isinstance(getattr(e, "errno", None), int) \
            else " ".join(str(e).split())
        raise CheckpointError(
            f"could not write checkpoint {final}: {reason}. Earlier checkpoints in "
            f"{directory} are intact.") from e
    return final


def _replace_dir(source, target):
    """Copies directory `source` over `target` so that `target` is always whole."""
    tmp, old = f"{target}.tmp-{os.getpid()}", f"{target}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    _fsync_tree(tmp)
    if os.path.exists(target):
        os.rename(target, old)
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


class Checkpointer(tf.keras.callbacks.Callback):
    """Writes atomic checkpoints during `fit`, keeps the last K and the best.

    Only the process with `writer=True` writes (under Horovod: rank 0; every
    rank holds the same weights). Place it after `MetricAverage`, so that the
    monitored value is the global one. A checkpoint is never written when
    the loss is not finite, so the last one written is always resumable.

    Args:
        directory: where checkpoints go (created if missing).
        every_epochs: write at the end of every N-th epoch; None for never.
            Defaults to `1`.
        every_steps: also write every N global steps (at the end of a batch);
            None for never. Defaults to `None`.
        keep: how many recent checkpoints to keep (the best is kept apart).
            Defaults to `3`.
        monitor: the log key that decides the best checkpoint. Defaults to
            `"val_mean_iou"`.
        mode: `"max"` or `"min"`: which way `monitor` improves. Defaults to
            `"max"`.
        meta: extra JSON-serializable metadata stored with every checkpoint
            (e.g. the model name and the run's config). Defaults to `None`.
        files: `{name: path}` of files copied into every checkpoint, e.g.
            `{"stats.h5": stats_path}`, so that it is self-contained.
            Defaults to `None`.
        writer: whether this process writes. Defaults to `True`.
        before_save: a function called on every process (writer or not) just
            before each checkpoint is written, e.g. a collective that makes
            per-rank optimizer state global (`GradientLag.average_over_ranks`).
            Defaults to `None`.
        verbose: 1 prints a line per checkpoint written. Defaults to `1`.

    Example:

        ckpt = Checkpointer("run/checkpoints", keep=3, writer=hvd.rank() == 0)
        model.fit(ds, epochs=10, callbacks=[MetricAverage(), ckpt])
    """

    def __init__(self, directory, every_epochs=1, every_steps=None, keep=3,
                 monitor="val_mean_iou", mode="max", meta=None, files=None, writer=True,
                 before_save=None, verbose=1):
        super().__init__()
        for name, value in (("every_epochs", every_epochs), ("every_steps", every_steps)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory = directory
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.keep = keep
        self.monitor = monitor
        self.mode = mode
        self.meta = dict(meta or {})
        self.files = dict(files or {})
        self.writer = writer
        self.before_save = before_save
        self.verbose = verbose
        self.best = None
        self.last_path = None

    def on_train_begin(self, logs=None):
        self.last_path = None
        self.best = None
        unsaved = unsaved_random_layers(self.model)
        if unsaved and self.writer and self.verbose:
            print(f"climseg: note: {len(unsaved)} random layer(s) ({', '.join(unsaved[:3])}"
                  f"{', ...' if len(unsaved) > 3 else ''}) use TensorFlow's legacy random "
                  "ops, whose state a checkpoint cannot hold: a resumed run will not repeat "
                  "their draws exactly (make them with rng_type='stateful')", flush=True)
        best_dir = os.path.join(self.directory, BEST)
        if os.path.isdir(best_dir):  # a resumed run keeps beating the old best
            self.best = read_meta(best_dir).get("metrics", {}).get(self.monitor)

    def _step(self):
        return int(tf.keras.backend.get_value(self.model.optimizer.iterations))

    def _improved(self, value):
        if value is None or not _finite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _save(self, epoch, logs):
        if self.before_save is not None:  # every rank, at every save point
            self.before_save()
        if not self.writer or not _finite((logs or {}).get("loss", 0.0)):
            return
        # A non-finite gradient can spoil the weights before the loss shows it.
        if not all(np.isfinite(w).all() for w in self.model.get_weights()):
            print(f"climseg: not writing a checkpoint at epoch {epoch}: the weights hold "
                  "NaN or Inf", flush=True)
            return
        metrics = {k: float(v) if _finite(v) else None for k, v in (logs or {}).items()
                   if _loggable_number(v)}
        path = write_checkpoint(self.directory, self.model, self.model.optimizer, epoch,
                                self._step(), dict(self.meta, metrics=metrics), self.files)
        self.last_path = path
        if self.verbose:
            print(f"climseg: checkpoint {path}", flush=True)
        value = metrics.get(self.monitor)
        if self._improved(value):
            self.best = value
            _replace_dir(path, os.path.join(self.directory, BEST))
            if self.verbose:
                print(f"climseg: new best {self.monitor}={value:.4f}", flush=True)
        for old in list_checkpoints(self.directory)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.params.get("steps"):
            # An epoch's last batch: on_epoch_end writes this state when due, with the
            # epoch's metrics. A step checkpoint here would claim a finished epoch
            # whose end (validation, its record) never ran.
            return
        if self.every_steps and self._step() % self.every_steps == 0:
            # Mid-epoch: `epoch` counts completed epochs; the step tells how far
            # into the next one this is (train.py resumes from there).
            self._save(self._epoch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self._save(epoch + 1, logs)


def checkpoint_channel_names(path):
    """The input channels' names a climseg checkpoint was trained on, or None.

    Args:
        path: a checkpoint directory, or its `model-weights.h5`; anything else
            (a bare weights file, a TF checkpoint) gives None.
    """
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    if not (os.path.isdir(path) or os.path.basename(path) == WEIGHTS) \
            or not os.path.isfile(os.path.join(directory, META)):
        return None
    meta = read_meta(directory)
    if meta.get("channel_names"):
        return list(meta["channel_names"])
    if meta.get("channels") is not None:  # older checkpoints: indices of the 16 CAM5 channels
        from data.layouts import CHANNELS

        return [CHANNELS[i] for i in meta["channels"]]
    return None


def _loggable_number(value):
    """Whether a log value reads as a number (a numpy scalar, a 0-d tensor, a float)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
