"""Trains the optimizer cases of tests/test_callbacks_larc.py under horovodrun.

Reads ROOT/problem.npz (initial weights arr_0.., combined batches xs, ys of
shape (steps, ranks * per_rank, ...)) and ROOT/cases.json. Rank r trains on
rows [r*B, (r+1)*B) of every combined batch, one step per batch, with
`hvd.DistributedOptimizer` around the case's optimizer (LARC, GradientLag),
and writes its final weights to ROOT/{case}_rank{r}.npz.

Then the resume check of ROOT/resume.json (a GradientLag spec and `split`):
train `split` steps; rank 0 writes a checkpoint ("raw"), every rank calls
`average_over_ranks()`, rank 0 writes another ("averaged"); train the rest
(resume_continued). Fresh models restored from each checkpoint on every
rank train the rest too (resume_raw, resume_averaged).
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


def make_model(weights, features):
    model = tf.keras.Sequential([
        tf.keras.Input((features,)),
        tf.keras.layers.Dense(weights[0].shape[1], activation="tanh"),
        tf.keras.layers.Dense(1),
    ])
    model.set_weights(weights)
    return model


def compiled(weights, features, spec):
    model = make_model(weights, features)
    # Horovod: average gradients over ranks, outside LARC and GradientLag.
    optimizer = hvd.DistributedOptimizer(build_optimizer(spec))
    assert isinstance(optimizer, LARC | GradientLag), type(optimizer).__mro__
    model.compile(optimizer=optimizer, loss="mse")
    return model


def resume(root, rank, weights, x, y, per_rank):
    spec = json.loads((root / "resume.json").read_text())
    split = spec.pop("split") * per_rank
    model = compiled(weights, x.shape[1], spec)
    model.fit(x[:split], y[:split], batch_size=per_rank, epochs=1, shuffle=False, verbose=0)
    for name in ("raw", "averaged"):
        if name == "averaged":
            model.optimizer.average_over_ranks()
        if rank == 0:  # only rank 0 writes
            tf.train.Checkpoint(model=model).write(str(root / f"ckpt_{name}"))
        hvd.allreduce(tf.constant(0.0), name=f"written_{name}")  # wait for the file
    model.fit(x[split:], y[split:], batch_size=per_rank, epochs=1, shuffle=False, verbose=0)
    np.savez(root / f"resume_continued_rank{rank}.npz", *model.get_weights())
    for name in ("raw", "averaged"):
        restored = compiled([np.zeros_like(w) for w in weights], x.shape[1], spec)
        tf.train.Checkpoint(model=restored).read(str(root / f"ckpt_{name}"))
        restored.fit(x[split:], y[split:], batch_size=per_rank, epochs=1, shuffle=False,
                     verbose=0)
        np.savez(root / f"resume_{name}_rank{rank}.npz", *restored.get_weights())


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
        model = compiled(weights, x.shape[1], spec)
        model.fit(x, y, batch_size=per_rank, epochs=1, shuffle=False, verbose=0)
        np.savez(root / f"{case}_rank{rank}.npz", *model.get_weights())
    resume(root, rank, weights, x, y, per_rank)


if __name__ == "__main__":
    main()
