"""Does the input pipeline keep up? Samples/s at full size, and how long training waits on data.

    .venv/bin/python bench/data_pipeline.py              # 12 synthetic full-size files in /tmp
    .venv/bin/python bench/data_pipeline.py --dir /data/train --keep

Prints, as medians over `--repeats` runs:

1. a plain sequential h5py read of the files (`climate/data` and
   `climate/labels_0`, nothing else), two passes, in samples/s;
2. the training pipeline (`make_dataset`: shuffled, validated, normalized,
   batched, prefetched) over the same files for two epochs, in samples/s,
   and its ratio to 1. Both are interleaved run by run, after a warm-up;
3. the time a training step waits for its batch: measured directly around
   `next(iterator)` in a loop of `train_on_batch` calls; and in `model.fit`,
   where the step's graph fetches the batch itself, as the time of its
   `IteratorGetNext` op in TensorFlow's profiler (bench/profile.py). Both as
   milliseconds and as a fraction of the step;
4. the fit step with the pipeline minus the fit step with the same batches
   held in memory: not waiting, but what the reader threads' CPU time costs
   a model that shares the same cores.

Goals (issue 3): pipeline >= 0.9 x raw read; waiting < 2% of a step.

Files written by the script are in the page cache when read, as are the
given files after the first repeat: this measures the pipeline's own cost,
not the disk. The model is deliberately small (two convolutions) so that a
step is short and waiting on data is not hidden behind computation; the
paper's networks take far longer per step.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import climseg_tf  # noqa: E402,F401  (Keras 2 and oneDNN before TensorFlow)

# isort: split
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.profile import profile_steps, read_trace, scope_names  # noqa: E402
from data import generate, list_files, make_dataset, num_batches  # noqa: E402


def raw_read(files):
    """Samples/s of a plain sequential h5py read."""
    start = time.perf_counter()
    for path in files:
        with h5py.File(path, "r") as f:
            f["climate/data"][...]
            f["climate/labels_0"][...]
    return len(files) / (time.perf_counter() - start)


def pipeline_read(dataset, batches, batch_size):
    """Samples/s of `batches` batches from a new iterator, timed from its first batch on.

    The first batch (thread start-up) is not timed; the iterator is deleted
    at the end, so that no reader thread runs on during the raw read.
    """
    iterator = iter(dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    return batches * batch_size / elapsed


def small_model(shape):
    inputs = tf.keras.Input(shape)
    h = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(3, 1)(h))
    model.compile(tf.keras.optimizers.SGD(1e-3),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def wait_in_loop(model, dataset, steps):
    """Median seconds waiting in `next()` and median step, over `steps` train_on_batch steps."""
    iterator = iter(dataset)
    model.train_on_batch(*next(iterator))  # compile the step, start the threads
    waits, steps_total = [], []
    for _ in range(steps):
        start = time.perf_counter()
        x, y = next(iterator)
        got = time.perf_counter()
        model.train_on_batch(x, y)
        waits.append(got - start)
        steps_total.append(time.perf_counter() - start)
    return statistics.median(waits), statistics.median(steps_total)


class _StepTimes(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times, self._last = [], None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def wait_in_fit(model, dataset, steps):
    """Mean ms per fit step in `IteratorGetNext` (waiting for a batch), and the mean step (ms).

    Keras' fit step fetches its batch inside the step's graph, so the wait is
    the duration of that op, read from TensorFlow's profiler: from a prefetch
    buffer that holds a batch it returns at once.
    """
    with tempfile.TemporaryDirectory(prefix="climseg-data-profile-") as logdir:
        trace = profile_steps(model, dataset.repeat(), steps, 1, logdir)
        result = read_trace(trace, scope_names(model))
    n = len(result["steps"])
    return result["get_next_ms"] / n, sum(result["steps"]) / n


def slowdown_in_fit(model, dataset, in_memory, steps):
    """Median fit step with the pipeline minus with the same batches in memory."""
    medians = []
    for source in (dataset, in_memory):
        timer = _StepTimes()
        model.fit(source, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        medians.append(statistics.median(timer.times))
    return medians[0] - medians[1], medians[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="existing data (default: write synthetic files to /tmp)")
    parser.add_argument("--files", type=int, default=12, help="synthetic files to write")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per wait measure")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic files")
    args = parser.parse_args(argv)

    made = None
    if args.dir is None:
        made = tempfile.mkdtemp(prefix="climseg-bench-", dir="/tmp")
        start = time.perf_counter()
        generate(made, args.files, seed=0, workers=2)
        print(f"wrote {args.files} synthetic 768x1152x16 files to {made} in "
              f"{time.perf_counter() - start:.0f} s")
    directory = args.dir or made
    try:
        files = list_files(directory)
        stats = os.path.join(directory, "stats.h5")
        size = sum(os.path.getsize(p) for p in files) / len(files)
        print(f"{len(files)} files, {size / 1e6:.0f} MB each, batch {args.batch_size}, "
              f"{os.cpu_count()} CPUs, TF intra-op threads "
              f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
        dataset = make_dataset(directory, args.batch_size, training=True, stats=stats, seed=1)
        batches = num_batches(files, args.batch_size, training=True)
        raw, piped = [], []
        raw_read(files)  # warm the page cache
        pipeline_read(dataset, batches, args.batch_size)  # warm-up: trace the functions
        for _ in range(args.repeats):  # interleaved, so both see the same load from others
            raw.append(raw_read(files + files))
            piped.append(pipeline_read(dataset, 2 * batches, args.batch_size))
        raw_median, piped_median = statistics.median(raw), statistics.median(piped)
        print(f"raw h5py read, sequential: {raw_median:6.1f} samples/s  (runs: "
              f"{', '.join(f'{r:.1f}' for r in raw)})")
        print(f"make_dataset pipeline:     {piped_median:6.1f} samples/s  (runs: "
              f"{', '.join(f'{r:.1f}' for r in piped)})")
        print(f"ratio pipeline / raw:      {piped_median / raw_median:6.2f}   (goal >= 0.9)")

        model = small_model(dataset.element_spec[0].shape[1:])
        loop = [wait_in_loop(model, dataset, args.steps) for _ in range(args.repeats)]
        wait, step = statistics.median(w for w, _ in loop), statistics.median(s for _, s in loop)
        print(f"train_on_batch loop: wait for data {wait * 1e3:7.1f} ms of a {step * 1e3:.0f} ms "
              f"step = {100 * wait / step:.1f}%   (goal < 2%)")
        in_memory = dataset.take(args.steps).cache().repeat()
        for _ in in_memory.take(args.steps):  # fill the cache
            pass
        fit = [wait_in_fit(model, dataset, args.steps) for _ in range(args.repeats)]
        wait, step = statistics.median(w for w, _ in fit), statistics.median(s for _, s in fit)
        print(f"model.fit: wait for data (IteratorGetNext) {wait:7.1f} ms of a {step:.0f} ms "
              f"step = {100 * wait / step:.1f}%   (goal < 2%)")
        fit = [slowdown_in_fit(model, dataset, in_memory, args.steps)
               for _ in range(args.repeats)]
        slower, step = statistics.median(w for w, _ in fit), statistics.median(s for _, s in fit)
        print(f"model.fit: step {step * 1e3:.0f} ms with data in memory, {slower * 1e3:+.1f} ms "
              f"with the pipeline = {100 * slower / step:+.1f}%   (the readers' CPU time on "
              "the same cores)")
    finally:
        if made and not args.keep:
            shutil.rmtree(made)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
