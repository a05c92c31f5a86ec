"""Trains the optimizer cases of tests/test_callbacks_larc.py under horovodrun.

Reads ROOT/problem.npz (initial weights arr_0.., combined batches xs, ys of
shape (steps, ranks * per_rank, ...)) and ROOT/cases.json. Rank r trains on
rows [r*B, (r+1)*B) of every combined batch, one step per batch, with
`hvd.DistributedOptimizer` around the case's optimizer (LARC, GradientLag),
and writes its final weights to ROOT/{case}_rank{r}.npz.
"""

import json
import sys
from pathlib import Path

# isort: off
import climseg_tf  # noqa: F401  (Keras 2 before TensorFlow)
import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

from callbacks import LARC, GradientLag
# isort: on


def build_optimizer(spec):
    if spec["inner"] == "sgd":
        opt = tf.keras.optimizers.SGD(spec["lr"], momentum=spec.get("momentum", 0.0))
    elif spec["inner"] == "adam":
        opt = tf.keras.optimizers.Adam(spec["lr"])
    else:
        opt = tf.keras.optimizers.AdamW(spec["lr"], weight_decay=spec["weight_decay"])
    if "larc" in spec:
        opt = LARC(opt, **spec["larc"])
    if "lag" in spec:
        opt = GradientLag(opt, lag=spec["lag"])
    return opt


def main():
    root = Path(sys.argv[1])
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    with np.load(root / "problem.npz") as f:
        xs, ys = f["xs"], f["ys"]
        weights = [f[f"arr_{i}"] for i in range(len(f.files) - 2)]
    steps, rows = xs.shape[:2]
    per_rank = rows // size
    # Horovod: each rank takes its own share of every combined batch.
    x = xs[:, rank * per_rank:(rank + 1) * per_rank].reshape(steps * per_rank, -1)
    y = ys[:, rank * per_rank:(rank + 1) * per_rank].reshape(steps * per_rank, -1)
    for case, spec in json.loads((root / "cases.json").read_text()).items():
        model = tf.keras.Sequential([
            tf.keras.Input((x.shape[1],)),
            tf.keras.layers.Dense(weights[0].shape[1], activation="tanh"),
            tf.keras.layers.Dense(1),
        ])
        model.set_weights(weights)
        # Horovod: average gradients over ranks, outside LARC and GradientLag.
        optimizer = hvd.DistributedOptimizer(build_optimizer(spec))
        assert isinstance(optimizer, LARC | GradientLag), type(optimizer).__mro__
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(x, y, batch_size=per_rank, epochs=1, shuffle=False, verbose=0)
        np.savez(root / f"{case}_rank{rank}.npz", *model.get_weights())


if __name__ == "__main__":
    main()
