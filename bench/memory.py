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

Not a test: one full-size step takes minutes and over 10 GB on two cores.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
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
    model = compiled_model(args.model, input_shape)
    x, y = random_batch(args.batch, input_shape)
    built = _vm_hwm_bytes()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(RESULT_TAG + json.dumps({
        "model": args.model, "input_shape": list(input_shape), "batch": args.batch,
        "precision": args.precision, "steps": args.steps, "step_seconds": times,
        "vm_hwm_after_build_bytes": built, "vm_hwm_bytes": _vm_hwm_bytes(),
        "params": model.count_params()}), flush=True)


def measure(model="deeplabv3plus", height=768, width=1152, channels=16, batch=1, steps=1,
            precision="fp32", timeout=3600):
    """Runs the worker in a child process; returns its result dict with `ru_maxrss_bytes`.

    Call it from a process that has started no other large child: ru_maxrss of
    RUSAGE_CHILDREN is the maximum over all waited-for children.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--model", model,
           "--height", str(height), "--width", str(width), "--channels", str(channels),
           "--batch", str(batch), "--steps", str(steps), "--precision", precision]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    # Linux reports ru_maxrss in KiB.
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
            result["ru_maxrss_bytes"] = maxrss
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
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    result = measure(args.model, args.height, args.width, args.channels, args.batch,
                     args.steps, args.precision)
    print(f"{args.model} {args.height}x{args.width}x{args.channels}, batch {args.batch}, "
          f"{args.precision}, {args.steps} step(s) of "
          f"{', '.join(f'{s:.1f}' for s in result['step_seconds'])} s: peak RSS "
          f"{result['ru_maxrss_bytes'] / 1e9:.2f} GB (VmHWM {result['vm_hwm_bytes'] / 1e9:.2f} GB, "
          f"{result['vm_hwm_after_build_bytes'] / 1e9:.2f} GB after building)")
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
