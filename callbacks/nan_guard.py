"""Stopping every rank together when the loss stops being a number, checked every N steps."""

import math

import tensorflow as tf

import climseg_tf


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Stops training on all ranks when the loss has become NaN or Inf, checked every N steps.

    Keras' `TerminateOnNaN` reads the loss after every batch and stops only
    the process that saw the NaN; under Horovod the other ranks then wait
    forever in their next allreduce. Reading the loss after every batch also
    makes the host wait for the device at every step. Here the check runs
    every `every` batches of an epoch and at its end: the loss Keras logs is
    the epoch's running mean, which stays NaN or Inf once one batch's loss
    was, so no bad batch goes unseen. Every rank contributes its verdict to
    one allreduce per check, so all stop after the same batch. Afterwards
    `stopped` is True and `message` says where it was found. Checkpoint
    writers skip non-finite states, so the last checkpoint stays resumable.

    Batches between checks run without waiting for their loss (the callback
    takes Keras' logs as tensors and does not read them), so up to
    `every - 1` batches may train on after the first bad one; their weights
    are never written (see `Checkpointer`).

    Args:
        every: check after every N-th batch of an epoch (and at every
            epoch's end). An int >= 1. Defaults to `50`.
        verbose: 1 prints the message on rank 0 when training stops.
            Defaults to `1`.

    Example:

        stop = StopOnNonFinite(every=50)
        model.fit(ds, epochs=10, callbacks=[MetricAverage(), stop, ...])
        if stop.stopped:
            print(stop.message)
    """

    def __init__(self, every=50, verbose=1):
        super().__init__()
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"StopOnNonFinite every must be an int >= 1; received "
                             f"every={every!r}.")
        self.every = every
        self.verbose = verbose
        # Keras hands the batch logs over as tensors, without a host read per batch.
        self._supports_tf_logs = True
        self.stopped = False
        self.message = None
        self.checks = 0

    def on_train_begin(self, logs=None):
        self.stopped = False
        self.message = None
        self.checks = 0

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every or batch + 1 == self.params.get("steps"):
            return  # not due; an epoch's last batch is checked at the epoch's end
        self._check(logs, f"epoch batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        if not self.stopped:
            self._check(logs, f"the end of epoch {epoch + 1}")

    def _check(self, logs, where):
        self.checks += 1
        loss = (logs or {}).get("loss")
        value = None if loss is None else float(loss)  # the one host read of a check
        bad = 0.0 if value is None or math.isfinite(value) else 1.0
        rank, _ = climseg_tf.rank_and_size()
        # Horovod: every rank takes part, so all agree on stopping.
        (bad,) = climseg_tf.allreduce([bad], "sum", name="climseg.nonfinite")
        if bad:
            step = int(tf.keras.backend.get_value(self.model.optimizer.iterations))
            self.stopped = True
            # This rank's value, unless only another rank's loss went bad.
            shown = value if value is not None and not math.isfinite(value) else "NaN or Inf"
            self.message = (f"the training loss became {shown} "
                            f"by global step {step} ({where}; checked every {self.every} "
                            f"steps) on {int(bad)} rank(s)")
            self.model.stop_training = True
            if self.verbose and rank == 0:
                print(f"climseg: stopping: {self.message}", flush=True)
