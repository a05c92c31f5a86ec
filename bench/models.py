"""Training throughput of the zoo models against the machine's matmul rate.

For each model, at the same input and batch (fp32), steps of `model.fit` on
an in-memory batch: training samples/s and achieved GFLOP/s (training FLOPs
per sample from `zoo.training_flops_per_sample`, 3x the forward graph
count), as the median over timed steps after warm-up; and each model's rate
as a fraction of TensorFlow's float32 matmul rate (2048^2, timed right after
every model step, so that both see the same load on a shared machine).

Two FLOP counts: what the model's graph executes (the GFLOP/s and the ratio
to the matmul rate, i.e. how well the machine is used), and the
architecture's count as papers report it (`zoo.training_flops_per_sample`
by name; for `deeplabv3plus` without the composed decoder tail, which does
the same arithmetic in fewer operations). "Effective" GFLOP/s = architecture
FLOPs per second, which can exceed the machine's rate.

    .venv/bin/python bench/models.py                 # 192x288x16, batch 2
    .venv/bin/python bench/models.py --models deeplabv3plus --steps 10
    .venv/bin/python bench/models.py --models deeplabv3plus --kernels reference

Not a test: it takes minutes on two cores.
"""

import argparse
import json
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


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_step(size=2048):
    """A float32 matmul step and its FLOPs (2 n^3)."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return (lambda: matmul().numpy()), 2 * size**3


OPTIMIZERS = {
    # tf-keras' SGD keeps a momentum slot per variable even at momentum 0.
    "sgd": lambda: tf.keras.optimizers.SGD(1e-3),
    # As MLPerf DeepCAM's CPU runs (bench/report.py: DEEPCAM): two slots per variable.
    "adamw": lambda: tf.keras.optimizers.AdamW(1e-3, weight_decay=1e-2, epsilon=1e-6),
}


def compiled_model(name, input_shape, optimizer="sgd", **options):
    """`zoo.get_model(name, ...)` compiled as every training benchmark compiles it
    (`optimizer`: a key of `OPTIMIZERS`, plain SGD unless the memory benchmark asks)."""
    tf.keras.utils.set_random_seed(0)
    model = zoo.get_model(name, input_shape=input_shape, **options)
    model.compile(optimizer=OPTIMIZERS[optimizer](),
                  loss=zoo.get_loss("weighted_ce", zoo.class_weights([0.98, 0.001, 0.019])))
    return model


def random_batch(batch, input_shape):
    """A fixed random (fields, labels) batch of 3 classes."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, *input_shape), dtype=np.float32))
    y = tf.constant(rng.integers(0, 3, (batch, *input_shape[:2])), tf.int32)
    return x, y


