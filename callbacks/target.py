"""Stopping a run once a monitored metric reaches its target (e.g. a validation mean IoU)."""

import math

import tensorflow as tf

import climseg_tf


class StopAtTarget(tf.keras.callbacks.Callback):
    """Stops training at the end of the first epoch whose `monitor` reaches `target`.

    As MLPerf HPC's DeepCAM does with its target IoU: the epoch finishes
    (its checkpoint is written by a `Checkpointer` placed after this
    callback, which writes at a stop), then training ends. Epochs whose logs
    lack `monitor` (no validation that epoch) are passed over. Under Horovod
    every rank stops after the same epoch: rank 0's verdict is shared. Place
    it after `MetricAverage`. Afterwards `reached` holds `(epoch, value)`
    (epoch 1-based), or None.

    Args:
        target: the value to reach. A finite number.
        monitor: the log key. Defaults to `"val_mean_iou"`.
        mode: `"max"` (reached when `value >= target`) or `"min"` (`<=`).
            Defaults to `"max"`.
        verbose: 1 prints a line on rank 0 when the target is reached.
            Defaults to `1`.

    Example:

        target = StopAtTarget(0.82)
        model.fit(..., callbacks=[MetricAverage(), target, Checkpointer(...)])
    """

    def __init__(self, target, monitor="val_mean_iou", mode="max", verbose=1):
        super().__init__()
        if isinstance(target, bool) or not isinstance(target, (int, float)) \
                or not math.isfinite(target):
            raise ValueError(f"StopAtTarget target must be a finite number; received "
                             f"target={target!r}.")
        if mode not in ("max", "min"):
            raise ValueError(f"StopAtTarget mode must be 'max' or 'min'; received mode={mode!r}.")
        self.target = float(target)
        self.monitor = monitor
        self.mode = mode
        self.verbose = int(verbose)
        self.reached = None

    def on_train_begin(self, logs=None):
        self.reached = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        value = None if value is None else float(value)
        hit = value is not None and math.isfinite(value) and (
            value >= self.target if self.mode == "max" else value <= self.target)
        rank, _ = climseg_tf.rank_and_size()
        # Horovod: all ranks follow rank 0's verdict, so all stop after this epoch.
        (hit,) = climseg_tf.allreduce([float(hit) if rank == 0 else 0.0], "sum",
                                      name="climseg.target")
        if not hit:
            return
        self.reached = (epoch + 1, value)
        self.model.stop_training = True
        if self.verbose and rank == 0:  # only rank 0 prints
            print(f"climseg: {self.monitor} {value:.4f} reached the target {self.target:g} "
                  f"at epoch {epoch + 1}: stopping", flush=True)
