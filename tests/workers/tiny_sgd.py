"""Trains a tiny tf-keras model, under horovodrun or as one process.

Under Horovod, rank r trains on rows [r*B, (r+1)*B) of a fixed combined batch,
with `hvd.DistributedOptimizer` and `BroadcastGlobalVariablesCallback`; ranks
start from different random weights so that the broadcast matters. With
`--single`, one process trains on all rows at once from rank 0's weights.
Each process writes its final weights to OUT/rank{r}.npz.
"""

import argparse
import os

import climseg_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import numpy as np
import tensorflow as tf

FEATURES, PER_RANK, STEPS, LR = 5, 8, 6, 0.1


def combined_batch(ranks):
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(PER_RANK * ranks, FEATURES)).astype("float32")
    y = (np.sin(x.sum(axis=1, keepdims=True)) + 0.1 * x[:, :1]).astype("float32")
    return x, y


def build(seed):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential([
        tf.keras.Input((FEATURES,)),
        tf.keras.layers.Dense(6, activation="tanh"),
        tf.keras.layers.Dense(1),
    ])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--single", type=int, default=0, help="emulate N ranks in one process")
    args = parser.parse_args()

    if args.single:
        rank, size = 0, args.single
        x, y = combined_batch(size)
        model = build(seed=0)
        optimizer = tf.keras.optimizers.SGD(LR)
        callbacks = []
        batch = PER_RANK * size
    else:
        import horovod.tensorflow as hvd_tf
        import horovod.tensorflow.keras as hvd

        hvd.init()
        rank, size = hvd.rank(), hvd.size()
        x, y = combined_batch(size)
        x, y = x[rank * PER_RANK:(rank + 1) * PER_RANK], y[rank * PER_RANK:(rank + 1) * PER_RANK]
        model = build(seed=rank)  # different on every rank until broadcast
        # Horovod: average gradients over ranks.
        optimizer = hvd.DistributedOptimizer(tf.keras.optimizers.SGD(LR))
        # Horovod: start every rank from rank 0's weights. The callback only
        # broadcasts after the first batch, so broadcast once before fit too.
        hvd_tf.broadcast_variables(model.variables, root_rank=0)
        callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)]
        batch = PER_RANK
        assert isinstance(optimizer, tf.keras.optimizers.Optimizer), type(optimizer).__mro__

    model.compile(optimizer=optimizer, loss="mse")
    # Repeat the same batch STEPS times: one step per epoch, no shuffling.
    model.fit(x, y, batch_size=batch, epochs=STEPS, shuffle=False, verbose=0, callbacks=callbacks)
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, f"rank{rank}.npz"), *model.get_weights())


if __name__ == "__main__":
    main()
