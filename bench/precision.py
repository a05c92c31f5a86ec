"""Training speed under mixed_bfloat16 next to fp32, measured as bench/models.py measures.

For each precision, the Keras global policy is set before the model is built
(the zoo builders then compute in bfloat16 with float32 weights and logits)
and `bench.models.model_rate` times the same training steps, each divided by
a float32 matmul timed right after it. On a CPU this exercises the mixed
precision path that a GPU run would take (mixed_bfloat16 needs no loss
scaling; mixed_float16 on a GPU does). The achieved GFLOP/s count the same
FLOPs as fp32, so the ratio to the float32 matmul can exceed what fp32 reaches.

    .venv/bin/python bench/precision.py                  # deeplabv3plus, 192x288x16, batch 2
    .venv/bin/python bench/precision.py --steps 2 --warmup 1
    .venv/bin/python bench/precision.py --device gpu     # fp32 next to mixed_float16 on a GPU

Not a test: it takes minutes on two cores.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import climseg_tf  # noqa: E402,F401  (first: selects Keras 2 and oneDNN before TensorFlow loads)
import tensorflow as tf  # noqa: E402

from bench.models import add_step_arguments, matmul_step, model_rate, select_device  # noqa: E402,E501
# isort: on

RESULT_TAG = "PRECISION_RESULT "


def precision_rates(name, input_shape, batch, steps, warmup,
                    precisions=("fp32", "mixed_bfloat16")):
    """`model_rate` of `name` under each policy; returns a list of dicts."""
    matmul, matmul_flops = matmul_step()
    for _ in range(3):
        matmul()  # Warm-up.
    results = []
    for precision in precisions:
        tf.keras.mixed_precision.set_global_policy(
            "float32" if precision == "fp32" else precision)
        try:
            rate = model_rate(name, input_shape, batch, steps, warmup, matmul, matmul_flops)
        finally:
            tf.keras.mixed_precision.set_global_policy("float32")
        results.append({"model": name, "precision": precision, **rate})
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deeplabv3plus")
    add_step_arguments(parser)
    args = parser.parse_args(argv)
    select_device(args.device)
    input_shape = (args.height, args.width, args.channels)
    print(f"TensorFlow {tf.__version__}, {args.model}, input {input_shape}, batch {args.batch}, "
          f"median of {args.steps} steps after {args.warmup}", flush=True)
    # Tensor cores want float16 (with loss scaling); CPUs with AVX512_BF16 bfloat16.
    mixed = "mixed_float16" if args.device == "gpu" else "mixed_bfloat16"
    results = precision_rates(args.model, input_shape, args.batch, args.steps, args.warmup,
                              ("fp32", mixed))
    for r in results:
        print(f"{r['precision']:15s} {r['gflops']:7.1f} GFLOP/s = {r['ratio_to_matmul']:.2f} x "
              f"matmul ({r['matmul_gflops']:5.1f} GFLOP/s float32)  "
              f"{r['samples_per_second']:6.3f} samples/s", flush=True)
    print(RESULT_TAG + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
