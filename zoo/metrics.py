"""IoU metrics for `model.fit`/`evaluate`, exact across Horovod ranks.

`ConfusionMatrixIoU` is tf-keras' `IoU` (a confusion matrix accumulated over
batches) whose result first sums the confusion matrices of all Horovod ranks,
so that the IoU is the one of all data, not an average of per-rank IoUs.
`DeepCAMIoU` is the MLPerf HPC DeepCAM score: the per-sample mean IoU,
averaged over samples (and ranks).

Under Horovod, `result()` is a collective: every rank must call it the same
number of times (Keras does, at each step of fit/evaluate on every rank).
"""

import tensorflow as tf

import climseg_tf

_PACKAGE = "climseg"


def _sum_over_ranks(tensor, enabled):
    # Horovod: sum, not average, the per-rank counts.
    return climseg_tf.allreduce_tensor(tensor, "sum") if enabled else tensor


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class ConfusionMatrixIoU(tf.keras.metrics.IoU):
    """IoU of `target_class_ids` from a confusion matrix summed over Horovod ranks.

    IoU per class is TP / (TP + FP + FN); the result is the mean over
    `target_class_ids` that occur in truth or prediction (tf-keras' rule). Give
    one class id for the IoU of that class, all ids for the mean IoU.

    A class that occurs in neither truth nor prediction (of all batches seen,
    on all ranks) has no IoU: the result for it alone is NaN, not 0, and the
    mean leaves it out. The mean is NaN only when no target class occurs at
    all (nothing counted yet). A class predicted but absent from the truth
    scores 0: the model was wrong.

    Args:
        num_classes: number of classes. Defaults to `3`.
        target_class_ids: classes to average over. Defaults to all classes.
        sparse_y_pred: False (default) for logits/probabilities (argmax is taken),
            True for class ids.
        allreduce: under Horovod with more than one rank, sum the confusion
            matrices of all ranks before computing the IoU. Defaults to `True`.
        name: metric name. Defaults to `"mean_iou"`.
        **kwargs: passed on to `keras.metrics.IoU` (`ignore_class`, `dtype`:
            of the counts and result, float64 unless given).

    Example:
        >>> model.compile(loss=..., metrics=iou_metrics(3, ("bg", "tc", "ar")))
    """

    def __init__(self, num_classes=3, target_class_ids=None, sparse_y_pred=False,
                 allreduce=True, name="mean_iou", **kwargs):
        if target_class_ids is None:
            target_class_ids = list(range(num_classes))
        # float64 counts stay exact past 2**24 pixels (19 full-size samples).
        kwargs.setdefault("dtype", tf.float64)
        super().__init__(num_classes=num_classes, target_class_ids=list(target_class_ids),
                         sparse_y_pred=sparse_y_pred, name=name, **kwargs)
        self.allreduce = bool(allreduce)

    def global_confusion_matrix(self):
        """The confusion matrix (rows truth, columns prediction) of all ranks."""
        return _sum_over_ranks(tf.convert_to_tensor(self.total_cm), self.allreduce)

    def result(self):
        cm = tf.cast(self.global_confusion_matrix(), self._dtype)
        true_positives = tf.linalg.tensor_diag_part(cm)
        union = tf.reduce_sum(cm, axis=0) + tf.reduce_sum(cm, axis=1) - true_positives
        ids = tf.constant(self.target_class_ids, tf.int32)
        union = tf.gather(union, ids)
        present = union > 0
        # An absent class has no IoU (0 / 0): it is left out of the sum, and
        # the mean over no class at all is NaN, not a score of 0.
        iou = tf.where(present, tf.gather(true_positives, ids)
                       / tf.where(present, union, tf.ones_like(union)), tf.zeros_like(union))
        return tf.reduce_sum(iou) / tf.reduce_sum(tf.cast(present, self._dtype))

    def get_config(self):
        return {**super().get_config(), "allreduce": self.allreduce}


