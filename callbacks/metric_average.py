"""Averaging of scalar logs over Horovod ranks, before other callbacks read them."""

import numbers

import numpy as np
import tensorflow as tf

import climseg_tf


def _is_scalar(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    return isinstance(value, np.ndarray | np.generic) and np.ndim(value) == 0 and np.issubdtype(
        np.asarray(value).dtype, np.number)


class MetricAverage(tf.keras.callbacks.Callback):
    """Replaces every scalar in the epoch logs by its mean over Horovod ranks.

    Each rank computes its metrics (loss, IoU, validation metrics) on its own
    share of the data; at the end of every epoch (and of every evaluation)
    this callback allreduces them and writes the means back into the `logs`
    dict that Keras hands to the following callbacks, so checkpointing,
    early stopping, W&B logging and `History` all see global values, the same
    on every rank. Non-scalar entries are left alone.

    Place it first in the `callbacks` list: Keras calls callbacks in list
    order, and those before it see per-rank values. (Keras's own progress bar
    always runs before user callbacks, so with `verbose=1` rank 0 prints its
    local values; `model.fit`'s returned `History` holds the averages.)

    This replaces Horovod's `MetricAverageCallback`, which uses Keras 3's
    `keras.backend` and fails with tf-keras. Every rank must run the same
    number of epochs with the same metrics; the set of keys is checked once
    per `fit` and a mismatch raises `ValueError`. Without Horovod (or with one
    rank) it does nothing.

    Args:
      verbose: 0: quiet; 1: rank 0 prints the averaged values. Defaults to
        `0`.

    Example:

        model.fit(x, y, callbacks=[MetricAverage(), LearningRateLogger(),
                                   tf.keras.callbacks.ModelCheckpoint(...)])
    """

    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = int(verbose)
        self._checked_keys = set()

    def on_train_begin(self, logs=None):
        self._checked_keys = set()

    def on_epoch_end(self, epoch, logs=None):
        self._average(logs, f"epoch {epoch + 1}")

    def on_test_end(self, logs=None):
        self._average(logs, "evaluation")

    def _average(self, logs, when):
        rank, size = climseg_tf.rank_and_size()
        if logs is None or size == 1:
            return
        keys = sorted(k for k, v in logs.items() if _is_scalar(v))
        if tuple(keys) not in self._checked_keys:
            # Horovod: all ranks must reduce the same values in the same order.
            everyone = climseg_tf.allgather_object(keys, name="climseg.metric_average.keys")
            different = {r: k for r, k in enumerate(everyone) if k != everyone[0]}
            if different:
                raise ValueError(
                    f"MetricAverage at the end of {when}: ranks log different metrics; rank 0 "
                    f"has {everyone[0]}, other ranks have {different}."
                )
            self._checked_keys.add(tuple(keys))
        if not keys:
            return
        # Horovod: average the scalar logs over all ranks.
        means = climseg_tf.allreduce([float(logs[k]) for k in keys], "mean",
                                   name="climseg.metric_average")
        logs.update(zip(keys, means, strict=True))
        if self.verbose and rank == 0:  # only rank 0 prints
            shown = ", ".join(f"{k}: {v:.6g}" for k, v in zip(keys, means, strict=True))
            print(f"MetricAverage over {size} ranks at the end of {when}: {shown}")
