"""Inference speed: `climseg-predict` over netCDF model output against the bare model forward.

For each model and precision (fp32, mixed_bfloat16) and each batch size,
rounds of two measurements that take turns, so that both see the same load:

1. `climseg-predict --no-maps --overwrite` (`python -m inference.predict` of
   this checkout, as a child process) over a directory of CAM5-like netCDF
   files with several time steps each. Its rate is read from its progress
   lines ("predicted N/T samples"), timestamped as they arrive: the samples
   between the first and the last line over the seconds between them, so
   that start-up and the first batch are left out. A command whose output
   has no two such lines is timed end to end instead, minus its start-up.
2. The bare forward, `model(x, training=False)` on an in-memory batch, in
   this process, with the same checkpoint's weights at the same grid, both
   eager and compiled (`tf.function`, as climseg-predict runs it), the faster
   of the two each step being the reference; after
   each forward a float32 2048^2 matmul (`bench.models.matmul_step`) and,
   under mixed_bfloat16, a bfloat16 4096^2 one, so that the forward's
   GFLOP/s (`zoo.count_flops`, executed) compare with the matmul under the
   same load. Effective GFLOP/s count the architecture's FLOPs instead
   (`zoo.count_flops` by name, as the paper counts them): they differ for
   deeplabv3plus, whose default CPU kernels execute about a third of them.

The ratio is the median over rounds of predict's samples/s over the bare
forward's. Start-up is the wall time of `climseg-predict` on one file of one
time step at batch 1, from the process's start to its progress line for
that sample: importing, reading the checkpoint, building the model, the
first forward pass. Then 2 Horovod ranks (`horovodrun -np 2 --gloo`, one
TensorFlow thread each) predicting the same directory, against 2 ranks that
only run the bare forward (this script's `--forward-worker`), in turns.

The checkpoints are real: `train.py` trains each model one step at 64x96 on
synthetic data, and `climseg-predict` builds the fully convolutional model
at the input's grid with those weights.

    .venv/bin/python bench/predict.py                      # 192x288x16, both models
    .venv/bin/python bench/predict.py --height 768 --width 1152 --times 4 --rounds 1
    .venv/bin/python bench/predict.py --models tiramisu --precisions fp32 --batches 2

Not a test: it takes 10 to 30 minutes on two cores.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT_TAG = "PREDICT_RESULT "
FORWARD_TAG = "FORWARD_RESULT "
PRECISIONS = ("fp32", "mixed_bfloat16")
MODELS = ("deeplabv3plus", "tiramisu")
TRAIN_GRID = (64, 96)  # the checkpoints' training grid: one step there takes seconds
BF16_MATMUL_SIZE = 4096  # as issue 18 quotes: 1199 GFLOP/s on an Intel host with AMX
_PROGRESS = re.compile(r"climseg-predict: (\d+)/(\d+) samples")


def steady_rate(lines):
    """Samples/s between the first and the last progress line of a predict run.

    Args:
        lines: `(seconds since the start, text)` per line of its output.

    Returns:
        `(samples/s, samples, seconds)` over that span, or None when the
        output has fewer than two progress lines with different counts.
    """
    points = [(t, int(m.group(1))) for t, text in lines if (m := _PROGRESS.search(text))]
    if len(points) < 2 or points[-1][1] <= points[0][1] or points[-1][0] <= points[0][0]:
        return None
    (t0, n0), (t1, n1) = points[0], points[-1]
    return (n1 - n0) / (t1 - t0), n1 - n0, t1 - t0


def first_sample_seconds(lines, wall):
    """Seconds to the first progress line (the first sample predicted), else the wall time."""
    return next((t for t, text in lines if _PROGRESS.search(text)), wall)


def predict_rate(run, samples, startup):
    """A predict run's samples/s: from its progress lines, else end to end minus start-up.

    Returns:
        `(samples/s, how)`: how = "progress", "end to end" or, when the run took
        no longer than the start-up run (a short run on a loaded machine),
        "end to end, start-up included".
    """
    steady = steady_rate(run["lines"])
    if steady:
        return steady[0], "progress"
    if run["wall"] > startup:  # start-up includes the first sample: the rest took this
        return (samples - 1) / (run["wall"] - startup), "end to end"
    return samples / run["wall"], "end to end, start-up included"


# ------------------------------------------------------------------- inputs


def write_model_output(path, fields):
    """A CAM5-like history file: every channel a (time, lat, lon) variable, netCDF4."""
    import numpy as np
    import xarray as xr

    import data
    from data.layouts import regular_grid

    count, height, width, _ = fields.shape
    lat, lon = regular_grid(height, width)
    variables = {name: (("time", "lat", "lon"), fields[..., c], {"units": "1"})
                 for c, name in enumerate(data.CHANNELS)}
    xr.Dataset(variables, coords={
        "time": ("time", np.arange(count) * 0.125,
                 {"units": "days since 2106-01-01 00:00:00", "calendar": "noleap"}),
        "lat": ("lat", lat, {"units": "degrees_north"}),
        "lon": ("lon", lon, {"units": "degrees_east"})}).to_netcdf(path, format="NETCDF4")


def make_inputs(work, height, width, files, times):
    """`work/many` (`files` files of `times` steps) and `work/one` (one file, one step).

    Kept between runs of the same size: an existing directory is reused.
    """
    import numpy as np

    from data.synthetic import synthesize_sample

    many, one = work / f"many-{height}x{width}-{files}x{times}", work / f"one-{height}x{width}"
    rng = np.random.default_rng(0)
    for directory, count, steps in ((many, files, times), (one, 1, 1)):
        if directory.is_dir():
            continue
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(count):
            fields = np.stack([synthesize_sample(rng, height, width)[0] for _ in range(steps)])
            write_model_output(tmp / f"cam5.h2.{i:04d}.nc", fields)
        tmp.rename(directory)
    return many, one


def train_checkpoint(work, model):
    """A real checkpoint of `model`: `train.py`, one step at 64x96 on synthetic data."""
    run = work / f"run-{model}"
    best = run / "checkpoints" / "best"
    if (best / "meta.json").is_file():
        return best
    import data

    train = work / "train-64x96"
    if not train.is_dir():
        data.generate(str(train) + ".tmp", 2, *TRAIN_GRID, seed=1)
        os.rename(str(train) + ".tmp", train)
    shutil.rmtree(run, ignore_errors=True)
    cmd = [sys.executable, str(ROOT / "train.py"), "--model", model, "--data-train", str(train),
           "--output-dir", str(run), "--epochs", "1", "--steps-per-epoch", "1",
           "--batch-size", "1", "--wandb-mode", "disabled"]
    proc = subprocess.run(cmd, env=_child_env(), cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not (best / "meta.json").is_file():
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return best


# ------------------------------------------------------------------- runs


def _child_env(threads=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    # This checkout's packages, not whichever the venv's editable install points to.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads))
    return env


def _timed_run(cmd, env, timeout):
    """Runs `cmd`; returns its stdout lines with their arrival times, wall seconds, stderr."""
    with tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, start_new_session=True)
        lines = []
        try:
            for line in proc.stdout:
                lines.append((time.perf_counter() - start, line.rstrip("\n")))
                if time.perf_counter() - start > timeout:
                    raise subprocess.TimeoutExpired(cmd, timeout)
            proc.wait(timeout=max(timeout - (time.perf_counter() - start), 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # horovodrun's ranks too
            proc.wait()
            raise
        wall = time.perf_counter() - start
        stderr.seek(0)
        err = stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                           f"{(chr(10).join(t for _, t in lines) + err)[-3000:]}")
    return {"lines": lines, "wall": wall}


def _horovodrun(ranks):
    return [str(Path(sys.executable).parent / "horovodrun"), "-np", str(ranks),
            "-H", f"localhost:{ranks}", "--gloo"]


def run_predict(checkpoint, inputs, out, batch, precision, ranks=1, timeout=3600):
    """One `climseg-predict` run (under horovodrun with one thread per rank when ranks > 1)."""
    cmd = [sys.executable, "-m", "inference.predict", "--checkpoint", str(checkpoint),
           "--input", str(inputs), "--output-dir", str(out), "--batch-size", str(batch),
           "--precision", precision, "--no-maps", "--overwrite"]
    if ranks > 1:
        return _timed_run(_horovodrun(ranks) + cmd, _child_env(threads=1), timeout)
    return _timed_run(cmd, _child_env(), timeout)


def run_forward_ranks(checkpoint, grid, batch, precision, steps, ranks=2, timeout=3600):
    """`ranks` ranks under horovodrun that only run the bare forward; their total samples/s."""
    cmd = _horovodrun(ranks) + [
        sys.executable, str(Path(__file__).resolve()), "--forward-worker",
        "--checkpoint", str(checkpoint), "--height", str(grid[0]), "--width", str(grid[1]),
        "--batches", str(batch), "--precisions", precision, "--steps", str(steps)]
    run = _timed_run(cmd, _child_env(threads=1), timeout)
    for _, text in run["lines"]:
        if FORWARD_TAG in text:
            return json.loads(text.split(FORWARD_TAG, 1)[1])
    raise RuntimeError(f"{' '.join(cmd)}: no {FORWARD_TAG.strip()} line in:\n"
                       + "\n".join(t for _, t in run["lines"])[-3000:])


# ------------------------------------------------------------------- the bare forward


def bfloat16_matmul_step(size=BF16_MATMUL_SIZE):
    """A bfloat16 matmul step and its FLOPs (2 n^3): `bench.models.matmul_step` in bfloat16."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), tf.bfloat16)
    b = tf.cast(tf.random.normal((size, size)), tf.bfloat16)
    matmul = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    return (lambda: matmul().numpy()), 2 * size**3


