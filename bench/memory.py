"""Peak resident memory of one full-resolution DeepLabv3+ training step, batch 1.

The step runs in a child process (this script with `--worker`): it builds
the model (fp32 unless `--precision`), compiles it as `bench/models.py` does
and runs `--steps` `train_on_batch` calls on random data. The peak RSS is
read two ways: the child's own `VmHWM` from /proc/self/status, and
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` in the parent (the largest
child, here the only one). The figure includes TensorFlow's own footprint
(about 1 GB after import) and the step's tracing.

    .venv/bin/python bench/memory.py                      # 768x1152x16, batch 1
    .venv/bin/python bench/memory.py --height 192 --width 288

`--breakdown` says where the peak goes instead: the child runs TensorFlow's
BFC allocator for CPU memory (`TF_CPU_ALLOCATOR_USE_BFC=true`), profiles the
last step and reads the profiler's memory profile (the tensors alive when the
allocator's use peaked, each named by the op that made it), then prints them
grouped by ResNet stage, ASPP, decoder, backward pass and optimizer update,
with the largest ones. Its peak counts tensors only: the RSS adds
TensorFlow's code and Python (about 1.2 GB here).

    .venv/bin/python bench/memory.py --breakdown 40 --steps 2

Not a test: one full-size step takes minutes and over 10 GB on two cores.
"""

import argparse
import collections
import glob
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "MEMORY_RESULT "


def _vm_hwm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def worker(args):
    """Builds the model, runs the steps, prints one JSON line with the child's VmHWM."""
    sys.path.insert(0, str(ROOT))
    # isort: off
    import climseg_tf  # noqa: F401  (Keras 2 and oneDNN before TensorFlow loads)
    import tensorflow as tf

    from bench.models import compiled_model, random_batch
    # isort: on

    if args.precision != "fp32":
        tf.keras.mixed_precision.set_global_policy(args.precision)
    input_shape = (args.height, args.width, args.channels)
    model = compiled_model(args.model, input_shape, args.optimizer)
    x, y = random_batch(args.batch, input_shape)
    built = _vm_hwm_bytes()
    times = []
    for step in range(args.steps):
        profiled = args.breakdown and step == args.steps - 1
        if profiled:
            trace = tempfile.mkdtemp(prefix="climseg-memory-")
            tf.profiler.experimental.start(trace)
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    if args.breakdown:
        tf.profiler.experimental.stop()
        print(breakdown(peak_tensors(trace), args.breakdown))
    print(RESULT_TAG + json.dumps({
        "model": args.model, "optimizer": args.optimizer, "input_shape": list(input_shape),
        "batch": args.batch,
        "precision": args.precision, "steps": args.steps, "step_seconds": times,
        "vm_hwm_after_build_bytes": built, "vm_hwm_bytes": _vm_hwm_bytes(),
        "params": model.count_params()}), flush=True)


def peak_tensors(trace_dir):
    """(bytes, op name, shape) of each tensor alive at the peak of the profiled steps.

    From the memory profile TensorFlow's profiler tools make of the trace (the
    allocator that holds the most; memory allocated before the trace started
    comes as one entry, "unused preallocated device memory").
    """
    from tensorflow.python.profiler.internal import _pywrap_profiler

    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data, ok = _pywrap_profiler.xspace_to_tools_data(paths, "memory_profile")
    if not ok or not data:
        raise RuntimeError(f"no memory profile in {trace_dir}: {data!r}"[:500])
    allocators = json.loads(data)["memoryProfilePerAllocator"].values()
    profile = max(allocators, key=lambda a: int(a["profileSummary"]["peakBytesUsageLifetime"]))
    snapshots, special = profile["memoryProfileSnapshots"], profile["specialAllocations"]
    tensors = []
    for active in profile["activeAllocations"]:
        index = int(active["snapshotIndex"])
        meta = (snapshots[index]["activityMetadata"] if index >= 0
                else special[int(active["specialIndex"])])
        tensors.extend([(int(meta["requestedBytes"]), meta["tfOpName"], meta["tensorShape"])]
                       * int(active["numOccurrences"]))
    return sorted(tensors, reverse=True)


