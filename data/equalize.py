"""Giving every rank the same number of validation batches without adding data.

Validation shards differ by at most one batch (every sample is read exactly
once across ranks). Horovod metrics are collectives that every rank must run
at every step, so the shorter shards are topped up with padding batches whose
pixels all have sample weight 0: they change no confusion matrix, so IoU over
all ranks stays exact.
"""

import tensorflow as tf


def equalize_batches(dataset, have, want):
    """Adds per-pixel sample weights and `want - have` zero-weight padding batches.

    Args:
        dataset: batches of `(inputs, labels)`, inputs (B, H, W, C), or of
            `(inputs, labels, weights)` whose weights are kept.
        have: the number of batches `dataset` yields (e.g. `num_batches` of
            this shard).
        want: the number every rank must yield (e.g. `num_batches` of shard 0,
            the largest).

    Returns:
        A dataset of `(inputs, labels, weights)` with `want` batches; weights
        are float32 (B, H, W), 1 for data and 0 for padding. A padding batch
        holds one all-zero sample, so a weighted mean of the loss (Keras'
        `val_loss`) counts it as one sample of loss 0; IoU is unaffected.
    """
    if not 0 < have <= want:
        raise ValueError(f"equalize_batches: expected 0 < have <= want, got have={have}, "
                         f"want={want}")
    spec_x, spec_y = dataset.element_spec[:2]
    shape_x, shape_y = spec_x.shape[1:], spec_y.shape[1:]
    if not (shape_x.is_fully_defined() and shape_y.is_fully_defined()):
        raise ValueError(f"equalize_batches needs a fixed sample shape, got inputs {spec_x.shape}"
                         f" and labels {spec_y.shape}")
    if len(dataset.element_spec) == 3:
        weighted = dataset
    else:
        weighted = dataset.map(lambda x, y: (x, y, tf.ones(tf.shape(y), tf.float32)))
    if have == want:
        return weighted
    pad = tf.data.Dataset.from_tensors((
        tf.zeros([1, *shape_x], spec_x.dtype),
        tf.zeros([1, *shape_y], spec_y.dtype),
        tf.zeros([1, *shape_y], tf.float32),
    )).repeat(want - have)
    return weighted.concatenate(pad)