def checkpoint_model(checkpoint, grid, precision):
    """The checkpoint's model built at `grid` with its weights, as climseg-predict builds it."""
    import tensorflow as tf

    import callbacks
    import zoo

    tf.keras.mixed_precision.set_global_policy(
        "float32" if precision == "fp32" else precision)
    meta = callbacks.read_meta(str(checkpoint))
    kwargs = dict(meta["model_kwargs"])
    kwargs["input_shape"] = (*grid, kwargs["input_shape"][2])
    model = zoo.get_model(meta["model"], **kwargs)
    model.load_weights(zoo.weights_file(str(checkpoint)))
    return model


def random_inputs(batch, model):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    return tf.constant(rng.standard_normal((batch, *model.input_shape[1:]), dtype=np.float32))


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compiled_forward(model):
    """`model(x, training=False)` as one compiled function (traced on its first call)."""
    import tensorflow as tf

    return tf.function(lambda x: model(x, training=False))


def forward_steps(model, x, steps, matmuls=(), compiled=None):
    """`steps` timed `model(x, training=False)`, each followed by the `matmuls`' rates.

    Args:
        matmuls: `(name, step, flops)` of matmuls to time after each forward
            (median of 3), so that both see the same load.
        compiled: `compiled_forward(model)`, warmed up: each step also times
            it, and the faster of the two is the step's `seconds`.

    Returns:
        A list per step: `{"seconds": ..., "eager_seconds": ...,
        "compiled_seconds": ..., name: GFLOP/s of that matmul, ...}`.
    """
    out = []
    for _ in range(steps):
        eager = _seconds(lambda: model(x, training=False).numpy())
        row = {"seconds": eager, "eager_seconds": eager}
        if compiled is not None:
            row["compiled_seconds"] = _seconds(lambda: compiled(x).numpy())
            row["seconds"] = min(eager, row["compiled_seconds"])
        for name, step, flops in matmuls:
            row[name] = flops / statistics.median(_seconds(step) for _ in range(3)) / 1e9
        out.append(row)
    return out


