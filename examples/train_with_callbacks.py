"""Horovod + Keras with climseg's pieces: LARC, gradient lag, multi-stage learning rate, metrics.

    horovodrun -np 2 -H localhost:2 --gloo python examples/train_with_callbacks.py
    python examples/train_with_callbacks.py          # one process works too

(with the project's `.venv/bin/` in front of `horovodrun` and `python`).

Each rank trains on its own synthetic 64x96x16 fields (a pixel is "event"
where channel 0, smoothed, is high); a real run would read its shard with
`data.make_dataset`. Rank 0 prints the averaged metrics, the learning rate,
the throughput, and writes a checkpoint per epoch.
"""

import argparse
import os
import tempfile

# isort: off
import climseg_tf  # first: selects Keras 2 before TensorFlow loads
import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

import zoo
from callbacks import (GradientLag, LARC, LearningRateLogger, MetricAverage, MultiStageSchedule,
                       Throughput)
# isort: on

BATCH = 2  # samples per rank and step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs. Default 4")
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch. Default 8")
    parser.add_argument("--lr", type=float, default=1e-3, help="rate for one rank. Default 1e-3")
    parser.add_argument("--lag", type=int, default=1, help="gradient lag. Default 1")
    parser.add_argument("--checkpoint-dir", help="where rank 0 writes checkpoints. "
                        "Default $TMPDIR/climseg_example",
                        default=os.path.join(tempfile.gettempdir(), "climseg_example"))
    args = parser.parse_args(argv)

    hvd.init()
    climseg_tf.pin_gpu()  # one GPU per rank, by local rank (no-op without GPUs)
    rank, size = hvd.rank(), hvd.size()
    rng = np.random.default_rng(rank)  # every rank its own data
    x = rng.normal(size=(args.steps * BATCH, 64, 96, 16)).astype("float32")
    y = (tf.nn.avg_pool2d(x[..., :1], 9, 1, "SAME")[..., 0] > 0.25).numpy().astype("int32")

    inputs = tf.keras.Input((64, 96, 16))
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(2, 1, name="logits")(h))

    # The weight update, innermost first: Adam applies, LARC scales per layer,
    # GradientLag applies the previous step's gradient so that Horovod's
    # allreduce (outermost) overlaps the backward pass.
    # Horovod: lr x size, reached after a 4-step warmup from lr; x0.5 from epoch 2, x0.1
    # from epoch 3 (the SC18 "piece" form). The optimizer evaluates it in the graph.
    schedule = MultiStageSchedule(args.lr, stages="piece:2:0.5:3:0.1", warmup=4,
                                  warmup_unit="step", warmup_start=1 / size, scale_by_ranks=True,
                                  steps_per_epoch=args.steps)
    optimizer = tf.keras.optimizers.Adam(schedule)
    optimizer = LARC(optimizer, eta=0.002, mode="clip")
    optimizer = GradientLag(optimizer, lag=args.lag)
    optimizer = hvd.DistributedOptimizer(optimizer)
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Horovod: start every rank from rank 0's weights (before fit, see GradientLag).
    hvd_tf.broadcast_variables(model.variables, root_rank=0)

    callbacks = [
        # First, so that every later callback sees means over ranks; rank 0 prints them.
        MetricAverage(verbose=1),
        LearningRateLogger(verbose=1),  # the rate, once per epoch
        Throughput(batch_size=BATCH, flops_per_sample=zoo.training_flops_per_sample(model)),
        # Horovod: the lag buffers hold per-rank gradients; average them before rank 0 saves.
        tf.keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: optimizer.average_over_ranks()),
    ]
    if rank == 0:  # only rank 0 writes
        callbacks.append(tf.keras.callbacks.ModelCheckpoint(
            os.path.join(args.checkpoint_dir, "epoch{epoch:02d}"), save_weights_only=True))
    model.fit(x, y, batch_size=BATCH, epochs=args.epochs, verbose=0, callbacks=callbacks)


if __name__ == "__main__":
    main()
