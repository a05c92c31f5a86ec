"""Validation shards topped up to equal batch counts with zero-weight padding."""

import numpy as np
import pytest
import tensorflow as tf

from data.equalize import equalize_batches


def _batches(count, rng):
    x = rng.normal(size=(count * 2 - 1, 4, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, size=(count * 2 - 1, 4, 6)).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(2), y


def test_padding_adds_batches_but_changes_no_confusion_matrix():
    ds, y = _batches(2, np.random.default_rng(0))
    padded = list(equalize_batches(ds, have=2, want=4))
    assert len(padded) == 4
    assert [b[0].shape[0] for b in padded] == [2, 1, 1, 1]
    assert [float(tf.reduce_sum(b[2])) for b in padded] == [48.0, 24.0, 0.0, 0.0]

    # Predict class 2 everywhere: the metric over padded data equals numpy's.
    metric = tf.keras.metrics.IoU(3, target_class_ids=[0, 1, 2])
    for _, labels, weights in padded:
        metric.update_state(labels, tf.fill(tf.shape(labels), 2), sample_weight=weights)
    truth = y.ravel()
    expected = np.mean([0.0, 0.0, (truth == 2).sum() / truth.size])
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)


def test_equal_shards_only_gain_weights():
    ds, _ = _batches(3, np.random.default_rng(1))
    batches = list(equalize_batches(ds, have=3, want=3))
    assert len(batches) == 3 and all(float(tf.reduce_min(b[2])) == 1.0 for b in batches)


def test_bad_counts_are_refused():
    ds, _ = _batches(2, np.random.default_rng(2))
    with pytest.raises(ValueError, match="expected 0 < have <= want, got have=3, want=2"):
        equalize_batches(ds, have=3, want=2)