def forward_worker(args):
    """One rank that only computes: warm-up, a barrier, `--steps` timed forwards."""
    # isort: off
    import climseg_tf
    import horovod.tensorflow as hvd
    # isort: on

    hvd.init()
    batch, precision = args.batches[0], args.precisions[0]
    model = checkpoint_model(args.checkpoint, (args.height, args.width), precision)
    x = random_inputs(batch, model)
    model(x, training=False)  # warm-up: oneDNN's primitives for this shape
    compiled = compiled_forward(model)
    compiled(x)
    climseg_tf.broadcast_object(None, "bench.predict.start")  # Horovod: start together
    times = [r["seconds"] for r in forward_steps(model, x, args.steps, compiled=compiled)]
    times = climseg_tf.allgather_object(times, "bench.predict.times")
    if hvd.rank() == 0:  # only rank 0 prints
        print(FORWARD_TAG + json.dumps({
            "ranks": hvd.size(), "seconds": times,
            "samples_per_second": sum(batch / statistics.median(t) for t in times)}), flush=True)


# ------------------------------------------------------------------- the measurement


def measure(args, work):
    """All the rounds; returns the result rows (one per model, precision and input)."""
    import tensorflow as tf

    import zoo
    from bench.models import matmul_step

    grid = (args.height, args.width)
    many, one = make_inputs(work, *grid, args.files, args.times)
    samples = args.files * args.times
    checkpoints = {name: train_checkpoint(work, name) for name in args.models}
    fp32_step, fp32_flops = matmul_step()
    bf16_step, bf16_flops = bfloat16_matmul_step()
    for step in (fp32_step, bf16_step):
        for _ in range(3):
            step()  # warm-up
    out = work / "masks"
    results = []
    for name in args.models:
        for precision in args.precisions:
            model = checkpoint_model(checkpoints[name], grid, precision)
            flops = zoo.count_flops(model)
            arch_flops = architecture_flops(checkpoints[name], grid)
            matmuls = [("fp32_matmul_gflops", fp32_step, fp32_flops)]
            if precision != "fp32":
                matmuls.append(("bf16_matmul_gflops", bf16_step, bf16_flops))
            row = {"model": name, "precision": precision,
                   "input": f"{grid[0]}x{grid[1]}x16", "samples": samples,
                   "files": args.files, "times": args.times, "flops_per_sample": flops,
                   "architecture_flops_per_sample": arch_flops,
                   "startup_seconds": [], "batches": []}
            print(f"== {name}, {precision}: {flops / 1e9:.1f} GFLOP per sample (forward, "
                  "executed)", flush=True)
            for batch in args.batches:
                x = random_inputs(batch, model)
                model(x, training=False)  # warm-up: oneDNN's primitives for this shape
                compiled = compiled_forward(model)
                compiled(x)
                # As many samples as predict's progress lines span (all but its first batch).
                steps = max(2, (samples - batch) // batch)
                entry = {"batch": batch, "predict": [], "how": [], "forward": [],
                         "first_sample_seconds": []}
                for r in range(args.rounds):
                    if batch == args.batches[0]:  # start-up: one sample, batch 1
                        run = run_predict(checkpoints[name], one, out, 1, precision)
                        row["startup_seconds"].append(first_sample_seconds(run["lines"],
                                                                           run["wall"]))
                    startup = statistics.median(row["startup_seconds"])
                    run = run_predict(checkpoints[name], many, out, batch, precision)
                    rate, how = predict_rate(run, samples, startup)
                    entry["predict"].append(rate)
                    entry["how"].append(how)
                    entry["first_sample_seconds"].append(first_sample_seconds(run["lines"],
                                                                              run["wall"]))
                    forward = forward_steps(model, x, steps, matmuls, compiled)
                    entry["forward"].append(forward)
                    bare = batch / statistics.median(f["seconds"] for f in forward)
                    print(f"round {r + 1}/{args.rounds}, batch {batch}: climseg-predict "
                          f"{rate:.4f} samples/s ({how}), bare forward {bare:.4f} samples/s "
                          f"= {rate / bare:.3f}; load average {os.getloadavg()[0]:.2f}",
                          flush=True)
                row["batches"].append(summarize_batch(entry, batch, flops, arch_flops))
            row["startup"] = statistics.median(row["startup_seconds"])
            del model
            tf.keras.backend.clear_session()
            tf.keras.mixed_precision.set_global_policy("float32")
            if args.ranks_batch:
                row["ranks"] = measure_ranks(args, checkpoints[name], many, one, out,
                                             grid, precision, samples)
            print_row(row)
            results.append(row)
    return results


def architecture_flops(checkpoint, grid):
    """The forward FLOPs per sample of the checkpoint's architecture at `grid` (by name)."""
    import callbacks
    import zoo

    meta = callbacks.read_meta(str(checkpoint))
    kwargs = dict(meta["model_kwargs"])
    channels = kwargs.pop("input_shape")[2]
    return zoo.count_flops(meta["model"], (*grid, channels), **kwargs)


def effective(batch_entry, flops, arch_flops):
    """Adds the effective (architecture-FLOP) rates to a `summarize_batch` entry: the same
    times over the architecture's FLOPs."""
    factor = arch_flops / flops
    batch_entry["effective_gflops"] = batch_entry["forward_gflops"] * factor
    if "bf16_matmul_ratio" in batch_entry:
        batch_entry["bf16_matmul_effective_ratio"] = batch_entry["bf16_matmul_ratio"] * factor
    return batch_entry


def summarize_batch(entry, batch, flops, arch_flops=None):
    """Medians of one batch size's rounds: rates, the ratio, GFLOP/s, matmul ratios."""
    rounds = []
    for rate, forward in zip(entry["predict"], entry["forward"], strict=True):
        rounds.append({"predict": rate,
                       "forward": batch / statistics.median(f["seconds"] for f in forward)})
    steps = [f for forward in entry["forward"] for f in forward]
    seconds = statistics.median(f["seconds"] for f in steps)
    gflops = batch * flops / seconds / 1e9
    result = {
        "batch": batch,
        "predict_samples_per_second": statistics.median(entry["predict"]),
        "forward_samples_per_second": batch / seconds,
        "ratio": statistics.median(r["predict"] / r["forward"] for r in rounds),
        "predict_rates": entry["predict"], "forward_rates": [r["forward"] for r in rounds],
        "how": sorted(set(entry["how"])),
        "first_sample_seconds": statistics.median(entry["first_sample_seconds"]),
        "forward_gflops": gflops}
    for key in ("fp32_matmul_gflops", "bf16_matmul_gflops"):
        if key in steps[0]:
            result[key] = statistics.median(f[key] for f in steps)
            # Each forward against the matmul timed right after it.
            result[key.replace("_gflops", "_ratio")] = statistics.median(
                batch * flops / f["seconds"] / 1e9 / f[key] for f in steps)
    return effective(result, flops, arch_flops) if arch_flops else result


def measure_ranks(args, checkpoint, many, one, out, grid, precision, samples):
    """2 ranks predicting vs 2 ranks only computing, in turns; medians over rounds."""
    batch = args.ranks_batch
    steps = max(2, (samples // 2 - batch) // batch)  # each rank's share, as above
    predicted, computed = [], []
    for r in range(args.rounds):
        run = run_predict(checkpoint, many, out, batch, precision, ranks=2)
        startup = 0.0
        if steady_rate(run["lines"]) is None:  # end to end: the 2-rank start-up is needed
            start = run_predict(checkpoint, one, out, 1, precision, ranks=2)
            startup = first_sample_seconds(start["lines"], start["wall"])
        predicted.append(predict_rate(run, samples, startup)[0])
        computed.append(run_forward_ranks(checkpoint, grid, batch, precision,
                                          steps)["samples_per_second"])
        print(f"round {r + 1}/{args.rounds}, 2 ranks, batch {batch} per rank: climseg-predict "
              f"{predicted[-1]:.4f} samples/s, bare forward {computed[-1]:.4f} = "
              f"{predicted[-1] / computed[-1]:.3f}; load average {os.getloadavg()[0]:.2f}",
              flush=True)
    return {"ranks": 2, "batch": batch, "predict_samples_per_second": statistics.median(predicted),
            "forward_samples_per_second": statistics.median(computed),
            "ratio": statistics.median(p / c for p, c in zip(predicted, computed, strict=True)),
            "predict_rates": predicted, "forward_rates": computed}


def print_row(row):
    print(f"{row['model']} {row['precision']} at {row['input']}: start-up (import to first "
          f"sample) {row['startup']:.1f} s; {row['flops_per_sample'] / 1e9:.1f} GFLOP/sample")
    print("batch | predict samples/s | bare forward samples/s | ratio | forward GFLOP/s | "
          "x fp32 matmul | x bf16 matmul")
    for b in row["batches"]:
        bf16 = f"{b['bf16_matmul_ratio']:.2f}" if "bf16_matmul_ratio" in b else "-"
        if "bf16_matmul_effective_ratio" in b:
            bf16 += f" ({b['bf16_matmul_effective_ratio']:.2f} effective)"
        print(f"{b['batch']:5d} | {b['predict_samples_per_second']:17.4f} | "
              f"{b['forward_samples_per_second']:22.4f} | {b['ratio']:5.3f} | "
              f"{b['forward_gflops']:15.1f} | {b['fp32_matmul_ratio']:13.2f} | {bf16}")
    if row.get("ranks"):
        k = row["ranks"]
        print(f"2 ranks, batch {k['batch']} per rank: climseg-predict "
              f"{k['predict_samples_per_second']:.4f} samples/s, bare forward "
              f"{k['forward_samples_per_second']:.4f} = {k['ratio']:.3f}")
    sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4],
                        help="batch sizes (--batch-size of climseg-predict)")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=288)
    parser.add_argument("--files", type=int, default=2,
                        help="netCDF files in the input directory (even: split over 2 ranks)")
    parser.add_argument("--times", type=int, default=16, help="time steps per file")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of predict and bare forward in turn (medians)")
    parser.add_argument("--ranks-batch", type=int, default=1,
                        help="batch per rank of the 2-rank comparison; 0 skips it")
    parser.add_argument("--work-dir",
                        help="where the checkpoints, inputs and masks go (kept, and reused "
                             "by a later run); default: a temporary directory, removed")
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--forward-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for flag in ("batches", "files", "times", "rounds"):
        values = getattr(args, flag)
        if min(values if isinstance(values, list) else [values]) < 1:
            parser.error(f"--{flag}: expected positive numbers, got {values}")
    if args.forward_worker:
        forward_worker(args)
        return 0

    # isort: off
    import climseg_tf  # noqa: F401  (first: Keras 2 and oneDNN before TensorFlow loads)
    import tensorflow as tf

    from bench.models import select_device
    # isort: on

    select_device("cpu")
    print(f"TensorFlow {tf.__version__}, climseg-predict of {ROOT} against the bare forward: "
          f"{', '.join(args.models)}; {', '.join(args.precisions)}; batches "
          f"{', '.join(map(str, args.batches))}; {args.files} netCDF files x {args.times} time "
          f"steps at {args.height}x{args.width}x16; {args.rounds} round(s); load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = measure(args, work)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(RESULT_TAG + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
