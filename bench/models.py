"""Training throughput of the zoo models against the machine's matmul rate.

For each model, at the same input and batch (fp32): training samples/s and
achieved GFLOP/s (training FLOPs per sample from `zoo.training_flops_per_sample`,
3x the forward graph count), as the median over timed steps after warm-up;
and the float32 matmul GFLOP/s of TensorFlow on this machine, with each
model's rate as a fraction of it.

    .venv/bin/python bench/models.py                 # 192x288x16, batch 2
    .venv/bin/python bench/models.py --models deeplabv3plus --steps 10

Not a test: it takes minutes on two cores.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import climseg_tf  # noqa: E402,F401  (first: selects Keras 2 and oneDNN before TensorFlow loads)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
# isort: on


def _median_seconds(step, steps, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(size=2048, steps=10, warmup=3):
    """float32 matmul rate of TensorFlow here (2 n^3 FLOPs per product)."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = _median_seconds(lambda: matmul().numpy(), steps, warmup)
    return 2 * size**3 / seconds / 1e9


def model_rate(name, input_shape, batch, steps, warmup):
    """(samples/s, GFLOP/s, training FLOPs per sample) of `name`."""
    tf.keras.utils.set_random_seed(0)
    model = zoo.get_model(name, input_shape=input_shape)
    flops = zoo.training_flops_per_sample(model, input_shape)
    model.compile(optimizer=tf.keras.optimizers.SGD(1e-3),
                  loss=zoo.get_loss("weighted_ce", zoo.class_weights([0.98, 0.001, 0.019])))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, *input_shape), dtype=np.float32))
    y = tf.constant(rng.integers(0, 3, (batch, *input_shape[:2])), tf.int32)
    seconds = _median_seconds(lambda: model.train_on_batch(x, y), steps, warmup)
    tf.keras.backend.clear_session()
    return batch / seconds, batch * flops / seconds / 1e9, flops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.MODELS), choices=list(zoo.MODELS))
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=288)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    input_shape = (args.height, args.width, args.channels)
    print(f"TensorFlow {tf.__version__}, oneDNN TF_ENABLE_ONEDNN_OPTS="
          f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, input {input_shape}, "
          f"batch {args.batch}, fp32, median of {args.steps} steps after {args.warmup}", flush=True)
    peak = matmul_gflops()
    print(f"{'matmul float32 2048^2':28s} {peak:8.1f} GFLOP/s  (1.00)", flush=True)
    for name in args.models:
        samples, gflops, flops = model_rate(name, input_shape, args.batch, args.steps, args.warmup)
        print(f"{name:28s} {gflops:8.1f} GFLOP/s  ({gflops / peak:.2f})  {samples:6.3f} samples/s  "
              f"{flops / 1e9:7.1f} GFLOP/training sample", flush=True)


if __name__ == "__main__":
    main()
