"""A first distributed run: a small segmentation net trained on two Horovod ranks.

    python examples/hello_horovod.py --launch      # starts itself with horovodrun -np 2
    horovodrun -np 2 -H localhost:2 --gloo python examples/hello_horovod.py

Each rank draws its own 64x96x16 fields; a pixel is "event" where channel 0,
smoothed, is high. Gradients are averaged over ranks, weights start from
rank 0's, and rank 0 prints the loss and the check that all ranks agree.
"""

import argparse
import os
import subprocess
import sys
import time

import climseg_tf  # first: Keras 2 before TensorFlow


def _launch(np_):
    """Re-runs this script under horovodrun with one TF thread per rank."""
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    cmd = [horovodrun, "-np", str(np_), "-H", f"localhost:{np_}", "--gloo",
           sys.executable, os.path.abspath(__file__)]
    print("climseg demo:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


def _train(steps):
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import numpy as np
    import tensorflow as tf

    hvd.init()
    climseg_tf.pin_gpu()  # one GPU per rank, by local rank (no-op without GPUs)
    rank, size = hvd.rank(), hvd.size()
    rng = np.random.default_rng(rank)  # different data on every rank
    x = rng.normal(size=(8, 64, 96, 16)).astype("float32")
    smooth = tf.nn.avg_pool2d(x[..., :1], 9, 1, "SAME").numpy()[..., 0]
    y = (smooth > 0.25).astype("int32")

    tf.keras.utils.set_random_seed(42)
    inputs = tf.keras.Input((64, 96, 16))
    h = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    logits = tf.keras.layers.Conv2D(2, 1)(h)
    model = tf.keras.Model(inputs, logits)
    # Horovod: scale the learning rate by the number of ranks, average gradients.
    model.compile(
        optimizer=hvd.DistributedOptimizer(tf.keras.optimizers.Adam(1e-3 * size)),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    history = model.fit(
        x, y, batch_size=2, epochs=steps, steps_per_epoch=1, verbose=0,
        # Horovod: every rank starts from rank 0's weights.
        callbacks=[hvd.callbacks.BroadcastGlobalVariablesCallback(0)],
    )
    seconds = time.perf_counter() - start
    checksum = float(sum(np.abs(w).sum() for w in model.get_weights()))
    sums = hvd_tf.allgather_object(checksum)
    if rank == 0:  # only rank 0 prints
        loss = history.history["loss"]
        print(f"climseg demo: {size} ranks trained {steps} steps in {seconds:.1f} s; "
              f"loss {loss[0]:.4f} -> {loss[-1]:.4f}")
        same = all(s == sums[0] for s in sums)
        print(f"climseg demo: weights identical on all ranks: {same}")
        if not same:
            sys.exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launch", action="store_true", help="start under horovodrun -np NP")
    parser.add_argument("--np", type=int, default=2, help="ranks for --launch. Default 2")
    parser.add_argument("--steps", type=int, default=20, help="training steps. Default 20")
    args = parser.parse_args(argv)
    if args.launch:
        return _launch(args.np)
    _train(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
