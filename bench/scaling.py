"""Weak scaling from 1 to 2 Horovod ranks, with gradient lag 0 and 1.

Every rank trains the same per-rank work (by default a conv net of ~1.2M
parameters on 64x96x16 fields, `--model` for a zoo model, `--height` and
`--width` for the input; batch 2 per rank, SGD with momentum, fp32, one
TensorFlow thread per rank) under `horovodrun -np 1` and `-np 2` (Gloo), with
`GradientLag(lag=0)` and `GradientLag(lag=1)`. `Throughput` measures samples/s
per epoch; the first epoch (tracing) is dropped and each run gives the median
of the others. Runs are interleaved (np 1, np 2, ...) and repeated; the
figures are medians over repeats. Weak-scaling (parallel) efficiency is

    efficiency(lag) = total samples/s on 2 ranks / (2 x samples/s on 1 rank),

both with the same lag. With lag 1 the allreduce of the previous step's
gradient does not wait for the backward pass, so it can overlap compute
(Kurth et al., SC18, "gradient lag"). A fifth configuration, 2 ranks that
train independently (no allreduce), separates the cost of communication
(`2 ranks / no allreduce`) from that of two ranks sharing the machine
(memory bandwidth, clocks, other users).

The per-rank input sets how much computation hides each allreduce: at
64x96 the small net's step is ~55 ms for 4.6 MB of gradients, at 192x288
9x longer for the same gradients (the paper's ranks trained 768x1152
fields: 144x). Both are in the suite.

    .venv/bin/python bench/scaling.py                      # ~5 minutes on 2 cores
    .venv/bin/python bench/scaling.py --repeats 5 --steps 12
    .venv/bin/python bench/scaling.py --height 192 --width 288 --steps 8 --epochs 4
    .venv/bin/python bench/scaling.py --model deeplabv3plus --steps 6 --epochs 3

Not a test. Run it on an otherwise idle machine: other processes on the two
cores lower the 2-rank figure.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "SCALING_RESULT "


def build_model(input_shape=(64, 96, 16), num_classes=3):
    """A small encoder-decoder whose step is dominated by convolutions."""
    import tensorflow as tf

    inputs = tf.keras.Input(input_shape)
    x = inputs
    for level, filters in enumerate((64, 128, 256)):
        if level:
            x = tf.keras.layers.MaxPooling2D(name=f"pool{level}")(x)
        for i in (1, 2):
            x = tf.keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                       name=f"level{level}_conv{i}")(x)
    x = tf.keras.layers.UpSampling2D(4, name="upsample")(x)
    logits = tf.keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    return tf.keras.Model(inputs, logits, name="scaling_net")


def worker(args):
    """One rank of a run; rank 0 prints the per-epoch rates as one JSON line."""
    sys.path.insert(0, str(ROOT))
    # isort: off
    import climseg_tf  # noqa: F401  (Keras 2 and oneDNN before TensorFlow loads)
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import numpy as np
    import tensorflow as tf

    import zoo
    from callbacks import GradientLag, Throughput
    # isort: on

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    tf.keras.utils.set_random_seed(0)
    if args.model == "small":
        model = build_model((args.height, args.width, 16))
    else:
        model = zoo.get_model(args.model, input_shape=(args.height, args.width, 16))
    # Horovod: start from rank 0's weights (before fit, see GradientLag).
    hvd_tf.broadcast_variables(model.variables, root_rank=0)
    flops = zoo.training_flops_per_sample(model)
    optimizer = GradientLag(tf.keras.optimizers.SGD(0.01, momentum=0.9), lag=args.lag)
    if not args.no_allreduce:
        # Horovod: average gradients; GradientLag decides what is allreduced.
        optimizer = hvd.DistributedOptimizer(optimizer)
    model.compile(optimizer=optimizer,
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(rank)  # every rank its own data
    x = rng.normal(size=(args.steps * args.batch, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, 3, size=x.shape[:3]).astype("int32")
    throughput = Throughput(batch_size=args.batch, flops_per_sample=flops, verbose=0)
    history = model.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=False,
                        verbose=0, callbacks=[throughput])
    if rank == 0:  # only rank 0 prints
        rates = history.history["samples_per_second_total"][1:]  # epoch 1 traces
        print(RESULT_TAG + json.dumps({
            "np": size, "lag": args.lag, "rates": rates, "flops_per_sample": flops,
            "params": model.count_params()}), flush=True)


def run(np_, lag, args, no_allreduce=False):
    """Launches one run under horovodrun; returns its median total samples/s."""
    horovodrun = Path(sys.executable).parent / "horovodrun"
    threads = "1"  # one TensorFlow thread per rank: 2 ranks fill the 2 cores
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads,
               OMP_NUM_THREADS=threads, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [str(horovodrun), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo",
           sys.executable, str(Path(__file__).resolve()), "--worker", "--lag", str(lag),
           "--steps", str(args.steps), "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--model", args.model, "--height", str(args.height), "--width", str(args.width)]
    cmd += ["--no-allreduce"] if no_allreduce else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if RESULT_TAG in line:
            result = json.loads(line.split(RESULT_TAG, 1)[1])
            result["median"] = statistics.median(result["rates"])
            return result
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} without a result:\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration. Default 3")
    parser.add_argument("--steps", type=int, default=16, help="steps per epoch. Default 16")
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs per run; the first is not counted. Default 5")
    parser.add_argument("--batch", type=int, default=2, help="samples per rank and step. Default 2")
    parser.add_argument("--model", default="small",
                        help="small: the conv net above; or a name of the zoo's registry "
                             "(zoo.MODELS). Default small")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--lag", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-allreduce", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.model != "small":
        # Only then does this parent load TensorFlow (with the zoo), to check the name.
        sys.path.insert(0, str(ROOT))
        import zoo

        if args.model not in zoo.MODELS:
            parser.error(f"--model {args.model!r}: expected small or one of "
                         f"{', '.join(zoo.MODELS)}")

    # (ranks, lag, allreduce); 2 ranks without allreduce train independently: the
    # reference that separates the cost of communication from two ranks sharing the machine.
    configs = [(1, 0, True), (2, 0, True), (1, 1, True), (2, 1, True), (2, 0, False)]
    medians = {config: [] for config in configs}
    info = None
    for repeat in range(args.repeats):
        for np_, lag, allreduce in configs:  # interleaved, so drifts in load hit all
            result = run(np_, lag, args, no_allreduce=not allreduce)
            info = info or result
            medians[np_, lag, allreduce].append(result["median"])
            # Other processes on the cores show up here and in the rates.
            load = os.getloadavg()[0]
            what = f"np {np_}, lag {lag}" + ("" if allreduce else ", no allreduce")
            print(f"repeat {repeat + 1}/{args.repeats}: {what}: "
                  f"{result['median']:.3f} samples/s in total "
                  f"(epochs: {', '.join(f'{r:.3f}' for r in result['rates'])}); "
                  f"load average {load:.2f}", flush=True)

    print(f"\nWeak scaling, {args.model} at {args.height}x{args.width}x16, "
          f"{info['params']:,} parameters, "
          f"{info['flops_per_sample'] / 1e9:.2f} GFLOP per training sample, "
          f"batch {args.batch} per rank, {args.steps} steps x {args.epochs - 1} timed epochs, "
          f"medians of {args.repeats} runs:")
    independent = statistics.median(medians[2, 0, False])
    print("lag | 1 rank samples/s | 2 ranks samples/s | efficiency | vs no allreduce | "
          "sustained (2 ranks)")
    for lag in (0, 1):
        one, two = (statistics.median(medians[n, lag, True]) for n in (1, 2))
        efficiency = two / (2 * one)
        gflops = two * info["flops_per_sample"] / 1e9
        print(f"  {lag} | {one:17.3f} | {two:17.3f} | {efficiency:10.3f} | "
              f"{two / independent:15.3f} | {gflops:.1f} GFLOP/s")
    print(f"2 ranks without allreduce: {independent:.3f} samples/s "
          f"({independent / (2 * statistics.median(medians[1, 0, True])):.3f} of 2x one rank)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
