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

from data.errors import os_error_reason

_NAME = re.compile(r"^ckpt-e(\d{4,})-s(\d{8,})$")
# What a killed writer leaves: `write_checkpoint`'s and `_replace_dir`'s names.
_UNFINISHED = re.compile(r"^(ckpt-e\d{4,}-s\d{8,}|best)\.(tmp|old)-(\d+)$")
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
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is not a climseg checkpoint: {META} is missing (an incomplete "
            "or foreign directory)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint metadata {meta_path}: "
                              f"{_one_line(e)}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint metadata {meta_path} holds a JSON "
                              f"{type(meta).__name__}, not an object")
    return meta


def verify_checkpoint(path):
    """Checks that the checkpoint directory `path` is whole, without a model; returns its meta.

    Reads `meta.json` (which must give the `epoch` and `step` as integers),
    every tensor of the training state (TensorFlow checks each one's length
    and CRC-32C) and every array of the weights file: a file truncated,
    emptied or overwritten after the checkpoint was written is found here,
    before any of it is loaded into a model. This reads the whole
    checkpoint once.

    Raises:
        CheckpointError: one line naming the file at fault and what is wrong.
    """
    meta = read_meta(path)
    for key in ("epoch", "step"):
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            found = "no such key" if key not in meta else f"{value!r}"
            raise CheckpointError(f"checkpoint metadata {os.path.join(path, META)}: {key!r} "
                                  f"should be an integer >= 0, found {found}")
    state = os.path.join(path, STATE)
    try:
        reader = tf.train.load_checkpoint(state)
        names = sorted(reader.get_variable_to_shape_map())
        for name in names:
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        # IndexError: TensorFlow's "Read less bytes than requested" (truncated data).
        raise CheckpointError(f"cannot read checkpoint state {state}: {_one_line(e)} "
                              "(a truncated or damaged file)") from e
    if not any(name.startswith("model/") for name in names):  # weights stored once
        _verify_weights(os.path.join(path, WEIGHTS))
    return meta


def _verify_weights(weights):
    import h5py

    def read(_, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(weights, "r") as f:
            f.visititems(read)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read checkpoint weights {weights}: {_one_line(e)} "
                              "(a truncated or damaged file)") from e


def _one_line(error):
    """An error's text on one line (h5py's and TensorFlow's messages run over several)."""
    return " ".join(str(error).split())


def remove_unfinished_writes(directory):
    """Removes what checkpoint writes killed mid-way (SIGKILL, a node lost) left in `directory`.

    Only this module's own temporary names count (`ckpt-...-s....tmp-PID`,
    `best.tmp-PID`, `best.old-PID`), and only those of processes that are no
    longer running here; anything else is left alone. A `best` caught between
    its two renames is put back first: the complete new copy if there is
    one, else the old. Call it from the one process that writes
    checkpoints (under Horovod: rank 0), before training.

    Returns:
        The names removed, sorted.
    """
    if not os.path.isdir(directory):
        return []
    dead = {}
    for name in os.listdir(directory):
        match = _UNFINISHED.match(name)
        if match and not _running(int(match.group(3))):
            dead[name] = match
    best = os.path.join(directory, BEST)
    if not os.path.exists(best):
        # Killed between `best -> best.old-PID` and `best.tmp-PID -> best`: the new copy
        # was complete (it is fsynced before the first rename), the old one too.
        olds = sorted(n for n, m in dead.items() if m.group(1) == BEST and m.group(2) == "old")
        for old in olds[-1:]:
            new = f"{BEST}.tmp-{dead[old].group(3)}"
            keep = new if new in dead else old
            os.rename(os.path.join(directory, keep), best)
            del dead[keep]
    for name in dead:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return sorted(dead)


