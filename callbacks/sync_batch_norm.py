"""Synchronised batch norm across Horovod ranks, put into a model that is already built."""

import tensorflow as tf


def sync_batch_norm(model):
    """Makes every `BatchNormalization` layer of `model` Horovod's `SyncBatchNormalization`.

    In training, Horovod's layer averages each batch's mean and mean of
    squares over the ranks (one allreduce per layer and step; gradients flow
    back through it), so that the statistics are those of the global batch,
    as DeepCAM's reference and NVIDIA's MLPerf runs do. In inference it is
    plain batch norm with the moving statistics.

    The layers are changed in place: only their class becomes Horovod's (a
    subclass of tf-keras' `BatchNormalization` that overrides `_moments`),
    and they run unfused, as Horovod's layer requires. Their names, weights
    and place stay, so checkpoints load either way, and layers nested inside
    other layers or models (DeepLabv3+'s ASPP, tf-models-official's backbone)
    are found too, which cloning the model would miss. Call it before
    `compile`; with one rank the layer is batch norm itself. (The unfused
    path keeps the batch's biased variance in the moving variance, where
    the fused kernel keeps the unbiased one.)

    Horovod's layer is used rather than `tf.keras.layers.experimental.
    SyncBatchNormalization`, which synchronises tf.distribute replicas and
    does nothing across Horovod ranks.

    Args:
        model: a built tf-keras model.

    Returns:
        The names of the layers changed, in the order of `model.submodules`.

    Example:

        model = zoo.get_model("tiramisu", batch_norm=True, ...)
        sync_batch_norm(model)  # before compile
        model.compile(optimizer=hvd.DistributedOptimizer(...), ...)
    """
    import horovod.tensorflow as hvd

    changed = []
    for layer in model.submodules:
        if type(layer) is tf.keras.layers.BatchNormalization:
            # Keras' __setattr__ would track the class as an attribute; the
            # object's own slot is what has to change.
            object.__setattr__(layer, "__class__", hvd.SyncBatchNormalization)
            layer.fused = False
            changed.append(layer.name)
    return changed
