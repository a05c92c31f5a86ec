"""Training speed on a GPU: both kernel sets, fp32, bf16 and fp16, against the chip's bf16 matmul.

For each model, kernel set (`--kernels`: the builder's `kernels` option,
"reference" and "cpu"), precision and batch size: `model.fit` steps on an
in-memory batch at 768x1152x16 (`bench.models.compiled_model`, as every
training benchmark compiles it), median after warm-up, in samples/s and
GFLOP/s (the FLOPs the graph executes, `zoo.training_flops_per_sample`).
Precisions: fp32 (TF32 where the GPU has it, TensorFlow's default),
`mixed_bfloat16`, and `mixed_float16`, whose optimizer Keras wraps in a
`LossScaleOptimizer` (dynamic loss scaling). Each rate is also given as a
fraction of the bfloat16 matmul peak measured in the same run (an 8192^2
bfloat16 matmul, before and after the models, the faster of the two), the
figure MLPerf DeepCAM's reference is quoted with in the report. A batch
that does not fit in the GPU's memory is recorded as "out of memory".

    python -m bench --gpu                       # the suite: this part first
    python bench/gpu.py                         # this part alone, on the GPU
    python bench/gpu.py --jit-compile --kernels reference
    python bench/gpu.py --device cpu --height 64 --width 96 --batches 1   # check on a CPU

Without a GPU it stops with one line, unless `--device cpu` asks to run it
on the CPU (to check the script, not to measure).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT_TAG = "GPU_RESULT "
KERNELS = ("reference", "cpu")
PRECISIONS = ("fp32", "mixed_bfloat16", "mixed_float16")
POLICIES = {"fp32": "float32", "mixed_bfloat16": "mixed_bfloat16",
            "mixed_float16": "mixed_float16"}


def bfloat16_matmul_peak(size, repeats=5):
    """GFLOP/s of a `size`^2 bfloat16 matmul (2 n^3 FLOPs), the median of `repeats` runs."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), tf.bfloat16)
    b = tf.cast(tf.random.normal((size, size)), tf.bfloat16)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    matmul().numpy()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul().numpy()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


def train_rate(name, kernels, precision, input_shape, batch, steps, warmup, jit_compile):
    """Median samples/s and GFLOP/s of `fit` steps; None when the batch does not fit."""
    import tensorflow as tf

    import zoo
    from bench.models import StepTimer, compiled_model, random_batch

    tf.keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        model = compiled_model(name, input_shape, kernels=kernels)
        if jit_compile:  # the same optimizer and loss, compiled with XLA
            model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=True)
        flops = zoo.training_flops_per_sample(model, input_shape)
        x, y = random_batch(batch, input_shape)
        timer = StepTimer()
        data = tf.data.Dataset.from_tensors((x, y)).repeat()
        model.fit(data, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[timer])
    except tf.errors.ResourceExhaustedError:
        return None
    finally:
        tf.keras.backend.clear_session()
        tf.keras.mixed_precision.set_global_policy("float32")
    seconds = statistics.median(timer.seconds[warmup:])
    return {"samples_per_second": batch / seconds, "gflops": batch * flops / seconds / 1e9,
            "flops_per_sample": flops,
            "loss_scaling": precision == "mixed_float16"}


def measure(args):
    """Every model, kernel set, precision and batch; the result dict."""
    import tensorflow as tf

    shape = (args.height, args.width, 16)
    peaks = [bfloat16_matmul_peak(args.matmul_size)]
    rows = []
    for name in args.models:
        for kernels in args.kernels:
            for precision in args.precisions:
                for batch in args.batches:
                    rate = train_rate(name, kernels, precision, shape, batch, args.steps,
                                      args.warmup, args.jit_compile)
                    row = {"model": name, "kernels": kernels, "precision": precision,
                           "batch": batch, "input": f"{args.height}x{args.width}x16",
                           "jit_compile": args.jit_compile, "out_of_memory": rate is None,
                           **(rate or {})}
                    rows.append(row)
                    print(_line(row, peaks[0]), flush=True)
    peaks.append(bfloat16_matmul_peak(args.matmul_size))
    peak = max(peaks)
    for row in rows:
        if not row["out_of_memory"]:
            row["fraction_of_bf16_peak"] = row["gflops"] / peak
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return {"device": details.get("device_name", "CPU (a check, not a measurement)"),
            "compute_capability": details.get("compute_capability"),
            "tensorflow": tf.__version__, "bf16_matmul_size": args.matmul_size,
            "bf16_matmul_gflops": peak, "bf16_matmul_gflops_runs": peaks, "rows": rows}


def _line(row, peak):
    what = (f"{row['model']}, kernels {row['kernels']}, {row['precision']}, batch "
            f"{row['batch']}{', XLA' if row['jit_compile'] else ''}: ")
    if row["out_of_memory"]:
        return what + "out of memory"
    return (what + f"{row['samples_per_second']:.2f} samples/s, {row['gflops']:.0f} GFLOP/s "
            f"= {row['gflops'] / peak:.3f} of the bf16 matmul ({peak:.0f} GFLOP/s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deeplabv3plus"],
                        choices=["deeplabv3plus"],
                        help="models with both kernel sets. Default deeplabv3plus")
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--batches", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=8192,
                        help="n of the n x n bfloat16 matmul that gives the peak. Default 8192")
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the training step with XLA")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                        help="gpu: require one (default); cpu: run on the CPU to check the "
                             "script (figures are not GPU figures)")
    args = parser.parse_args(argv)
    for flag in ("batches", "steps", "warmup", "height", "width", "matmul_size"):
        values = getattr(args, flag)
        if min(values if isinstance(values, list) else [values]) < (0 if flag == "warmup"
                                                                    else 1):
            parser.error(f"--{flag.replace('_', '-')}: expected positive numbers, got {values}")

    # isort: off
    import climseg_tf  # noqa: F401  (first: Keras 2 and oneDNN before TensorFlow loads)
    import tensorflow as tf

    from bench.models import select_device
    # isort: on

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        print("bench/gpu.py: error: TensorFlow sees no GPU (tf.config.list_physical_devices"
              "('GPU') is empty); run it on a machine with a CUDA GPU, or with --device cpu "
              "to check the script", file=sys.stderr)
        return 2
    select_device(args.device)
    results = measure(args)
    print(RESULT_TAG + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