def _running(pid):
    """Whether process `pid` exists on this machine (this process included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def resume_point(directory, resume="auto", say=None):
    """The checkpoint a run resumes from, or None to start afresh.

    Every candidate is checked first (`verify_checkpoint`). With "auto", a
    damaged newest checkpoint (a truncated state file, a `meta.json` without
    its step) is skipped with one line saying which and why, and the newest
    that verifies is taken.

    Args:
        directory: the run's checkpoint directory.
        resume: "auto" (the newest checkpoint in `directory` that verifies,
            if any), "never" (refuse a directory that holds checkpoints) or a
            checkpoint directory.
        say: prints a line (e.g. a skipped checkpoint). Defaults to `print`.

    Raises:
        CheckpointError: "never" with checkpoints there, a path that is not a
            checkpoint directory or does not verify, or checkpoints of which
            none verifies.
    """
    say = say or print
    checkpoints = list_checkpoints(directory)
    if resume == "never":
        if checkpoints:
            raise CheckpointError(f"--resume never: {directory} already holds checkpoints "
                                  f"({os.path.basename(checkpoints[-1])}); choose another "
                                  "--output-dir")
        return None
    if resume != "auto":
        if not os.path.isdir(resume):
            raise CheckpointError(f"--resume {resume}: no such checkpoint directory")
        try:
            verify_checkpoint(resume)
        except CheckpointError as e:
            raise CheckpointError(f"--resume {resume}: {e}") from e
        return resume
    damaged = []
    for path in reversed(checkpoints):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            damaged.append((path, e))
            say(f"skipping damaged checkpoint {os.path.basename(path)}: {e}")
            continue
        return path
    if damaged:
        raise CheckpointError(
            f"none of the {len(damaged)} checkpoint(s) in {directory} can be resumed from "
            f"(newest: {damaged[0][1]}); move them elsewhere to start afresh, or give "
            "--resume PATH or another --output-dir")
    return None


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
                              f"{_one_line(e)}") from e
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
        status.expect_partial()
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            if not _only_derived_state_missing(str(e)):
                raise
    except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model/optimizer "
            f"(model {meta.get('model')!r}): {str(e).splitlines()[0]}") from e
    return meta


_UNMATCHED = re.compile(r"Showing (\d+) of (\d+) unmatched objects: \[(.*)\]", re.S)


def _only_derived_state_missing(message):
    """Whether the only objects a restore left unmatched hold the optimizer's current rate.

    An optimizer with a `LearningRateSchedule` keeps the rate of its last
    step in a `current_learning_rate` variable, recomputed from the schedule
    at every step; checkpoints written when the rate was a plain variable
    lack it, and still resume exactly.
    """
    match = _UNMATCHED.search(message)
    if not match or match.group(1) != match.group(2):
        return False
    shown = re.findall(r"<tf\.Variable '([^']*)'", match.group(3))
    return len(shown) == int(match.group(1)) and all(
        name.split(":")[0].endswith("current_learning_rate") for name in shown)


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
        reason = os_error_reason(e)
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
        every_epochs: write at the end of every N-th epoch, and of an epoch
            after which training stops (`model.stop_training`); None for
            never. Defaults to `1`.
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
        # Batch logs stay tensors (no host read per batch); the step is counted
        # here, not read from the optimizer after every batch.
        self._supports_tf_logs = True
        self._global_step = None

    def on_train_begin(self, logs=None):
        self.last_path = None
        self.best = None
        # Every batch advances `iterations` by one (an applied step, a skipped
        # gradient-lag or loss-scale step, a micro-batch of an accumulation).
        self._global_step = self._step()
        unsaved = unsaved_random_layers(self.model)
        if unsaved and self.writer and self.verbose:
            print(f"climseg: note: {len(unsaved)} random layer(s) ({', '.join(unsaved[:3])}"
                  f"{', ...' if len(unsaved) > 3 else ''}) use TensorFlow's legacy random "
                  "ops, whose state a checkpoint cannot hold: a resumed run will not repeat "
                  "their draws exactly (make them with rng_type='stateful')", flush=True)
        best_dir = os.path.join(self.directory, BEST)
        if os.path.isdir(best_dir):  # a resumed run keeps beating the old best
            try:
                metrics = read_meta(best_dir).get("metrics")
                value = metrics.get(self.monitor) if isinstance(metrics, dict) else None
            except CheckpointError as e:
                value = None
                if self.writer:
                    print(f"climseg: note: {e}; the next checkpoint becomes the best",
                          flush=True)
            self.best = value if _finite(value) else None

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
        self._global_step += 1
        if batch + 1 == self.params.get("steps"):
            # An epoch's last batch: on_epoch_end writes this state when due, with the
            # epoch's metrics. A step checkpoint here would claim a finished epoch
            # whose end (validation, its record) never ran.
            return
        if self.every_steps and self._global_step % self.every_steps == 0:
            # Mid-epoch: `epoch` counts completed epochs; the step tells how far
            # into the next one this is (train.py resumes from there).
            self._save(self._epoch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        # A run that stops here (e.g. at its target) keeps this epoch's state too.
        if self.every_epochs and ((epoch + 1) % self.every_epochs == 0
                                  or self.model.stop_training):
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
