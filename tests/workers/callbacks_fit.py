"""Runs model.fit with MetricAverage, a MultiStageSchedule and Throughput under horovodrun.

    callbacks_fit.py OUT SCHEDULE_JSON

SCHEDULE_JSON holds MultiStageSchedule's arguments (scale_by_ranks and
steps_per_epoch are added). Writes OUT/rank{r}.json with what the callbacks did on this rank:
- `before`: the epoch logs as a callback placed before MetricAverage saw them;
- `after`: the epoch logs as the last callback saw them;
- `history`: `History.history` returned by fit;
- `lrs`: the learning rate the optimizer applied at every batch (read after
  it), `steps`: the global step of that batch;
- `mismatch`: the error a fit raises when rank 1 logs one more metric.
Rank r has its own data and a metric `rank_id` equal to r on every sample.
"""

import json
import sys
import time
from pathlib import Path

# isort: off
import climseg_tf  # noqa: F401  (Keras 2 before TensorFlow)
import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

from callbacks import (
    GradientLag,
    LearningRateLogger,
    MetricAverage,
    MultiStageSchedule,
    Throughput,
)
# isort: on

PER_RANK, STEPS_PER_EPOCH, EPOCHS = 4, 3, 3


class Recorder(tf.keras.callbacks.Callback):
    """Copies the epoch logs it sees and the learning rate at every batch."""

    def __init__(self):
        super().__init__()
        self.epochs, self.lrs, self.steps = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.lrs.append(float(self.model.optimizer.learning_rate))
        self.steps.append(int(self.model.optimizer.iterations) - 1)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({k: float(v) for k, v in logs.items()})


class LateStart(tf.keras.callbacks.Callback):
    """Rank 1 only: waits before batch 1, so rank 0 waits for it inside that step."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            time.sleep(0.3)


def build(rank, schedule, extra_metric=False):
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((5,)),
        tf.keras.layers.Dense(4, activation="tanh"),
        tf.keras.layers.Dense(1),
    ])

    def rank_id(y_true, y_pred):
        return tf.fill(tf.shape(y_true)[:1], float(rank))

    metrics = [rank_id] + (["mae"] if extra_metric else [])
    # Horovod: average gradients (through GradientLag, which forwards the rate).
    optimizer = hvd.DistributedOptimizer(GradientLag(tf.keras.optimizers.SGD(
        MultiStageSchedule(**schedule, scale_by_ranks=True, steps_per_epoch=STEPS_PER_EPOCH)),
        lag=1))
    model.compile(optimizer=optimizer, loss="mse", metrics=metrics)
    return model


def main():
    out, schedule = Path(sys.argv[1]), json.loads(sys.argv[2])
    hvd.init()
    rank = hvd.rank()
    rng = np.random.default_rng(100 + rank)  # different data on every rank
    x = rng.normal(size=(PER_RANK * STEPS_PER_EPOCH, 5)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) * (1 + rank)).astype("float32")

    model = build(rank, schedule)
    before, after = Recorder(), Recorder()
    callbacks = [
        before,  # deliberately before MetricAverage: sees this rank's values
        MetricAverage(),
        LearningRateLogger(),
        *([LateStart()] if rank == 1 else []),  # rank 1's clock starts 0.3 s after rank 0's
        Throughput(batch_size=PER_RANK, flops_per_sample=1000.0, single_rank_rate=100.0),
        after,
    ]
    history = model.fit(x, y, batch_size=PER_RANK, epochs=EPOCHS, shuffle=False, verbose=0,
                        callbacks=callbacks)

    # Rank 1 logs one metric more: MetricAverage must refuse, on both ranks.
    mismatch = None
    try:
        build(rank, schedule, extra_metric=rank == 1).fit(
            x, y, batch_size=PER_RANK, epochs=1, verbose=0, callbacks=[MetricAverage()])
    except ValueError as err:
        mismatch = str(err)

    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "before": before.epochs, "after": after.epochs,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "lrs": after.lrs, "steps": after.steps, "mismatch": mismatch,
    }))


if __name__ == "__main__":
    main()