def part_of(op_name):
    """The part of the step a tensor belongs to, from the name of the op that made it."""
    if op_name == "unused preallocated device memory":
        return "held before the step (weights, optimizer slots, the batch)"
    if op_name.startswith("gradient_tape/"):
        return "backward pass (gradients in flight)"
    scopes = op_name.split("/")
    if len(scopes) < 2 or scopes[0] in ("SGD", "Adam", "AdamW"):
        return "optimizer update, loss, other"
    stage = re.match(r"(conv\d|pool1|aspp|decoder)", scopes[1])
    return f"forward activations: {stage[1] if stage else scopes[1]}"


def breakdown(tensors, top):
    """Text: the tensors alive at the peak, by part of the step, and the `top` largest."""
    total = sum(size for size, _, _ in tensors)
    parts = collections.Counter()
    counts = collections.Counter()
    for size, name, _ in tensors:
        part = part_of(name)
        parts[part] += size
        counts[part] += 1
    lines = [f"tensors alive at the allocator's peak: {total / 1e9:.2f} GB in {len(tensors)}"]
    lines += [f"  {size / 1e6:8.1f} MB {size / total:6.1%}  {part} ({counts[part]} tensors)"
              for part, size in parts.most_common()]
    lines.append(f"the {min(top, len(tensors))} largest:")
    lines += [f"  {size / 1e6:8.1f} MB  {name}  {shape}" for size, name, shape in tensors[:top]]
    return "\n".join(lines)


def measure(model="deeplabv3plus", height=768, width=1152, channels=16, batch=1, steps=1,
            precision="fp32", timeout=3600, breakdown=0, optimizer="sgd"):
    """Runs the worker in a child process; returns its result dict with `ru_maxrss_bytes`.

    Call it from a process that has started no other large child: ru_maxrss of
    RUSAGE_CHILDREN is the maximum over all waited-for children.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model,
           "--height", str(height), "--width", str(width), "--channels", str(channels),
           "--batch", str(batch), "--steps", str(steps), "--precision", precision,
           "--breakdown", str(breakdown), "--optimizer", optimizer]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    if breakdown:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    # Linux reports ru_maxrss in KiB.
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["ru_maxrss_bytes"] = maxrss
            if breakdown:
                result["breakdown"] = proc.stdout[:proc.stdout.index(RESULT_TAG)].strip()
            return result
    raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} without a result "
                       f"(killed for memory if -9):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus")
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1152)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1, help="training steps. Default 1")
    parser.add_argument("--precision", default="fp32",
                        choices=("fp32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                        help="sgd (one momentum slot per variable in tf-keras, as the "
                             "training benchmarks) or adamw (two slots, as MLPerf "
                             "DeepCAM's CPU run). Default sgd")
    parser.add_argument("--breakdown", type=int, default=0, metavar="N",
                        help="profile the last step's memory (BFC allocator) and print "
                             "the tensors alive at its peak by part, and the N largest")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1; received {args.steps}")
    if args.worker:
        worker(args)
        return 0
    result = measure(args.model, args.height, args.width, args.channels, args.batch,
                     args.steps, args.precision, breakdown=args.breakdown,
                     optimizer=args.optimizer)
    if args.breakdown:
        print(result["breakdown"])
    print(f"{args.model} {args.height}x{args.width}x{args.channels}, batch {args.batch}, "
          f"{args.precision}, {args.optimizer}, {args.steps} step(s) of "
          f"{', '.join(f'{s:.1f}' for s in result['step_seconds'])} s: peak RSS "
          f"{result['ru_maxrss_bytes'] / 1e9:.2f} GB (VmHWM {result['vm_hwm_bytes'] / 1e9:.2f} GB, "
          f"{result['vm_hwm_after_build_bytes'] / 1e9:.2f} GB after building)")
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
