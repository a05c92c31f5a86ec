"""Pixel losses for imbalanced segmentation, and class weights from frequencies.

Background covers about 98% of the pixels of a climate sample, tropical
cyclones 0.07%: unweighted cross-entropy learns to predict background
everywhere. The SC18 runs weighted the cross-entropy by the inverse square
root of the class frequency (normalised to sum 1), DeepCAM by
frequency ** -0.125; SC18 also tried a focal loss, ClimateNet a soft Jaccard
loss. All losses take integer labels (batch, H, W) or (batch, H, W, 1) and
logits (batch, H, W, classes).
"""

import numpy as np
import tensorflow as tf

WEIGHT_SCHEMES = ("sc18", "deepcam")


def class_weights(frequencies, scheme="sc18"):
    """Per-class loss weights from class pixel frequencies.

    Args:
        frequencies: pixel fraction (or count) of each class; normalised to sum 1.
        scheme: "sc18": 1 / sqrt(frequency), normalised to sum 1 (Kurth et
            al. 2018); "deepcam": frequency ** -0.125, not normalised (MLPerf
            HPC DeepCAM). Defaults to `"sc18"`.

    Returns:
        A float32 numpy array with one weight per class.

    Example:
        >>> class_weights([0.982, 0.0007, 0.017]).round(3)
        array([0.022, 0.813, 0.165], dtype=float32)
    """
    freq = np.asarray(frequencies, dtype=np.float64)
    if freq.ndim != 1 or freq.size < 2 or not np.all(np.isfinite(freq)) or np.any(freq <= 0):
        raise ValueError(
            f"frequencies must be a 1-D sequence of at least two positive numbers; "
            f"received {frequencies!r}."
        )
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"scheme must be one of {list(WEIGHT_SCHEMES)}; received {scheme!r}.")
    freq = freq / freq.sum()
    if scheme == "sc18":
        weights = 1.0 / np.sqrt(freq)
        weights /= weights.sum()
    else:
        weights = freq**-0.125
    return weights.astype(np.float32)


def _labels_and_logits(y_true, y_pred):
    y_pred = tf.cast(y_pred, tf.float32)
    y_true = tf.cast(y_true, tf.int32)
    if y_true.shape.rank == y_pred.shape.rank:  # (B, H, W, 1) labels
        y_true = tf.squeeze(y_true, axis=-1)
    return y_true, y_pred


class _WeightedLoss(tf.keras.losses.Loss):
    def __init__(self, class_weights=None, **kwargs):
        super().__init__(**kwargs)
        if class_weights is not None:
            class_weights = [float(w) for w in np.asarray(class_weights).ravel()]
        self.class_weights = class_weights

    def _pixel_weights(self, y_true):
        if self.class_weights is None:
            return None
        return tf.gather(tf.constant(self.class_weights, tf.float32), y_true)

    def get_config(self):
        return {**super().get_config(), "class_weights": self.class_weights}


