"""Worker: IoU metrics on this rank's shard; writes OUT/rank{r}.json (or single.json).

Under horovodrun each rank sees its own shard and the metrics sum the
confusion matrices of both ranks; with --single one process sees both shards.
"""

import argparse
import json
from pathlib import Path

# isort: off
import climseg_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

import zoo
# isort: on


def shard(rank):
    """The data of rank `rank`: the two ranks have different class mixes."""
    rng = np.random.default_rng(rank)
    p = [0.9, 0.02, 0.08] if rank == 0 else [0.5, 0.2, 0.3]
    y = rng.choice(3, size=(3, 8, 12), p=p).astype(np.int32)
    logits = rng.standard_normal((3, 8, 12, 3)).astype(np.float32)
    logits[np.arange(3)[:, None, None], np.arange(8)[None, :, None], np.arange(12), y] += rank + 0.5
    return y, logits


def _metrics():
    return [*zoo.iou_metrics(3, ("bg", "tc", "ar")), zoo.DeepCAMIoU()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--single", action="store_true")
    args = parser.parse_args()
    if args.single:
        tag = "single"
        shards = [shard(0), shard(1)]
    else:
        import horovod.tensorflow.keras as hvd

        hvd.init()
        tag = f"rank{hvd.rank()}"
        shards = [shard(hvd.rank())]
    y = np.concatenate([s[0] for s in shards])
    logits = np.concatenate([s[1] for s in shards])

    direct = _metrics()
    for m in direct:
        m.update_state(y, logits)
    inputs = tf.keras.Input((8, 12, 3))
    model = tf.keras.Model(inputs, tf.keras.layers.Activation("linear")(inputs))
    model.compile(loss=zoo.get_loss("weighted_ce"), metrics=_metrics())
    logs = model.evaluate(logits, y, batch_size=2, verbose=0, return_dict=True)
    result = {
        "direct": {m.name: float(m.result()) for m in direct},
        "evaluate": {k: float(v) for k, v in logs.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
