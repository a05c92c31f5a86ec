"""Stopping every rank together when the loss stops being a number."""

import math

import tensorflow as tf

import climseg_tf


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Stops training on all ranks at the first batch whose loss is NaN or Inf.

    Keras' `TerminateOnNaN` stops only the process that saw the NaN; under
    Horovod the other ranks then wait forever in their next allreduce. Here
    every rank contributes its verdict to one allreduce per batch, so all
    stop after the same batch. Afterwards `stopped` is True and `message`
    says where it happened. Checkpoint writers skip non-finite states, so the
    last checkpoint stays resumable.

    Args:
        verbose: 1 prints the message on rank 0 when training stops.
            Defaults to `1`.
    """

    def __init__(self, verbose=1):
        super().__init__()
        self.verbose = verbose
        self.stopped = False
        self.message = None

    def on_train_begin(self, logs=None):
        self.stopped = False
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        bad = 0.0 if loss is None or math.isfinite(float(loss)) else 1.0
        rank, _ = climseg_tf.rank_and_size()
        # Horovod: every rank takes part, so all agree on stopping.
        (bad,) = climseg_tf.allreduce([bad], "sum", name="climseg.nonfinite")
        if bad:
            step = int(tf.keras.backend.get_value(self.model.optimizer.iterations))
            self.stopped = True
            self.message = (f"the training loss became {loss if loss is not None else 'NaN'} "
                            f"at global step {step} (epoch batch {batch}) on "
                            f"{int(bad)} rank(s)")
            self.model.stop_training = True
            if self.verbose and rank == 0:
                print(f"climseg: stopping: {self.message}", flush=True)