def iou_metrics(num_classes=3, class_names=None, allreduce=True):
    """Mean IoU and one IoU per class, as a list of metrics for `compile`.

    Args:
        num_classes: number of classes. Defaults to `3`.
        class_names: names for the per-class metrics (`iou_{name}`). Defaults
            to the class ids.
        allreduce: sum confusion matrices over Horovod ranks. Defaults to `True`.

    Returns:
        `[ConfusionMatrixIoU("mean_iou"), ConfusionMatrixIoU("iou_<class>"), ...]`.
    """
    class_names = list(class_names) if class_names is not None else list(range(num_classes))
    if len(class_names) != num_classes:
        raise ValueError(
            f"class_names needs {num_classes} names (num_classes); received {class_names!r}."
        )
    metrics = [ConfusionMatrixIoU(num_classes, allreduce=allreduce, name="mean_iou")]
    for class_id, class_name in enumerate(class_names):
        metrics.append(ConfusionMatrixIoU(num_classes, [class_id], allreduce=allreduce,
                                          name=f"iou_{class_name}"))
    return metrics


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class DeepCAMIoU(tf.keras.metrics.Metric):
    """DeepCAM's score: per-sample mean IoU over classes, averaged over samples.

    For each sample, IoU_c = TP / (TP + FP + FN) per class, a class absent from
    both prediction and truth counting as 1; the sample's score is the mean over
    classes, and the result the mean over all samples of all Horovod ranks
    (MLPerf HPC DeepCAM's quality metric; it differs from the global
    confusion-matrix IoU of `ConfusionMatrixIoU`). Counting an absent class
    as 1 is DeepCAM's definition, kept; the result is NaN only before any
    sample of non-zero weight was seen on any rank.

    Args:
        num_classes: number of classes. Defaults to `3`.
        sparse_y_pred: False (default) for logits, True for class ids.
        allreduce: sum over Horovod ranks. Defaults to `True`.
        name: Defaults to `"deepcam_iou"`.
        **kwargs: passed on to `keras.metrics.Metric`.
    """

    def __init__(self, num_classes=3, sparse_y_pred=False, allreduce=True, name="deepcam_iou",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.sparse_y_pred = sparse_y_pred
        self.allreduce = bool(allreduce)
        self.total = self.add_weight("total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight("count", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds the scores of a batch; `sample_weight` weights samples.

        A per-pixel `sample_weight` (batch, H, W) is averaged per sample, so
        that zero-weight padding samples count for nothing; pixels are not
        weighted inside a sample's IoU.
        """
        y_pred = tf.convert_to_tensor(y_pred)
        if not self.sparse_y_pred:
            y_pred = tf.argmax(y_pred, axis=-1)
        batch = tf.shape(y_pred)[0]
        y_pred = tf.reshape(tf.cast(y_pred, tf.int32), [batch, -1])
        y_true = tf.reshape(tf.cast(y_true, tf.int32), [batch, -1])
        classes = tf.range(self.num_classes)[:, None, None]
        pred = tf.equal(y_pred[None], classes)  # (classes, batch, pixels)
        true = tf.equal(y_true[None], classes)
        intersection = tf.reduce_sum(tf.cast(pred & true, tf.float64), axis=-1)
        union = tf.reduce_sum(tf.cast(pred | true, tf.float64), axis=-1)
        iou = tf.where(union > 0, intersection / tf.maximum(union, 1.0), 1.0)
        scores = tf.reduce_mean(iou, axis=0)  # (batch,)
        if sample_weight is None:
            weights = tf.ones_like(scores)
        else:
            weights = tf.reshape(tf.cast(sample_weight, tf.float64), [batch, -1])
            weights = tf.reduce_mean(weights, axis=-1)
        self.total.assign_add(tf.reduce_sum(weights * scores))
        self.count.assign_add(tf.reduce_sum(weights))

    def result(self):
        total_count = _sum_over_ranks(tf.stack([self.total, self.count]), self.allreduce)
        # No sample (of non-zero weight) on any rank: no score, NaN rather than 0.
        return tf.cast(total_count[0] / total_count[1], self.dtype)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "sparse_y_pred": self.sparse_y_pred, "allreduce": self.allreduce}