@tf.keras.utils.register_keras_serializable(package="climseg")
class WeightedCrossEntropy(_WeightedLoss):
    """Softmax cross-entropy per pixel, weighted by the weight of the true class.

    With the default reduction it is the mean over all pixels of
    `w[y] * CE(y, logits)`, as SC18's `sparse_softmax_cross_entropy` with
    per-pixel weights.

    Args:
        class_weights: one weight per class (see `class_weights()`), or None
            for plain cross-entropy. Defaults to `None`.
        name: Defaults to `"weighted_ce"`.
        **kwargs: passed on to `keras.losses.Loss` (e.g. `reduction`).
    """

    def __init__(self, class_weights=None, name="weighted_ce", **kwargs):
        super().__init__(class_weights=class_weights, name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true, y_pred = _labels_and_logits(y_true, y_pred)
        loss = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        weights = self._pixel_weights(y_true)
        return loss if weights is None else loss * weights


@tf.keras.utils.register_keras_serializable(package="climseg")
class FocalLoss(_WeightedLoss):
    """Focal loss per pixel: `-w[y] * (1 - p_y) ** gamma * log(p_y)`.

    Reference: Lin et al., "Focal Loss for Dense Object Detection"
    (arXiv:1708.02002); SC18 used gamma 2.

    Args:
        gamma: focusing exponent, >= 0 (0 gives weighted cross-entropy).
            Defaults to `2.0`.
        class_weights: one weight per class, or None. Defaults to `None`.
        name: Defaults to `"focal"`.
        **kwargs: passed on to `keras.losses.Loss`.
    """

    def __init__(self, gamma=2.0, class_weights=None, name="focal", **kwargs):
        super().__init__(class_weights=class_weights, name=name, **kwargs)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0; received {gamma!r}.")
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        y_true, y_pred = _labels_and_logits(y_true, y_pred)
        ce = tf.keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        loss = (1.0 - tf.exp(-ce)) ** self.gamma * ce  # exp(-ce) is p of the true class
        weights = self._pixel_weights(y_true)
        return loss if weights is None else loss * weights

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


@tf.keras.utils.register_keras_serializable(package="climseg")
class JaccardLoss(tf.keras.losses.Loss):
    """Soft Jaccard loss: 1 - mean over classes of soft intersection / union.

    Intersection and union of the softmax probabilities with the one-hot
    labels are summed over the whole batch, then divided per class, as in
    ClimateNet (Prabhat et al. 2021). One value per batch.

    Args:
        epsilon: added to the union. Defaults to `1e-6`.
        name: Defaults to `"jaccard"`.
        **kwargs: passed on to `keras.losses.Loss`.
    """

    def __init__(self, epsilon=1e-6, name="jaccard", **kwargs):
        super().__init__(name=name, **kwargs)
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        y_true, y_pred = _labels_and_logits(y_true, y_pred)
        probs = tf.nn.softmax(y_pred, axis=-1)
        onehot = tf.one_hot(y_true, tf.shape(y_pred)[-1], dtype=tf.float32)
        axes = tf.range(tf.rank(probs) - 1)
        intersection = tf.reduce_sum(probs * onehot, axis=axes)
        union = tf.reduce_sum(probs + onehot, axis=axes) - intersection
        return 1.0 - tf.reduce_mean(intersection / (union + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


LOSSES = {"weighted_ce": WeightedCrossEntropy, "focal": FocalLoss, "jaccard": JaccardLoss}


def get_loss(name, class_weights=None, **kwargs):
    """Makes the loss registered as `name` in `LOSSES`.

    Args:
        name: "weighted_ce", "focal" or "jaccard".
        class_weights: per-class weights for "weighted_ce" and "focal" (see
            `class_weights()`); must be None for "jaccard".
        **kwargs: passed on to the loss (e.g. `gamma` for "focal").

    Returns:
        A `keras.losses.Loss`.

    Example:
        >>> loss = get_loss("weighted_ce", class_weights=class_weights([0.98, 0.001, 0.019]))
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}.")
    if name == "jaccard":
        if class_weights is not None:
            raise ValueError("The jaccard loss takes no class_weights; received some.")
        return JaccardLoss(**kwargs)
    return LOSSES[name](class_weights=class_weights, **kwargs)


def training_loss(name, weighting="sc18", frequencies=None, gamma=2.0):
    """The loss of a training run, with its class-weight policy applied.

    Args:
        name: "weighted_ce", "focal" or "jaccard".
        weighting: "sc18" or "deepcam" (a scheme of `class_weights()`,
            applied to `frequencies`), "none", or one weight per class.
            Defaults to `"sc18"`.
        frequencies: pixel frequency (or count) of each class, e.g.
            `data.class_frequencies(stats)`; None when no statistics are known,
            which leaves a scheme unweighted. Defaults to None.
        gamma: the focal loss' focusing parameter. Defaults to `2.0`.

    Returns:
        `(loss, weights)`: the `keras.losses.Loss` and the weights it applies
        (a list of floats), or None when unweighted. "jaccard" is never weighted.
    """
    weights = None
    if name != "jaccard":
        if weighting in WEIGHT_SCHEMES:
            if frequencies is not None:
                weights = [float(w) for w in class_weights(frequencies, scheme=weighting)]
        elif weighting != "none":
            weights = [float(w) for w in weighting]
    kwargs = {"gamma": gamma} if name == "focal" else {}
    return get_loss(name, class_weights=weights, **kwargs), weights
