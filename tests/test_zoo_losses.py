"""Losses and class weights against numpy."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.losses import FocalLoss, JaccardLoss, WeightedCrossEntropy


@pytest.fixture
def labels_logits():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=(2, 4, 6)).astype(np.int32)
    logits = (2 * rng.standard_normal((2, 4, 6, 3))).astype(np.float32)
    return y, logits


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _p_true(y, logits):
    return np.take_along_axis(_softmax(logits.astype(np.float64)), y[..., None], -1)[..., 0]


def test_sc18_weights_are_normalised_inverse_sqrt():
    w = zoo.class_weights([0.982, 0.0007, 0.017], "sc18")
    expected = 1 / np.sqrt([0.982, 0.0007, 0.017])
    np.testing.assert_allclose(w, expected / expected.sum(), rtol=1e-6)
    np.testing.assert_allclose(w, [0.022, 0.813, 0.165], atol=1e-3)  # docs/DATA.md's figures
    assert w.dtype == np.float32


def test_deepcam_weights_and_counts_as_frequencies():
    w = zoo.class_weights([98627, 458, 13270], "deepcam")  # Counts: normalised first.
    freq = np.array([98627, 458, 13270]) / (98627 + 458 + 13270)
    np.testing.assert_allclose(w, freq**-0.125, rtol=1e-6)


@pytest.mark.parametrize(
    "frequencies, scheme, message",
    [([0.5, 0.0, 0.5], "sc18", r"positive numbers; received \[0.5, 0.0, 0.5\]"),
     ([1.0], "sc18", "at least two"),
     ([0.5, 0.5], "inverse", r"scheme must be one of \['sc18', 'deepcam'\]; received 'inverse'")],
)
def test_class_weights_reject_bad_input(frequencies, scheme, message):
    with pytest.raises(ValueError, match=message):
        zoo.class_weights(frequencies, scheme)


def test_weighted_cross_entropy_matches_numpy(labels_logits):
    y, logits = labels_logits
    w = np.array([0.1, 0.7, 0.2])
    expected = np.mean(-np.log(_p_true(y, logits)) * w[y])
    loss = WeightedCrossEntropy(class_weights=w)(y, logits)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)
    # Labels with a channel axis give the same value.
    np.testing.assert_allclose(WeightedCrossEntropy(w)(y[..., None], logits), expected, rtol=1e-5)
    unweighted = WeightedCrossEntropy()(y, logits)
    np.testing.assert_allclose(unweighted, np.mean(-np.log(_p_true(y, logits))), rtol=1e-5)


def test_focal_loss_matches_numpy(labels_logits):
    y, logits = labels_logits
    w = np.array([0.1, 0.7, 0.2])
    p = _p_true(y, logits)
    expected = np.mean(-w[y] * (1 - p) ** 2 * np.log(p))
    np.testing.assert_allclose(FocalLoss(2.0, w)(y, logits), expected, rtol=1e-5)
    # gamma 0 is the weighted cross-entropy.
    np.testing.assert_allclose(FocalLoss(0.0, w)(y, logits),
                               WeightedCrossEntropy(w)(y, logits), rtol=1e-6)


def test_jaccard_loss_matches_numpy(labels_logits):
    y, logits = labels_logits
    probs = _softmax(logits.astype(np.float64))
    onehot = np.eye(3)[y]
    inter = (probs * onehot).sum((0, 1, 2))
    union = (probs + onehot).sum((0, 1, 2)) - inter
    expected = 1 - np.mean(inter / (union + 1e-6))
    np.testing.assert_allclose(JaccardLoss()(y, logits), expected, rtol=1e-5)


def test_get_loss_by_name_and_config_round_trip():
    loss = zoo.get_loss("focal", class_weights=[1.0, 2.0, 3.0], gamma=1.5)
    assert isinstance(loss, FocalLoss) and loss.gamma == 1.5
    clone = tf.keras.losses.deserialize(tf.keras.losses.serialize(loss))
    assert isinstance(clone, FocalLoss)
    assert clone.class_weights == [1.0, 2.0, 3.0] and clone.gamma == 1.5
    assert isinstance(zoo.get_loss("jaccard"), JaccardLoss)
    with pytest.raises(ValueError, match="'dice'; known losses: focal, jaccard, weighted_ce"):
        zoo.get_loss("dice")
    with pytest.raises(ValueError, match="jaccard loss takes no class_weights"):
        zoo.get_loss("jaccard", class_weights=[1, 1, 1])