class StepTimer(tf.keras.callbacks.Callback):
    """Wall time of each step of `fit`, in order (`seconds`)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, step, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, step, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def model_rate(name, input_shape, batch, steps, warmup, matmul, matmul_flops, **options):
    """Median samples/s, GFLOP/s, and ratio to the matmul rate of `name`.

    The machine may be shared: a matmul is timed right after every model
    step, and each step's rate is divided by that matmul's rate, so that the
    ratio compares the two under the same load.

    Returns:
        A dict: samples_per_second, gflops and ratio_to_matmul (executed
        FLOPs), matmul_gflops, flops_per_sample (executed),
        architecture_flops_per_sample, effective_gflops (architecture FLOPs).
    """
    architecture_flops = zoo.training_flops_per_sample(name, input_shape)
    model = compiled_model(name, input_shape, **options)
    flops = zoo.training_flops_per_sample(model, input_shape)
    x, y = random_batch(batch, input_shape)
    peaks = []

    class MatmulAfterStep(StepTimer):
        """Times each step of `fit`, then a matmul before the next step starts."""

        def on_train_batch_end(self, step, logs=None):
            super().on_train_batch_end(step, logs)
            if step >= warmup:
                peaks.append(matmul_flops / statistics.median(_seconds(matmul) for _ in range(3)))

    # Steps under `fit` on an in-memory dataset, as training runs them (a loop of
    # train_on_batch calls added about 1.15 s to about half the steps here:
    # time outside any TF op, in deleting the call's tensor handles).
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    timer = MatmulAfterStep()
    model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    tf.keras.backend.clear_session()
    times = timer.seconds[warmup:]
    ratios = [batch * flops / s / peak for s, peak in zip(times, peaks, strict=True)]
    seconds = statistics.median(times)
    return {"samples_per_second": batch / seconds, "gflops": batch * flops / seconds / 1e9,
            "ratio_to_matmul": statistics.median(ratios),
            "matmul_gflops": statistics.median(peaks) / 1e9, "flops_per_sample": flops,
            "architecture_flops_per_sample": architecture_flops,
            "effective_gflops": batch * architecture_flops / seconds / 1e9}


def head_to_head(names, input_shape, batch, rounds, warmup):
    """Training steps of the `names` models in turn, one step of each per round.

    On a shared machine the load changes from minute to minute (the matmul
    rate here varied by 15% between models run one after the other), which
    can decide a close comparison. Taking turns, the models see the same load;
    each round's step times give one ratio, and the median over rounds is
    the comparison. All the models are in memory at once.

    Returns:
        A dict: models, seconds {name: step seconds per round},
        samples_per_second {name: batch / median seconds}, ratios {name:
        median over rounds of its samples/s over the first model's}.
    """
    x, y = random_batch(batch, input_shape)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    models = [compiled_model(name, input_shape) for name in names]
    timers = [StepTimer() for _ in names]
    for _ in range(warmup + rounds):
        for model, timer in zip(models, timers, strict=True):
            model.fit(data, steps_per_epoch=1, epochs=1, verbose=0, callbacks=[timer])
    times = {name: timer.seconds[warmup:] for name, timer in zip(names, timers, strict=True)}
    first = times[names[0]]
    return {"models": list(names), "seconds": times,
            "samples_per_second": {n: batch / statistics.median(t) for n, t in times.items()},
            "ratios": {n: statistics.median(a / b for a, b in zip(first, t, strict=True))
                       for n, t in times.items()}}


def add_step_arguments(parser):
    """The input size and timing flags shared by the training-speed benchmarks."""
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=288)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: hide any GPU from TensorFlow; gpu: require one. Default cpu")


def select_device(device):
    """Makes TensorFlow use the CPU only, or checks that it sees a GPU (`--device`)."""
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif not gpus:
        raise SystemExit("--device gpu: TensorFlow sees no GPU "
                         "(tf.config.list_physical_devices('GPU') is empty); "
                         "run with --device cpu, or on a machine with a CUDA GPU")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.MODELS), choices=list(zoo.MODELS))
    parser.add_argument("--head-to-head", nargs="+", metavar="MODEL", choices=list(zoo.MODELS),
                        help="instead: steps of these models in turn (--steps rounds), samples/s "
                             "of each against the first's under the same load")
    parser.add_argument("--kernels", choices=("reference", "cpu"),
                        help="deeplabv3plus's kernel set (zoo.kernels); default: chosen by the "
                             "device")
    add_step_arguments(parser)
    args = parser.parse_args(argv)
    select_device(args.device)

    input_shape = (args.height, args.width, args.channels)
    if args.head_to_head:
        names = args.head_to_head
        if len(names) < 2 or len(set(names)) != len(names):
            parser.error("--head-to-head needs at least two different models, each named once")
        print(f"Head to head, one training step of each in turn: {', '.join(names)}, input "
              f"{input_shape}, batch {args.batch}, fp32, median of {args.steps} rounds after "
              f"{args.warmup}", flush=True)
        r = head_to_head(names, input_shape, args.batch, args.steps, args.warmup)
        for name in names:
            print(f"{name:20s} {r['samples_per_second'][name]:6.4f} samples/s  "
                  f"{r['ratios'][name]:.3f} x {names[0]}'s (median of the rounds' ratios)")
        print("HEAD_TO_HEAD_RESULT " + json.dumps(
            dict(r, input=f"{args.height}x{args.width}x{args.channels}", batch=args.batch,
                 rounds=args.steps)), flush=True)
        return
    print(f"TensorFlow {tf.__version__}, {args.device}, oneDNN TF_ENABLE_ONEDNN_OPTS="
          f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, input {input_shape}, "
          f"batch {args.batch}, fp32, median of {args.steps} steps after {args.warmup}", flush=True)
    matmul, matmul_flops = matmul_step()
    for _ in range(3):
        matmul()  # Warm-up.
    for name in args.models:
        options = {"kernels": args.kernels} if args.kernels and name == "deeplabv3plus" else {}
        r = model_rate(name, input_shape, args.batch, args.steps, args.warmup, matmul,
                       matmul_flops, **options)
        label = f"{name} ({args.kernels})" if options else name
        print(f"{label:20s} {r['gflops']:7.1f} GFLOP/s = {r['ratio_to_matmul']:.2f} x matmul "
              f"({r['matmul_gflops']:5.1f} GFLOP/s float32 2048^2, timed after each step)  "
              f"{r['samples_per_second']:6.4f} samples/s  "
              f"{r['flops_per_sample'] / 1e9:6.1f} GFLOP/training sample executed, "
              f"{r['architecture_flops_per_sample'] / 1e9:6.1f} in the architecture "
              f"({r['effective_gflops']:7.1f} GFLOP/s effective)", flush=True)

if __name__ == "__main__":
    main()
